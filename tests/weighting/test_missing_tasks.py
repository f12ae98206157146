"""Steps in which some tasks have no loss (several datasets in one run: a batch lacks some labels).

Every registered strategy goes through the drop-in/drop-out schedule; then known answers for the
rules that treat an absent task specially (docs/weighting.md, "When a task is missing from a step").
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from facemtl.weighting import WEIGHTINGS, StepContext, _grads, build_weighting

from ._toy import TASKS, TEST_OPTIONS, Toy, make_data, modes_for, train_step

CASES = [
    (name, mode)
    for name in WEIGHTINGS.names()
    for mode in modes_for(build_weighting(name, TASKS, **TEST_OPTIONS.get(name, {})))
]
GRADIENT_CASES = [(n, m) for n, m in CASES if WEIGHTINGS.get(n).needs != "losses"]
SCHEDULE = [TASKS, ["a"], ["b", "attr:c"], TASKS, ["attr:c"]]
#: strategies that keep state per task: the check below must find some for them
STATEFUL = {"fixed", "uw", "dwa", "famo", "gradnorm", "nash", "dbmtl", "dwu", "mcfa", "tcdcn"}


def _build(name: str, tasks=TASKS, **kw):
    return build_weighting(name, tasks, **{**TEST_OPTIONS.get(name, {}), **kw})


def _head(model: Toy, task: str):
    return model.heads[task.replace(":", "_")]


def _task_state(s, task: str) -> dict:
    """Everything in the strategy's checkpoint that belongs to ``task``: the slice at its index of
    every tensor with an axis of length T (buffers, parameters, internal optimizer state) and the
    entries keyed by its name (histories, stopped tasks)."""
    i, T = s.tasks.index(task), len(s.tasks)
    out = {}

    def walk(path, v):
        if torch.is_tensor(v):
            for ax, n in enumerate(v.shape):
                if n == T:
                    out[(path, ax)] = v.detach().select(ax, i).clone()
        elif isinstance(v, dict):
            if task in v:
                out[(path, "entry")] = copy.deepcopy(v[task])
            for k, x in v.items():
                walk(f"{path}.{k}", x)
        elif isinstance(v, (list, tuple)):
            for k, x in enumerate(v):
                walk(f"{path}[{k}]", x)

    walk("", s.state_dict())
    return out


def _assert_same_state(before: dict, after: dict, what: str):
    """Equal, except that state created lazily meanwhile (an internal optimizer's first step) must
    hold zeros for the task, its value before any step."""
    assert before.keys() <= after.keys(), (what, set(before) - set(after))
    for k in after.keys() - before.keys():
        assert torch.is_tensor(after[k]) and not after[k].any(), (what, k, after[k])
    for k, a in before.items():
        b = after[k]
        if torch.is_tensor(a):
            torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=lambda m, k=k: f"{what} {k}: {m}")
        else:
            assert a == b, (what, k, a, b)


@pytest.mark.parametrize("name,mode", CASES)
def test_tasks_drop_in_and_out(name, mode):
    """Schedule {a,b,c}, {a}, {b,c}, {a,b,c}, {c}, one epoch a step: finite weights and gradients,
    weights for the present tasks only, no gradient into an absent task's head, and everything the
    strategy keeps for an absent task (per-task state, epoch histories) exactly as it was."""
    x, ys = make_data()
    model, s = Toy(), _build(name)
    opt = torch.optim.SGD([*model.parameters(), *s.extra_parameters()], lr=0.05)
    checked = 0
    for step, present in enumerate(SCHEDULE):
        absent = [t for t in TASKS if t not in present]
        before = {t: _task_state(s, t) for t in absent}
        opt.zero_grad(set_to_none=True)
        losses, info = train_step(model, s, None, x, ys, mode, step=step, epoch=step, present=present)
        assert {k for k in info if "/" not in k} == set(present), info
        assert all(math.isfinite(v) for v in info.values()), info
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        if any(info[t] != 0 for t in present):  # (tcdcn may have stopped the one present task)
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_params())
        for t in absent:
            assert all(p.grad is None or not p.grad.any() for p in _head(model, t).parameters()), t
        opt.step()
        s.on_epoch_end(step, {t: float(losses[t].detach()) for t in present}, {t: 1.5 * float(losses[t].detach()) for t in present})
        for t in absent:
            _assert_same_state(before[t], _task_state(s, t), f"{name} step {step} task {t}")
            checked += len(before[t])
    if name in STATEFUL:
        assert checked, f"{name}: found no per-task state to check"


@pytest.mark.parametrize("name,mode", GRADIENT_CASES)
def test_zero_gradient_task_is_left_out_of_the_solve(name, mode):
    """A present task whose gradient is exactly zero (every label masked) changes nothing: the
    same update and weights as without it; before, MGDA's min-norm point was that zero gradient
    (the encoder got nothing) and Nash-MTL's system had no solution."""
    x, ys = make_data()
    results = []
    for with_c in (False, True):
        model, s = Toy(), _build(name)
        ctx = StepContext.build(model.forward_features(x), model.shared_params(), mode=mode)
        out = model.forward_heads(ctx.head_inputs)
        losses = {t: F.mse_loss(out[t], ys[t]) for t in ("a", "b")}
        if with_c:
            losses["attr:c"] = 0.0 * out["attr:c"].sum()  # a masked mean over no known label
        info = s.backward(losses, ctx)
        results.append((info, [p.grad.clone() for p in model.shared_params()], model))
    (ref, ref_g, _), (got, got_g, model) = results
    assert got["attr:c"] == 0.0
    for t in ("a", "b"):
        assert got[t] == pytest.approx(ref[t], rel=1e-6, abs=1e-9)
    for a, b in zip(ref_g, got_g):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in got_g)
    assert all(p.grad is None or not p.grad.any() for p in _head(model, "attr:c").parameters())


