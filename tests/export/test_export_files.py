"""What export writes (metadata, cascade stage files), that a failed export writes nothing, and
clear errors for damaged or mismatched models, metadata and checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest

from facemtl import __version__
from facemtl.errors import CheckpointError, ConfigError, DataFormatError, MissingFileError
from facemtl.export.backends import TorchBackend, load_backend
from facemtl.export.exporter import export_checkpoint, export_model
from facemtl.export.metadata import read_metadata
from facemtl.export.parity import ParityError, random_images

from ._helpers import recipe_model, write_checkpoint


def test_metadata_describes_the_model(tmp_path):
    model, tasks, cfg = recipe_model("default")
    result = export_model(model, tasks, tmp_path / "m.onnx", cfg=cfg, dynamic_batch=True)
    assert result.metadata_path == tmp_path / "m.onnx.json"
    d = json.loads(result.metadata_path.read_text())
    assert d["format"] == "facemtl-model" and d["facemtl_version"] == __version__
    assert d["config_digest"] == cfg.digest() and d["recipe"] == "default"
    assert d["outputs"] == ["detection", "landmarks", "attributes", "expression", "pose"]
    assert d["inputs"] == [{"name": "image", "shape": ["batch", 3, 64, 64], "dtype": "float32", "layout": "NCHW",
                            "colour": "RGB", "range": [0.0, 1.0]}]
    pre = d["preprocessing"]
    assert pre["inside_model"] and not pre["grey"] and pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    kinds = {t["name"]: t for t in d["tasks"]}
    assert kinds["attributes"]["labels"] == list(tasks[2].names)
    assert kinds["expression"]["labels"][3] == "Happy" and kinds["pose"]["dim"] == 6
    assert d["landmarks"]["order"] == ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
    assert "normalised to [0, 1] of the input crop" in d["landmarks"]["frame"]
    assert d["parity"]["passed"] and set(d["parity"]["max_abs_diff"]) == set(d["outputs"])
    assert read_metadata(result.metadata_path).input_sizes == [64]


def test_grey_networks_say_so(tmp_path):
    model, tasks, cfg = recipe_model("tcdcn")
    meta = export_model(model, tasks, tmp_path / "t.onnx", cfg=cfg).meta
    assert meta.grey and meta.mean == [0.5] and meta.input_sizes == [40]
    assert [t.labels for t in meta.tasks if t.kind == "attributes"] == [["Male"], ["Eyeglasses"], ["Smiling"]]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cascade_exports_three_chained_stages(tmp_path, fmt):
    model, tasks, cfg = recipe_model("mcfa")
    result = export_model(model, tasks, tmp_path / "mcfa", fmt=fmt, cfg=cfg)
    suffix = ".onnx" if fmt == "onnx" else ".torchscript"
    assert [f.name for f in result.files] == [f"mcfa.{s}{suffix}" for s in ("s_net", "m_net", "l_net")]
    casc = json.loads(result.metadata_path.read_text())["cascade"]
    assert [s["size"] for s in casc["stages"]] == [32, 64, 128]
    assert [len(s["inputs"]) for s in casc["stages"]] == [1, 2, 2]
    assert casc["stages"][1]["inputs"][1] == {"name": "prev_feature", "shape": [1, 256], "dtype": "float32"}
    assert casc["stages"][0]["outputs"][-1] == "feature" and "feature" not in casc["stages"][2]["outputs"]
    assert casc["gate_task"] == "detection" and "prev_feature" in casc["chain"]


def test_parity_failure_writes_nothing_and_keeps_old_files(tmp_path):
    model, tasks, cfg = recipe_model("default")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the user's previous model")
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        export_model(model, tasks, target, cfg=cfg, tolerance=-1.0)
    assert target.read_bytes() == b"the user's previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary or metadata file


def test_export_refuses_bad_options(tmp_path):
    model, tasks, _cfg = recipe_model("default")
    with pytest.raises(ConfigError, match="onnx and torchscript"):
        export_model(model, tasks, tmp_path / "m", fmt="tflite")
    with pytest.raises(ConfigError, match="opset"):
        export_model(model, tasks, tmp_path / "m", opset=3)
    assert list(tmp_path.iterdir()) == []


def test_export_from_checkpoint_and_its_default_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_checkpoint(run / "best.pt")
    result = export_checkpoint(run, fmt="torchscript")
    assert result.files == [run / "export" / "model.torchscript"]
    assert (run / "export" / "model.torchscript.json").is_file()
    # the checkpoint backend and the exported one agree
    ckpt, exported = load_backend(run), load_backend(result.files[0])
    assert isinstance(ckpt, TorchBackend) and exported.kind == "torchscript"
    x = random_images([64], 2, seed=3)
    a, b = ckpt.run(x), exported.run(x)
    assert max(abs(a[k] - b[k]).max() for k in a) < 1e-4


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        export_checkpoint(bad)


# -- loading exported models: bad input ------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    out = {}
    for recipe in ("default", "tcdcn"):
        model, tasks, cfg = recipe_model(recipe)
        for fmt in ("onnx", "torchscript"):
            out[recipe, fmt] = export_model(model, tasks, folder / f"{recipe}", fmt=fmt, cfg=cfg).files[0]
    return out


def _copy(src, dst_dir):
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".json"), dst.with_name(dst.name + ".json"))
    return dst


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_corrupt_model_file(tmp_path, exported, fmt):
    model = _copy(exported["default", fmt], tmp_path)
    model.write_bytes(model.read_bytes()[:300])
    with pytest.raises(DataFormatError, match="damaged"):
        load_backend(model)


def test_corrupt_or_missing_metadata(tmp_path, exported):
    model = _copy(exported["default", "onnx"], tmp_path)
    meta = model.with_name(model.name + ".json")
    meta.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        load_backend(model)
    meta.write_text(json.dumps({"format": "facemtl-model", "metadata_version": 1}))
    with pytest.raises(DataFormatError, match="lacks or garbles"):
        load_backend(meta)
    meta.unlink()
    with pytest.raises(MissingFileError, match="no metadata file"):
        load_backend(model)
    with pytest.raises(MissingFileError, match="does not exist"):
        load_backend(tmp_path / "nothing.pt")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_model_whose_input_size_disagrees_with_its_metadata(tmp_path, exported, fmt):
    model = _copy(exported["tcdcn", fmt], tmp_path)  # metadata: 40 px, 5 tasks
    shutil.copy(exported["default", fmt], model)    # model: 64 px
    with pytest.raises(DataFormatError, match="do not belong together|export the model again"):
        load_backend(model)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cascade_predicts_from_exported_stages(tmp_path, fmt):
    """The three exported stage files drive the face finder (gating included) and aligned crops."""
    import numpy as np

    from facemtl.data.synth import SynthConfig, render_scene
    from facemtl.export.faces import FinderConfig
    from facemtl.export.predict import Predictor

    model, tasks, cfg = recipe_model("mcfa")
    result = export_model(model, tasks, tmp_path / "mcfa", fmt=fmt, cfg=cfg, dynamic_batch=True)
    exported, reference = load_backend(tmp_path / f"mcfa.{fmt}"), TorchBackend(model, tasks, cfg)
    image = render_scene(3, SynthConfig(seed=1, identities=5), 96)["image"]
    finder = FinderConfig(threshold=0.01, cascade_threshold=0.01, min_face=40, stride=0.5, scale_step=1.6)
    a, b = Predictor(exported, finder).predict(image), Predictor(reference, finder).predict(image)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose([f["box"] for f in a], [f["box"] for f in b], atol=0.05)
    aligned = Predictor(exported).predict(image, aligned=True)[0]
    assert set(aligned) >= {"box", "score", "landmarks", "attributes"} and len(aligned["attributes"]) == 9
    assert result.meta.is_cascade
