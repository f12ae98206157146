"""FER2013 reader: the CSV of 48x48 pixel strings with its Usage split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.readers import build_plan, prepare_dataset
from facemtl.errors import DataFormatError, MissingFileError


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def test_csv_to_cache(make_fer, tmp_path: Path, cli) -> None:
    path = make_fer()
    r = cli("prepare", "fer2013", "--root", path.parent, "--out", tmp_path / "f.h5", "--sizes", "48,64", "--workers", "1")
    assert r.exit_code == 0, r.output
    c = FaceCache(tmp_path / "f.h5")
    assert c.num_samples == 14 and c.attribute_names == []
    np.testing.assert_array_equal(c.labels["expression"], [i % 7 for i in range(14)])
    np.testing.assert_array_equal(c.split, [0] * 8 + [1] * 3 + [2] * 3)
    img = c.read_images(48, 4, 5)[0]
    want = np.array(rows(path)[4][1].split(), np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(img[..., 0], want)  # stored at 48: the pixels themselves
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()  # grey replicated to RGB
    assert c.h5["image_ids"][0].decode() == "fer2013_000002"  # CSV line number
    assert "a subset?" in " ".join(r.output.split())


def test_crlf_blank_lines_and_icml_column_names(tmp_path: Path, make_fer) -> None:
    ref = build_plan("fer2013", root=make_fer())
    data = rows(make_fer("other.csv"))
    path = tmp_path / "icml_face_data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["emotion", " Usage", " pixels"])  # Kaggle's other copy: other order, spaces
        for e, p, u in data:
            w.writerow([e, u, p])
        f.write("\r\n\r\n")
    got = build_plan("fer2013", root=path)
    np.testing.assert_array_equal(got.images, ref.images)
    np.testing.assert_array_equal(got.labels["expression"], ref.labels["expression"])
    np.testing.assert_array_equal(got.split, ref.split)


def test_bad_rows_all_listed(make_fer) -> None:
    path = make_fer()
    data = rows(path)
    data[1][0] = "9"
    data[3][1] = " ".join(data[3][1].split()[:-1])
    data[5][2] = "Validation"
    data[6][1] = data[6][1].replace(" ", " 300 ", 1)[: len(data[6][1])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(data)
        f.write("1,2\n")
    with pytest.raises(DataFormatError) as e:
        build_plan("fer2013", root=path)
    msg = str(e.value)
    assert f"{path}:3: emotion must be 0..6, found '9'" in msg
    assert f"{path}:5: pixels must hold 2304 values, found 2303" in msg
    assert f"{path}:7: Usage must be Training, PublicTest or PrivateTest, found 'Validation'" in msg
    assert f"{path}:16: expected 3 fields, found 2" in msg


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "fer2013.csv"
    p.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(DataFormatError, match="header lacks column\\(s\\) pixels"):
        build_plan("fer2013", root=p)
    with pytest.raises(MissingFileError, match="fer2013.csv"):
        build_plan("fer2013", root=tmp_path / "empty_dir_that_does_not_exist")


def test_limit_and_split_names(make_fer, tmp_path: Path) -> None:
    prepare_dataset("fer2013", tmp_path / "f.h5", root=make_fer(), sizes=(48,), workers=1, limit=9)
    c = FaceCache(tmp_path / "f.h5")
    assert c.num_samples == 9 and (c.split == schema.SPLITS["train"]).sum() == 8
