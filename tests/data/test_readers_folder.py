"""``prepare folder``: any image folder plus a CSV whose columns are mapped to tasks by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.readers import build_plan
from facemtl.errors import DataFormatError

HEADER = "image,split,identity,expression,pose_class,yaw,pitch,roll,face,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y,x_1,y_1,width,height,Smiling,Male"
ROWS = [
    "a.jpg,train,bob,Happy,frontal,1.5,2,3,1,30,40,70,40,50,60,35,80,65,80,20,20,60,80,1,-1",
    "sub\\b.jpg,val,alice,2,0,,,,1,,,,,,,,,,,,,,,0,",
    "c.png,test,bob,,,,,,0,,,,,,,,,,,,,,,,1",
]


def make(tmp_path: Path, rows: list[str] = ROWS, header: str = HEADER) -> tuple[Path, Path]:
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", "c.png"):
        Image.new("RGB", (100, 120), (10, 200, 30)).save(images / name)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(("\r\n".join([header] + rows) + "\r\n\r\n").encode())
    return images, labels


def test_columns_mapped_to_tasks(tmp_path: Path, cli) -> None:
    images, labels = make(tmp_path)
    out = tmp_path / "f.h5"
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--out", out, "--sizes", "32", "--workers", "1")
    assert r.exit_code == 0, r.output
    c = FaceCache(out)
    assert c.attribute_names == ["Smiling", "Male"]
    np.testing.assert_array_equal(c.labels["attributes"], [[1, 0], [0, -1], [-1, 1]])  # -1 = absent, empty = unknown
    np.testing.assert_array_equal(c.split, [0, 1, 2])
    np.testing.assert_array_equal(c.labels["identity"], [1, 0, 1])  # names numbered in sorted order
    np.testing.assert_array_equal(c.labels["expression"], [schema.EXPRESSION_NAMES.index("Happy"), 2, -1])
    np.testing.assert_array_equal(c.labels["pose_class"], [2, 0, -1])
    np.testing.assert_array_equal(c.labels["face"], [1, 1, 0])
    np.testing.assert_allclose(c.labels["pose"][0], [1.5, 2, 3])
    assert np.isnan(c.labels["pose"][1]).all()
    # centre crop of a 100x120 image: window (0, 10, 100)
    np.testing.assert_allclose(c.labels["landmarks"][0, 0], [30 / 100, (40 - 10) / 100], atol=1e-6)
    np.testing.assert_allclose(c.labels["bbox"][0], [0.2, 0.1, 0.6, 0.8], atol=1e-6)
    assert np.isnan(c.labels["landmarks"][1]).all()
    assert [x.decode() for x in c.h5["image_ids"][:]] == ["a.jpg", "sub/b.jpg", "c.png"]


def test_bbox_crop(tmp_path: Path) -> None:
    images, labels = make(tmp_path)
    plan = build_plan("folder", images=images, labels=labels, crop="bbox", margin=0.0)
    np.testing.assert_allclose(plan.crops[0], [10, 20, 80])  # square around the 60x80 box
    assert np.isnan(plan.crops[1]).all()  # no box: centred square


def test_bad_values_all_listed(tmp_path: Path) -> None:
    rows = [
        "a.jpg,training,1,Joy,up,,,,2,,,,,,,,,,,,,,,yes,maybe",
        "a.jpg,test,1,,,,,,1,,,,,,,,,,,,,,,1,1",
        "c.png,test,1",
    ]
    images, labels = make(tmp_path, rows)
    with pytest.raises(DataFormatError) as e:
        build_plan("folder", images=images, labels=labels)
    msg = str(e.value)
    assert f"{labels}:2: expression must be 0..6 or one of" in msg
    assert f"{labels}:2: pose_class must be 0..4" in msg
    assert f"{labels}:2: face must be 0 or 1, found '2'" in msg
    assert f"{labels}:2: column 'Male' is not a known task, so it must be a binary attribute" in msg
    assert f"{labels}:3: image a.jpg already listed on line 2" in msg
    assert f"{labels}:4: expected 25 fields, found 3" in msg


def test_no_image_column(tmp_path: Path) -> None:
    images, labels = make(tmp_path, ["x.jpg,1"], header="picture,Male")
    with pytest.raises(DataFormatError, match="no image column"):
        build_plan("folder", images=images, labels=labels)


def test_missing_image_named_and_check(tmp_path: Path, cli) -> None:
    images, labels = make(tmp_path)
    (images / "c.png").unlink()
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--out", tmp_path / "f.h5")
    assert r.exit_code == 1 and "c.png: is missing" in r.output and not (tmp_path / "f.h5").exists()
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--check")
    assert r.exit_code == 1 and "c.png is missing" in " ".join(r.output.split())
