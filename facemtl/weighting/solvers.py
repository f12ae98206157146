"""Small exact solvers on the T x T Gram matrix ``M = G G^T`` of the per-task gradients.

Everything here is numpy float64 on T x T matrices (T = number of tasks): moving M to the CPU
is the one device sync a gradient strategy makes per step. Every method that combines
gradients linearly is written as "find coefficients c with combined = c^T G", so only M is
needed, M can be averaged over DDP ranks, and the same coefficients hold on every rank.

A solver that cannot deliver its exact answer raises :class:`SolverError`; the strategies decide
whether to fall back (always with a logged warning and a counter in their step info).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from scipy.optimize import minimize, nnls

_EPS32 = float(np.finfo(np.float32).eps)
F = TypeVar("F", bound=Callable)

try:  # BLAS threads only cost time on T x T matrices (50x slower on a busy 2-core box)
    from threadpoolctl import ThreadpoolController

    _POOL = ThreadpoolController()

    def _blas1() -> contextlib.AbstractContextManager:
        return _POOL.limit(limits=1, user_api="blas")

except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    _blas1 = contextlib.nullcontext


def _single_thread(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _blas1():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SolverError(RuntimeError):
    """A solver could not reach its exact answer (non-finite input, no solution, no convergence)."""


def _check(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise SolverError(f"expected a square Gram matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise SolverError("Gram matrix has non-finite entries")
    return 0.5 * (M + M.T)


# -- MGDA: min-norm point of the convex hull of the gradients ------------------------------------
def min_norm_2(m11: float, m12: float, m22: float) -> float:
    """argmin_{g in [0,1]} ||g g1 + (1-g) g2||^2 (Sener & Koltun 2018, Algorithm 1)."""
    denom = m11 + m22 - 2.0 * m12
    if denom <= 1e-300:
        return 0.5
    return float(np.clip((m22 - m12) / denom, 0.0, 1.0))


@_single_thread
def min_norm(M: np.ndarray) -> np.ndarray:
    """Exact min-norm convex combination: argmin_{a in simplex} a^T M a.

    Two tasks: closed form. More: the problem is the dual of least-distance programming, solved
    exactly (finite active-set termination) by Lawson-Hanson NNLS on K = M + 1 1^T:
    u = argmin_{u>=0} u^T K u - 2 1^T u, a = u / sum(u) (Lawson & Hanson 1974, ch. 23).
    """
    M = _check(M)
    T = M.shape[0]
    if T == 1:
        return np.ones(1)
    if T == 2:
        g = min_norm_2(M[0, 0], M[0, 1], M[1, 1])
        return np.array([g, 1.0 - g])
    scale = max(float(np.max(np.diag(M))), 1e-300)  # the argmin is invariant to scaling M
    K = M / scale + 1.0
    lam, V = np.linalg.eigh(K)
    keep = lam > lam.max() * T * 1e-13
    A = np.sqrt(lam[keep])[:, None] * V[:, keep].T  # A^T A = K
    b = (V[:, keep].T @ np.ones(T)) / np.sqrt(lam[keep])  # A^T b = 1 (1 lies in range(K))
    u, _ = nnls(A, b, maxiter=50 * T)
    total = u.sum()
    if not np.isfinite(total) or total <= 0:
        raise SolverError("min-norm NNLS returned no positive solution")
    a = u / total
    # KKT: (M a)_i >= a^T M a for every i (equality on the support)
    Ma = (M / scale) @ a
    if np.min(Ma) < a @ Ma - 1e-7 * max(1.0, a @ Ma):
        raise SolverError("min-norm solution fails its optimality check")
    return a


# -- PCGrad (Yu et al. 2020) as coefficients ---------------------------------------------------
@_single_thread
def pcgrad_coefficients(M: np.ndarray, orders: list[np.ndarray]) -> np.ndarray:
    """Rows C_i with g_i^PC = sum_k C_ik g_k; the PCGrad update is sum_i g_i^PC = (1^T C) G.

    For each task i, in the random order ``orders[i]`` over the other tasks j: if
    g_i^PC . g_j < 0, g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j (projection onto the normal plane
    of the *original* g_j, Algorithm 1 of the paper). Dot products come from M alone.
    """
    M = _check(M)
    T = M.shape[0]
    C = np.eye(T)
    order = np.stack([np.asarray(o) for o in orders]) if T else np.zeros((0, 0), int)
    rows = np.arange(T)
    # every task projects independently: walk the orders column by column, all tasks at once
    for k in range(order.shape[1] if T else 0):
        j = order[:, k]
        dot = np.einsum("it,ti->i", C, M[:, j])  # g_i^PC . g_j for each i
        hit = (j != rows) & (M[j, j] > 0) & (dot < 0)
        C[rows[hit], j[hit]] -= dot[hit] / M[j[hit], j[hit]]
    return C


# -- CAGrad (Liu et al. 2021) ------------------------------------------------------------------
@_single_thread
def cagrad_dual(M: np.ndarray, c: float) -> tuple[np.ndarray, bool]:
    """argmin_{w in simplex} w^T M b + c ||g0|| sqrt(w^T M w), b = 1/T (the dual of CAGrad).

    Solved with SLSQP from the uniform point, with analytic gradient; the objective is convex
    (linear + a norm), so SLSQP's KKT point is the optimum. Returns (w, converged).
    """
    M = _check(M)
    T = M.shape[0]
    if T == 1:
        return np.ones(1), True
    scale = max(float(np.mean(np.diag(M))), 1e-300)  # argmin invariant to scaling M (homogeneous)
    A = M / scale
    b = np.full(T, 1.0 / T)
    Ab = A @ b
    cn = c * np.sqrt(max(b @ Ab, 0.0) + 1e-12)

    def f(w: np.ndarray) -> float:
        return float(w @ Ab + cn * np.sqrt(max(w @ A @ w, 0.0) + 1e-12))

    def df(w: np.ndarray) -> np.ndarray:
        return Ab + cn * (A @ w) / np.sqrt(max(w @ A @ w, 0.0) + 1e-12)

    res = minimize(
        f, b.copy(), jac=df, method="SLSQP", bounds=[(0.0, 1.0)] * T,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else b
    # never return something worse than the obvious candidates (uniform and the vertices)
    cands = [w, b, *np.eye(T)]
    best = min(cands, key=f)
    ok = bool(res.success) and f(w) <= f(best) + 1e-9
    return (w if ok else best), ok


# -- Nash-MTL (Navon et al. 2022) --------------------------------------------------------------
@_single_thread
def nash_weights(M: np.ndarray, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """The alpha > 0 with (M alpha)_i = 1 / alpha_i, exactly (to ``tol``), or :class:`SolverError`.

    The equation is the stationarity condition of the strictly convex
    phi(a) = a^T M a / 2 - sum_i log a_i, so damped Newton (Hessian M + diag(1/a^2), positivity
    kept by a fraction-to-boundary rule, Armijo backtracking) converges quadratically when a
    solution exists. It does not exist when some non-negative combination of the gradients is 0
    (e.g. g2 = -g1, or a zero gradient): phi is then unbounded below, which we detect and raise
    instead of returning stale weights.
    """
    M = _check(M)
    d = np.diag(M)
    if np.any(d <= 0):
        raise SolverError("a task gradient is zero: G^T G a = 1/a has no solution")
    a = 1.0 / np.sqrt(d)  # exact when the gradients are orthogonal

    def phi(x: np.ndarray) -> float:
        return 0.5 * x @ M @ x - np.sum(np.log(x))

    for _ in range(max_iter):
        Ma = M @ a
        if np.max(np.abs(a * Ma - 1.0)) < tol:
            return a
        r = Ma - 1.0 / a
        H = M + np.diag(1.0 / a**2)
        try:
            step = -np.linalg.solve(H, r)
        except np.linalg.LinAlgError as err:
            raise SolverError(f"Nash-MTL Newton system is singular: {err}") from None
        t = 1.0
        neg = step < 0
        if np.any(neg):
            t = min(1.0, 0.99 * float(np.min(-a[neg] / step[neg])))
        f0, slope = phi(a), float(r @ step)
        while phi(a + t * step) > f0 + 1e-4 * t * slope and t > 1e-12:
            t *= 0.5
        a = a + t * step
        if not np.all(np.isfinite(a)) or np.max(a) > 1e12 * np.max(1.0 / np.sqrt(d)):
            raise SolverError("Nash-MTL problem is unbounded (gradients cancel): no solution")
    if np.max(np.abs(a * (M @ a) - 1.0)) < 1e3 * tol:
        return a
    raise SolverError(f"Nash-MTL Newton did not converge in {max_iter} iterations (unbounded or ill-posed)")


# -- IMTL-G (Liu et al. 2021) ------------------------------------------------------------------
@_single_thread
def imtl_g(M: np.ndarray) -> tuple[np.ndarray, bool]:
    """alpha (sum 1) such that g = alpha^T G has equal projections on every unit task gradient.

    Closed form of the paper: with D_j = g_1 - g_j, U_j = u_1 - u_j (j >= 2, u unit vectors),
    alpha_{2:T} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum alpha_{2:T}; every product comes from M.
    Returns (alpha, exact): a singular system is solved by least squares (exact=False).
    """
    M = _check(M)
    T = M.shape[0]
    if T == 1:
        return np.ones(1), True
    n = np.sqrt(np.clip(np.diag(M), 1e-300, None))
    # (g_a . u_b) = M_ab / n_b
    P = M / n[None, :]
    a_row = P[0, 0] - P[0, 1:]  # g_1 . (u_1 - u_j)
    DU = (P[0, 0] - P[0, 1:])[None, :] - (P[1:, 0][:, None] - P[1:, 1:])  # (g_1 - g_j).(u_1 - u_k)
    exact = True
    try:
        rest = np.linalg.solve(DU.T, a_row)
        if not np.all(np.isfinite(rest)) or np.linalg.cond(DU) > 1e12:
            raise np.linalg.LinAlgError("ill-conditioned")
    except np.linalg.LinAlgError:
        rest = np.linalg.lstsq(DU.T, a_row, rcond=None)[0]
        exact = False
    return np.concatenate([[1.0 - rest.sum()], rest]), exact


# -- Aligned-MTL (Senushkin et al. 2023) ---------------------------------------------------------
@_single_thread
def aligned_matrix(M: np.ndarray) -> np.ndarray:
    """B with B G = aligned gradients: rows orthogonal with equal norm sqrt(lambda_min).

    M = V diag(lambda) V^T (eigh); keep eigenvalues above lambda_max * T * eps(float32) (the rank);
    B = sqrt(lambda_min) V diag(lambda^-1/2) V^T, so (B G)(B G)^T = lambda_min V V^T.
    The update is the sum of the aligned rows: alpha = 1^T B.
    """
    M = _check(M)
    T = M.shape[0]
    lam, V = np.linalg.eigh(M)
    if lam.max() <= 0:
        raise SolverError("all task gradients are zero")
    keep = lam > lam.max() * T * _EPS32
    lam, V = lam[keep], V[:, keep]
    return np.sqrt(lam.min()) * (V / np.sqrt(lam)[None, :]) @ V.T
