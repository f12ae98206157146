"""``facemtl evaluate RUN --dataset lfw-subset``: the real-face check through the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from reports._fixtures import ALL_TASKS, trained_run  # tests/ is on sys.path
from typer.testing import CliRunner

from facemtl.cli.main import app

pytest.importorskip("skimage")
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_evaluate_on_lfw_subset(run, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path / "data"))
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", str(run), "--dataset", "lfw-subset", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert "Traceback" not in res.output
    assert (tmp_path / "data" / "lfw-subset.h5").is_file()  # prepared on first use, saying so
    assert "preparing it from scikit-image's bundled LFW subset" in text
    assert "real-face check (LFW-subset, 200 real crops: 100 faces, 100 non-faces)" in text
    assert "face / non-face accuracy" in text and "ROC AUC" in text
    assert ("skipped landmarks, attributes, identity, expression, pose, smile: LFW-subset has no labels for them "
            "(it labels face / non-face only).") in text

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data_source"] == "lfw-subset" and doc["samples"] == 200 and set(doc["tasks"]) == {"detection"}
    det = doc["tasks"]["detection"]
    assert det["info"] == {"faces": 100, "non_faces": 100}
    assert set(doc["skipped"]) == set(ALL_TASKS) - {"detection"}
    assert all("LFW-subset has no" in why for why in doc["skipped"].values())
    assert any("no scenes" in n for n in det["notes"]) and any("LFW-subset" in n for n in det["notes"])
    assert "lfw_subset" in doc["definitions"]
    assert f"face / non-face accuracy {det['metrics']['accuracy']:.3f}" in text

    # the numbers are the model's face scores on the 200 crops, thresholded at 0.5
    import torch
    from sklearn.metrics import roc_auc_score

    from facemtl.data.cache import FaceCache
    from facemtl.engine.checkpoint import build_from_checkpoint, load_checkpoint
    from facemtl.reports._data import LabelAdapter, predict

    model, tasks, _, info = build_from_checkpoint(load_checkpoint(run))
    cache = FaceCache(tmp_path / "data" / "lfw-subset.h5")
    d = [t for t in tasks if t.name == "detection"]
    c = predict(model, d, cache, "test", torch.device("cpu"), LabelAdapter.build(info.attribute_names, cache))["detection"]
    face = c["face"] == 1
    assert face.sum() == 100 and len(face) == 200
    m = det["metrics"]
    assert m["accuracy"] == pytest.approx(((c["score"] >= 0.5) == face).mean(), abs=1e-6)
    assert m["face_recall"] == pytest.approx((c["score"][face] >= 0.5).mean(), abs=1e-6)
    assert m["non_face_recall"] == pytest.approx((c["score"][~face] < 0.5).mean(), abs=1e-6)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(face, c["score"]), abs=1e-6)
    assert np.isfinite(list(m.values())).all()

    # second use: the cache is reused, not rewritten
    before = (tmp_path / "data" / "lfw-subset.h5").stat().st_mtime_ns
    res = runner.invoke(app, ["evaluate", str(run), "--dataset", "lfw-subset", "--device", "cpu", "--out",
                              str(tmp_path / "ev2"), "--no-scenes", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data" / "lfw-subset.h5").stat().st_mtime_ns == before


def test_lfw_subset_needs_a_detection_task(base, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path))
    nodet = trained_run(base, ("landmarks", "smile"), name="run-nodet")
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", str(nodet), "--dataset", "lfw-subset", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 1, res.output
    text = flat(res.output)
    assert text.startswith("error:") and "needs a `detection` task" in text and "landmarks, smile" in text
    assert "Traceback" not in res.output and not out.exists()
    assert list(tmp_path.iterdir()) == []  # refused before the cache is prepared


def test_lfw_subset_without_scikit_image(run, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path))
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now raises ImportError
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", str(run), "--dataset", "lfw-subset", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 1, res.output
    text = flat(res.output)
    assert "error:" in text and "scikit-image is not installed" in text and "pip install scikit-image" in text
    assert "facemtl[real]" in text and str(tmp_path / "lfw-subset.h5") in text
    assert "Traceback" not in res.output and not out.exists()
    assert list(tmp_path.iterdir()) == []  # no cache and no partial file
