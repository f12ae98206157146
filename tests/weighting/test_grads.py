"""The per-task gradient machinery: right gradients in both spaces, AMP scaling, bf16, batching."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from facemtl.weighting import _grads, build_weighting
from facemtl.weighting.base import StepContext

from ._toy import TASKS, Toy, make_data, train_step

COEFF_STRATEGIES = ["mgda", "pcgrad", "cagrad", "imtl", "nash", "aligned", "gradnorm"]
HEADS_WEIGHTED = {"nash", "gradnorm"}  # heads get the same weights as the shared part


def _losses(model, x, ys, ctx):
    out = model.forward_heads(ctx.head_inputs)
    return {t: F.mse_loss(out[t], ys[t]) for t in ys}


@pytest.mark.parametrize("mode", ["rep", "params"])
def test_task_gradients_match_autograd(mode):
    """Per-task gradients, whole or in chunks of tasks, equal autograd's through the plain graph."""
    x, ys = make_data()
    model = Toy(cascade=True)
    ctx = StepContext.build(model.forward_features(x), model.shared_params(), mode=mode)
    losses = list(_losses(model, x, ys, ctx).values())
    targets = _grads.grad_targets(ctx)
    assert sum(t.numel() for t in targets) == (32 * (16 + 6) if mode == "rep" else sum(
        p.numel() for p in model.shared_params()))
    if mode == "params":  # reference: each loss differentiated through heads and encoder at once
        plain = StepContext.build(model.forward_features(x), model.shared_params(), mode="none")
        ref_losses = list(_losses(model, x, ys, plain).values())
    else:
        ref_losses = losses
    refs = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, targets, retain_graph=True)]) for l in ref_losses]
    for chunk in (1, 2, 3):
        G = _grads.per_task_gradients(losses, ctx, chunk=chunk)
        for i, ref in enumerate(refs):
            torch.testing.assert_close(G[i], ref, rtol=1e-5, atol=1e-7)
    if mode == "rep":
        G = _grads.task_gradients(losses, targets, scale=1.0, batched=True)
        torch.testing.assert_close(G, torch.stack(refs), rtol=1e-5, atol=1e-7)


def test_batched_failure_falls_back_loudly(monkeypatch, caplog):
    x, ys = make_data()
    model = Toy()
    ctx = StepContext.build(model.forward_features(x), model.shared_params(), mode="params")
    losses = list(_losses(model, x, ys, ctx).values())
    real = torch.autograd.grad

    def no_vmap(*a, **kw):
        if kw.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return real(*a, **kw)

    ref = _grads.per_task_gradients(losses, ctx, chunk=1)
    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    _grads._warned.discard("batched-params")
    with caplog.at_level(logging.WARNING):
        G = _grads.per_task_gradients(losses, ctx, chunk=3)
    assert "one task at a time" in caplog.text
    torch.testing.assert_close(G, ref)
    assert G.abs().sum() > 0


@pytest.mark.parametrize("name", COEFF_STRATEGIES)
@pytest.mark.parametrize("mode", ["rep", "params"])
def test_shared_gradient_is_the_weighted_combination(name, mode):
    """Encoder grads == d(sum_i c_i L_i)/dW with c the reported weights; heads get their own weights."""
    x, ys = make_data()
    model, s = Toy(), build_weighting(name, TASKS)
    _, info = train_step(model, s, None, x, ys, mode)
    c = torch.tensor([info[t] for t in TASKS])
    h = c if name in HEADS_WEIGHTED else torch.ones(3)
    model2 = Toy()
    ctx = StepContext.build(model2.forward_features(x), model2.shared_params(), mode="none")
    L = torch.stack(list(_losses(model2, x, ys, ctx).values()))
    ref_shared = torch.autograd.grad((c * L).sum(), model2.shared_params(), retain_graph=True)
    ref_heads = torch.autograd.grad((h * L).sum(), model2.head_params())
    for p, r in zip(model.shared_params(), ref_shared):
        torch.testing.assert_close(p.grad, r, rtol=2e-4, atol=1e-6)
    for p, r in zip(model.head_params(), ref_heads):
        torch.testing.assert_close(p.grad, r, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", COEFF_STRATEGIES + ["dbmtl", "uw", "famo"])
def test_amp_loss_scale_is_undone_for_the_solver(name):
    x, ys = make_data()
    mode = build_weighting(name, TASKS).grad_mode()
    grads = []
    infos = []
    for scale in (1.0, 1024.0):
        model, s = Toy(), build_weighting(name, TASKS)
        _, info = train_step(model, s, None, x, ys, mode, loss_scale=scale)
        infos.append(info)
        grads.append([p.grad / scale for p in model.parameters()])
    assert infos[1] == pytest.approx(infos[0], rel=1e-4)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", COEFF_STRATEGIES + ["dbmtl", "ew", "dwu", "famo"])
def test_bf16_autocast_forward(name):
    x, ys = make_data()
    model, s = Toy(cascade=True), build_weighting(name, TASKS)
    mode = s.grad_mode()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.forward_features(x)
        ctx = StepContext.build(feats, model.shared_params(), mode=mode)
        out = model.forward_heads(ctx.head_inputs)
        losses = {t: F.mse_loss(out[t].float(), ys[t]) for t in TASKS}
        info = s.backward(losses, ctx)  # engines may call it inside the autocast region
    assert feats[0].dtype == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(v)) for v in info.values())
    for p in model.shared_params():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_nonfinite_gradients_leave_state_alone():
    """fp16 overflow: the step passes the inf on (GradScaler skips it) and learns nothing from it."""
    x, ys = make_data()
    model, s = Toy(), build_weighting("dbmtl", TASKS)
    train_step(model, s, None, x, ys, "params")
    buf = s.grad_buffer.clone()
    ys_bad = dict(ys, a=ys["a"] * float("inf"))
    model.zero_grad()
    _, info = train_step(model, s, None, x, ys_bad, "params")
    assert info["dbmtl/nonfinite_steps"] == 1.0
    torch.testing.assert_close(s.grad_buffer, buf)
    assert not all(torch.isfinite(p.grad).all() for p in model.shared_params())


@pytest.mark.parametrize("name", ["mgda", "nash", "uw", "dbmtl"])
def test_with_a_grad_scaler(name):
    """The engine's AMP loop: loss_scale from a GradScaler, scaler.step / update."""
    x, ys = make_data()
    model, s = Toy(), build_weighting(name, TASKS)
    opt = torch.optim.SGD([*model.parameters(), *s.extra_parameters()], lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    mode = s.grad_mode()
    first = None
    for step in range(30):
        opt.zero_grad(set_to_none=True)
        scale = scaler.scale(torch.ones(()))  # 0-d tensor; also initialises the scaler
        losses, _ = train_step(model, s, None, x, ys, mode, step=step, loss_scale=scale)
        scaler.step(opt)
        scaler.update()
        total = sum(float(v.detach()) for v in losses.values())
        first = first if first is not None else total
    assert scaler.get_scale() == 2.0**12  # no overflow, no skipped step
    assert total < 0.8 * first
