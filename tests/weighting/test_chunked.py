"""Per-task gradients on the shared parameters in chunks of tasks, within a memory budget (issue 15)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from facemtl.errors import ConfigError
from facemtl.weighting import _grads, build_weighting
from facemtl.weighting.base import StepContext

from ._toy import Toy, make_data, train_step

GRADIENT_STRATEGIES = ["mgda", "pcgrad", "cagrad", "imtl", "nash", "aligned", "dbmtl", "gradnorm"]
TASKS5 = ["a", "b", "c", "d", "e"]


def _step(name: str, chunk: int | None, steps: int = 2):
    x, ys = make_data(TASKS5)
    model, s = Toy(TASKS5, cascade=True), build_weighting(name, TASKS5)
    s.grad_chunk = chunk
    opt = torch.optim.SGD([*model.parameters(), *s.extra_parameters()], lr=0.05)
    infos = []
    for step in range(steps):
        _, info = train_step(model, s, opt, x, ys, "params", step=step)
        infos.append(info)
    return infos, [p.grad.clone() for p in model.parameters()], [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", GRADIENT_STRATEGIES)
def test_chunked_updates_equal_unchunked(name):
    """One task at a time, chunks of 2 (the last one short) and all 5 at once give the same step."""
    ref_infos, ref_grads, ref_params = _step(name, 5)
    for chunk in (1, 2):
        infos, grads, params = _step(name, chunk)
        for a, b in zip(infos, ref_infos):
            assert a.keys() == b.keys()
            assert [a[k] for k in a] == pytest.approx([b[k] for k in b], rel=1e-5, abs=1e-7)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
        for p, r in zip(params, ref_params):
            torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-7)


def test_norm_only_strategy_holds_no_full_gradients():
    """GradNorm needs only ||g_i||: params mode never materialises the T x P matrix."""
    x, ys = make_data(TASKS5)
    model, s = Toy(TASKS5), build_weighting("gradnorm", TASKS5)
    s.grad_chunk = 2
    ctx = StepContext.build(model.forward_features(x), model.shared_params(), mode="params")
    out = model.forward_heads(ctx.head_inputs)
    L = [torch.nn.functional.mse_loss(out[t], ys[t]) for t in TASKS5]
    F = _grads.task_gradients(L, _grads.rep_targets(ctx), scale=1.0, batched=False)
    G, M, _ = s._param_gradients(F, ctx)
    full = _grads.per_task_gradients(L, ctx)
    assert G is None
    torch.testing.assert_close(torch.diagonal(M), (full.double() ** 2).sum(1))


def test_unused_shared_parameter_keeps_no_gradient():
    """As after a plain backward: a shared parameter outside the graph keeps .grad None."""
    x, ys = make_data(TASKS5)
    model, s = Toy(TASKS5), build_weighting("mgda", TASKS5)
    spare = torch.nn.Parameter(torch.ones(3))
    ctx = StepContext.build(model.forward_features(x), [*model.shared_params(), spare], mode="params")
    out = model.forward_heads(ctx.head_inputs)
    s.backward({t: torch.nn.functional.mse_loss(out[t], ys[t]) for t in TASKS5}, ctx)
    assert spare.grad is None
    assert all(p.grad is not None for p in model.parameters())


def test_chunk_size_from_the_budget(caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    P, act = 1_000_000, 2_000_000
    assert _grads.chunk_size(40, P, cpu, 2**40, held_rows=40, act_numel=act) == 1  # batching does not pay on a CPU
    per_row = 4 * (2 * P + 4 * act)
    held = 4 * 40 * P
    assert _grads.chunk_size(40, P, cuda, held + 7 * per_row + 5, held_rows=40, act_numel=act) == 7
    assert _grads.chunk_size(40, P, cuda, 2**40, held_rows=40, act_numel=act) == 40
    assert _grads.chunk_size(40, P, cuda, 8 * per_row, held_rows=0, act_numel=act) == 8  # norms only: nothing held
    _grads._warned.discard("grad-memory")
    with caplog.at_level(logging.WARNING):
        assert _grads.chunk_size(40, P, cuda, held // 2, held_rows=40, act_numel=act) == 1
    assert "grad-memory" in caplog.text and "raise --grad-memory" in caplog.text


@pytest.mark.parametrize(("text", "expected"), [
    ("4GiB", 4 * 2**30), ("512MB", 512 * 10**6), ("2g", 2 * 2**30), ("1.5GiB", int(1.5 * 2**30)),
    ("2048", 2048 * 2**20), (1024, 1024 * 2**20), ("300 MiB", 300 * 2**20),
])
def test_parse_memory(text, expected):
    assert _grads.parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "-1GB", "0", "4 parsecs", True])
def test_parse_memory_refuses_nonsense(bad):
    with pytest.raises(ConfigError, match="--grad-memory must be a positive size"):
        _grads.parse_memory(bad)


# -- Nash-MTL: the normalisation changes the conditioning, not the step (issue 14, item 13) --------
@pytest.mark.parametrize("mode", ["rep", "params"])
def test_nash_update_invariant_to_normalisation(mode):
    x, ys = make_data(TASKS5)
    grads, infos = [], []
    for normalize in (True, False):
        model, s = Toy(TASKS5), build_weighting("nash", TASKS5, normalize=normalize)
        _, info = train_step(model, s, None, x, ys, mode)
        infos.append(info)
        grads.append([p.grad for p in model.parameters()])
    assert [infos[0][t] for t in TASKS5] == pytest.approx([infos[1][t] for t in TASKS5], rel=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_nash_solves_the_unnormalised_system():
    """alpha_i (G G^T alpha)_i = 1 on the raw Gram matrix, whatever its scale."""
    g = np.random.default_rng(0).normal(size=(4, 50)) * 30.0
    M = torch.as_tensor(g @ g.T)
    s = build_weighting("nash", ["a", "b", "c", "d"])
    ctx = StepContext([], [], [], mode="rep")
    sol = s.solve(["a", "b", "c", "d"], torch.zeros(4, 1), M, torch.ones(4), ctx)
    a = sol.coeffs.double().numpy()
    np.testing.assert_allclose(a * (g @ g.T @ a), 1.0, rtol=1e-5)


def test_grad_memory_setting_reaches_the_strategy_and_is_checked(tmp_path):
    """`--grad-memory` / weighting.grad_memory: validated when the config is built, bytes on the strategy."""
    from facemtl.engine.config import RunConfig, apply_overrides

    cfg = apply_overrides(RunConfig(), {"weighting.grad_memory": "512MB"})
    assert _grads.parse_memory(cfg.weighting.grad_memory) == 512 * 10**6
    with pytest.raises(ConfigError, match="weighting.grad_memory .--grad-memory. must be a positive size"):
        apply_overrides(RunConfig(), {"weighting.grad_memory": "lots"})
    assert build_weighting("mgda", TASKS5).grad_memory == _grads.DEFAULT_GRAD_MEMORY
