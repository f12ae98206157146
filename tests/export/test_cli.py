"""``facemtl export`` and ``facemtl predict`` from the command line (random-weight models: these
check the plumbing, outputs and error handling; detection quality is in test_predict_scenes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.data.synth import SynthConfig, render_sample, render_scene

from ._helpers import write_checkpoint

runner = CliRunner()
FAST = ["--min-face", "40", "--stride", "0.5", "--scale-step", "1.6"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    write_checkpoint(run / "best.pt")
    return run


@pytest.fixture(scope="module")
def onnx_model(run_dir) -> Path:
    res = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--dynamic-batch"])
    assert res.exit_code == 0, res.output
    return run_dir / "export" / "model.onnx"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    cfg = SynthConfig(seed=5, identities=10, sizes=(64,))
    for i in range(2):
        Image.fromarray(render_scene(i, cfg, 96)["image"]).save(folder / f"scene{i}.png")
    Image.fromarray(render_sample(0, cfg)["images"][64]).save(folder / "crop.jpg")
    return folder


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_export_prints_parity_and_writes_files(run_dir, onnx_model):
    res = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "torchscript", "--out", str(run_dir / "ts" / "m")])
    assert res.exit_code == 0, res.output
    assert "max |diff|" in res.output and "landmarks" in res.output and "ok" in res.output
    assert (run_dir / "ts" / "m.torchscript").is_file() and (run_dir / "ts" / "m.torchscript.json").is_file()
    assert onnx_model.is_file()


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "onnx and torchscript"),
    (["--tolerance", "-1"], "disagrees with PyTorch"),
])
def test_export_errors_are_one_line(run_dir, tmp_path, args, message):
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "x.onnx"), *args])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not list(tmp_path.iterdir())


def test_export_of_a_missing_run(tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_predict_json_lines_from_onnx(onnx_model, photos, tmp_path):
    res = runner.invoke(app, ["predict", str(onnx_model), str(photos / "scene0.png"), str(photos / "scene1.png"),
                              "--json", "--threshold", "0.01", "--draw", str(tmp_path / "drawn"), *FAST])
    assert res.exit_code == 0, res.output
    lines = _lines(res.output)
    assert [Path(r["image"]).name for r in lines] == ["scene0.png", "scene1.png"]
    face = lines[0]["faces"][0]
    assert {"box", "score", "landmarks", "attributes", "expression", "pose"} <= set(face)
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "left_mouth", "right_mouth"}
    assert face["expression"]["label"] in face["expression"]["probabilities"]
    assert "yaw" in face["pose"] and 0 <= face["score"] <= 1
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["scene0.png", "scene1.png"]
    assert Image.open(tmp_path / "drawn" / "scene0.png").size == (96, 96)


def test_predict_aligned_table_from_checkpoint_and_onnx_agree(run_dir, onnx_model, photos):
    res = runner.invoke(app, ["predict", str(run_dir), str(photos / "crop.jpg"), "--aligned"])
    assert res.exit_code == 0, res.output
    assert "crop.jpg" in res.output and "expression" in res.output
    a = _lines(runner.invoke(app, ["predict", str(run_dir), str(photos / "crop.jpg"), "--aligned", "--json"]).output)
    b = _lines(runner.invoke(app, ["predict", str(onnx_model), str(photos / "crop.jpg"), "--aligned", "--json"]).output)
    fa, fb = a[0]["faces"][0], b[0]["faces"][0]
    assert np.allclose(fa["box"], fb["box"], atol=0.05) and fa["expression"]["label"] == fb["expression"]["label"]
    assert np.allclose(list(fa["attributes"].values()), list(fb["attributes"].values()), atol=1e-3)


def test_bad_image_in_a_folder_is_skipped(onnx_model, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not even looked at")
    Image.open(photos / "crop.jpg").save(folder / "good.png")
    res = runner.invoke(app, ["predict", str(onnx_model), str(folder), "--aligned", "--json"])
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "broken.jpg" in res.output
    assert [Path(r["image"]).name for r in _lines(res.output)] == ["good.png"]


def test_a_named_image_that_does_not_decode_fails(onnx_model, photos, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    res = runner.invoke(app, ["predict", str(onnx_model), str(photos / "crop.jpg"), str(bad), "--aligned", "--json"])
    assert res.exit_code == 1
    assert len(_lines(res.output)) == 1 and "could not be used: " in res.output and "bad.png (does not decode)" in res.output


@pytest.mark.parametrize("make, message", [
    (lambda d: d, "holds no images"),
    (lambda d: d / "missing.png", "does not exist"),
])
def test_predict_input_errors(onnx_model, tmp_path, make, message):
    res = runner.invoke(app, ["predict", str(onnx_model), str(make(tmp_path))])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output


def test_predict_needs_aligned_without_a_detection_head(tmp_path, photos):
    write_checkpoint(tmp_path / "tcdcn.pt", recipe="tcdcn")
    res = runner.invoke(app, ["predict", str(tmp_path / "tcdcn.pt"), str(photos / "scene0.png")])
    assert res.exit_code == 1 and "--aligned" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "tcdcn.pt"), str(photos / "crop.jpg"), "--aligned", "--json"])
    face = _lines(res.output)[0]["faces"][0]
    assert face["score"] is None and set(face["attributes"]) == {"Male", "Eyeglasses", "Smiling"}


def test_predict_with_a_corrupt_model(tmp_path, onnx_model, photos):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00" * 64)
    bad.with_name("model.onnx.json").write_text(onnx_model.with_name("model.onnx.json").read_text())
    res = runner.invoke(app, ["predict", str(bad), str(photos / "crop.jpg"), "--aligned"])
    assert res.exit_code == 1 and "cannot be loaded" in res.output
