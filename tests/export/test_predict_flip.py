"""``facemtl predict --flip-test``: each face crop also runs mirrored, and each output with a mirror
rule is averaged with its mirrored pass mapped back, exactly as ``facemtl evaluate --flip-test``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.engine.checkpoint import save_checkpoint
from facemtl.export.backends import TorchBackend
from facemtl.reports._data import _flip_averaged
from facemtl.tasks.registry import OUTPUTS, unflip_detection, unflip_landmarks, unflip_pose

from ._helpers import INFO, recipe_model

runner = CliRunner()


def _model():
    """The default recipe's network with every weight jittered (its zero-initialised heads would
    otherwise give the same output for every image, mirrored or not)."""
    model, tasks, cfg = recipe_model("default")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model, tasks, cfg


def test_export_side_mirror_rules_are_the_tasks_own():
    """The numpy rules ``predict`` applies are the ones ``Task.unflip`` applies to torch outputs."""
    _, tasks, _ = recipe_model("default")
    g = np.random.default_rng(0)
    for t in tasks:
        kind, dim, _ = t.export_output()
        y = g.normal(size=(4, dim)).astype(np.float32)
        rule = OUTPUTS.get(kind).unflip
        got = t.unflip(torch.from_numpy(y))
        if rule is None:
            assert got is None, t.name
            continue
        assert np.allclose(rule(y), got.numpy(), atol=1e-6), t.name
        assert np.allclose(rule(rule(y)), y, atol=1e-6), t.name  # mirroring twice changes nothing
    y = np.array([[0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.35, 0.8, 0.62, 0.8]])
    assert np.allclose(unflip_landmarks(y), [[0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.38, 0.8, 0.65, 0.8]])
    assert np.allclose(unflip_detection(np.array([[2.0, 0.1, 0.2, 0.3, 0.4]])), [[2.0, 0.6, 0.2, 0.3, 0.4]])
    assert np.allclose(unflip_pose(np.array([[0, 1, 2, 3, 4, 0.5]], dtype=float)), [[4, 3, 2, 1, 0, -0.5]])
    assert OUTPUTS.get("identity").unflip is None  # embeddings: the plain pass only


def test_backend_flip_test_matches_evaluate():
    model, tasks, cfg = _model()
    backend = TorchBackend(model, tasks, cfg)
    x = torch.rand(5, 3, cfg.model.input_size, cfg.model.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _flip_averaged(model, tasks, [x], model.forward_heads(model.forward_features(x)))
    plain = backend.run([x.numpy()])
    got = backend.run([x.numpy()], flip_test=True)
    for t in tasks:
        assert np.allclose(got[t.name], want[t.name].numpy(), atol=1e-5), t.name
        assert not np.allclose(got[t.name], plain[t.name], atol=1e-6), t.name


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    model, _, cfg = _model()
    save_checkpoint(run / "best.pt", {"config": cfg.to_dict(), "data_info": INFO.to_dict(), "model": model.state_dict()})
    return run


def _face(output: str) -> dict:
    return next(json.loads(line) for line in output.splitlines() if line.startswith("{"))["faces"][0]


def test_cli_flip_test_is_mirror_equivariant_on_aligned_crops(run_dir, tmp_path):
    """Flip-tested landmarks of a mirrored crop are the mirror of those of the crop (any weights)."""
    rgb = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).save(tmp_path / "b.png")
    faces = {}
    for name in ("a", "b"):
        for flag in ([], ["--flip-test"]):
            res = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / f"{name}.png"), "--aligned", "--json", *flag])
            assert res.exit_code == 0, res.output
            faces[name, bool(flag)] = _face(res.output)
    a, b = faces["a", True], faces["b", True]
    pairs = {"left_eye": "right_eye", "right_eye": "left_eye", "nose": "nose", "left_mouth": "right_mouth", "right_mouth": "left_mouth"}
    for p, q in pairs.items():
        assert b["landmarks"][q][0] == pytest.approx(64 - a["landmarks"][p][0], abs=0.05), p
        assert b["landmarks"][q][1] == pytest.approx(a["landmarks"][p][1], abs=0.05), p
    assert b["pose"]["yaw"] == pytest.approx(-a["pose"]["yaw"], abs=0.05)
    assert a["score"] == pytest.approx(b["score"], abs=1e-3)
    assert a["landmarks"] != faces["a", False]["landmarks"]  # the plain pass is not mirror-equivariant
