"""Face-finder mechanics with stub detectors whose outputs the tests control: pyramid and windows,
NMS, framed re-crops, coordinates mapped back to photo pixels, MCFA's gating, aligned crops."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.errors import ConfigError
from facemtl.export.faces import FaceFinder, FinderConfig, Photo, decode_boxes, pyramid_windows, run_aligned
from facemtl.export.predict import Predictor

from ._helpers import STUB_POINTS, StubBackend, stub_photo

FACES = [(30, 40, 50, 50), (150, 90, 80, 80)]  # x, y, w, h in a 260 x 200 photo


def _match(found, truth, tol):
    for x, y, w, h in truth:
        dist = [np.abs(np.asarray(f["box"]) - (x, y, w, h)).max() for f in found]
        assert min(dist) <= tol, (truth, [f["box"] for f in found])


def test_pyramid_windows_cover_the_photo_at_every_scale():
    photo = Photo(stub_photo((200, 260), []))
    cfg = FinderConfig(min_face=35, scale_step=1.5, stride=0.25)
    levels = list(pyramid_windows(photo, 32, cfg, box_height=0.7))
    windows = np.concatenate([w for w, _ in levels])
    sides = sorted(set(np.round(windows[:, 2], 3)))
    assert sides[0] == pytest.approx(50.0) and sides[-1] <= 200 + 1e-6
    assert np.allclose(np.diff(np.log(sides)), np.log(1.5))
    for side in sides:  # each level reaches both far borders, and no window leaves the photo
        w = windows[np.isclose(windows[:, 2], side)]
        assert w[:, 0].min() == 0 and w[:, 1].min() == 0
        assert np.isclose((w[:, 0] + side).max(), 260, atol=side / 32 + 1e-6)
        assert np.isclose((w[:, 1] + side).max(), 200, atol=side / 32 + 1e-6)
    assert all(img.shape[1:] == (3, 32, 32) for _, img in levels)


def test_window_pixels_match_the_photo():
    """A window's image is the photo region it claims (checked on a bright square's position)."""
    photo = Photo(stub_photo((200, 260), [FACES[1]]))
    cfg = FinderConfig(min_face=56, scale_step=10.0, stride=0.25)  # one level: windows of side 80
    (windows, images), *_ = list(pyramid_windows(photo, 32, cfg, box_height=0.7))
    for (x0, y0, side), img in zip(windows, images):
        bright = img.mean(0) > 0.5
        if bright.any():
            ys, xs = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
            assert x0 + xs[0] * side / 32 == pytest.approx(max(x0, 150), abs=side / 32 + 1e-6)
            assert y0 + ys[0] * side / 32 == pytest.approx(max(y0, 90), abs=side / 32 + 1e-6)


def test_decode_boxes_maps_window_coordinates_to_pixels():
    det = np.array([[0.0, 0.25, 0.5, 0.5, 0.25]])
    p, b = decode_boxes(det, np.array([[10.0, 20.0, 40.0]]))
    assert p[0] == pytest.approx(0.5)
    np.testing.assert_allclose(b[0], [20.0, 40.0, 20.0, 10.0])


def test_finds_faces_merges_duplicates_and_maps_landmarks_back():
    backend = StubBackend([32])
    faces = Predictor(backend, FinderConfig(min_face=30, stride=0.25)).predict(stub_photo((200, 260), FACES))
    assert len(faces) == 2  # many windows fire on each square: NMS leaves one per face
    _match(faces, FACES, tol=3.0)
    for f in faces:
        x, y, w, h = f["box"]
        pts = np.array(list(f["landmarks"].values()))
        np.testing.assert_allclose(pts, np.array([x, y]) + STUB_POINTS * np.array([w, h]), atol=1.0)
        assert f["score"] > 0.99


def test_refinement_reframes_each_face_like_a_training_crop():
    backend = StubBackend([32])
    finder = FaceFinder(backend, FinderConfig(min_face=30, stride=0.25))
    found = finder.find(Photo(stub_photo((200, 260), FACES)))
    for face in found:  # the last crop holds the box at its centre, box height 0.70 of the side
        x0, y0, side = face.crop
        x, y, w, h = face.box
        assert h / side == pytest.approx(0.7, abs=0.03)
        assert (x + w / 2 - x0) / side == pytest.approx(0.5, abs=0.03)
        assert (y + h / 2 - y0) / side == pytest.approx(0.5, abs=0.03)


def test_no_faces_and_faces_at_the_border():
    backend = StubBackend([32])
    pred = Predictor(backend, FinderConfig(min_face=30, stride=0.25))
    assert pred.predict(stub_photo((120, 160), [])) == []
    border = [(4, 3, 50, 50)]  # the framed re-crop leaves the photo: zero padding
    _match(pred.predict(stub_photo((200, 260), border)), border, tol=3.0)


def test_cascade_gates_windows_between_stages():
    backend = StubBackend([16, 32, 64], cascade=True)
    faces = Predictor(backend, FinderConfig(min_face=30, stride=0.25)).predict(stub_photo((200, 260), FACES))
    _match(faces, FACES, tol=4.0)
    seen = {i: sum(n for s, n in backend.calls if s == i) for i in range(3)}
    # M_Net and L_Net only see what S_Net passed (plus the final framed crops)
    assert seen[1] < seen[0] / 5 and seen[2] <= seen[1]


def test_aligned_runs_on_the_centred_square():
    backend = StubBackend([32])
    img = stub_photo((120, 100), [(15, 25, 70, 70)])  # centred square: (0, 10, 100)
    face = run_aligned(backend, Photo(img))
    assert face.crop == (0.0, 10.0, 100.0)
    np.testing.assert_allclose(face.box, [15, 25, 70, 70], atol=3.2)


def test_a_model_without_detection_head_needs_aligned(tmp_path):
    backend = StubBackend([32])
    backend.meta.tasks = backend.meta.tasks[1:]
    pred = Predictor(backend)
    with pytest.raises(ConfigError, match="--aligned"):
        pred.predict(stub_photo((64, 64), []))
    face = pred.predict(stub_photo((64, 64), []), aligned=True)[0]
    assert face["score"] is None and face["box"] == [0, 0, 64, 64]


def test_finder_options_are_checked():
    with pytest.raises(ConfigError, match="scale step"):
        FinderConfig(scale_step=1.0)
    with pytest.raises(ConfigError, match="threshold"):
        FinderConfig(threshold=1.5)
