"""The update rules of the loss-based and seed strategies, on problems with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.weighting import build_weighting, parse_weighting_args
from facemtl.weighting.base import StepContext


def _const_losses(values: dict[str, float]) -> dict[str, torch.Tensor]:
    """Losses with a graph but fixed values (leaves), for rules that only look at loss values."""
    return {k: torch.tensor(float(v), requires_grad=True) for k, v in values.items()}


def _ctx(feats=None, step=0, epoch=0):
    return StepContext.build(feats if feats is not None else [], [], mode="none", step=step, epoch=epoch)


def test_uw_optimum_is_log_loss():
    L = {"a": 0.5, "b": 4.0}
    s = build_weighting("uw", list(L))
    opt = torch.optim.SGD(s.extra_parameters(), lr=0.2)
    for _ in range(400):
        opt.zero_grad()
        s.backward(_const_losses(L), _ctx())
        opt.step()
    torch.testing.assert_close(s.log_var.detach(), torch.log(torch.tensor([0.5, 4.0])), atol=1e-4, rtol=0)


def test_dwu_moves_weight_to_larger_loss():
    torch.manual_seed(0)
    Z = torch.randn(16, 12)
    s = build_weighting("dwu", ["a", "b"], lr=0.05)
    first = s.backward(_const_losses({"a": 2.0, "b": 0.5}), _ctx([Z]))
    assert first["a"] == pytest.approx(0.5) and first["b"] == pytest.approx(0.5)  # zero-initialised unit
    for step in range(60):
        info = s.backward(_const_losses({"a": 2.0, "b": 0.5}), _ctx([Z], step=step))
    assert info["a"] > 0.7 > 0.3 > info["b"]
    assert info["a"] + info["b"] == pytest.approx(1.0)


def test_dwu_unit_gradient_matches_derivation():
    """The unit's update is -lr * dL3/dz with dL3/dz_k = w_k (1/(L_k+eps) - L3) (REFERENCE.md)."""
    T, D, lr, eps = 3, 5, 0.1, 0.01
    s = build_weighting("dwu", ["a", "b", "c"], lr=lr, optimizer="sgd", normalize=False, eps=eps)
    z_in = torch.randn(1, D)
    L = torch.tensor([0.3, 1.0, 2.5])
    s.backward(_const_losses(dict(zip("abc", L.tolist()))), _ctx([z_in]))
    w = torch.full((T,), 1 / T)  # the unit started at zero: uniform weights
    L3 = (w / (L + eps)).sum()
    dz = w * (1 / (L + eps) - L3)
    torch.testing.assert_close(s.unit.bias.detach(), -lr * dz)
    torch.testing.assert_close(s.unit.weight.detach(), -lr * dz[:, None] * z_in)

    def l3(z):
        p = torch.softmax(z, 0)
        return (p / (L.double() + eps)).sum()

    assert torch.autograd.gradcheck(l3, (torch.randn(T, dtype=torch.float64, requires_grad=True),))
    z = torch.randn(T, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(l3(z), z)
    p = torch.softmax(z, 0).detach()
    torch.testing.assert_close(g, p * (1 / (L.double() + eps) - (p / (L.double() + eps)).sum()))


def test_dwu_lazy_unit_loads_into_fresh_strategy():
    s = build_weighting("dwu", ["a", "b"], lr=0.1)
    Z = torch.randn(4, 7)
    for step in range(3):
        s.backward(_const_losses({"a": 2.0, "b": 1.0}), _ctx([Z], step=step))
    fresh = build_weighting("dwu", ["a", "b"], lr=0.1)
    assert fresh.unit is None
    fresh.load_state_dict(s.state_dict())
    assert fresh.unit.weight.shape == (2, 7) and fresh.extra_parameters() == []
    a = s.backward(_const_losses({"a": 2.0, "b": 1.0}), _ctx([Z], step=3))
    b = fresh.backward(_const_losses({"a": 2.0, "b": 1.0}), _ctx([Z], step=3))
    assert a == pytest.approx(b)
    eager = build_weighting("dwu", ["a", "b"], feature_dim=7)
    assert eager.unit is not None and eager.unit.in_features == 7


def test_mcfa_weights_attributes_only():
    tasks = ["landmarks", "attr:easy", "attr:hard", "attr:mid"]
    s = build_weighting("mcfa", tasks, unit="loss_softmax")
    info = s.backward(_const_losses({"landmarks": 9.0, "attr:easy": 0.1, "attr:hard": 2.0, "attr:mid": 0.7}), _ctx())
    assert info["landmarks"] == 1.0
    attr = [info[t] for t in tasks[1:]]
    assert sum(attr) == pytest.approx(3.0)
    assert info["attr:hard"] > info["attr:mid"] > info["attr:easy"]
    learned = build_weighting("mcfa", tasks, lr=0.05)
    Z = torch.randn(8, 6)
    for step in range(60):
        info = learned.backward(_const_losses({"landmarks": 9.0, "attr:easy": 0.1, "attr:hard": 2.0, "attr:mid": 0.7}),
                                _ctx([Z], step=step))
    assert info["landmarks"] == 1.0 and info["attr:hard"] > 1.0 > info["attr:easy"]
    assert learned.unit.out_features == 3


def test_tcdcn_stops_overfitting_task_keeps_improving_one():
    s = build_weighting("tcdcn", ["lm", "flat", "improving"], main="lm", k=5, threshold=1.0, learn_weights=False)
    flat_tr = [1.0, 0.6, 0.45, 0.41, 0.40, 0.40, 0.40, 0.40]
    flat_val = [1.0, 0.7, 0.60, 0.62, 0.66, 0.70, 0.75, 0.80]
    imp_tr = [0.8**e for e in range(8)]
    imp_val = [1.05 * v for v in imp_tr]
    stopped_at = None
    for e in range(8):
        s.on_epoch_end(e, {"lm": 1.0, "flat": flat_tr[e], "improving": imp_tr[e]},
                       {"lm": 1.0, "flat": flat_val[e], "improving": imp_val[e]})
        if stopped_at is None and "flat" not in s.active_tasks():
            stopped_at = e
    assert stopped_at is not None and stopped_at >= 5  # needs k+1 epochs of history
    assert s.active_tasks() == ["lm", "improving"]
    info = s.backward(_const_losses({"lm": 1.0, "flat": 0.4, "improving": 0.2}), _ctx())
    assert info == {"lm": 1.0, "flat": 0.0, "improving": 1.0}
    # the main task is never stopped, whatever its curves
    s2 = build_weighting("tcdcn", ["lm", "aux"], main="lm", k=2)
    for e in range(6):
        s2.on_epoch_end(e, {"lm": 0.4, "aux": 0.4}, {"lm": 5.0, "aux": 0.4})
    assert s2.active_tasks() == ["lm", "aux"]


@pytest.mark.parametrize("cap, expected", [(None, 4.0), (1.0, 1.0), (2.0, 2.0)])
def test_tcdcn_learnt_weight_tends_to_inverse_loss_or_its_cap(cap, expected):
    """lambda_a = exp(-s_a) with the regulariser + s_a has its optimum at 1/L_a (here 1/0.25);
    max_weight holds it at the cap, where s_a gets no gradient, and the main task keeps 1."""
    s = build_weighting("tcdcn", ["lm", "aux"], main="lm", max_weight=cap)
    opt = torch.optim.SGD(s.extra_parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        info = s.backward(_const_losses({"lm": 1.0, "aux": 0.25}), _ctx())
        opt.step()
    assert info["lm"] == 1.0 and info["aux"] == pytest.approx(expected, rel=0.02)
    if cap is not None:
        assert float(s.log_var.grad[1]) == 0.0  # at the cap: no drift of s_a
    with pytest.raises(ConfigError, match="max_weight"):
        build_weighting("tcdcn", ["lm", "aux"], main="lm", max_weight=0)


def test_tcdcn_bad_main():
    with pytest.raises(ConfigError, match="main"):
        build_weighting("tcdcn", ["a", "b"], main="nope")


def test_dwa_weights_for_given_ratios():
    tasks = ["a", "b", "c"]
    s = build_weighting("dwa", tasks, temperature=2.0)
    info = s.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(epoch=0))
    assert info == {"a": 1.0, "b": 1.0, "c": 1.0}
    s.on_epoch_end(0, {"a": 1.0, "b": 2.0, "c": 4.0}, {})
    s.on_epoch_end(1, {"a": 0.5, "b": 2.0, "c": 6.0}, {})
    info = s.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(epoch=2))
    r = torch.tensor([0.5, 1.0, 1.5])
    expect = 3 * torch.softmax(r / 2.0, 0)
    assert [info[t] for t in tasks] == pytest.approx(expect.tolist())
    # without on_epoch_end the strategy rolls its own epoch means when ctx.epoch moves on
    s2 = build_weighting("dwa", tasks)
    for epoch, vals in enumerate([(1.0, 2.0, 4.0), (0.5, 2.0, 6.0)]):
        s2.backward(_const_losses(dict(zip(tasks, vals))), _ctx(epoch=epoch))
    info2 = s2.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(epoch=2))
    assert [info2[t] for t in tasks] == pytest.approx(expect.tolist())


