"""Whole SynthFaces scenes for end-to-end detection evaluation.

A scene is a background (procedural clutter or a real photo, as behind face crops) with 0 to 3
faces of varied size and pose that do not overlap, all lit by one light, rendered at twice the
requested size and box-filtered down, with the same camera effects as the crops. Boxes and
landmarks are normalised to [0, 1] like every coordinate in the cache (see ``schema.SCENE_KEYS``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from facemtl.data.synth.backdrop import background, finish
from facemtl.data.synth.camera import draw_camera
from facemtl.data.synth.face import draw_face
from facemtl.data.synth.identity import make_identity
from facemtl.data.synth.sampling import SynthConfig, sample_look
from facemtl.errors import ConfigError

# Scene streams are SeedSequence([seed, index]) with this spawn key: never equal to a sample's
# stream (empty spawn key) nor to its spawned children (keys (0,) and (1,)).
SCENE_KEY = 1000
MAX_FACES = 3


def render_scene(index: int, cfg: SynthConfig, size: int = 256) -> dict:
    """Scene ``index``: ``image`` uint8 (size, size, 3), ``boxes`` float32 (k, 4) normalised
    x, y, w, h (tight head boxes, as for crops), ``landmarks`` float32 (k, 5, 2) normalised,
    with k in 0..3 (``cfg.scene_empty_fraction`` of scenes have no face)."""
    if index < 0 or size < 16:
        raise ConfigError(f"render_scene needs index >= 0 and size >= 16, got index={index}, size={size}.")
    root = np.random.SeedSequence([cfg.seed, index], spawn_key=(SCENE_KEY,))
    rng = np.random.default_rng(root)
    bg = np.random.default_rng(root.spawn(1)[0])
    base = 2 * size
    img = background(bg, base, cfg, shapes_range=(6, 16), skin_blob=0.3)
    shadow = Image.new("L", (size, size), 0)
    sdraw = ImageDraw.Draw(shadow)

    k = 0 if rng.random() < cfg.scene_empty_fraction else int(rng.integers(1, MAX_FACES + 1))
    placed: list[tuple[float, float, float]] = []  # (cx, cy, radius) in pixels
    for _ in range(k):
        height = rng.uniform(0.14, 0.45) * base  # skull top to chin
        radius = 0.62 * height                   # head, hair and hat fit in this circle
        for _attempt in range(20):
            cx, cy = rng.uniform(radius, base - radius, 2)
            if all(np.hypot(cx - x, cy - y) > 1.05 * (radius + r) for x, y, r in placed):
                placed.append((cx, cy, radius))
                break
    placed.sort(key=lambda f: f[1])  # top first: a lower person's head is drawn over a higher one's body

    light, ambient = None, 0.5
    faces, boxes, marks = [], [], []
    for cx, cy, radius in placed:
        ident = make_identity(cfg.seed, int(rng.integers(cfg.identities)))
        look = sample_look(rng, ident, cfg)
        if light is None:  # one light for the whole scene
            light, ambient = look.light, look.ambient
        look = dataclasses.replace(look, light=light, ambient=ambient)
        geo = draw_face(img, ident, look, cx, cy, radius / 1.24, shadow=sdraw)
        faces.append((geo, light, ambient))
        x, y, w, h = geo.bbox
        x0, y0 = max(0.0, x), max(0.0, y)
        x1, y1 = min(float(base), x + w), min(float(base), y + h)
        boxes.append([x0, y0, x1 - x0, y1 - y0])
        marks.append(geo.landmarks)

    scales = [geo.scale for geo, _, _ in faces]
    cam = draw_camera(rng, dataclasses.replace(cfg, sizes=(size,)), base, 0.3 * base, blurry=False)
    image = finish(img, (size,), cam, faces, shadow, 0.025 * float(np.median(scales)) if scales else 0.0)[size]
    return {
        "image": image,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / base,
        "landmarks": np.asarray(marks, dtype=np.float32).reshape(-1, 5, 2) / base,
    }
