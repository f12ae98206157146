"""SynthFaces samples: one face crop (or a non-face crop) with exact labels, at every stored size.

A sample depends only on ``(cfg, index)``: its random streams are seeded by
``SeedSequence([cfg.seed, index])`` (a main stream for the identity, look and framing, and two
spawned children for the background, photo or scene, and for the camera), so workers in any number
of processes produce the same bytes as a serial run, and forcing one attribute
(``render_face_with_attributes``) changes nothing else in the picture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

from facemtl.data.schema import pose_class_from_yaw
from facemtl.data.synth.backdrop import background, finish
from facemtl.data.synth.camera import draw_camera
from facemtl.data.synth.face import draw_face
from facemtl.data.synth.identity import Identity, make_identity
from facemtl.data.synth.negatives import negative_image
from facemtl.data.synth.paint import Look
from facemtl.data.synth.sampling import (
    SYNTH_ATTRIBUTES,
    SynthConfig,
    apply_overrides,
    attributes_of,
    sample_look,
)
from facemtl.data.synth.scene import render_scene
from facemtl.errors import ConfigError

__all__ = ["SYNTH_ATTRIBUTES", "SynthConfig", "render_face_with_attributes", "render_sample", "render_scene"]


def _streams(cfg: SynthConfig, index: int):
    if index < 0:
        raise ConfigError(f"Sample index must be >= 0, got {index}.")
    root = np.random.SeedSequence([cfg.seed, index])
    bg, fx = root.spawn(2)
    return np.random.default_rng(root), np.random.default_rng(bg), np.random.default_rng(fx)


def _draw_common(main: np.random.Generator, cfg: SynthConfig, identity_id: int | None = None):
    """The main stream's draws, identical for faces and non-faces so that they stay aligned."""
    negative = bool(main.random() < cfg.negative_fraction)
    identity = int(main.integers(cfg.identities))
    ident = make_identity(cfg.seed, identity if identity_id is None else identity_id)
    look = sample_look(main, ident, cfg)
    blurry = bool(main.random() < cfg.blur_fraction)
    f = main.uniform(*cfg.face_scale)
    jx, jy = main.uniform(-cfg.jitter, cfg.jitter, 2)
    frame = (0.5 + jx, 0.5 + jy, f / 2)  # head centre and pixels-per-unit, as fractions of the side
    return negative, ident, look, blurry, frame


LANDMARK_MARGIN = 0.02  # of the side: how far inside a tight crop the five points stay


# how far the five landmarks can lie from the head centre, in head units (half the head height):
# measured over 600 faces, at most 1.08 across (a profile's nose) and 0.92 down (the mouth)
_REACH = (1.15, 1.0)


def _points_surely_inside(frame) -> bool:
    cx, cy, s = frame
    m = LANDMARK_MARGIN
    return (m <= cx - _REACH[0] * s and cx + _REACH[0] * s <= 1 - m) and (m <= cy - _REACH[1] * s and cy + _REACH[1] * s <= 1 - m)


def _fit_landmarks(ident: Identity, look: Look, cx: float, cy: float, scale: float, side: int) -> float:
    """The largest scale up to ``scale`` at which the face's five landmarks lie inside a ``side``
    px crop (``LANDMARK_MARGIN`` in from its edges). In the tightest crops of a turned head the nose
    or a mouth corner would otherwise fall outside. The projection is linear in the scale about the
    head centre, so one trial drawing (no random draws: the sample stays the same) gives the limit."""
    geo = draw_face(Image.new("RGB", (side, side)), ident, look, cx, cy, scale)
    c = np.array([cx, cy])
    q = (geo.landmarks - c) / scale  # (5, 2) landmark offsets per unit of scale
    lo, hi = LANDMARK_MARGIN * side, (1.0 - LANDMARK_MARGIN) * side
    with np.errstate(divide="ignore"):
        limit = np.where(q > 0, (hi - c) / q, np.where(q < 0, (lo - c) / q, np.inf))
    return float(min(scale, limit.min()))


