"""Every multi-task architecture: registry and refusals, shapes, the shared representation, invariants, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.models import ARCHITECTURES, BACKBONES, build_model, feature_info
from facemtl.models._backbone import split_stages
from facemtl.weighting import build_weighting
from facemtl.weighting.base import StepContext
from tests.models._helpers import FAST, tasks

ARCHS = ARCHITECTURES.names()
NAMES = ["landmarks", "smile", "expression"]


def arch_model(arch: str, backbone: str = "small", names=None, **arch_options):
    torch.manual_seed(0)
    return build_model(backbone, tasks(names or NAMES), architecture=arch, architecture_options=arch_options,
                       **FAST[backbone])


def batch(model, n: int = 4, seed: int = 0) -> torch.Tensor:
    s = model.input_spec[0][0]
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_architecture_of_the_issue():
    assert set(ARCHS) == {"hps", "cross-stitch", "mtan", "mmoe", "cgc", "ple", "dselect-k", "ltb"}
    with pytest.raises(UnknownNameError, match="mtan"):
        build_model("small", tasks(), architecture="mtn")


@pytest.mark.parametrize("backbone", ["gender-glasses", "seed004", "mcfa"])
def test_backbones_with_their_own_sharing_scheme_take_hps_only(backbone):
    with pytest.raises(ConfigError, match="use architecture 'hps'"):
        build_model(backbone, tasks(), architecture="mmoe", **FAST.get(backbone, {}))


def test_bad_architecture_options_fail_clearly():
    with pytest.raises(ConfigError, match="its options are: experts, expert_dim"):
        arch_model("mmoe", expertz=3)
    with pytest.raises(ConfigError, match="power of 2"):
        arch_model("dselect-k", experts=3)
    with pytest.raises(ConfigError, match="levels"):
        arch_model("ple", levels=1)
    with pytest.raises(ConfigError, match="has no options"):
        build_model("small", tasks(), architecture="hps", architecture_options={"x": 1})


@pytest.mark.parametrize("name", ["small", "famo9", "tcdcn", "vgg16", "resnet18", "resnet50"])
def test_backbones_expose_stages_that_compose_to_the_trunk(name):
    b = BACKBONES.get(name)(**FAST[name])
    info = feature_info(b)
    assert [f["num_chs"] for f in info] == list(b.stage_channels) and len(info) >= 3
    assert all(a["size"] >= c["size"] for a, c in zip(info, info[1:]))  # fine to coarse
    stages, tail = split_stages(b)
    b.trunk.eval()
    x = torch.rand(2, b.in_channels, b.input_size, b.input_size)
    with torch.no_grad():
        assert torch.allclose(torch.nn.Sequential(*stages, tail)(x), b.trunk(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_config_round_trip(arch):
    model = arch_model(arch).eval()
    x = batch(model)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"landmarks": (4, 10), "smile": (4, 1), "expression": (4, 7)}
    cfg = model.config
    rebuilt = build_model(cfg["backbone"], tasks(NAMES), input_size=cfg["input_size"], architecture=cfg.get("architecture", "hps"),
                          architecture_options=cfg.get("architecture_options"), **cfg["options"])
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    for k, v in rebuilt(x).items():
        assert torch.allclose(v, out[k], atol=1e-6), k
    d = model.describe()["parameters"]
    assert d["deployed"] == d["total"]  # no criteria here: every parameter is shared or a task's own


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "hps"])
def test_a_task_tower_only_serves_its_task(arch):
    """The shared representation is where tasks part: beyond it, task s's loss reaches no parameter of task t."""
    model = arch_model(arch).train()
    feats = model.forward_features(batch(model))
    ctx = StepContext.build(feats, model.shared_parameters(), "rep")
    out = model.forward_heads(ctx.head_inputs)
    for s in NAMES:
        for t in NAMES:
            params = [*model.towers[t].parameters(), *model.heads[t].parameters()]
            grads = torch.autograd.grad(out[s].float().pow(2).mean(), params, retain_graph=True, allow_unused=True)
            touched = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert touched == (s == t), (s, t)
    shared = {id(p) for p in model.shared_parameters()}
    own = {id(p) for t in NAMES for p in [*model.towers[t].parameters(), *model.heads[t].parameters()]}
    assert shared.isdisjoint(own) and len(shared) + len(own) == len(list(model.parameters()))


@pytest.mark.parametrize("mode", ["rep", "params"])
@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_strategies_train_every_parameter_in_both_modes(arch, mode):
    model = arch_model(arch).train()
    strategy = build_weighting("pcgrad", NAMES)
    x = batch(model)
    feats = model.forward_features(x)
    ctx = StepContext.build(feats, model.shared_parameters(), strategy.grad_mode(mode))
    out = model.forward_heads(ctx.head_inputs)
    losses = {n: out[n].float().pow(2).mean() for n in NAMES}
    strategy.backward(losses, ctx)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize("arch", ["mmoe", "cgc", "ple", "dselect-k"])
def test_gates_sum_to_one_per_sample(arch):
    model = arch_model(arch).eval()
    x = batch(model, 6)
    levels = model.all_gates(x) if arch == "ple" else [model.gates(model.forward_features(x))]
    assert len(levels) == (2 if arch == "ple" else 1)
    for gates in levels:
        assert set(NAMES) <= set(gates)
        for g in gates.values():
            assert g.shape[0] == 6 and (g >= 0).all()
            assert torch.allclose(g.sum(-1), torch.ones(6), atol=1e-5)


