"""LFW-subset reader: scikit-image's bundled 200 real crops -> a test-only facemtl cache."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from facemtl.data import schema
from facemtl.data.cache import CacheWriter, FaceCache
from facemtl.data.readers.lfw_subset import DEFAULT_SIZES, prepare_lfw_subset
from facemtl.errors import ConfigError, MissingDependencyError

lfw_subset = pytest.importorskip("skimage.data").lfw_subset


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return prepare_lfw_subset(tmp_path_factory.mktemp("lfw") / "sub" / "lfw-subset.h5")


def test_samples_labels_and_split(cache_path):
    c = FaceCache(cache_path)
    assert c.source == "lfw-subset" and c.num_samples == 200 and c.num_scenes == 0
    assert c.labels["face"].tolist() == [1] * 100 + [0] * 100
    assert len(c.indices("test")) == 200 and len(c.indices("train")) == 0 and len(c.indices("val")) == 0
    for key in schema.LABELS:
        if key != "face":
            assert not c.has_label(key).any(), key
    assert c.attribute_names == []
    with h5py.File(cache_path) as f:
        ids = [x.decode() for x in f["image_ids"][:]]
    assert ids[0] == "lfw_subset_000" and ids[199] == "lfw_subset_199"
    import skimage

    prov = c.provenance
    assert prov["scikit_image_version"] == skimage.__version__ and prov["dataset"] == "lfw-subset"
    assert "0.6-1.4" in prov["framing"] and len(prov["source_sha256"]) == 64


def test_sizes_cover_every_recipe_input(cache_path):
    c = FaceCache(cache_path)
    assert c.sizes == DEFAULT_SIZES
    for wanted in (40, 50, 56, 64, 112, 224):  # tcdcn, gender-glasses, mcfa S/M/L, small and famo9
        assert c.pick_size(wanted) == wanted
    for s in c.sizes:
        img = c.read_images(s, 0, 200)
        assert img.dtype == np.uint8 and img.shape == (200, s, s, 3)
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()  # grey as RGB


def test_pixels_match_lfw_subset(cache_path):
    src = lfw_subset()
    c = FaceCache(cache_path)
    exact = np.clip(np.round(src * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(c.read_images(25, 0, 200)[..., 0], exact)  # stored as is at 25 px
    big = c.read_images(112, 0, 200)[..., 0]
    # the documented resize: PIL bicubic of the float image
    k = 7
    ref = np.asarray(Image.fromarray((src[k] * 255).astype(np.float32)).resize((112, 112), Image.Resampling.BICUBIC))
    assert np.abs(big[k].astype(np.float64) - np.clip(np.round(ref), 0, 255)).max() <= 1
    # and every upscaled image still looks like its source
    for s in (40, 224):
        down = np.stack([np.asarray(Image.fromarray(im).resize((25, 25), Image.Resampling.BOX))
                         for im in c.read_images(s, 0, 200)[..., 0]]).astype(np.float64)
        corr = [np.corrcoef(d.ravel(), e.ravel())[0, 1] for d, e in zip(down, exact.astype(np.float64)) if e.std() > 1]
        assert min(corr) > 0.9, (s, min(corr))


def test_existing_file_needs_force(cache_path, tmp_path):
    out = tmp_path / "lfw.h5"
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match="already exists"):
        prepare_lfw_subset(out, sizes=(25,))
    assert out.read_bytes() == b"old"
    prepare_lfw_subset(out, sizes=(25, 40), force=True)
    assert FaceCache(out).sizes == (25, 40)


def test_failure_leaves_no_file(tmp_path, monkeypatch):
    def boom(self, start, batch):
        raise RuntimeError("disk full")

    monkeypatch.setattr(CacheWriter, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_lfw_subset(tmp_path / "lfw.h5", sizes=(25, 40))
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "kept.h5"
    old.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        prepare_lfw_subset(old, sizes=(25,), force=True)
    assert old.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.h5"]


def test_missing_scikit_image(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"scikit-image is not installed.*pip install scikit-image") as e:
        prepare_lfw_subset(tmp_path / "lfw.h5")
    assert str(tmp_path / "lfw.h5") in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_prepare_cli(cli, tmp_path, monkeypatch):
    out = tmp_path / "x.h5"
    res = cli("prepare", "lfw-subset", "--out", out, "--sizes", "25,40")
    assert res.exit_code == 0, res.output
    assert FaceCache(out).sizes == (25, 40)
    res = cli("prepare", "lfw-subset", "--out", out)
    assert res.exit_code == 1 and "already exists" in res.output and "Traceback" not in res.output
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path / "d"))
    res = cli("prepare", "lfw-subset", "--sizes", "40")
    assert res.exit_code == 0, res.output
    assert json.loads(FaceCache(tmp_path / "d" / "lfw-subset.h5").attrs["provenance"])["sizes"] == [40]
    monkeypatch.setitem(sys.modules, "skimage", None)
    res = cli("prepare", "lfw-subset", "--out", tmp_path / "y.h5")
    assert res.exit_code == 1 and "pip install scikit-image" in " ".join(res.output.split())
    assert "Traceback" not in res.output and not (tmp_path / "y.h5").exists()
