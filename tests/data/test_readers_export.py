"""``prepare synthetic --format celeba|mtfl|fer2013``: SynthFaces in the real layouts, read back by the real readers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.export_formats import FER2013Record, write_fer2013

synth = pytest.importorskip("facemtl.data.synth")

# The labels each real dataset has, so the only ones its stand-in's cache may carry ("face": every image is one).
DATASET_LABELS = {
    "celeba-aligned": {"attributes", "identity", "landmarks", "face"},
    "celeba-wild": {"attributes", "identity", "landmarks", "bbox", "face"},
    "mtfl": {"attributes", "landmarks", "pose_class", "face"},
    "fer2013": {"expression", "face"},
}


def labelled(c: FaceCache) -> set[str]:
    """The label keys that at least one sample of ``c`` carries."""
    return {k for k in schema.LABELS if c.has_label(k).any()}


def test_celeba_format_end_to_end(tmp_path: Path, cli) -> None:
    folder = tmp_path / "celeba_synth"
    r = cli("prepare", "synthetic", "--format", "celeba", "--layout", "torchvision", "--out", folder,
            "--num-images", 16, "--identities", 4, "--workers", 2)
    assert r.exit_code == 0, r.output
    assert (folder / "celeba/img_align_celeba/000016.jpg").is_file() and (folder / "celeba/img_celeba/000001.jpg").is_file()
    readme = (folder / "README.txt").read_text()
    unmodelled = [a for a in schema.CELEBA_ATTRIBUTES if a not in synth.SYNTH_ATTRIBUTES]
    assert "NOT modelled" in readme and all(a in readme for a in unmodelled)
    for variant in ("aligned", "wild"):
        r = cli("prepare", "celeba", "--root", folder, "--variant", variant, "--out", tmp_path / f"{variant}.h5", "--sizes", "64", "--workers", 1)
        assert r.exit_code == 0, r.output
    a, w = FaceCache(tmp_path / "aligned.h5"), FaceCache(tmp_path / "wild.h5")
    assert labelled(a) == DATASET_LABELS["celeba-aligned"] and labelled(w) == DATASET_LABELS["celeba-wild"]
    cols = [schema.CELEBA_ATTRIBUTES.index(x) for x in unmodelled]
    assert (a.labels["attributes"][:, cols] == 0).all()
    cfg = synth.SynthConfig(seed=0, identities=4, sizes=(218,), negative_fraction=0.0)
    for i in (0, 7):
        s = synth.render_sample(i, cfg)
        names = list(synth.SYNTH_ATTRIBUTES)
        for name, v in zip(names, s["attributes"]):
            assert a.labels["attributes"][i, schema.CELEBA_ATTRIBUTES.index(name)] == (v == 1)
        assert a.labels["identity"][i] == s["identity"] + 1
        # landmarks survive: integer pixels in 178x218 -> centred square -> normalised, within rounding
        want = (np.asarray(s["landmarks"]) * 218 - [20, 20]) / 178
        np.testing.assert_allclose(a.labels["landmarks"][i], want, atol=0.6 / 178)
    assert np.isfinite(w.labels["bbox"]).all() and np.isfinite(w.labels["landmarks"]).all()
    inside = (w.labels["landmarks"] >= 0) & (w.labels["landmarks"] <= 1)
    assert inside.all()


def test_mtfl_format_end_to_end(tmp_path: Path, cli) -> None:
    folder = tmp_path / "mtfl_synth"
    r = cli("prepare", "synthetic", "--format", "mtfl", "--out", folder, "--num-images", 12, "--identities", 4, "--workers", 1)
    assert r.exit_code == 0, r.output
    first = (folder / "training.txt").read_bytes().split(b"\r\n")[0].decode()
    assert "\\synth_" in first and len(first.split()) == 15
    r = cli("prepare", "mtfl", "--root", folder, "--out", tmp_path / "m.h5", "--sizes", "40", "--workers", 1)
    assert r.exit_code == 0, r.output
    c = FaceCache(tmp_path / "m.h5")
    # CelebA's names for the same attributes, so a model trained on both matches them by name
    assert c.num_samples == 12 and c.attribute_names == ["Male", "Smiling", "Eyeglasses"]
    assert set(c.attribute_names) <= set(schema.CELEBA_ATTRIBUTES)
    assert labelled(c) == DATASET_LABELS["mtfl"]
    assert ((c.labels["pose_class"] >= 0) & (c.labels["pose_class"] <= 4)).all()


def test_format_refuses_a_non_empty_folder(tmp_path: Path, cli) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x/file").write_text("keep me")
    r = cli("prepare", "synthetic", "--format", "celeba", "--out", tmp_path / "x", "--num-images", 2)
    assert r.exit_code == 1 and "not an empty folder" in r.output
    r = cli("prepare", "synthetic", "--format", "voc", "--out", tmp_path / "y", "--num-images", 2)
    assert r.exit_code == 1 and "Invalid format 'voc'" in r.output and "fer2013" in r.output


def test_fer2013_format_end_to_end(tmp_path: Path, cli) -> None:
    folder, n = tmp_path / "fer_synth", 24
    r = cli("prepare", "synthetic", "--format", "fer2013", "--out", folder, "--num-images", n, "--identities", 6, "--workers", 1)
    assert r.exit_code == 0, r.output
    raw = (folder / "fer2013.csv").read_bytes()
    assert raw.startswith(b"emotion,pixels,Usage\n") and raw.endswith(b"\n") and b"\r" not in raw and b'"' not in raw
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "fer2013.csv"]
    with open(folder / "fer2013.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == n and all(len(row) == 3 and len(row[1].split(" ")) == 48 * 48 for row in rows)
    # the renderer's expressions and identity splits, in the Kaggle file's order: Training, PublicTest, PrivateTest
    cfg = synth.SynthConfig(seed=0, identities=6, sizes=(96,), negative_fraction=0.0)
    from facemtl.data.synthetic import _split_for

    want = []
    for i in range(n):
        s = synth.render_sample(i, cfg)
        want.append((_split_for(i, int(s["identity"]), cfg), int(s["expression"])))
    want.sort(key=lambda x: x[0])  # stable: index order within a Usage
    usage = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    assert [(usage[u], int(e)) for e, _, u in rows] == want
    assert {u for _, _, u in rows} >= {"Training", "PrivateTest"}
    r = cli("prepare", "fer2013", "--root", folder, "--out", tmp_path / "f.h5", "--sizes", "48", "--workers", 1)
    assert r.exit_code == 0, r.output
    c = FaceCache(tmp_path / "f.h5")
    assert labelled(c) == DATASET_LABELS["fer2013"] and c.attribute_names == []
    np.testing.assert_array_equal(c.labels["expression"], [e for _, e in want])
    np.testing.assert_array_equal(c.split, [s for s, _ in want])
    img = c.read_images(48, 0, n)
    np.testing.assert_array_equal(img[..., 0], np.array([row[1].split() for row in rows], np.uint8).reshape(n, 48, 48))
    # a face fills the frame: its pixels vary across the middle of the image, not a flat backdrop
    assert (img[:, 12:36, 12:36, 0].reshape(n, -1).std(axis=1) > 2).all()


def test_write_fer2013_leaves_no_csv_when_a_record_is_bad(tmp_path: Path) -> None:
    good = FER2013Record(pixels=np.zeros((48, 48), np.uint8), emotion=3, usage="Training")

    def records():
        yield good
        yield FER2013Record(pixels=np.zeros((48, 48), np.uint8), emotion=3, usage="Train")

    with pytest.raises(ValueError, match="Usage one of"):
        write_fer2013(tmp_path / "out", records())
    assert list((tmp_path / "out").iterdir()) == []  # no CSV, no .partial, no temporary parts
    path = write_fer2013(tmp_path / "ok", [FER2013Record(np.full((48, 48), 7, np.uint8), 6, "PrivateTest"), good], newline="\r\n")
    assert path.read_bytes().split(b"\r\n")[1].startswith(b"3,0 0 ") and path.read_bytes().count(b",PrivateTest\r\n") == 1