def test_dselect_k_selects_at_most_k_experts():
    model = arch_model("dselect-k", experts=8, k=2).eval()
    x = batch(model, 6)
    for n in NAMES:  # saturate the smooth-steps, as training drives them to (|z| >= gamma / 2)
        z = model.towers[n].gate.z
        with torch.no_grad():
            z.weight.mul_(1e-3)
            z.bias.copy_(torch.randn(z.bias.shape, generator=torch.Generator().manual_seed(1)).sign() * 5.0)
    gates = model.gates(model.forward_features(x))
    for g in gates.values():
        assert ((g > 0).sum(-1) <= 2).all() and ((g > 0).sum(-1) >= 1).all()
        assert torch.allclose(g.sum(-1), torch.ones(6), atol=1e-5)
    sel = model.towers["smile"].gate.selectors(model.forward_features(x)[0])  # (B, k, E): one-hot selectors
    assert torch.equal(sel.max(-1).values, torch.ones(6, 2))


def test_mtan_attention_masks_lie_in_0_1():
    model = arch_model("mtan").eval()
    maps = model.forward_features(batch(model))
    for n in NAMES:
        _, masks = model.attend(n, maps)
        assert len(masks) == len(maps)
        for a, p in zip(masks, maps):
            assert a.shape == p.shape and a.min() >= 0 and a.max() <= 1


def test_cross_stitch_at_identity_is_independent_networks():
    model = arch_model("cross-stitch", alpha_self=1.0).eval()
    x = batch(model)
    out = model(x)
    pre = model.preprocess(x)
    for t, n in enumerate(NAMES):
        h = pre
        for stage in model.columns[t]:  # column t alone, then its tail and head
            h = stage(h)
        alone = model.heads[n](model.towers[n].tail(h))
        assert torch.allclose(out[n], alone, atol=1e-6), n
    # and another column's weights do not reach it
    with torch.no_grad():
        for p in model.columns[1].parameters():
            p.add_(1.0)
    assert torch.allclose(model(x)["landmarks"], out["landmarks"], atol=1e-6)
    # the paper's default mixes: rows sum to 1, 0.9 on the diagonal
    a = arch_model("cross-stitch").stitches[0]
    assert torch.allclose(a.sum(1), torch.ones(3)) and torch.allclose(a.diagonal(), torch.full((3,), 0.9))


def test_ltb_samples_in_training_and_takes_the_argmax_tree_in_eval():
    model = arch_model("ltb")
    with torch.no_grad():
        model.towers["smile"].logits.copy_(torch.tensor([0.0, 5.0, 0.0]))
    assert model.tree()[-1][NAMES.index("smile")] == 1
    model.eval()
    x = batch(model)
    a, b = model(x), model(x)
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic in eval
    w = model.choice(model.towers["smile"].logits)
    assert torch.equal(w, torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_with_parity(tmp_path, arch):
    from facemtl.export.exporter import export_model
    from facemtl.export.parity import random_images

    model = arch_model(arch).eval()
    for fmt in ("onnx", "torchscript"):
        result = export_model(model, tasks(NAMES), tmp_path / f"m_{fmt}", fmt=fmt, dynamic_batch=True)
        assert result.parity.ok and max(result.parity.max_abs_diff.values()) < 1e-4
        assert result.meta.architecture == arch
    from facemtl.export.backends import load_backend

    backend = load_backend(result.metadata_path)
    images = random_images(backend.meta.input_sizes, 2, seed=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(images[0]))
    got = backend.run(images)
    for n in NAMES:
        assert np.abs(got[n] - ref[n].numpy()).max() < 1e-4


def test_ablation_plan_takes_architectures_as_an_axis():
    from facemtl.reports.ablation_plan import plan_ablation

    plan = plan_ablation(["landmarks", "pose"], subsets="landmarks+pose,landmarks,pose", weightings=["ew"],
                         architectures=["hps", "mtan", "mmoe"])
    names = [c.name for c in plan.configurations]
    assert names == ["landmarks", "pose", "landmarks+pose [ew]", "landmarks+pose [ew, mtan]", "landmarks+pose [ew, mmoe]"]
    assert [c.architecture for c in plan.configurations[:2]] == ["hps", "hps"]  # single-task runs: plain networks
    assert plan.configurations[3].run_name(0) == "landmarks+pose__ew__mtan__s0"
    assert plan.configurations[2].run_name(0) == "landmarks+pose__ew__s0"  # hps names as before
    with pytest.raises(UnknownNameError, match="cross-stitch"):
        plan_ablation(["landmarks", "pose"], architectures=["mtn"])
    with pytest.raises(ConfigError, match="use architecture 'hps'"):
        plan_ablation(["landmarks", "pose"], architectures=["mmoe"], backbone="gender-glasses")


def test_train_cli_refuses_an_unknown_architecture_before_any_data(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facemtl.cli.main import app

    monkeypatch.chdir(tmp_path)  # the recipe's own cache (data/synthfaces.h5) would be rendered here
    monkeypatch.delenv("FACEMTL_DATA", raising=False)
    res = CliRunner().invoke(app, ["train", "--architecture", "mtn", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "mtan" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "r").exists()
