"""Checks every registered strategy goes through: parametrised over the registry."""

from __future__ import annotations

import copy

import pytest
import torch

from facemtl.weighting import WEIGHTINGS, build_weighting

from ._toy import TASKS, TEST_OPTIONS, Toy, make_data, modes_for, train_step

CASES = [
    (name, mode)
    for name in WEIGHTINGS.names()
    for mode in modes_for(build_weighting(name, TASKS, **TEST_OPTIONS.get(name, {})))
]


def _build(name: str):
    return build_weighting(name, TASKS, **TEST_OPTIONS.get(name, {}))


def _opt(model, strategy, lr=0.05):
    return torch.optim.SGD([*model.parameters(), *strategy.extra_parameters()], lr=lr)


@pytest.mark.parametrize("name,mode", CASES)
def test_gradients_reach_encoder_and_heads(name, mode):
    """Regression for the LibMTL trap: in rep mode loss-only strategies gave the encoder nothing."""
    x, ys = make_data()
    model, s = Toy(cascade=True), _build(name)
    losses, info = train_step(model, s, None, x, ys, mode)
    assert all(torch.isfinite(v) for v in losses.values())
    assert set(TASKS) <= set(info) and all(isinstance(v, float) for v in info.values())
    for p in model.shared_params():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    for p in model.head_params():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(p.grad.abs().sum() > 0 for p in model.head_params())


@pytest.mark.parametrize("name,mode", CASES)
def test_training_decreases_total_loss(name, mode):
    x, ys = make_data()
    torch.manual_seed(0)
    model, s = Toy(), _build(name)
    opt = _opt(model, s)
    totals = []
    for step in range(40):
        losses, _ = train_step(model, s, opt, x, ys, mode, step=step, epoch=step // 10)
        totals.append(sum(float(v.detach()) for v in losses.values()))
        if step % 10 == 9:
            s.on_epoch_end(step // 10, {t: float(v.detach()) for t, v in losses.items()}, {})
    assert totals[-1] < 0.8 * totals[0], totals[::8]


@pytest.mark.parametrize("name,mode", CASES)
def test_missing_tasks(name, mode):
    x, ys = make_data()
    model, s = Toy(), _build(name)
    opt = _opt(model, s)
    for step, present in enumerate([TASKS, ["a", "attr:c"], ["b"], TASKS, ["attr:c", "b"]]):
        _losses, info = train_step(model, s, opt, x, ys, mode, step=step, present=present)
        assert set(present) <= set(info)
        assert not (set(TASKS) - set(present)) & set(info)
        assert all(torch.isfinite(torch.tensor(v)) for v in info.values())
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name,mode", CASES)
def test_state_dict_round_trip(name, mode):
    """k steps, save, fresh strategy + load, more steps == an uninterrupted run (same weights, params)."""
    x, ys = make_data()
    schedule = [TASKS, TASKS, ["a", "b"], TASKS, TASKS, ["b", "attr:c"], TASKS, TASKS]

    def run(model, s, opt, steps):
        out = []
        for step in steps:
            _, info = train_step(model, s, opt, x, ys, mode, step=step, epoch=step // 2, present=schedule[step])
            out.append(info)
            if step % 2 == 1:
                s.on_epoch_end(step // 2, {t: 1.0 + 0.1 * step + i for i, t in enumerate(TASKS)},
                               {t: 1.5 + 0.2 * step for t in TASKS})
        return out

    def fresh():
        model, s = Toy(), _build(name)
        return model, s, torch.optim.Adam([*model.parameters(), *s.extra_parameters()], lr=0.01)

    model, s, opt = fresh()
    run(model, s, opt, range(4))
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "w": s.state_dict()})
    ref = run(model, s, opt, range(4, 8))
    ref_params = [p.detach().clone() for p in model.parameters()]

    model2, s2, opt2 = fresh()
    model2.load_state_dict(saved["model"])
    s2.load_state_dict(saved["w"])
    opt2 = torch.optim.Adam([*model2.parameters(), *s2.extra_parameters()], lr=0.01)
    opt2.load_state_dict(saved["opt"])
    got = run(model2, s2, opt2, range(4, 8))
    for a, b in zip(ref, got):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (k, a, b)
    for p, q in zip(ref_params, model2.parameters()):
        torch.testing.assert_close(q.detach(), p, rtol=1e-5, atol=1e-6)
    assert s2.active_tasks() == s.active_tasks()
