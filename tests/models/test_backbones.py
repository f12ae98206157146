"""Every registered backbone through the same checks: shapes, the engine's two halves, gradients,
TorchScript and ONNX parity, size and name errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.models import BACKBONES, CascadeModel, build_model

from ._helpers import FAST, TASKS, fast_model, images, onnx_run, tasks, trace

NAMES = BACKBONES.names()
OUT_DIMS = {"landmarks": 10, "smile": 1, "expression": 7}


def test_every_backbone_has_a_fast_config():
    assert sorted(FAST) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_halves(name):
    torch.manual_seed(0)
    model = fast_model(name).eval()
    xs = images(model)
    with torch.no_grad():
        out = model(*xs)
        feats = model.forward_features(*xs)
        split = model.forward_heads(feats)
    assert list(out) == TASKS == model.task_names
    for t in TASKS:
        assert out[t].shape == (2, OUT_DIMS[t])
        last = split[t][-1] if isinstance(model, CascadeModel) else split[t]
        torch.testing.assert_close(last, out[t])
    n = len(model.feature_dims)
    assert [f.shape for f in feats[:n]] == [(2, d) for d in model.feature_dims]
    # after the vectors: the feature maps that spatial heads (landmark heatmaps) read, if any
    assert [f.shape[:2] for f in feats[n:]] == [(2, c) for c in getattr(model, "map_channels", ())]
    assert all(c == 3 for _, c in model.input_spec)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_trunk_through_detached_features(name):
    """The engine's "rep" mode: heads on detached copies, then one encoder backward."""
    torch.manual_seed(0)
    model = fast_model(name).train()
    feats = model.forward_features(*images(model))
    leaves = [f.detach().requires_grad_(True) for f in feats]
    outs = model.forward_heads(leaves)
    loss = sum((o if torch.is_tensor(o) else torch.stack([x.sum() for x in o])).float().pow(2).sum() for o in outs.values())
    loss.backward()
    assert all(leaf.grad is not None for leaf in leaves)
    torch.autograd.backward(feats, [leaf.grad for leaf in leaves])
    shared = model.shared_parameters()
    assert shared and all(p.grad is not None for p in shared)
    assert sum(float(p.grad.abs().sum()) for p in shared) > 0
    head_ids = {id(p) for h in model.heads.values() for p in h.parameters()}
    assert not head_ids & {id(p) for p in shared}


@pytest.mark.parametrize("name", NAMES)
def test_trace_and_onnx_parity(name):
    torch.manual_seed(0)
    model = fast_model(name).eval()
    xs = images(model, batch=2)
    run = images(model, batch=3, seed=1)  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        ref = model(*run)
        traced = trace(model, xs)
        got = traced(*run)
    for t in TASKS:
        torch.testing.assert_close(got[t], ref[t], atol=1e-4, rtol=1e-4)
    outs = onnx_run(model, xs, run, model.task_names)
    for t, o in zip(model.task_names, outs):
        assert abs(o - ref[t].numpy()).max() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_trunks_script(name):
    model = fast_model(name)
    trunks = list(model.trunks) if isinstance(model, CascadeModel) else [model.trunk]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trunk in trunks:
            torch.jit.script(trunk)
        torch.jit.script(model.preprocess)


@pytest.mark.parametrize(
    "name,size",
    [("resnet18", 16), ("resnet50", 8), ("tcdcn", 64), ("gender-glasses", 64), ("small", 16), ("vgg16", 16),
     ("vgg16", 300), ("famo9", 4), ("mcfa", 100), ("mcfa", 130)],
)
def test_bad_input_size_says_what_works(name, size):
    with pytest.raises(ConfigError, match=f"cannot take {size}x{size}"):
        build_model(name, tasks(), input_size=size)


def test_good_non_default_sizes():
    assert fast_model("vgg16", input_size=56).input_spec == [(56, 3)]
    assert fast_model("small", input_size=112).input_spec == [(112, 3)]
    assert fast_model("mcfa", input_size=224).input_spec == [(56, 3), (112, 3), (224, 3)]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UnknownNameError, match="resnet18") as e:
        build_model("alexnet", tasks())
    assert set(e.value.valid) == set(NAMES)


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ConfigError, match="options are: width"):
        build_model("small", tasks(), depth=3)
    with pytest.raises(ConfigError, match="none"):
        build_model("resnet18", tasks(), width=2)