def test_gradnorm_balances_gradient_norms():
    torch.manual_seed(0)
    f = torch.randn(32, 6)
    heads = torch.nn.ModuleDict({"a": torch.nn.Linear(6, 1), "b": torch.nn.Linear(6, 1)})
    y = torch.randn(32)
    s = build_weighting("gradnorm", ["a", "b"], alpha=1.5)
    opt = torch.optim.SGD(s.extra_parameters(), lr=0.02)

    def step():
        ctx = StepContext.build([f.clone().requires_grad_(True)], [], mode="rep")
        h = ctx.head_inputs[0]
        losses = {"a": F.mse_loss(heads["a"](h).squeeze(1), y), "b": 10 * F.mse_loss(heads["b"](h).squeeze(1), y)}
        norms = [torch.autograd.grad(losses[t], h, retain_graph=True)[0].norm() for t in "ab"]
        opt.zero_grad()
        info = s.backward(losses, ctx)
        opt.step()
        return info, (info["a"] * norms[0]) / (info["b"] * norms[1])

    w0, ratio0 = step()
    for _ in range(100):
        w, ratio = step()
    assert w0["a"] == pytest.approx(1.0) and w0["b"] == pytest.approx(1.0)
    assert w["a"] + w["b"] == pytest.approx(2.0, rel=1e-4)
    # b's gradients are 10x larger at equal loss ratios: its weight falls until the norms match
    assert ratio0 < 0.2 and abs(math.log(ratio)) < 0.2 * abs(math.log(ratio0))
    assert w["b"] < 0.5 < 1.5 < w["a"]


