"""CK+ reader: peak frames, optional neutral first frames, contempt, split by subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.readers import build_plan, prepare_dataset
from facemtl.errors import DataFormatError

E = {n: i for i, n in enumerate(schema.EXPRESSION_NAMES)}


def by_sequence(plan) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k, e in zip(plan.image_ids, plan.labels["expression"]):
        out.setdefault(k.rsplit("/", 1)[0], []).append(int(e))
    return out


def test_peak_frames_mapped_to_fer_order(make_ckplus, tmp_path: Path) -> None:
    root = make_ckplus()
    plan = build_plan("ckplus", root=root)
    seqs = by_sequence(plan)
    assert seqs == {
        "S005/001": [E["Disgust"]] * 3, "S010/002": [E["Surprise"]] * 3, "S011/001": [E["Happy"]] * 3,
        "S022/001": [E["Angry"]] * 3, "S032/004": [E["Sad"]] * 3, "S037/001": [E["Fear"]] * 3,
    }  # S014 (contempt) skipped, S026 unlabelled
    assert plan.image_ids[:3] == ["S005/001/S005_001_00000003.png", "S005/001/S005_001_00000004.png", "S005/001/S005_001_00000005.png"]
    assert plan.provenance["contempt_sequences_skipped"] == 1
    np.testing.assert_array_equal(np.unique(plan.labels["identity"]), [5, 10, 11, 22, 32, 37])
    prepare_dataset("ckplus", tmp_path / "ck.h5", root=root, sizes=(32,), workers=1)
    c = FaceCache(tmp_path / "ck.h5")
    img = c.read_images(32, 0, 1)[0]
    assert c.num_samples == 18 and (img[..., 0] == img[..., 2]).all()  # grey PNGs come out as RGB


def test_neutral_first_frames_and_contempt_as_disgust(make_ckplus) -> None:
    root = make_ckplus()
    seqs = by_sequence(build_plan("ckplus", root=root, neutral=True, contempt="disgust", peak_frames=2))
    assert seqs["S005/001"] == [E["Neutral"], E["Disgust"], E["Disgust"]]
    assert seqs["S014/003"] == [E["Neutral"], E["Disgust"], E["Disgust"]]  # contempt -> Disgust
    assert seqs["S037/001"] == [E["Neutral"], E["Fear"], E["Fear"]]
    seqs = by_sequence(build_plan("ckplus", root=root, neutral=True, peak_frames=3))
    assert seqs["S037/001"] == [E["Fear"]] * 3  # 3 frames: the first is already a peak frame


def test_split_by_subject_is_seeded_and_disjoint(make_ckplus) -> None:
    root = make_ckplus()
    a = build_plan("ckplus", root=root, seed=3, val_fraction=0.2, test_fraction=0.3)
    b = build_plan("ckplus", root=root, seed=3, val_fraction=0.2, test_fraction=0.3)
    np.testing.assert_array_equal(a.split, b.split)
    subj = np.array([k.split("/")[0] for k in a.image_ids])
    for s in np.unique(subj):
        assert len(np.unique(a.split[subj == s])) == 1
    assert set(a.split.tolist()) == {0, 1, 2}


def test_bad_label_files_all_listed(make_ckplus) -> None:
    root = make_ckplus()
    bad1 = root / "Emotion/S005/001/S005_001_00000005_emotion.txt"
    bad1.write_text("   happy\n")
    bad2 = root / "Emotion/S010/002/S010_002_00000004_emotion.txt"
    bad2.write_text("\r\n   9.0000000e+00\r\n\r\n")
    stray = root / "Emotion/S011/001/S011_001_00000099_emotion.txt"
    stray.write_text("1\n")
    with pytest.raises(DataFormatError) as e:
        build_plan("ckplus", root=root)
    msg = str(e.value)
    assert f"{bad1}:1: 'happy' is not a number" in msg
    assert f"{bad2}:2: emotion code must be an integer 0..7" in msg
    assert f"{stray}: labels frame S011_001_00000099, which is not in" in msg
