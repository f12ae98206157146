"""``facemtl.reports.evaluate``: files per task, metrics wired to the right arrays (checked against
scikit-learn and hand computations on the same predictions), bad inputs fail before writing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from facemtl.errors import CheckpointError, ConfigError, MissingFileError, UnknownNameError
from facemtl.reports._data import LabelAdapter, predict, resolve_dataset
from facemtl.reports.evaluate import evaluate

from ._fixtures import ALL_TASKS, check_png, write_cache_without


@pytest.fixture(scope="module")
def collected(run, cache):
    """The arrays evaluate() computed its metrics from, collected again the same way."""
    from facemtl.data.cache import FaceCache
    from facemtl.engine.checkpoint import load_model

    model, tasks, _, info = load_model(run)
    c = FaceCache(cache)
    return predict(model, tasks, c, "test", torch.device("cpu"), LabelAdapter.build(info.attribute_names, c))


def test_report_files_and_every_task(evaluated):
    out = evaluated.out_dir
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["tasks"]) == set(ALL_TASKS) and doc["skipped"] == {}
    assert doc["split"] == "test" and doc["samples"] > 0
    for name, entry in doc["tasks"].items():
        assert entry["metrics"], name
        for f in entry["files"]:
            assert (out / f).exists(), f
            if f.endswith(".png"):
                check_png(out / f)
    lm = doc["tasks"]["landmarks"]["metrics"]
    assert {"nme", "failure_rate", "ced_auc"} <= set(lm)
    assert {"verification_auc", "eer", "tar_at_far_0.001", "tar_at_far_0.01"} <= set(doc["tasks"]["identity"]["metrics"])
    assert {"roc_auc", "average_precision", "box_iou", "scene_detection_rate", "scene_fppi"} <= set(doc["tasks"]["detection"]["metrics"])
    assert doc["tasks"]["attributes"]["baseline"]["balanced_accuracy"] <= 1.0
    assert doc["tasks"]["landmarks"]["baseline"]["nme"] > 0  # the mean training shape
    assert (out / "summary.md").read_text().count("## ") >= len(ALL_TASKS)
    assert any(f.startswith("curves_") for f in doc["curves"])
    assert not list(out.parent.glob(".eval.partial-*"))  # the staging folder is gone


def test_attribute_table_equals_sklearn(evaluated, collected):
    table = pd.read_csv(evaluated.out_dir / "attributes.csv", index_col=0)
    prob, target = collected["attributes"]["prob"], collected["attributes"]["target"]
    names = [n for n in table.index if n != "mean"]
    accs, baccs = [], []
    for k, name in enumerate(names):
        known = target[:, k] >= 0
        y, p = target[known, k], (prob[known, k] >= 0.5).astype(int)
        if len(np.unique(y)) < 2:
            continue  # sklearn warns on a single class; the metric module's own tests cover it
        row = table.loc[name]
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
        assert row["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
        assert row["f1"] == pytest.approx(skm.f1_score(y, p, zero_division=0))
        assert row["majority_accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))
        accs.append(row["accuracy"])
        baccs.append(row["balanced_accuracy"])
    assert len(accs) >= 3


def test_landmarks_nme_by_hand(evaluated, collected):
    c = collected["landmarks"]
    pred, tgt = c["pred"].reshape(-1, 5, 2).astype(float), c["target"].astype(float)
    iod = np.hypot(*(tgt[:, 0] - tgt[:, 1]).T)
    e = np.mean([np.hypot(*(pred[:, p] - tgt[:, p]).T) for p in range(5)], axis=0) / iod
    m = evaluated.document["tasks"]["landmarks"]["metrics"]
    assert m["nme"] == pytest.approx(e.mean())
    assert m["failure_rate"] == pytest.approx((e > 0.1).mean())
    assert m["ced_auc"] == pytest.approx(np.mean(np.clip(1 - e / 0.1, 0, 1)))
    # baseline: the mean landmark shape of the training split, predicted for every face
    from facemtl.data.cache import FaceCache

    lab = FaceCache(evaluated.document["data"]).labels["landmarks"]
    train = lab[FaceCache(evaluated.document["data"]).indices("train")]
    shape = train[np.isfinite(train).all((1, 2))].astype(float).mean(0)
    b = np.mean([np.hypot(*(shape[p] - tgt[:, p]).T) for p in range(5)], axis=0) / iod
    assert evaluated.document["tasks"]["landmarks"]["baseline"]["nme"] == pytest.approx(b.mean())
    ced = pd.read_csv(evaluated.out_dir / "landmarks_ced.csv")
    assert ced["fraction"].iloc[-1] == pytest.approx((e <= 0.1).mean())


def test_landmarks_nme_by_yaw_by_hand(evaluated, collected):
    c = collected["landmarks"]
    pred, tgt = c["pred"].reshape(-1, 5, 2).astype(float), c["target"].astype(float)
    e = np.linalg.norm(pred - tgt, axis=2).mean(1) / np.linalg.norm(tgt[:, 0] - tgt[:, 1], axis=1)
    yaw = np.abs(c["yaw"])
    assert np.isfinite(yaw).all() and len(yaw) == len(e)  # the fixture cache labels every face's pose
    m = evaluated.document["tasks"]["landmarks"]["metrics"]
    table = pd.read_csv(evaluated.out_dir / "landmarks_by_yaw.csv", index_col=0)
    means = []
    for lo, hi in ((0, 30), (30, 60), (60, 90)):
        sel = (yaw >= lo) & ((yaw < hi) if hi < 90 else np.ones_like(yaw, bool))
        assert table.loc[f"{lo}-{hi}", "n"] == sel.sum()
        if sel.any():
            assert m[f"nme_yaw_{lo}_{hi}"] == pytest.approx(e[sel].mean())
            assert table.loc[f"{lo}-{hi}", "failure_rate"] == pytest.approx((e[sel] > 0.1).mean())
            means.append(e[sel].mean())
        else:
            assert f"nme_yaw_{lo}_{hi}" not in m
    assert table["n"].sum() == len(e)
    if len(means) == 3:
        assert m["nme_yaw_balanced"] == pytest.approx(np.mean(means))


def test_nme_by_yaw_bins_and_unknown_yaws():
    from facemtl.reports.task_reports import nme_by_yaw

    errors = np.array([0.01, 0.02, 0.2, 0.3, 0.05, 0.5])
    yaw = np.array([0.0, 29.9, 30.0, 59.0, 95.0, np.nan])  # 95 counts in the last bin, NaN nowhere
    t = nme_by_yaw(errors, yaw)
    assert t["n"].tolist() == [2, 2, 1]
    assert t["nme"].tolist() == pytest.approx([0.015, 0.25, 0.05])
    assert t["failure_rate"].tolist() == pytest.approx([0.0, 1.0, 0.0])
    empty = nme_by_yaw(errors[:2], yaw[:2])
    assert empty["n"].tolist() == [2, 0, 0] and np.isnan(empty.loc["30-60", "nme"])


def test_detection_classes_identity_wiring(evaluated, collected):
    from facemtl.metrics import verification_from_embeddings

    tasks = evaluated.document["tasks"]
    d = collected["detection"]
    known = d["face"] >= 0
    assert tasks["detection"]["metrics"]["roc_auc"] == pytest.approx(skm.roc_auc_score(d["face"][known], d["score"][known]))
    assert tasks["detection"]["metrics"]["average_precision"] == pytest.approx(
        skm.average_precision_score(d["face"][known], d["score"][known]))
    for name in ("expression", "pose"):
        c = collected[name]
        conf = pd.read_csv(evaluated.out_dir / f"{name}_confusion.csv", index_col=0).to_numpy()
        labels = list(range(conf.shape[0]))
        assert (conf == skm.confusion_matrix(c["target"], c["pred"], labels=labels)).all()
        assert tasks[name]["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(c["target"], c["pred"]))
        assert tasks[name]["baseline"]["accuracy"] == pytest.approx(np.bincount(c["target"]).max() / len(c["target"]))
    i = collected["identity"]
    v = verification_from_embeddings(i["embedding"], i["target"], max_pairs=6000, seed=0)
    assert tasks["identity"]["metrics"]["verification_auc"] == pytest.approx(v["auc"])
    assert tasks["identity"]["info"]["held_out_identities"] is True  # SynthFaces' test identities are unseen


def test_label_adapter_matches_attributes_by_name():
    class C:
        attribute_names = ["Smiling", "Male", "Young"]

    a = LabelAdapter.build(("Male", "Eyeglasses", "Smiling"), C())  # type: ignore[arg-type]
    got = a.attributes(np.array([[1, 0, 1], [0, 1, -1]], np.int8))
    assert got.tolist() == [[0, -1, 1], [1, -1, 0]]
    assert LabelAdapter.build(("Smiling", "Male", "Young"), C()).attr_index is None  # type: ignore[arg-type]


def test_dataset_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path))
    with pytest.raises(MissingFileError, match=r"celeba\.h5.*facemtl prepare celeba"):
        resolve_dataset("celeba", None, None)
    (tmp_path / "celeba.h5").touch()
    (tmp_path / "other.h5").touch()
    assert resolve_dataset("celeba", None, None) == tmp_path / "celeba.h5"
    assert resolve_dataset("celeba", tmp_path / "other.h5", None) == tmp_path / "other.h5"  # --data wins
    assert resolve_dataset(str(tmp_path / "other.h5"), None, None) == tmp_path / "other.h5"
    assert resolve_dataset(None, None, str(tmp_path / "other.h5")) == tmp_path / "other.h5"  # the run's cache
    with pytest.raises(UnknownNameError, match="celeba"):
        resolve_dataset("imagenet", None, None)


def test_bad_inputs_leave_no_report(run, tiny_ablation, tmp_path):
    out = tmp_path / "report"
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(tmp_path / "no-run", out=out)
    newer = torch.load(run / "best.pt", weights_only=False)
    newer["version"] = 99
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer"):
        evaluate(tmp_path / "newer.pt", out=out)
    # a landmarks + smile model on a cache that labels only expressions: nothing to measure
    expr_only = write_cache_without(tmp_path / "expr.h5", ("expression",))
    two_task_run = tiny_ablation.out_dir / "runs" / "landmarks+smile__ew__s0"
    with pytest.raises(ConfigError, match=r"no labels for any of the model's tasks \(landmarks, smile\)"):
        evaluate(two_task_run, data=expr_only, out=out)
    assert not out.exists()
