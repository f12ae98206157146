"""SynthFaces non-faces (face = 0): what a sliding-window face detector must learn to reject.

Three kinds, mixed by ``SynthConfig.negative_mix``:

photo
    a window of a real photo (``photos.py``) at a random position and scale, from a few photo
    pixels blown up into blurry texture to the whole photo; sometimes with shapes on top. Without
    scikit-image: procedural texture.
scene
    a window cut from a SynthFaces scene of one to three people (bodies, clothes, hair, parts of
    faces) *away from every face*: it contains no face centre and at most 2 of a face's 5
    landmarks, and its IoU with every face box, and with every face's training-style square, is
    below 0.3 (the hard negatives of MTCNN).
clutter
    procedural clutter (or a photo), often with a skin-coloured blob, and in 60 % of them a sliver
    of a face whose centre lies outside the crop.

``negative_image`` also returns what it placed (face boxes and centres in crop coordinates), so
that tests can check those rules.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from facemtl.data.synth.backdrop import background, photo_or_texture, shapes
from facemtl.data.synth.face import FaceGeometry, draw_face
from facemtl.data.synth.identity import Identity, make_identity
from facemtl.data.synth.paint import Look
from facemtl.data.synth.sampling import SynthConfig, sample_look

KINDS = ("photo", "scene", "clutter")
MAX_IOU = 0.3
MAX_LANDMARKS = 2  # of a face's 5 landmarks, at most this many in a scene window
FRAMED = 0.7  # a loosely framed face crop's head height over its side (SynthConfig.face_scale is 0.6-1.4)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x, y, w, h boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def _boxes_to_avoid(box: np.ndarray, side: float) -> list[np.ndarray]:
    """The boxes a window must avoid for one face (x, y, w, h ``box``) on a ``side`` px canvas: the
    box, the box clipped to the canvas, and the square a face crop would frame around it."""
    lo = np.clip(box[:2], 0, side)
    hi = np.clip(box[:2] + box[2:], 0, side)
    clipped = np.concatenate([lo, np.maximum(hi - lo, 1e-6)])
    sq = box[3] / FRAMED
    framed = np.array([box[0] + box[2] / 2 - sq / 2, box[1] + box[3] / 2 - sq / 2, sq, sq])
    return [box, clipped, framed]


def _box_centres(box: np.ndarray, side: float) -> np.ndarray:
    """(2, 2): the centre of a box and of the box clipped to the canvas."""
    lo, hi = np.clip(box[:2], 0, side), np.clip(box[:2] + box[2:], 0, side)
    return np.array([box[:2] + box[2:] / 2, (lo + hi) / 2])


def face_centres(geo: FaceGeometry, side: float) -> np.ndarray:
    """(3, 2): the head centre, the box centre and the centre of the box clipped to the canvas."""
    return np.concatenate([np.asarray(geo.centre, dtype=np.float64)[None], _box_centres(np.asarray(geo.bbox, dtype=np.float64), side)])


def _inside(pts: np.ndarray, window: np.ndarray) -> np.ndarray:
    x, y, w, h = window
    return (pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)


def _clear_of_one(window: np.ndarray, centres: np.ndarray, landmarks: np.ndarray, box: np.ndarray, side: float,
                  max_landmarks: int = MAX_LANDMARKS) -> bool:
    if _inside(centres, window).any() or _inside(landmarks, window).sum() > max_landmarks:
        return False
    return all(_iou(window, b) < MAX_IOU for b in _boxes_to_avoid(box, side))


def window_is_clear(window: np.ndarray, geos: list[FaceGeometry], side: float) -> bool:
    """True when the x, y, w, h window holds no face centre and at most 2 of any face's 5
    landmarks (never eye, nose and mouth together), and has IoU < 0.3 with every face box."""
    return all(_clear_of_one(window, face_centres(g, side), g.landmarks, np.asarray(g.bbox, dtype=np.float64), side)
               for g in geos)


def window_clear_of(window: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, side: float,
                    max_landmarks: int = MAX_LANDMARKS) -> bool:
    """:func:`window_is_clear` for faces known by their x, y, w, h boxes (k, 4) and landmarks
    (k, 5, 2) in canvas pixels (a rendered scene's labels): the box centres stand for the head's;
    ``max_landmarks`` of a face's landmarks may lie in the window (0: none, no part of a face's
    eyes, nose or mouth)."""
    return all(_clear_of_one(window, _box_centres(b, side), m, b, side, max_landmarks) for b, m in zip(boxes, landmarks))


def _meta(kind: str, geos: list[FaceGeometry], side: float) -> dict:
    """Boxes and centres of the faces (partly) in a crop of ``side`` px, normalised to the crop."""
    return {
        "kind": kind,
        "boxes": np.array([np.asarray(g.bbox) / side for g in geos], dtype=np.float64).reshape(-1, 4),
        "centres": np.array([face_centres(g, side)[:2] / side for g in geos]).reshape(-1, 2, 2),
        "landmarks": np.array([g.landmarks / side for g in geos]).reshape(-1, 5, 2),
    }


def _scene_window(cfg: SynthConfig, rng: np.random.Generator, base: int):
    """A window of a scene of people, away from every face; None when no clear window was found."""
    side = 3 * base // 2
    canvas = background(rng, side, cfg, shapes_range=(4, 14), skin_blob=0.3 * cfg.skin_blobs)
    shadow = Image.new("L", ((side + 1) // 2,) * 2, 0)
    sdraw = ImageDraw.Draw(shadow)
    k = 1 + int(np.searchsorted([0.6, 0.9], rng.random()))  # 1, 2 or 3 people (60, 30, 10 %)
    heads = rng.uniform(0, 1, (k, 3))
    order = np.argsort(heads[:, 1])  # top first: a lower person is drawn over a higher one's body
    light, ambient, geos = None, 0.5, []
    for j in order:
        height = side * float(np.exp(np.log(0.15) + heads[j, 2] * np.log(1.2 / 0.15)))  # skull top to chin
        cx, cy = (-0.1 + 1.2 * heads[j, 0]) * side, (-0.1 + 1.1 * heads[j, 1]) * side
        ident = make_identity(cfg.seed, int(rng.integers(cfg.identities)))
        look = sample_look(rng, ident, cfg)
        if light is None:
            light, ambient = look.light, look.ambient
        look = dataclasses.replace(look, light=light, ambient=ambient)
        geos.append(draw_face(canvas, ident, look, cx, cy, height / 2, shadow=sdraw))
    for _attempt in range(40):
        w = float(rng.uniform(0.4, 0.9)) * side
        u = rng.random(4)
        if u[0] < 0.6:  # next to a face: parts of heads, shoulders and bodies, the hardest non-faces
            g = geos[int(u[1] * len(geos))]
            ang = 2 * np.pi * u[2]
            dist = (0.5 + 0.6 * u[3]) * (w / 2 + g.bbox[3] / 2)
            x, y = g.centre + dist * np.array([np.cos(ang), np.sin(ang)]) - w / 2
        else:
            x, y = u[1] * (side - w), u[2] * (side - w)
        x, y = float(np.clip(x, 0, side - w)), float(np.clip(y, 0, side - w))
        if window_is_clear(np.array([x, y, w, w]), geos, side):
            break
    else:
        return None
    img = canvas.resize((base, base), Image.BILINEAR, box=(x, y, x + w, y + w))
    half = (base + 1) // 2
    shadow = shadow.resize((half, half), Image.BILINEAR, box=(x / 2, y / 2, (x + w) / 2, (y + w) / 2))
    kscale = base / w
    moved = [g.moved(x, y, kscale) for g in geos]
    return img, shadow, [(g, light, ambient) for g in moved], 0.025 * float(np.median([g.scale for g in moved])), \
        _meta("scene", moved, base)


def negative_image(cfg: SynthConfig, main: np.random.Generator, ident: Identity, look: Look, frame,
                   bg: np.random.Generator):
    """(render, shadow layer, faces for the light field, shadow blur radius, meta) of one non-face."""
    base = cfg.render_size
    photos = cfg.photo_source == "skimage"
    u = main.random(6)
    kind = KINDS[int(np.searchsorted(np.cumsum(cfg.negative_mix), u[0] * 0.999999, side="right"))]
    if kind == "photo":
        img = photo_or_texture(bg, base, photos, tiny=0.2)
        if u[1] < 0.3:
            shapes(bg, img, (1, 4), skin_blob=0.4 * cfg.skin_blobs)
        return img, None, [], 0.0, _meta("photo", [], base)
    if kind == "scene":
        out = _scene_window(cfg, bg, base)
        if out is not None:
            return out
    # clutter: in cfg.face_slivers (60 %) a sliver of a face at an edge, its centre outside the crop
    img = background(bg, base, cfg, shapes_range=(3, 12), skin_blob=0.35 * cfg.skin_blobs)
    shadow = Image.new("L", ((base + 1) // 2,) * 2, 0)
    faces, geos = [], []
    if u[2] < cfg.face_slivers:
        out = (0.16 + 0.14 * u[3]) * base  # head centre this far outside the crop
        along = (0.2 + 0.6 * u[4]) * base
        side = int(u[5] * 4)
        cx, cy = [(-out, along), (base + out, along), (along, -out), (along, base + out)][side]
        geo = draw_face(img, ident, look, cx, cy, frame[2] * base, shadow=ImageDraw.Draw(shadow))
        faces.append((geo, look.light, look.ambient))
        geos.append(geo)
    return img, shadow, faces, 0.025 * frame[2] * base, _meta("clutter", geos, base)
