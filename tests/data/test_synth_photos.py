"""SynthFaces' real-photo content, non-faces and camera effects: the photo list, the rules that
keep non-faces free of faces, determinism with photos, the fallback without scikit-image, and the
camera effects (labels unchanged, strong blur only for Blurry images)."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sys

import numpy as np
import pytest
from PIL import Image

from facemtl.data.synth import SynthConfig, photos, render_face_with_attributes, render_sample
from facemtl.data.synth.camera import draw_camera, optics
from facemtl.data.synth.render import render_negative
from facemtl.errors import ConfigError

from .test_synth_render import _same  # byte-exact comparison of two samples

# held out as real-face checks (and faces): never to be used by SynthFaces in any way
HELD_OUT = {"astronaut", "camera", "cat", "chelsea", "coffee", "lfw_subset"}
CFG = SynthConfig(sizes=(32,), identities=100)  # renders at 64 px


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# --- the photo list ----------------------------------------------------------------------------

def test_photo_list_excludes_held_out_and_face_images():
    assert not HELD_OUT & set(photos.PHOTO_NAMES)
    assert set(photos.EXCLUDED_PHOTOS) >= HELD_OUT
    assert not any("lfw" in n or "face" in n or "astronaut" in n for n in photos.PHOTO_NAMES)
    assert len(set(photos.PHOTO_NAMES)) == len(photos.PHOTO_NAMES) >= 15


def test_every_photo_loads_offline_as_rgb_pyramid():
    pytest.importorskip("skimage")
    for name in photos.PHOTO_NAMES:
        levels = photos.photo_pyramid(name)
        assert levels[0].mode == "RGB" and max(levels[0].size) <= 512 and min(levels[0].size) >= 64, name
        assert all(b.size[0] * 2 <= a.size[0] + 1 for a, b in zip(levels, levels[1:]))
    with pytest.raises(ConfigError):
        photos.photo_pyramid("astronaut")


def test_photo_windows_vary_and_are_deterministic():
    pytest.importorskip("skimage")
    a = [np.asarray(photos.photo_window(np.random.default_rng(i), 48)) for i in range(20)]
    b = [np.asarray(photos.photo_window(np.random.default_rng(i), 48)) for i in range(20)]
    assert all(x.shape == (48, 48, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 20 and np.std([x.mean() for x in a]) > 10


# --- non-faces ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def negatives() -> list[tuple[dict, dict]]:
    return [render_negative(i, CFG) for i in range(240)]


def test_negative_kinds_follow_the_mix(negatives):
    kinds = [m["kind"] for _, m in negatives]
    share = {k: kinds.count(k) / len(kinds) for k in ("photo", "scene", "clutter")}
    # scene windows fall back to clutter when no clear window is found, which is rare
    assert abs(share["photo"] - 0.4) < 0.1 and abs(share["scene"] - 0.35) < 0.1 and 0.15 < share["clutter"] < 0.4
    for s, _ in negatives:
        assert s["face"] == 0 and s["identity"] == -1 and np.isnan(s["bbox"]).all()
        assert s["images"][32].shape == (32, 32, 3)


def test_negatives_hold_no_face_centre_and_overlap_every_face_little(negatives):
    checked = 0
    for _, meta in negatives:
        for box, centres in zip(meta["boxes"], meta["centres"]):
            for cx, cy in centres:  # head centre and box centre
                assert not (0 <= cx <= 1 and 0 <= cy <= 1), meta["kind"]
            assert _iou(box, (0, 0, 1, 1)) < 0.3
            side = box[3] / 0.7  # the square a face crop would frame around this face
            framed = (box[0] + box[2] / 2 - side / 2, box[1] + box[3] / 2 - side / 2, side, side)
            assert _iou(framed, (0, 0, 1, 1)) < 0.3
            checked += 1
        if meta["kind"] == "scene":  # never eye, nose and mouth of one face together
            for marks in meta["landmarks"]:
                inside = (marks >= 0).all(axis=1) & (marks <= 1).all(axis=1)
                assert inside.sum() <= 2
    scene_faces = sum(len(m["boxes"]) for _, m in negatives if m["kind"] == "scene")
    assert checked > 60 and scene_faces > 40
    # scene windows show people: some of their faces reach into the window
    reach = [b for _, m in negatives if m["kind"] == "scene" for b in m["boxes"] if _iou(b, (0, 0, 1, 1)) > 0]
    assert len(reach) > 10


def test_negative_images_differ_from_each_other(negatives):
    imgs = [s["images"][32] for s, _ in negatives[:60]]
    assert len({x.tobytes() for x in imgs}) == 60


# --- determinism with photos -------------------------------------------------------------------

def _render_chunk(indices: list[int]) -> list[dict]:
    cfg = SynthConfig(sizes=(32, 64), identities=100)
    return [render_sample(i, cfg) for i in indices] + [render_negative(i, cfg)[0] for i in indices]


def test_photos_and_negatives_are_deterministic_across_processes():
    serial = _render_chunk(list(range(12)))
    photos.photo_pyramid.cache_clear()  # the workers decode the photos again
    with mp.get_context("fork").Pool(2) as pool:
        parts = pool.map(_render_chunk, [list(range(6)), list(range(6, 12))])
    parallel = parts[0][:6] + parts[1][:6] + parts[0][6:] + parts[1][6:]
    assert all(_same(a, b) for a, b in zip(serial, parallel))


# --- without scikit-image ----------------------------------------------------------------------

@pytest.fixture
def no_skimage(monkeypatch):
    for fn in (photos.skimage_available, photos._warn_fallback, photos.photo_pyramid):
        fn.cache_clear()
    for name in [m for m in sys.modules if m == "skimage" or m.startswith("skimage.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    yield
    for fn in (photos.skimage_available, photos._warn_fallback, photos.photo_pyramid):
        fn.cache_clear()


def test_fallback_without_skimage_is_procedural_and_recorded(no_skimage, caplog):
    with caplog.at_level(logging.WARNING, logger="facemtl.data.synth.photos"):
        cfg = SynthConfig(sizes=(32,), identities=50)
        SynthConfig(sizes=(32,), identities=50)
    assert cfg.photo_source == "none"
    assert sum("scikit-image" in r.message for r in caplog.records) == 1  # warned once
    assert json.loads(json.dumps(cfg.to_dict()))["photo_source"] == "none"
    kinds = set()
    for i in range(40):
        s, meta = render_negative(i, cfg)
        kinds.add(meta["kind"])
        assert s["images"][32].shape == (32, 32, 3)
        render_sample(i, cfg)
    assert kinds == {"photo", "scene", "clutter"}  # "photo" negatives are procedural texture here
    a, b = render_sample(3, cfg), render_sample(3, cfg)
    assert _same(a, b)
    with pytest.raises(ConfigError, match="scikit-image"):
        explicit = SynthConfig(sizes=(32,), identities=50, photo_source="skimage", negative_fraction=0.0,
                               photo_background=1.0)
        render_sample(0, explicit)


def test_photo_source_is_resolved_and_json_friendly():
    cfg = SynthConfig()
    assert cfg.photo_source in ("skimage", "none")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert SynthConfig(**d) == cfg
    with pytest.raises(ConfigError):
        SynthConfig(photo_source="flickr")
    with pytest.raises(ConfigError):
        SynthConfig(negative_mix=(1.0, -1.0, 0.5))
    with pytest.raises(ConfigError):
        SynthConfig(jpeg_quality=(50, 20))


# --- camera effects ----------------------------------------------------------------------------

def test_camera_effects_keep_every_label():
    on = SynthConfig(sizes=(64,), identities=100)
    off = SynthConfig(sizes=(64,), identities=100, camera_effects=False)
    changed = 0
    for i in range(30):
        a, b = render_sample(i, on), render_sample(i, off)
        for key in a:
            if key != "images":
                assert np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True), key
        changed += not np.array_equal(a["images"][64], b["images"][64])
    assert changed > 20


def _sharpness(img: Image.Image) -> float:
    g = np.asarray(img, np.float32).mean(axis=2)
    gx, gy = np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1]
    return float(np.sqrt((gx * gx + gy * gy).mean()))


@pytest.mark.parametrize("base", [224, 128])
def test_strong_blur_only_for_blurry_images(base):
    """On the same fixed content, every camera of a non-Blurry image keeps more detail than every
    camera of a Blurry one (defocus or a 14-28 px head blown up)."""
    rng = np.random.default_rng(0)
    layers = [Image.fromarray((rng.random((k, k)) * 255).astype(np.uint8)).resize((base, base), Image.BICUBIC)
              for k in (8, 32, base)]
    img = Image.fromarray((sum(np.asarray(x, np.float32) for x in layers) / 3).astype(np.uint8)).convert("RGB")
    ref = _sharpness(img)
    cfg = SynthConfig(sizes=(base // 2,))
    sharp, blurry, mild = [], [], 0
    for i in range(300):
        head = base * rng.uniform(0.62, 0.78)
        s0 = _sharpness(optics(img, draw_camera(np.random.default_rng(i), cfg, base, head, False))) / ref
        s1 = _sharpness(optics(img, draw_camera(np.random.default_rng(i), cfg, base, head, True))) / ref
        sharp.append(s0)
        blurry.append(s1)
        mild += s0 < 0.99
    assert min(sharp) > max(blurry)
    assert mild > 30  # low resolution and motion blur do happen to non-Blurry images


def test_blurry_faces_are_blurrier_than_the_same_face_without():
    cfg = SynthConfig(sizes=(112,), noise_sd=(0.0, 0.0), jpeg_fraction=0.0)
    for i in range(8):
        a = render_face_with_attributes(i, {"Blurry": 0}, cfg, 112, index=i)["images"][112]
        b = render_face_with_attributes(i, {"Blurry": 1}, cfg, 112, index=i)["images"][112]
        assert _sharpness(Image.fromarray(b)) < 0.8 * _sharpness(Image.fromarray(a))


def test_face_slivers_and_skin_blobs_set_the_hardest_non_faces():
    """face_slivers = 0: no clutter non-face holds part of a face; skin_blobs = 0 changes only
    non-faces with a blob; both are checked when the config is built."""
    cfg = SynthConfig(sizes=(32,), identities=100, negative_mix=(0, 0, 1))  # clutter only
    with_slivers = [render_negative(i, cfg)[1] for i in range(40)]
    share = np.mean([len(m["boxes"]) > 0 for m in with_slivers])
    assert 0.4 < share < 0.8  # the default 0.6
    none = SynthConfig(sizes=(32,), identities=100, negative_mix=(0, 0, 1), face_slivers=0.0)
    without = [render_negative(i, none) for i in range(40)]
    assert all(len(m["boxes"]) == 0 for _, m in without)
    no_blob = SynthConfig(sizes=(32,), identities=100, negative_mix=(0, 0, 1), face_slivers=0.0, skin_blobs=0.0)
    same = [_same(s, render_negative(i, no_blob)[0]) for i, (s, _) in enumerate(without)]
    assert 0 < sum(not s for s in same) < 40  # some clutter had a skin blob (35 %), the rest is unchanged
    with pytest.raises(ConfigError, match="face_slivers"):
        SynthConfig(face_slivers=1.5)
    with pytest.raises(ConfigError, match="skin_blobs"):
        SynthConfig(skin_blobs=-1)
