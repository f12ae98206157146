"""Parity of exported models with PyTorch: every recipe's network, both formats, random weights.

Each export already fails on a parity miss (``ParityError``); these tests also rerun the written
files through the public backends (ONNX Runtime / TorchScript) on a fresh batch and compare with
PyTorch, so a model that passes export's own check but loads wrongly would still be caught.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemtl.export.backends import load_backend
from facemtl.export.exporter import export_model
from facemtl.export.parity import random_images

from ._helpers import RECIPES, recipe_model


def _torch_outputs(model, images):
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(*[torch.from_numpy(x) for x in images]).items()}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_network_exports_with_parity(tmp_path, recipe, fmt):
    model, tasks, cfg = recipe_model(recipe)
    result = export_model(model, tasks, tmp_path / "model", fmt=fmt, cfg=cfg, dynamic_batch=True)
    rep = result.parity
    assert rep.ok and rep.batch == 3
    expected = set(model.task_names)
    if len(model.input_spec) > 1:  # cascade: every stage, and the three files chained
        assert {k.split("/", 1)[1] for k in rep.max_abs_diff} >= expected
        assert {k.split("/")[0] for k in rep.max_abs_diff} == {"S_Net", "M_Net", "L_Net", "chain"}
    else:
        assert set(rep.max_abs_diff) == expected
    assert max(rep.max_abs_diff.values()) < 1e-4
    # the written files, through the public backend, on another batch size
    backend = load_backend(result.metadata_path)
    images = random_images(backend.meta.input_sizes, 2, seed=5)
    got, ref = backend.run(images), _torch_outputs(model, images)
    assert backend.meta.task_names == model.task_names and backend.meta.config_digest == cfg.digest()
    for name in model.task_names:
        scale = max(1.0, float(np.abs(ref[name]).max()))
        assert np.abs(got[name] - ref[name]).max() <= 1e-4 * scale, name


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("recipe", ["default", "tcdcn", "mcfa"])
def test_half_precision_export(tmp_path, recipe, fmt):
    model, tasks, cfg = recipe_model(recipe)
    result = export_model(model, tasks, tmp_path / "half", fmt=fmt, cfg=cfg, half=True, dynamic_batch=True)
    assert result.meta.precision == "float16" and result.parity.tolerance == 2e-2
    assert result.parity.ok
    assert 0 < max(result.parity.max_abs_diff.values()) < 2e-2  # float16 rounding is visible, and small
    backend = load_backend(result.metadata_path)
    images = random_images(backend.meta.input_sizes, 2, seed=6)
    got, ref = backend.run(images), _torch_outputs(model, images)
    for name in model.task_names:
        assert got[name].dtype == np.float32
        assert np.abs(got[name] - ref[name]).max() <= 2e-2 * max(1.0, float(np.abs(ref[name]).max()))


def test_static_batch_export_runs_any_number_of_faces(tmp_path):
    model, tasks, cfg = recipe_model("default")
    result = export_model(model, tasks, tmp_path / "static.onnx", cfg=cfg)  # batch 1, fixed
    import onnxruntime as ort

    shape = ort.InferenceSession(str(result.files[0])).get_inputs()[0].shape
    assert shape == [1, 3, 64, 64] and result.meta.batch_size == 1 and not result.meta.dynamic_batch
    backend = load_backend(result.metadata_path)
    images = random_images([64], 3, seed=2)  # the backend feeds one at a time
    got, ref = backend.run(images), _torch_outputs(model, images)
    assert np.abs(got["landmarks"] - ref["landmarks"]).max() < 1e-4


def test_opset_choice_is_honoured(tmp_path):
    import onnx

    model, tasks, cfg = recipe_model("tcdcn")
    result = export_model(model, tasks, tmp_path / "m.onnx", cfg=cfg, opset=13)
    proto = onnx.load(str(result.files[0]))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert [o.name for o in proto.graph.output] == model.task_names
    assert result.meta.opset == 13
