"""LFWA reader: a CelebA-style attribute list over LFW's person folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemtl.data.cache import FaceCache
from facemtl.data.readers import build_plan, prepare_dataset
from facemtl.errors import DataFormatError, MissingFileError


def test_attributes_identity_and_identity_split(make_lfwa, tmp_path: Path, cli) -> None:
    root = make_lfwa()
    r = cli("prepare", "lfwa", "--root", root, "--out", tmp_path / "l.h5", "--sizes", "32", "--workers", "1")
    assert r.exit_code == 0, r.output
    c = FaceCache(tmp_path / "l.h5")
    assert c.num_samples == 15 and len(c.attribute_names) == 40
    lines = (root / "list_attr_lfwa.txt").read_text().splitlines()[2:]
    want = (np.array([[int(v) for v in s.split()[1:]] for s in lines]) + 1) // 2
    np.testing.assert_array_equal(c.labels["attributes"], want)
    ids = [x.decode() for x in c.h5["image_ids"][:]]
    persons = [k.rsplit("_", 1)[0] for k in ids]
    number = {p: i for i, p in enumerate(sorted(set(persons)))}
    np.testing.assert_array_equal(c.labels["identity"], [number[p] for p in persons])
    for p in set(persons):  # a person is never in two splits
        assert len({int(s) for s, q in zip(c.split, persons) if q == p}) == 1


def test_no_count_line_and_path_column_read_the_same(make_lfwa) -> None:
    ref = build_plan("lfwa", root=make_lfwa("a"))
    other = build_plan("lfwa", root=make_lfwa("b", count_line=False, paths=True))
    np.testing.assert_array_equal(ref.labels["attributes"], other.labels["attributes"])
    np.testing.assert_array_equal(ref.labels["identity"], other.labels["identity"])
    assert [Path(p).name for p in ref.images] == [Path(p).name for p in other.images]
    assert all(Path(p).is_file() for p in other.images)


def test_partition_file_and_center_crop(make_lfwa, tmp_path: Path) -> None:
    root = make_lfwa()
    ids = [s.split()[0] for s in (root / "list_attr_lfwa.txt").read_text().splitlines()[2:]]
    (root / "list_eval_partition_lfwa.txt").write_text("".join(f"{k} {i % 3}\n" for i, k in enumerate(ids)))
    prepare_dataset("lfwa", tmp_path / "l.h5", root=root, sizes=(60,), workers=1, center_crop=100)
    c = FaceCache(tmp_path / "l.h5")
    np.testing.assert_array_equal(c.split, [i % 3 for i in range(len(ids))])
    from PIL import Image

    person = ids[0].rsplit("_", 1)[0]
    im = Image.open(root / "lfw" / person / ids[0]).convert("RGB")
    ref = np.asarray(im.resize((60, 60), Image.Resampling.BILINEAR, box=(75, 75, 175, 175)))
    np.testing.assert_array_equal(c.read_images(60, 0, 1)[0], ref)


def test_bad_header_and_missing_images_folder(make_lfwa) -> None:
    root = make_lfwa()
    attr = root / "list_attr_lfwa.txt"
    attr.write_text(attr.read_text().replace("Young", "Old"))
    with pytest.raises(DataFormatError, match="column 40 is 'Old', expected 'Young'"):
        build_plan("lfwa", root=root)
    (root / "lfw").rename(root / "elsewhere")
    with pytest.raises(MissingFileError, match="image folder"):
        build_plan("lfwa", root=root)