def test_parameter_counts_match_the_papers():
    two = tasks(["gender", "glasses"])
    seed004 = build_model("gender-glasses", two).describe()["parameters"]
    assert seed004["shared"] == 320  # one 3x3x32 conv on grey: all the paper's two networks share
    assert abs(seed004["total"] - 1_524_740) / 1_524_740 < 0.01
    tcdcn = build_model("tcdcn", tasks(["landmarks", "smile"])).describe()["parameters"]
    assert tcdcn["shared"] == 89_580
    assert tcdcn["heads"] == {"landmarks": 1010, "smile": 101}
    assert 5.1e6 < build_model("famo9", two).describe()["parameters"]["shared"] < 5.3e6
    assert 0.5e6 < build_model("small", two).describe()["parameters"]["shared"] < 2.5e6  # 2,213,280


def test_describe_and_config():
    model = build_model("small", tasks(["landmarks", "identity"]), width=8)
    d = model.describe()
    assert d["backbone"] == "small" and d["input_spec"] == [[64, 3]] and d["feature_dims"] == [64]
    p = d["parameters"]
    assert p["criteria"]["identity"] > 0 and "landmarks" not in p["criteria"]
    assert p["total"] == p["shared"] + sum(p["heads"].values()) + sum(p["criteria"].values())
    assert model.config == {"backbone": "small", "input_size": 64, "options": {"width": 8}}
    assert model.criterion("landmarks") is None and model.criterion("identity") is model.criteria["identity"]
    rebuilt = build_model(model.config["backbone"], tasks(["landmarks", "identity"]), input_size=model.config["input_size"], **model.config["options"])
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_tcdcn_activation_option():
    assert isinstance(build_model("tcdcn", tasks(), activation="tanh").trunk[1], torch.nn.Tanh)
    with pytest.raises(ConfigError, match="activation"):
        build_model("tcdcn", tasks(), activation="relu")


def test_seed004_branches_are_per_task():
    model = build_model("gender-glasses", tasks(["gender", "glasses"]))
    assert build_model("seed004", tasks(["gender", "glasses"])).describe()["parameters"] == model.describe()["parameters"]  # its former name
    assert model.feature_dims == [32 * 25 * 25]
    assert model.last_linear("gender").out_features == 1
    b = model.heads["gender"].branch
    assert all(p is not q for p, q in zip(b.parameters(), model.heads["glasses"].branch.parameters()))


def test_tasks_named_with_colons_export():
    model = fast_model("small", ["attr:Male", "attr:Eyeglasses"]).eval()
    xs = images(model)
    with torch.no_grad():
        ref = model(*xs)
    outs = onnx_run(model, xs, xs, model.task_names)
    assert abs(outs[0] - ref["attr:Male"].numpy()).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", [("vgg16", {"width": 1.0}), ("resnet50", {"input_size": 224}), ("mcfa", {})])
def test_full_size_export_parity(name, opts):
    model = build_model(name, tasks(), **opts).eval()
    xs = images(model, batch=1)
    with torch.no_grad():
        ref = model(*xs)
    outs = onnx_run(model, xs, xs, model.task_names)
    for t, o in zip(model.task_names, outs):
        assert abs(o - ref[t].numpy()).max() < 1e-4


@pytest.mark.parametrize("size", [80, 112])
def test_small_exports_at_sizes_that_are_not_multiples_of_64(size):
    """small keeps a <= 4x4 layout; at 112 px its 7x7 map must still pool in an exportable way."""
    torch.manual_seed(0)
    model = fast_model("small", input_size=size).eval()
    xs = images(model)
    with torch.no_grad():
        ref = model(*xs)
    outs = onnx_run(model, xs, xs, model.task_names)
    for t, o in zip(model.task_names, outs):
        assert abs(o - ref[t].numpy()).max() < 1e-4
