"""MCFA's cascade: three-stage outputs, feature concatenation, separately exported stages, gating."""

from __future__ import annotations

import pytest
import torch

from facemtl.errors import ConfigError
from facemtl.models import CascadeModel

from ._helpers import fast_model, images, onnx_run, trace

CASCADE_TASKS = ["detection", "landmarks", "smile"]


def cascade(**over) -> CascadeModel:
    torch.manual_seed(0)
    model = fast_model("mcfa", CASCADE_TASKS, **over).eval()
    assert isinstance(model, CascadeModel)
    return model


def test_spec_and_feature_concatenation():
    model = cascade()
    assert model.input_spec == [(32, 3), (64, 3), (128, 3)]
    assert model.feature_dims == [256, 1024 + 256, 1024 + 1280]
    xs = images(model)
    with torch.no_grad():
        f_s, f_m, f_l = model.forward_features(*xs)
        own_m = model.trunks[1](model.preprocess(xs[1]))
    assert f_m.shape == (2, 1280) and f_l.shape == (2, 2304)
    torch.testing.assert_close(f_m, torch.cat([own_m, f_s], 1))
    torch.testing.assert_close(f_l[:, 1024:], f_m)
    assert model.describe()["input_spec"] == [[32, 3], [64, 3], [128, 3]]


def test_three_stage_outputs_per_task():
    model = cascade(feature_dims=(16, 32, 32))
    assert model.feature_dims == [16, 48, 80]
    xs = images(model)
    with torch.no_grad():
        outs = model.forward_heads(model.forward_features(*xs))
        final = model(*xs)
    for t, dim in zip(CASCADE_TASKS, (5, 10, 1)):
        assert isinstance(outs[t], list) and len(outs[t]) == 3
        assert all(o.shape == (2, dim) for o in outs[t])
        torch.testing.assert_close(outs[t][2], final[t])
        assert [model.last_linear(t, i).in_features for i in range(3)] == [16, 48, 80]
    with pytest.raises(ConfigError, match="3 image batches"):
        model.forward_features(xs[0])


def test_stages_compose_to_the_whole_and_export_separately():
    model = cascade()
    xs = images(model)
    run = images(model, batch=3, seed=1)
    with torch.no_grad():
        ref = model(*run)
        feats = model.forward_features(*run)
        s = model.stage(0)(run[0])
        m = model.stage(1)(run[1], s["feature"])
        l_out = model.stage(2)(run[2], m["feature"])
    torch.testing.assert_close(s["feature"], feats[0])
    torch.testing.assert_close(m["feature"], feats[1])
    assert "feature" not in l_out
    for t in CASCADE_TASKS:
        torch.testing.assert_close(l_out[t], ref[t])
    # export each stage on its own (ONNX) and check parity at another batch size
    with torch.no_grad():
        f_s = model.stage(0)(xs[0])["feature"]
        f_m = model.stage(1)(xs[1], f_s)["feature"]
    names = model.task_names
    o_s = onnx_run(model.stage(0), (xs[0],), (run[0],), names + ["feature"])
    o_m = onnx_run(model.stage(1), (xs[1], f_s), (run[1], s["feature"]), names + ["feature"])
    o_l = onnx_run(model.stage(2), (xs[2], f_m), (run[2], m["feature"]), names)
    assert not any(mod.training for mod in model.modules())  # exporting a stage kept eval mode
    assert abs(o_s[-1] - s["feature"].numpy()).max() < 1e-4
    assert abs(o_m[-1] - m["feature"].numpy()).max() < 1e-4
    for t, o in zip(names, o_l):
        assert abs(o - ref[t].numpy()).max() < 1e-4
    traced = trace(model.stage(1), (xs[1], f_s))
    torch.testing.assert_close(traced(run[1], s["feature"])["feature"], m["feature"])


def test_stage_module_shares_weights_and_checks_inputs():
    model = cascade()
    st = model.stage(2)
    assert st.trunk is model.trunks[2] and st.heads["smile"] is model.heads["smile"][2]
    with pytest.raises(ValueError, match="previous stage"):
        st(images(model)[2])
    with pytest.raises(ConfigError, match="stages 0..2"):
        model.stage(3)


def _count_calls(module: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    module.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    return seen


def test_cascade_infer_rejects_at_s_net():
    model = cascade()
    with torch.no_grad():
        model.last_linear("detection", 0).bias[0] = -100.0  # S_Net says "no face" to everything
    m_calls, l_calls = _count_calls(model.trunks[1]), _count_calls(model.trunks[2])
    res = model.cascade_infer(*images(model, batch=4))
    assert m_calls == [] and l_calls == []  # nothing reached M_Net or L_Net
    assert res.rejected_at.tolist() == [0, 0, 0, 0] and res.reached.tolist() == [0, 0, 0, 0]
    assert (res.face_prob < 0.5).all()
    assert res.outputs["landmarks"].shape == (4, 10) and torch.isfinite(res.outputs["landmarks"]).all()


def test_cascade_infer_passes_faces_to_l_net():
    model = cascade()
    with torch.no_grad():
        for i in range(3):
            model.last_linear("detection", i).bias[0] = 100.0
    xs = images(model, batch=3)
    res = model.cascade_infer(*xs)
    assert res.reached.tolist() == [2, 2, 2] and res.rejected_at.tolist() == [-1, -1, -1]
    with torch.no_grad():
        ref = model(*xs)
    for t in CASCADE_TASKS:
        torch.testing.assert_close(res.outputs[t], ref[t])


def test_cascade_infer_gates_per_sample():
    model = cascade()
    xs = images(model, batch=6)
    with torch.no_grad():
        p_s = torch.sigmoid(model.stage(0)(xs[0])["detection"][:, 0])
    threshold = float(p_s.median())
    keep = p_s >= threshold
    m_calls = _count_calls(model.trunks[1])
    res = model.cascade_infer(*xs, threshold=threshold)
    assert m_calls == [int(keep.sum())]
    assert (res.rejected_at[~keep] == 0).all() and (res.reached[keep] >= 1).all()
    torch.testing.assert_close(res.face_prob[~keep], p_s[~keep])


def test_cascade_infer_needs_a_detection_task():
    model = fast_model("mcfa", ["landmarks", "smile"])
    with pytest.raises(ConfigError, match="detection"):
        model.cascade_infer(*images(model))