@pytest.mark.parametrize("mode", ["rep", "params"])
def test_mgda_two_present_tasks_is_the_two_task_min_norm_point(mode):
    """c absent: the weights are gamma, 1 - gamma of Sener & Koltun's closed form for a and b
    alone, and the encoder gets the gradient of gamma L_a + (1 - gamma) L_b."""
    x, ys = make_data()
    model, s = Toy(), _build("mgda")
    ctx = StepContext.build(model.forward_features(x), model.shared_params(), mode=mode)
    out = model.forward_heads(ctx.head_inputs)
    La, Lb = (F.mse_loss(out[t], ys[t]) for t in ("a", "b"))
    G = _grads.per_task_gradients([La, Lb], ctx).double()
    (m11, m12), (_, m22) = (G @ G.T).tolist()
    gamma = (m22 - m12) / (m11 + m22 - 2 * m12)
    assert 0.05 < gamma < 0.95  # an interior point: the test would see a wrong combination
    info = s.backward({"a": La, "b": Lb}, ctx)
    assert set(info) == {"a", "b"}
    assert info["a"] == pytest.approx(gamma, rel=1e-6) and info["b"] == pytest.approx(1 - gamma, rel=1e-6)
    got = [p.grad.clone() for p in model.shared_params()]
    plain = Toy()
    o = plain.forward_heads(plain.forward_features(x))
    total = gamma * F.mse_loss(o["a"], ys["a"]) + (1 - gamma) * F.mse_loss(o["b"], ys["b"])
    want = torch.autograd.grad(total, plain.shared_params())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


#: the update of each method for one task with gradient g: scale * g (the paper's own scaling)
ONE_TASK_SCALE = {
    "mgda": lambda g: 1.0,  # the hull of one gradient is that gradient
    "pcgrad": lambda g: 1.0,  # nothing to project on
    "imtl": lambda g: 1.0,  # alpha = 1 (sum 1)
    "aligned": lambda g: 1.0,  # sqrt(lambda_min) / sqrt(lambda) = 1
    "cagrad": lambda g: (1 + 0.4) / (1 + 0.4**2),  # g0 + c g0, rescaled by 1/(1+c^2) (c = 0.4)
    "nash": lambda g: 1.0 / float(g.norm()),  # alpha = 1/||g||: the unit gradient
    "gradnorm": lambda g: 1.0,  # w renormalised to sum 1 over the one present task
}


@pytest.mark.parametrize("mode", ["rep", "params"])
@pytest.mark.parametrize("name", sorted(ONE_TASK_SCALE))
def test_one_present_task_gives_its_plain_gradient(name, mode):
    """After a step with every task, a step with only ``a``: the encoder gets scale * grad L_a, with
    the method's own one-task scale (ONE_TASK_SCALE); heads get grad L_a times the head weight."""
    x, ys = make_data()
    model, s = Toy(), _build(name)
    opt = torch.optim.SGD([*model.parameters(), *s.extra_parameters()], lr=0.05)
    train_step(model, s, opt, x, ys, mode, step=0)
    ref = copy.deepcopy(model)
    o = ref.forward_heads(ref.forward_features(x))
    La = F.mse_loss(o["a"], ys["a"])
    want = torch.autograd.grad(La, ref.shared_params(), retain_graph=True)
    want_head = torch.autograd.grad(La, list(_head(ref, "a").parameters()), retain_graph=True)
    ctx = StepContext.build(ref.forward_features(x), ref.shared_params(), mode=mode)
    g = _grads.per_task_gradients([F.mse_loss(ref.forward_heads(ctx.head_inputs)["a"], ys["a"])], ctx)[0]
    scale = ONE_TASK_SCALE[name](g)
    opt.zero_grad(set_to_none=True)
    _, info = train_step(model, s, None, x, ys, mode, step=1, present=["a"])
    assert info["a"] == pytest.approx(scale, rel=1e-5)
    for p, w in zip(model.shared_params(), want):
        torch.testing.assert_close(p.grad, scale * w, rtol=1e-5, atol=1e-7)
    head_w = scale if name == "nash" else 1.0  # Nash-MTL's heads get alpha, the others their own gradient
    for p, w in zip(_head(model, "a").parameters(), want_head):
        torch.testing.assert_close(p.grad, head_w * w, rtol=1e-5, atol=1e-7)


