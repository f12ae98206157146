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
    assert r.exit_code == 1 and "c.png: is missing" in " ".join(r.output.split())


def test_paths_outside_the_image_folder_are_refused(tmp_path: Path, cli) -> None:
    images, labels = make(tmp_path)
    Image.new("RGB", (100, 120), (1, 2, 3)).save(tmp_path / "outside.png")
    rows = ["a.jpg,train", "../outside.png,train", f"{tmp_path / 'outside.png'},val", "sub/../c.png,test"]
    labels.write_text("\n".join(["image,split"] + rows) + "\n")
    with pytest.raises(DataFormatError) as e:
        build_plan("folder", images=images, labels=labels)
    msg = str(e.value)
    assert f"{labels}:3: image path '../outside.png' leaves --images" in msg and f"{labels}:4: image path '{tmp_path}" in msg
    assert ":5:" not in msg  # sub/../c.png stays inside
    assert "--allow-outside-root" in msg
    plan = build_plan("folder", images=images, labels=labels, allow_outside_root=True)
    assert len(plan) == 4 and plan.provenance["allow_outside_root"] is True
    out = tmp_path / "f.h5"
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--out", out, "--sizes", "16", "--workers", "1",
            "--allow-outside-root")
    assert r.exit_code == 0, r.output


def test_csv_error_suggests_a_check_command_that_runs(tmp_path: Path, cli) -> None:
    images, labels = make(tmp_path, ["a.jpg,sometimes"], header="image,split")
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--out", tmp_path / "f.h5")
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    command = text[text.index("`facemtl prepare folder") + 1:text.index("--check`") + len("--check")]
    assert "--root" not in command
    args = command.split()[1:]  # without "facemtl"
    r = cli(*args)
    assert r.exit_code == 1 and "No such option" not in r.output and "split must be train, val or test" in r.output


def test_check_and_prepare_list_problems_by_one_rule(tmp_path: Path, cli) -> None:
    from facemtl.data.readers._annotations import MAX_SHOWN

    rows = [f"a{i}.jpg,never" for i in range(MAX_SHOWN + 4)]
    images, labels = make(tmp_path, rows, header="image,split")
    outputs = [
        " ".join(cli("prepare", "folder", "--images", images, "--labels", labels, *extra).output.split())
        for extra in (["--check"], ["--out", tmp_path / "f.h5"])
    ]
    for text in outputs:
        assert f"{MAX_SHOWN + 4} problem(s)" in text and "... and 4 more problems" in text
        assert f"{labels}:{MAX_SHOWN + 1}:" in text and f"{labels}:{MAX_SHOWN + 2}:" not in text


def test_sixteen_bit_and_other_modes_keep_their_range(tmp_path: Path) -> None:
    from facemtl.data.readers import prepare_dataset

    images = tmp_path / "imgs"
    images.mkdir()
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(images / "grey16.png")  # PIL opens it as I;16
    Image.fromarray(ramp.astype(np.int32)).save(images / "grey32.tif")  # mode I
    Image.fromarray((ramp / 65535).astype(np.float32)).save(images / "float.tif")  # mode F, 0..1
    Image.fromarray((ramp >> 8).astype(np.uint8)).convert("P").save(images / "palette.png")
    names = ["grey16.png", "grey32.tif", "float.tif", "palette.png"]
    labels = tmp_path / "l.csv"
    labels.write_text("image,split\n" + "".join(f"{n},train\n" for n in names))
    prepare_dataset("folder", tmp_path / "f.h5", images=images, labels=labels, sizes=(64,), workers=1)
    imgs = FaceCache(tmp_path / "f.h5").read_images(64, 0, 4).astype(float)
    for name, img in zip(names, imgs):
        assert abs(img.mean() - 127.5) < 2 and img.min() <= 1 and img.max() >= 254, (name, img.mean())


def test_landmarks_far_outside_the_image_are_listed(tmp_path: Path, cli) -> None:
    rows = list(ROWS)
    rows[2] = "c.png,test,bob,,,,,,0,300,40,70,40,50,60,35,80,65,80,,,,,,1"  # x = 300 on a 100 px wide image
    images, labels = make(tmp_path, rows)
    r = cli("prepare", "folder", "--images", images, "--labels", labels, "--out", tmp_path / "f.h5", "--sizes", "16", "--workers", "1")
    assert r.exit_code == 0, r.output
    text = "".join(r.output.split())  # rich folds long paths at the terminal's width
    assert "1image(s)havelandmarksmorethan50%oftheimage'ssizeoutsideit" in text and "c.png" in text
    assert "a.jpg" not in text.split("outsideit")[1]
    assert FaceCache(tmp_path / "f.h5").provenance["landmarks_far_outside"] == 1
