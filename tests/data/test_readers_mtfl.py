"""MTFL reader: TCDCN's x1..x5 y1..y5 layout, 1/2 codes, 5 pose classes, Windows paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.readers import build_plan, prepare_dataset
from facemtl.data.readers._images import square_window
from facemtl.data.readers.mtfl import landmark_window
from facemtl.errors import DataFormatError, MissingFileError


def test_official_format_to_cache(make_mtfl, mtfl_truth, tmp_path: Path) -> None:
    root = make_mtfl()
    line = (root / "training.txt").read_bytes().split(b"\r\n")[0].decode()
    assert line.startswith(" net_7876\\synth_000001.jpg ") and len(line.split()) == 15
    prepare_dataset("mtfl", tmp_path / "m.h5", root=root, sizes=(40, 64), workers=1)
    c = FaceCache(tmp_path / "m.h5")
    recs = mtfl_truth()
    assert c.attribute_names == ["Male", "Smiling", "Eyeglasses"]
    np.testing.assert_array_equal(c.labels["attributes"], [[r.male, r.smiling, r.glasses] for r in recs])
    np.testing.assert_array_equal(c.labels["pose_class"], [r.pose - 1 for r in recs])
    assert (c.labels["expression"] == -1).all() and (c.labels["identity"] == -1).all()
    assert (c.split[10:] == schema.SPLITS["test"]).all() and (c.split[:10] != schema.SPLITS["test"]).all()
    pts = np.stack([r.landmarks for r in recs])
    win = np.array([square_window(w, 0, 0) for w in landmark_window(pts, 2.5)], np.float64)
    np.testing.assert_allclose(c.labels["landmarks"], (pts - win[:, None, :2]) / win[:, None, 2:], atol=1e-6)
    # left eye left of the right eye, eyes above the mouth: x/y were not mixed up
    lm = c.labels["landmarks"]
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 0, 1] < lm[:, 3, 1]).all()
    assert [x.decode() for x in c.h5["image_ids"][:2]] == ["net_7876/synth_000001.jpg", "lfw_5590/synth_000002.jpg"]


def test_hand_written_edge_cases(tmp_path: Path) -> None:
    root = tmp_path / "MTFL"
    (root / "lfw_5590").mkdir(parents=True)
    (root / "AFLW").mkdir()
    for name in ("lfw_5590/a_0001.jpg", "lfw_5590/b_0001.jpg", "AFLW/c.jpg"):
        Image.new("RGB", (250, 250), (90, 90, 90)).save(root / name)
    (root / "training.txt").write_bytes(
        b" lfw_5590\\a_0001.jpg 107.25 147.75 126.25 106.25 140.75 108.75 113.25 143.75 158.75 159.75 1 2 2 3\r\n"
        b"lfw_5590/b_0001.jpg\t100  150   125 105 145   100 100 130 160 160   2 1 1 5   \r\n\r\n\r\n"
    )
    (root / "testing.txt").write_text("AFLW\\c.jpg 1 2 3 4 5 6 7 8 9 10 1 1 1 1\n\n")
    plan = build_plan("mtfl", root=root)
    assert plan.image_ids == ["lfw_5590/a_0001.jpg", "lfw_5590/b_0001.jpg", "AFLW/c.jpg"]
    np.testing.assert_array_equal(plan.points[0], [[107.25, 108.75], [147.75, 113.25], [126.25, 143.75], [106.25, 158.75], [140.75, 159.75]])
    np.testing.assert_array_equal(plan.labels["attributes"], [[1, 0, 0], [0, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(plan.labels["pose_class"], [2, 4, 0])


def test_bad_codes_and_fields_listed_with_lines(make_mtfl, tmp_path: Path, cli) -> None:
    root = make_mtfl()
    lines = (root / "training.txt").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 4)[0] + " 3 2 2 3"  # gender 3
    lines[3] = lines[3].rsplit(" ", 1)[0] + " 6"  # pose 6
    lines[5] = lines[5].rsplit(" ", 1)[0]  # one field short
    (root / "training.txt").write_text("\n".join(lines) + "\n")
    r = cli("prepare", "mtfl", "--root", root, "--out", tmp_path / "m.h5")
    assert r.exit_code == 1
    t = root / "training.txt"
    assert f"{t}:2: gender must be one of [1, 2], found 3" in r.output
    assert f"{t}:4: pose must be one of [1, 2, 3, 4, 5], found 6" in r.output
    assert f"{t}:6: expected 15 fields" in r.output
    assert not (tmp_path / "m.h5").exists()


def test_missing_testing_file(make_mtfl) -> None:
    root = make_mtfl()
    (root / "testing.txt").unlink()
    with pytest.raises(MissingFileError, match="testing.txt"):
        build_plan("mtfl", root=root)


def test_val_split_is_seeded(make_mtfl) -> None:
    root = make_mtfl(n_train=30, n_test=2)
    a = build_plan("mtfl", root=root, val_fraction=0.3, seed=1).split
    b = build_plan("mtfl", root=root, val_fraction=0.3, seed=1).split
    np.testing.assert_array_equal(a, b)
    assert 0 < (a == schema.SPLITS["val"]).sum() < 30


def test_face_listed_in_train_and_test_is_an_error(make_mtfl) -> None:
    root = make_mtfl()
    first = (root / "training.txt").read_text().splitlines()[0]
    with open(root / "testing.txt", "a") as f:
        f.write(first + "\n")
    with pytest.raises(DataFormatError, match="also listed in training.txt"):
        build_plan("mtfl", root=root)


def test_check(make_mtfl, cli) -> None:
    r = cli("prepare", "mtfl", "--check", "--root", make_mtfl())
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "training.txt" in text and "present" in text and "a subset?" in text
