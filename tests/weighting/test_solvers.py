"""Closed-form toy checks of the small solvers behind the gradient strategies."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from facemtl.weighting import build_weighting, solvers
from facemtl.weighting.base import StepContext


def _simplex_grid(T: int, n: int) -> np.ndarray:
    """All points of the 3-simplex with coordinates in multiples of 1/n."""
    assert T == 3
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    pts = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1)
    return pts / n


def test_pcgrad_projects_conflicting_pair():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])  # g1 . g2 = -1 < 0
    G = np.stack([g1, g2])
    C = solvers.pcgrad_coefficients(G @ G.T, [np.array([0, 1]), np.array([0, 1])])
    pc = C @ G
    # closed form: g1' = g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2' = g2 - (g2.g1/|g1|^2) g1 = (0, 1)
    np.testing.assert_allclose(pc[0], [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(pc[1], [0.0, 1.0], atol=1e-12)
    assert pc[0] @ g2 == pytest.approx(0.0, abs=1e-12) and pc[1] @ g1 == pytest.approx(0.0, abs=1e-12)


def test_pcgrad_leaves_agreeing_gradients_alone():
    G = np.array([[1.0, 0.2], [0.5, 1.0]])
    C = solvers.pcgrad_coefficients(G @ G.T, [np.array([1]), np.array([0])])
    np.testing.assert_allclose(C, np.eye(2))


def test_mgda_two_tasks_closed_form():
    g1, g2 = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    G = np.stack([g1, g2])
    a = solvers.min_norm(G @ G.T)
    # min over g of |g g1 + (1-g) g2|^2 = g^2 + 4 (1-g)^2 -> g = 4/5
    np.testing.assert_allclose(a, [0.8, 0.2], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mgda_three_tasks_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(3, 5))
    M = G @ G.T
    a = solvers.min_norm(M)
    assert a.min() >= -1e-12 and a.sum() == pytest.approx(1.0)
    grid = _simplex_grid(3, 200)
    brute = np.min(np.einsum("ni,ij,nj->n", grid, M, grid))
    assert a @ M @ a <= brute + 1e-9
    assert a @ M @ a >= brute - 1e-2 * max(brute, 1e-3)  # the grid is close to the optimum


def test_mgda_zero_in_hull():
    G = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    a = solvers.min_norm(G @ G.T)
    assert np.linalg.norm(a @ G) < 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cagrad_dual_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(3, 4))
    M, c, T = G @ G.T, 0.4, 3
    w, ok = solvers.cagrad_dual(M, c)
    assert ok
    b = np.full(T, 1 / T)
    g0n = np.sqrt(b @ M @ b)

    def f(x):  # x: (..., 3)
        return x @ M @ b + c * g0n * np.sqrt(np.einsum("...i,ij,...j->...", x, M, x))

    grid = _simplex_grid(3, 300)
    assert f(w) <= f(grid).min() + 1e-9
    # the primal update d = g0 + c |g0| g_w / |g_w| lies on the ball |d - g0| = c |g0|
    gw = w @ G
    d = b @ G + c * g0n * gw / np.linalg.norm(gw)
    assert np.linalg.norm(d - b @ G) == pytest.approx(c * g0n)


def test_nash_orthogonal_analytic():
    G = np.diag([1.0, 2.0, 0.5]) @ np.eye(3)
    a = solvers.nash_weights(G @ G.T)
    np.testing.assert_allclose(a, [1.0, 0.5, 2.0], rtol=1e-9)  # alpha_i = 1/|g_i|


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nash_residual(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(4, 10))
    M = G @ G.T
    a = solvers.nash_weights(M)
    assert np.all(a > 0)
    np.testing.assert_allclose(M @ a, 1.0 / a, rtol=1e-8)


def test_nash_raises_when_gradients_cancel():
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    with pytest.raises(solvers.SolverError):
        solvers.nash_weights(G @ G.T)


def test_nash_strategy_falls_back_loudly(caplog):
    """Exactly opposite gradients: no solution; the strategy warns, counts and never keeps old weights."""
    feats = torch.tensor([[1.0, 0.0]], requires_grad=True)
    ctx = StepContext.build([feats * 1.0], [], mode="rep")
    h = ctx.head_inputs[0]
    losses = {"a": h[:, 0].sum(), "b": -h[:, 0].sum()}
    s = build_weighting("nash", ["a", "b"])
    with caplog.at_level(logging.WARNING):
        info = s.backward(losses, ctx)
    assert info["nash/solver_fallbacks"] == 1.0
    assert any("fallback" in r.message for r in caplog.records)
    strict = build_weighting("nash", ["a", "b"], on_failure="raise")
    ctx = StepContext.build([feats * 1.0], [], mode="rep")
    h = ctx.head_inputs[0]
    with pytest.raises(solvers.SolverError):
        strict.backward({"a": h[:, 0].sum(), "b": -h[:, 0].sum()}, ctx)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imtl_equal_projections(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(3, 6)) * np.array([[1.0], [3.0], [0.2]])
    a, exact = solvers.imtl_g(G @ G.T)
    assert exact and a.sum() == pytest.approx(1.0)
    g = a @ G
    proj = (G / np.linalg.norm(G, axis=1, keepdims=True)) @ g
    np.testing.assert_allclose(proj, proj[0], rtol=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_aligned_rows_orthogonal_equal_norm(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(3, 7)) * np.array([[1.0], [5.0], [0.3]])
    M = G @ G.T
    B = solvers.aligned_matrix(M)
    A = B @ G
    AA = A @ A.T
    lam_min = np.linalg.eigvalsh(M).min()
    np.testing.assert_allclose(AA, lam_min * np.eye(3), atol=1e-9 * np.abs(M).max())
    d = B.sum(axis=0) @ G  # the update: sum of aligned rows, equal projection on each
    np.testing.assert_allclose(A @ d, lam_min, rtol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcgrad_coefficients_match_sequential_projection(seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(5, 8))
    orders = [rng.permutation(5) for _ in range(5)]
    ref = []
    for i in range(5):  # Algorithm 1 of Yu et al. 2020, on the vectors themselves
        g = G[i].copy()
        for j in orders[i]:
            if j != i and g @ G[j] < 0:
                g -= (g @ G[j]) / (G[j] @ G[j]) * G[j]
        ref.append(g)
    C = solvers.pcgrad_coefficients(G @ G.T, orders)
    np.testing.assert_allclose(C @ G, np.stack(ref), atol=1e-10)