def test_gradnorm_initial_loss_of_a_late_task_is_its_first_own_loss():
    x, ys = make_data()
    model, s = Toy(), _build("gradnorm")
    opt = torch.optim.SGD([*model.parameters(), *s.extra_parameters()], lr=0.05)
    l0, _ = train_step(model, s, opt, x, ys, "rep", step=0, present=["a", "b"])
    assert torch.isnan(s.initial_losses[2])
    l1, info = train_step(model, s, opt, x, ys, "rep", step=1, present=TASKS)
    want = [float(l0["a"].detach()), float(l0["b"].detach()), float(l1["attr:c"].detach())]
    assert s.initial_losses.tolist() == pytest.approx(want, rel=1e-6)
    assert all(math.isfinite(v) for v in info.values())
    _, info = train_step(model, s, opt, x, ys, "rep", step=2, present=TASKS)
    assert s.initial_losses.tolist() == pytest.approx(want, rel=1e-6)  # recorded once


@pytest.mark.parametrize("missing", ["absent", "nan"])
def test_dwa_keeps_the_last_two_epoch_losses_of_a_task_missing_from_an_epoch(missing):
    """c has no loss in epoch 2 (left out, or NaN as a mean over no batch): at epoch 3 its ratio is
    still L_c(1) / L_c(0), its last two recorded epochs; a and b use epochs 2 and 1."""
    s = build_weighting("dwa", ["a", "b", "c"], temperature=2.0)
    s.on_epoch_end(0, {"a": 1.0, "b": 1.0, "c": 1.0}, {})
    s.on_epoch_end(1, {"a": 2.0, "b": 0.5, "c": 3.0}, {})
    s.on_epoch_end(2, {"a": 1.0, "b": 1.0, **({"c": math.nan} if missing == "nan" else {})}, {})
    losses = {t: torch.tensor(1.0, requires_grad=True) for t in ("a", "b", "c")}
    info = s.backward(losses, StepContext.build([], [], mode="none", epoch=3))
    r = torch.tensor([1.0 / 2.0, 1.0 / 0.5, 3.0 / 1.0])
    want = 3 * torch.softmax(r / 2.0, dim=0)
    assert [info[t] for t in ("a", "b", "c")] == pytest.approx(want.tolist(), rel=1e-6)


def test_tcdcn_task_missing_from_an_epoch_keeps_its_histories():
    """An auxiliary task without training or validation loss in an epoch: nothing is appended, no
    stopping decision is taken, and its criterion later uses its own last k + 1 training epochs."""
    s = build_weighting("tcdcn", ["a", "b"], main="a", k=2, learn_weights=False)
    tr, val = [1.0, 0.8, 0.7], [0.9, 0.85, 0.8]
    for e in range(3):
        s.on_epoch_end(e, {"a": 1.0, "b": tr[e]}, {"a": 1.0, "b": val[e]})
    hist = (list(s.train_hist["b"]), list(s.val_hist["b"]))
    s.on_epoch_end(3, {"a": 1.0}, {"a": 1.0})
    s.on_epoch_end(4, {"a": 1.0, "b": math.nan}, {"a": 1.0, "b": math.nan})
    assert (s.train_hist["b"], s.val_hist["b"]) == hist and "b" not in s.stopped
    s.on_epoch_end(5, {"a": 1.0, "b": 0.65}, {"a": 1.0, "b": 0.9})
    strip = [0.8, 0.7, 0.65]
    med = sorted(strip)[1]
    want = 2 * med / (sum(strip) - 2 * med) * (0.9 - 0.65) / 0.65
    assert s.criterion("b") == pytest.approx(want, rel=1e-12)


