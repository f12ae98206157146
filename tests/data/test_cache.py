"""The cache contract: schema round trip, atomic writes, validation of foreign files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from facemtl.data import schema
from facemtl.data.cache import CacheWriter, FaceCache, partial_path
from facemtl.errors import ConfigError, DataFormatError, MissingFileError
from tests.conftest import write_toy_cache


def test_round_trip(tmp_path):
    path = write_toy_cache(tmp_path / "c.h5", n=120)
    c = FaceCache(path)
    assert c.num_samples == 120 and c.sizes == (16, 32)
    assert c.attribute_names == ["Male", "Smiling", "Eyeglasses"]
    assert c.labels["landmarks"].shape == (120, 5, 2)
    # labels never written stay "missing"
    assert np.isnan(c.labels["bbox"]).all() and (c.labels["expression"] == -1).all()
    assert c.has_label("landmarks").all() and not c.has_label("pose").any()
    img = c.read_images(32, 7, 8)[0]
    assert img[0, 0, 0] == 7
    s = c.summary()
    assert s["splits"]["val"] == 12 and s["splits"]["train"] == 108
    assert s["schema_version"] == schema.SCHEMA_VERSION
    with h5py.File(path) as f:
        assert f.attrs["format"] == schema.FORMAT_TAG and "_done" not in f


def test_existing_output_needs_force(tmp_path):
    path = write_toy_cache(tmp_path / "c.h5", n=20)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        write_toy_cache(path, n=20)
    assert path.read_bytes() == before
    write_toy_cache_force = CacheWriter(path, num_samples=1, sizes=[16], attribute_names=[], source="t", force=True)
    with write_toy_cache_force as w:
        w.write(0, {"images": {16: np.zeros((1, 16, 16, 3), np.uint8)}})
    assert FaceCache(path).num_samples == 1


def test_failure_leaves_nothing(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(RuntimeError):
        with CacheWriter(path, num_samples=10, sizes=[16], attribute_names=[], source="t") as w:
            w.write(0, {"images": {16: np.zeros((5, 16, 16, 3), np.uint8)}})
            raise RuntimeError("boom")
    assert not path.exists() and not partial_path(path).exists()


def test_unfinished_rows_are_an_error(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(DataFormatError, match="never written"):
        with CacheWriter(path, num_samples=10, sizes=[16], attribute_names=[], source="t") as w:
            w.write(0, {"images": {16: np.zeros((5, 16, 16, 3), np.uint8)}})
    assert not path.exists()


def test_resume_keeps_written_rows(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter(path, num_samples=10, sizes=[16], attribute_names=[], source="t", keep_partial=True) as w:
            w.write(0, {"images": {16: np.full((5, 16, 16, 3), 7, np.uint8)}})
            raise KeyboardInterrupt
    assert partial_path(path).exists() and not path.exists()
    with CacheWriter(path, num_samples=10, sizes=[16], attribute_names=[], source="t", resume=True) as w:
        done = w.done_rows()
        assert done[:5].all() and not done[5:].any()
        w.write(5, {"images": {16: np.full((5, 16, 16, 3), 9, np.uint8)}})
    imgs = FaceCache(path).read_images(16, 0, 10)
    assert (imgs[:5] == 7).all() and (imgs[5:] == 9).all()


@pytest.mark.parametrize("sizes", [[], [0], [4096], [-3]])
def test_bad_sizes(tmp_path, sizes):
    with pytest.raises(ConfigError):
        CacheWriter(tmp_path / "c.h5", num_samples=4, sizes=sizes, attribute_names=[], source="t")


def test_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(MissingFileError):
        FaceCache(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        FaceCache(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataFormatError, match="not a facemtl cache"):
        FaceCache(foreign)
    newer = write_toy_cache(tmp_path / "newer.h5", n=10)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = schema.SCHEMA_VERSION + 1
    with pytest.raises(DataFormatError, match="newer"):
        FaceCache(newer)


def test_pose_class_edges():
    yaw = np.array([-80, -45.1, -30, -15.1, 0, 14.9, 15, 44.9, 45, 80])
    assert schema.pose_class_from_yaw(yaw).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def _damage(path, how):
    with h5py.File(path, "a") as f:
        if how == "no images":
            for k in list(f["images"]):
                del f[f"images/{k}"]
        elif how == "schema 0":
            f.attrs["schema_version"] = 0
        elif how == "schema unknown":
            f.attrs["schema_version"] = "one"
        elif how == "no schema":
            del f.attrs["schema_version"]
        elif how == "no split":
            del f["split"]
        elif how == "no labels":
            del f["labels"]
        elif how == "short labels":
            del f["labels/landmarks"]
            f["labels/landmarks"] = np.zeros((3, 5, 2), np.float32)
        elif how == "bad split values":
            f["split"][0] = 7


DAMAGES = {
    "no images": "/images holds no image dataset", "schema 0": "schema_version is 0",
    "schema unknown": "schema_version is 'one'", "no schema": "schema_version is none", "no split": "/split is missing",
    "no labels": "/labels is missing", "short labels": "/labels/landmarks has 3 rows", "bad split values": "other than 0",
}


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_structure_is_named_on_open(tmp_path, how):
    path = write_toy_cache(tmp_path / "c.h5", n=20)
    _damage(path, how)
    with pytest.raises(DataFormatError, match="damaged facemtl cache") as e:
        FaceCache(path)
    assert DAMAGES[how] in str(e.value) and "prepare it again" in str(e.value)


def test_a_directory_named_like_a_cache(tmp_path):
    (tmp_path / "x.h5").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        FaceCache(tmp_path / "x.h5")