def _face_crop(cfg: SynthConfig, ident: Identity, look: Look, blurry: bool, frame, bg, fx) -> dict:
    base = cfg.render_size
    img = background(bg, base, cfg)
    shadow = Image.new("L", ((base + 1) // 2,) * 2, 0)
    scale = frame[2] * base
    if not _points_surely_inside(frame):  # a tight crop or a turned head near an edge: keep the five points inside
        scale = _fit_landmarks(ident, look, frame[0] * base, frame[1] * base, scale, base)
    geo = draw_face(img, ident, look, frame[0] * base, frame[1] * base, scale, shadow=ImageDraw.Draw(shadow))
    cam = draw_camera(fx, cfg, base, 2 * scale, blurry)
    images = finish(img, cfg.sizes, cam, [(geo, look.light, look.ambient)], shadow, 0.025 * scale)
    bbox = geo.bbox / base
    x0, y0 = np.clip(bbox[:2], 0.0, 1.0)
    x1, y1 = np.clip(bbox[:2] + bbox[2:], 0.0, 1.0)
    return {
        "images": images,
        "attributes": attributes_of(ident, look, blurry),
        "landmarks": (geo.landmarks / base).astype(np.float32),
        "bbox": np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float32),
        "face": 1,
        "identity": ident.identity_id,
        "expression": look.expression,
        "pose": np.array([look.yaw, look.pitch, look.roll], dtype=np.float32),
        "pose_class": int(pose_class_from_yaw(look.yaw)),
    }


def _negative_crop(cfg: SynthConfig, main, ident: Identity, look: Look, blurry: bool, frame, bg, fx):
    """A non-face (see ``negatives.py``) and what it placed: (sample, meta)."""
    base = cfg.render_size
    img, shadow, faces, radius, meta = negative_image(cfg, main, ident, look, frame, bg)
    cam = draw_camera(fx, cfg, base, FRAMED_HEAD * base, blurry)
    sample = {
        "images": finish(img, cfg.sizes, cam, faces, shadow, radius),
        "attributes": np.full(len(SYNTH_ATTRIBUTES), -1, dtype=np.int8),
        "landmarks": np.full((5, 2), np.nan, dtype=np.float32),
        "bbox": np.full(4, np.nan, dtype=np.float32),
        "face": 0,
        "identity": -1,
        "expression": -1,
        "pose": np.full(3, np.nan, dtype=np.float32),
        "pose_class": -1,
    }
    return sample, meta


FRAMED_HEAD = 0.7  # typical head height over the crop side, for the camera of non-faces


def render_negative(index: int, cfg: SynthConfig) -> tuple[dict, dict]:
    """The non-face that sample ``index`` would be if it were drawn as one, and what it placed:
    ``meta`` has ``kind`` (photo, scene or clutter), and ``boxes`` (k, 4), ``centres`` (k, 2, 2: head
    centre, box centre) and ``landmarks`` (k, 5, 2) of the faces drawn in or around it, in crop
    coordinates, unclipped (for tests)."""
    main, bg, fx = _streams(cfg, index)
    _, ident, look, blurry, frame = _draw_common(main, cfg)
    return _negative_crop(cfg, main, ident, look, blurry, frame, bg, fx)


def render_sample(index: int, cfg: SynthConfig) -> dict:
    """Sample ``index`` of the SynthFaces set ``cfg``; deterministic in (cfg, index).

    Returns ``images`` ({size: uint8 (size, size, 3)} for every size in ``cfg.sizes``, all resampled
    from one render), ``attributes`` (int8 (A,) in SYNTH_ATTRIBUTES order), ``landmarks`` (float32
    (5, 2) normalised, CelebA order), ``bbox`` (float32 (4,) x, y, w, h normalised), ``face`` (1/0),
    ``identity``, ``expression`` (0..6, EXPRESSION_NAMES order), ``pose`` (float32 yaw, pitch, roll
    degrees) and ``pose_class`` (0..4). Non-faces (``face`` 0) carry the schema's missing markers.
    """
    main, bg, fx = _streams(cfg, index)
    negative, ident, look, blurry, frame = _draw_common(main, cfg)
    if negative:
        return _negative_crop(cfg, main, ident, look, blurry, frame, bg, fx)[0]
    return _face_crop(cfg, ident, look, blurry, frame, bg, fx)


def render_face_with_attributes(identity_id: int, overrides: Mapping[str, int], cfg: SynthConfig,
                                size: int = 112, index: int = 0,
                                pose: tuple[float, float, float] | None = None) -> dict:
    """A face of identity ``identity_id`` with some attributes forced on (1) or off (0).

    Everything else (pose, lighting, background, noise, the other attributes) is what sample
    ``index`` would draw, so two calls that differ in one override differ only where that attribute
    is drawn. ``pose`` (yaw, pitch, roll) optionally fixes the head pose. Returns the same dict as
    :func:`render_sample`, with ``images`` holding ``size`` only.
    """
    if not 0 <= identity_id < cfg.identities:
        raise ConfigError(f"identity_id must be in [0, {cfg.identities}), got {identity_id}.")
    cfg = dataclasses.replace(cfg, sizes=(int(size),))
    main, bg, fx = _streams(cfg, index)
    _, ident, look, blurry, frame = _draw_common(main, cfg, identity_id)
    if pose is not None:
        look = dataclasses.replace(look, yaw=float(pose[0]), pitch=float(pose[1]), roll=float(pose[2]))
    ident, look, blurry = apply_overrides(ident, look, blurry, overrides)
    return _face_crop(cfg, ident, look, blurry, frame, bg, fx)