def test_mcfa_unit_row_of_an_absent_attribute_is_kept():
    """The dynamic weight unit's row (and Adam state) of an attribute absent from a step stays put."""
    tasks = ["a", "attr:b", "attr:c"]
    x, ys = make_data(tasks)
    model, s = Toy(tasks), build_weighting("mcfa", tasks, lr=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_step(model, s, opt, x, ys, "none", step=0)
    train_step(model, s, opt, x, ys, "none", step=1, present=["a", "attr:c"])
    before = _task_state(s, "attr:b"), s.unit.weight[0].clone(), s.opt.state[s.unit.weight]["exp_avg"][0].clone()
    train_step(model, s, opt, x, ys, "none", step=2, present=["a", "attr:c"])
    assert torch.equal(s.unit.weight[0], before[1]) and torch.equal(s.opt.state[s.unit.weight]["exp_avg"][0], before[2])
    assert not torch.equal(s.unit.weight[1], torch.zeros_like(s.unit.weight[1]))  # the present row learns
    _assert_same_state(before[0], _task_state(s, "attr:b"), "mcfa")


def test_famo_compares_a_task_with_its_own_last_loss():
    """Constant losses, b absent in between: each task's log-loss decrease is 0, so the logits
    (no weight decay) do not move; with b compared to anything but its own last loss they would."""
    s = build_weighting("famo", ["a", "b"], lr=0.1, gamma=0.0)
    ctx = StepContext.build([], [], mode="none")
    for present in (["a", "b"], ["a"], ["a", "b"], ["b"], ["a", "b"]):
        s.backward({t: torch.tensor({"a": 2.0, "b": 0.5}[t], requires_grad=True) for t in present}, ctx)
    assert s.logits.detach().abs().max() == 0


def test_nash_update_every_re_solves_when_the_task_set_changes():
    x, ys = make_data()
    model, s = Toy(), _build("nash", update_every=10)
    train_step(model, s, None, x, ys, "rep", step=0, present=["a", "b"])
    model.zero_grad(set_to_none=True)
    _, got = train_step(model, s, None, x, ys, "rep", step=1, present=TASKS)
    _, fresh = train_step(Toy(), _build("nash"), None, x, ys, "rep", step=1, present=TASKS)
    assert got == pytest.approx(fresh, rel=1e-6)
    with torch.no_grad():  # move the model: a re-solve would now give other weights
        for p in model.parameters():
            p.mul_(1.5)
    _, again = train_step(model, s, None, x, ys, "rep", step=2, present=TASKS)
    assert again == got  # same task set within update_every: alpha reused
    _, resolved = train_step(model, _build("nash"), None, x, ys, "rep", step=2, present=TASKS)
    assert resolved != pytest.approx(got, rel=1e-3)


RESUME_CASES = [(n, m, {}) for n, m in CASES] + [pytest.param("nash", "rep", {"update_every": 2}, id="nash-every2")]


@pytest.mark.parametrize("name,mode,options", RESUME_CASES)
def test_resume_after_a_step_with_a_missing_task(name, mode, options):
    """Save right after a step without a and c, load into a fresh strategy, continue through more
    drop-outs: the same weights and parameters as the uninterrupted run."""
    x, ys = make_data()
    # step 3 repeats step 2's task set: Nash with update_every=2 must reuse the alpha solved before saving
    schedule = [TASKS, ["a", "b"], ["b"], ["b"], ["a", "attr:c"], TASKS, ["attr:c"], TASKS]
    save_after = 2

    def run(model, s, opt, steps):
        out = []
        for step in steps:
            present = schedule[step]
            losses, info = train_step(model, s, opt, x, ys, mode, step=step, epoch=step, present=present)
            out.append(info)
            s.on_epoch_end(step, {t: float(losses[t].detach()) for t in present}, {t: 2.0 * float(losses[t].detach()) for t in present})
        return out

    def fresh():
        model, s = Toy(), _build(name, **options)
        return model, s, torch.optim.Adam([*model.parameters(), *s.extra_parameters()], lr=0.01)

    model, s, opt = fresh()
    run(model, s, opt, range(save_after + 1))
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "w": s.state_dict()})
    ref = run(model, s, opt, range(save_after + 1, len(schedule)))

    model2, s2, opt2 = fresh()
    model2.load_state_dict(saved["model"])
    s2.load_state_dict(saved["w"])
    opt2 = torch.optim.Adam([*model2.parameters(), *s2.extra_parameters()], lr=0.01)
    opt2.load_state_dict(saved["opt"])
    got = run(model2, s2, opt2, range(save_after + 1, len(schedule)))
    for a, b in zip(ref, got):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (k, a, b)
    for p, q in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-6)