def test_famo_favours_slower_task():
    s = build_weighting("famo", ["fast", "slow"], lr=0.05)
    for t in range(40):
        info = s.backward(_const_losses({"fast": 0.8**t, "slow": 0.99**t}), _ctx(step=t))
    z = torch.softmax(s.logits.detach(), 0)
    assert z[1] > 0.6  # logit weight moved to the task whose loss falls slower
    assert sum(info.values()) == pytest.approx(1.0)


def test_famo_explicit_update_path():
    s = build_weighting("famo", ["a", "b"], lr=0.05)
    s.backward(_const_losses({"a": 1.0, "b": 1.0}), _ctx())
    s.update({"a": torch.tensor(0.5), "b": torch.tensor(0.99)})  # same batch after the step
    assert s.logits[1] > s.logits[0]
    before = s.logits.detach().clone()
    s.backward(_const_losses({"a": 0.1, "b": 5.0}), _ctx(step=1))  # update() consumed: no second update
    torch.testing.assert_close(s.logits.detach(), before)


def test_rlw_weights_are_a_softmax_and_reproducible():
    s, s2 = build_weighting("rlw", ["a", "b", "c"], seed=3), build_weighting("rlw", ["a", "b", "c"], seed=3)
    w1 = s.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(step=7))
    w2 = s2.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(step=7))
    w3 = s.backward(_const_losses({"a": 1.0, "b": 1.0, "c": 1.0}), _ctx(step=8))
    assert w1 == w2 and w1 != w3 and sum(w1.values()) == pytest.approx(1.0)


