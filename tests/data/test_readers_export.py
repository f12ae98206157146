"""``prepare synthetic --format celeba|mtfl``: SynthFaces in the real layouts, read back by the real readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import FaceCache

synth = pytest.importorskip("facemtl.data.synth")


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
    assert c.num_samples == 12 and c.attribute_names == ["Male", "Smiling", "Eyeglasses"]
    assert ((c.labels["pose_class"] >= 0) & (c.labels["pose_class"] <= 4)).all()


def test_format_refuses_a_non_empty_folder(tmp_path: Path, cli) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x/file").write_text("keep me")
    r = cli("prepare", "synthetic", "--format", "celeba", "--out", tmp_path / "x", "--num-images", 2)
    assert r.exit_code == 1 and "not an empty folder" in r.output
    r = cli("prepare", "synthetic", "--format", "voc", "--out", tmp_path / "y", "--num-images", 2)
    assert r.exit_code == 1 and "Invalid format 'voc'" in r.output