def test_fixed_weights_and_errors():
    s = build_weighting("fixed", ["a", "b"], weights={"a": 3})
    info = s.backward(_const_losses({"a": 1.0, "b": 1.0}), _ctx())
    assert info == {"a": 3.0, "b": 1.0}
    with pytest.raises(ConfigError, match="zzz"):
        build_weighting("fixed", ["a", "b"], weights={"zzz": 1.0})


def test_build_errors_name_what_is_wrong():
    with pytest.raises(UnknownNameError, match="mgda") as e:
        build_weighting("mgdaa", ["a"])
    assert "nash" in str(e.value)
    with pytest.raises(ConfigError, match="'lrr'.*Valid options: .*lr"):
        build_weighting("famo", ["a"], lrr=0.1)
    with pytest.raises(ConfigError, match="'lr'.*float"):
        build_weighting("famo", ["a"], lr="fast")
    with pytest.raises(ConfigError, match="seed"):
        build_weighting("rlw", ["a"], seed=True)
    assert build_weighting("famo", ["a"], lr=1).opt.param_groups[0]["lr"] == 1.0
    with pytest.raises(UnknownNameError, match="'zz'"):
        build_weighting("ew", ["a"]).backward(_const_losses({"zz": 1.0}), _ctx())


def test_grad_mode_refusals_say_why():
    with pytest.raises(ConfigError, match="EMA"):
        build_weighting("dbmtl", ["a", "b"]).grad_mode("rep")
    assert build_weighting("dbmtl", ["a", "b"]).grad_mode() == "params"
    assert build_weighting("mgda", ["a", "b"]).grad_mode() == "rep"
    assert build_weighting("uw", ["a", "b"]).grad_mode("rep") == "none"
    with pytest.raises(ConfigError, match="rep' or 'params"):
        build_weighting("pcgrad", ["a", "b"]).grad_mode("none")


def test_parse_weighting_args():
    got = parse_weighting_args("main=landmarks,lr=0.01,weights=landmarks:1;smile:0.5;attr:Smiling:2,"
                               "group=attr:,normalize=false,k=3,feature_dim=none")
    assert got == {"main": "landmarks", "lr": 0.01, "weights": {"landmarks": 1.0, "smile": 0.5, "attr:Smiling": 2.0},
                   "group": "attr:", "normalize": False, "k": 3, "feature_dim": None}
    assert parse_weighting_args("") == {}
    assert parse_weighting_args("main=attr:Smiling") == {"main": "attr:Smiling"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_weighting_args("lr")
    with pytest.raises(ConfigError, match="twice"):
        parse_weighting_args("lr=1,lr=2")
    opts = parse_weighting_args("weights=a:2;b:0.5")
    assert build_weighting("fixed", ["a", "b"], **opts).w.tolist() == [2.0, 0.5]
    assert math.isclose(parse_weighting_args("c=4e-1")["c"], 0.4)


def test_state_for_other_tasks_is_refused():
    from facemtl.errors import CheckpointError

    sd = build_weighting("uw", ["a", "b"]).state_dict()
    with pytest.raises(CheckpointError, match="tasks"):
        build_weighting("uw", ["b", "a"]).load_state_dict(sd)
