"""Draws one SynthFaces head (skin, ears, eyes, brows, nose, mouth, facial hair...) on a PIL image.

``draw_face`` paints in back-to-front order and returns the exact labels of what it drew: the
five landmarks (the same projected 3-D points the features are drawn around) and the face box.
Lighting is not painted here: the caller multiplies the image by the light field afterwards, and
by the soft shadows (eye sockets, nose, lip, chin, hairline) that ``draw_face`` paints into an
optional half-resolution shadow layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from facemtl.data.synth import accessories as acc
from facemtl.data.synth.head import Projector, head_shape, hull
from facemtl.data.synth.identity import Identity
from facemtl.data.synth.paint import (
    BROW_Y,
    EXPRESSIONS,
    EYE_Y,
    HAIR_BACK,
    MOUTH_Y,
    NOSE_TIP_Y,
    Look,
    Painter,
    ellipse_xy,
    mix_rgb,
    scale_rgb,
)

_S13 = np.linspace(-1.0, 1.0, 13)
_S15 = np.linspace(-1.0, 1.0, 15)
_B9 = np.linspace(0.0, 1.0, 9)
_T7 = np.linspace(0.0, 1.0, 7)[:, None]
_FOREHEAD = np.linspace(-0.22, 0.22, 7)
_CHIN = np.linspace(-0.26, 0.26, 7)
_CIRCLE = np.column_stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                           np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))])
HAPPY = 3


@dataclass
class FaceGeometry:
    """Pixel-space labels of one drawn face, plus what the shading needs."""

    landmarks: np.ndarray  # (5, 2) CelebA order
    bbox: np.ndarray       # (4,) x, y, w, h: tight box of the projected head (skull and jaw) and the nose tip
    centre: np.ndarray     # (2,) projected head centre
    outline: np.ndarray    # (2, 2) M with q^T M q = 1 the projected head ellipse, q in pixels
    scale: float = 0.0     # pixels per head unit
    texture: tuple[int, int, float] = (0, 0, 0.0)  # skin texture: offsets into the bank, amplitude

    def moved(self, x0: float, y0: float, k: float) -> FaceGeometry:
        """The same face in a window whose top-left corner is (x0, y0), scaled by ``k``."""
        shift = np.array([x0, y0])
        box = np.concatenate([(self.bbox[:2] - shift) * k, self.bbox[2:] * k])
        return FaceGeometry(landmarks=(self.landmarks - shift) * k, bbox=box, centre=(self.centre - shift) * k,
                            outline=self.outline / (k * k), scale=self.scale * k, texture=self.texture)


def _eye(p: Painter, ident: Identity, look: Look, e: tuple, sx: float) -> np.ndarray:
    """Draws one eye; returns its centre (the pupil) in the head frame."""
    sh = p.shape
    ex, ey = sx * ident.eye_spacing, EYE_Y
    hw, hh = ident.eye_size, 0.055 * ident.eye_open * e[2]
    gx, gy = look.gaze
    centre = sh.lift(np.array([[ex + gx, ey + gy]]), 0.004)[0]
    if p.proj.facing(sh.normal(ex, ey)) < 0.08:
        return centre  # turned away: hidden, but the landmark is still the projected 3-D point
    s = _S13
    up = hh * (1 - s * s) ** 0.7 * (1 - 0.12 * s * sx)
    lo = 0.7 * hh * (1 - s * s) ** 0.9
    x = ex + s * hw
    almond = np.vstack([np.column_stack([x, ey - up]), np.column_stack([x[::-1], (ey + lo)[::-1]])])
    skin = ident.skin

    def clipped(r: float) -> np.ndarray:
        pts = np.array([ex + gx, ey + gy]) + r * _CIRCLE
        si = np.minimum(np.maximum((pts[:, 0] - ex) / hw, -0.999), 0.999)
        top = ey - hh * (1 - si * si) ** 0.7 * (1 - 0.12 * si * sx)
        bot = ey + 0.7 * hh * (1 - si * si) ** 0.9
        pts[:, 1] = np.minimum(np.maximum(pts[:, 1], top), bot)
        pts[:, 0] = ex + hw * si
        return pts

    # the socket (upper lid and the hollow under the brow) is darker than the cheek; the eye white
    # is shaded too: at 25 px an eye reads as a dark band with a lighter core, as in photos
    crease = np.column_stack([ex + s * hw * 1.05, ey - up - 0.03 - 0.012 * (1 - s * s)])
    p.surf_batch([
        (ellipse_xy(ex, ey - 0.03, hw * 1.38, hh + 0.065, 14), scale_rgb(skin, 0.86), 0.0, None),
        (ellipse_xy(ex, ey - 0.014, hw * 1.16, hh + 0.03, 14), scale_rgb(skin, 0.74), 0.0, None),
        (almond, mix_rgb(skin, (238, 234, 228), 0.6), 0.0, None),
        (clipped(0.056), ident.iris_rgb, 0.002, None),
        (clipped(0.027), (12, 10, 10), 0.003, None),
        (crease, scale_rgb(skin, 0.66), 0.0, 0.012),
        (np.column_stack([x, ey + lo]), scale_rgb(skin, 0.55), 0.0, 0.012),
        (np.column_stack([x, ey - up]), (30, 22, 22), 0.0, 0.032 if not ident.male else 0.026),
    ])
    g = p.proj(centre[None] + np.array([[-0.022, -0.02, 0.0]]))[0]  # glint on the iris, off the pupil
    r = max(1.0, 0.011 * p.proj.s)
    p.draw.ellipse([g[0] - r, g[1] - r, g[0] + r, g[1] + r], fill=(250, 250, 250))
    return centre


def _brows(p: Painter, ident: Identity, e: tuple) -> None:
    sh = p.shape
    ex = ident.eye_spacing
    b = _B9
    arch = 0.05 if ident.arched_brows else 0.022
    peak = np.clip(1 - ((b - 0.62) / 0.62) ** 2, 0, 1)
    yc = BROW_Y - e[0] - e[1] * (1 - b) - arch * peak + (0.02 * b ** 2 if ident.arched_brows else 0.0)
    th = ident.brow_thickness * (1 - 0.55 * b)
    items = []
    rgb = acc.brow_colour(ident)
    for sx in (-1.0, 1.0):
        if p.proj.facing(sh.normal(sx * ex, BROW_Y)) < 0.05:
            continue
        x = sx * (ex - 0.13 + b * 0.28)
        xy = np.vstack([np.column_stack([x, yc - th / 2]), np.column_stack([x[::-1], (yc + th / 2)[::-1]])])
        items.append((xy, rgb, 0.006, None))
    if items:
        p.surf_batch(items)


def _nose(p: Painter, ident: Identity, look: Look) -> np.ndarray:
    """Draws the nose; returns its tip (a landmark) in the head frame."""
    sh = p.shape
    L = ident.nose_length
    W = 0.095 * (1 + 0.9 * (L - 1))
    ty = NOSE_TIP_Y + 0.03 * (L - 1)
    sd = -1.0 if look.light[0] > 0 else 1.0  # the side away from the light is in shadow
    # (x, y, height above the surface); all points lifted in one call
    spec = np.array([
        # 0-8 outline of the nose body
        (-0.035, -0.05, 0.03), (-0.045, 0.14, 0.1 * L), (-0.05, ty, 0.17 * L), (-W, ty + 0.04, 0.05),
        (0.0, ty + 0.075, 0.12 * L), (W, ty + 0.04, 0.05), (0.05, ty, 0.17 * L), (0.045, 0.14, 0.1 * L),
        (0.035, -0.05, 0.03),
        # 9-15 shadow on one side
        (sd * 0.035, -0.03, 0.03), (sd * 0.05, 0.14, 0.1 * L), (sd * 0.7 * W, ty - 0.03, 0.1 * L),
        (sd * W, ty + 0.04, 0.05), (sd * 0.03, ty + 0.06, 0.14 * L), (0.0, ty, 0.2 * L), (0.0, 0.14, 0.11 * L),
        # 16-23 the two alar creases
        (-0.6 * W, ty - 0.04, 0.09 * L), (-1.02 * W, ty + 0.01, 0.05), (-0.95 * W, ty + 0.06, 0.05),
        (-0.6 * W, ty + 0.075, 0.08 * L),
        (0.6 * W, ty - 0.04, 0.09 * L), (1.02 * W, ty + 0.01, 0.05), (0.95 * W, ty + 0.06, 0.05),
        (0.6 * W, ty + 0.075, 0.08 * L),
    ])
    pts = sh.lift(spec[:, :2], spec[:, 2])
    tip = pts[14]
    skin = ident.skin
    p.poly(pts[0:9], fill=scale_rgb(skin, 0.97))
    p.poly(pts[9:16], fill=scale_rgb(skin, 0.8))
    crease = scale_rgb(skin, 0.62)
    p.line(pts[16:20], fill=crease, width=0.014)
    p.line(pts[20:24], fill=crease, width=0.014)
    nz = tip[2] - 0.09 * L
    for sx in (-1.0, 1.0):
        nostril = ellipse_xy(sx * 0.45 * W, ty + 0.062, 0.032 * L, 0.014, 10)
        p.poly(np.column_stack([nostril, np.full(10, nz)]), fill=scale_rgb(skin, 0.38))
    hl = ellipse_xy(-sd * 0.015, ty - 0.01, 0.022, 0.016, 8)
    p.poly(np.column_stack([hl, np.full(8, tip[2] + 0.005)]), fill=scale_rgb(skin, 1.12))
    return tip


def _mouth(p: Painter, ident: Identity, look: Look, e: tuple) -> np.ndarray:
    """Draws lips (and teeth when open); returns the two corners (image-left first)."""
    mw = ident.mouth_width * e[5]
    curve, sneer = e[3], e[6]
    opening = e[4] if look.mouth_open else 0.0
    s = _S15
    x = s * mw
    line = MOUTH_Y - curve * s * s
    bulge = (1 - s * s) ** (0.5 if e[5] < 0.8 else 0.8)  # a rounder "O" for surprise
    inner_top = line - opening * 0.3 * bulge - sneer * np.clip(s, 0, 1) * (1 - s * s) * 1.5
    inner_bot = line + opening * 0.7 * bulge
    tu = ident.lip_thickness * (0.65 if e[0] < -0.03 else 0.85)
    tl = ident.lip_thickness * (0.75 if e[0] < -0.03 else 1.1)
    top = inner_top - tu * (1 - s * s) ** 0.6 * (1 - 0.35 * np.exp(-(s / 0.18) ** 2)) - 0.004
    bot = inner_bot + tl * (1 - s * s) ** 0.7 + 0.004
    lip = ident.lipstick_rgb if look.lipstick else ident.lip_rgb
    dz = 0.015
    items = []
    if opening > 0:
        items.append((np.vstack([np.column_stack([x, inner_top]), np.column_stack([x[::-1], inner_bot[::-1]])]),
                      (72, 22, 28), dz, None))
        if e[7]:
            k = np.abs(s) < 0.8
            teeth_low = inner_top[k] + np.minimum(opening * 0.45, 0.035) * (1 - s[k] ** 2) ** 0.5
            items.append((np.vstack([np.column_stack([x[k], inner_top[k]]),
                                     np.column_stack([x[k][::-1], teeth_low[::-1]])]), (238, 234, 222), dz, None))
    items.append((np.vstack([np.column_stack([x, top]), np.column_stack([x[::-1], inner_top[::-1]])]),
                  scale_rgb(lip, 0.82), dz, None))
    items.append((np.vstack([np.column_stack([x, inner_bot]), np.column_stack([x[::-1], bot[::-1]])]), lip, dz, None))
    if opening == 0:
        items.append((np.column_stack([x, line]), scale_rgb(lip, 0.4), dz, 0.018))
    p.surf_batch(items)
    return p.shape.lift(np.array([[-mw, line[0]], [mw, line[-1]]]), dz)


def _facial_hair(p: Painter, ident: Identity, e: tuple) -> None:
    sh = p.shape
    beard = acc.hair_colour_for_face(ident)
    style = ident.facial_hair
    if style in ("stubble", "full"):
        ys = 0.14  # the beard meets the sideburns at the side, then runs down the cheeks
        xs = _S15 * float(sh.half_width(np.array([ys]))[0]) * 0.99
        u = np.abs(_S15)
        # with a moustache the beard reaches the nose; a chin-curtain beard stops under the lip
        yc = 0.45 if (style == "stubble" or ident.mustache) else MOUTH_Y + ident.lip_thickness + 0.05
        top = yc + (ys - yc) * u ** 2.4
        side_y = np.linspace(ys, 0.985, 8)
        side_x = sh.half_width(side_y) * 0.995 + (0.03 if style == "full" else 0.0)
        xy = np.vstack([np.column_stack([xs, top]), np.column_stack([side_x, side_y]),
                        np.column_stack([-side_x[::-1], side_y[::-1]])])
        rgb = beard if style == "full" else mix_rgb(ident.skin, beard, 0.3)
        p.surf(xy, fill=rgb, dz=0.03 if style == "full" else 0.002)
    if style == "goatee":
        g = np.array([[-0.14, MOUTH_Y + 0.075], [0.14, MOUTH_Y + 0.075], [0.2, 0.84], [0.12, 0.97],
                      [0.0, 0.995], [-0.12, 0.97], [-0.2, 0.84]])
        p.surf(g, fill=beard, dz=0.025)
    if ident.mustache:
        mw = ident.mouth_width * e[5] + 0.03
        xs = _S13 * mw
        u = np.abs(_S13)
        top = 0.445 + 0.03 * u ** 2
        bot = MOUTH_Y - e[3] * u ** 2 - ident.lip_thickness * 0.7 + 0.09 * np.clip(u - 0.6, 0, None) / 0.4
        xy = np.vstack([np.column_stack([xs, top]), np.column_stack([xs[::-1], bot[::-1]])])
        p.surf(xy, fill=scale_rgb(beard, 0.92), dz=0.03)
    if ident.sideburns:
        y = np.linspace(-0.08, 0.33, 6)
        w = sh.half_width(y)
        for sx in (-1.0, 1.0):
            xy = np.vstack([np.column_stack([sx * w * 0.995, y]), np.column_stack([sx * w[::-1] * 0.86, y[::-1]])])
            p.surf(xy, fill=beard, dz=0.01)


def _skin_marks(p: Painter, ident: Identity, look: Look, e: tuple) -> None:
    """Cheeks, wrinkles, smile folds and double chin: the cues of Rosy_Cheeks, age, Smiling, Chubby."""
    skin = ident.skin
    crease = scale_rgb(skin, 0.78)
    items = []
    if ident.rosy:
        for sx in (-1.0, 1.0):
            items.append((ellipse_xy(sx * 0.34, 0.27, 0.11, 0.07, 14), mix_rgb(skin, (226, 96, 110), 0.22), 0.0, None))
            items.append((ellipse_xy(sx * 0.34, 0.27, 0.07, 0.045, 12), mix_rgb(skin, (226, 96, 110), 0.42), 0.0, None))
    old = ident.age >= 40
    if old:
        for y in (-0.37, -0.3):
            items.append((np.column_stack([_FOREHEAD, y + 0.02 * (_FOREHEAD / 0.22) ** 2]), crease, 0.0, 0.012))
        ex = ident.eye_spacing + ident.eye_size
        for sx in (-1.0, 1.0):
            for dy in (-0.03, 0.03):
                items.append((np.array([[sx * (ex + 0.015), EYE_Y], [sx * (ex + 0.07), EYE_Y + dy]]), crease, 0.0, 0.01))
    if look.expression == HAPPY or old:
        mw = ident.mouth_width * e[5]
        t = _T7
        for sx in (-1.0, 1.0):
            a, c, b = np.array([sx * 0.13, NOSE_TIP_Y + 0.05]), np.array([sx * (mw + 0.1), MOUTH_Y - 0.12]), \
                np.array([sx * (mw + 0.06), MOUTH_Y + 0.06])
            fold = (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t ** 2 * b
            items.append((fold, crease, 0.0, 0.014 if look.expression == HAPPY else 0.01))
    if ident.chubby:
        xs = _CHIN
        items.append((np.column_stack([xs, 0.88 + 0.05 * (1 - (xs / 0.26) ** 2)]), crease, 0.0, 0.014))
    if items:
        p.surf_batch(items)


def _ear(p: Painter, ident: Identity, sx: float) -> np.ndarray:
    """Draws one ear; returns its projected lobe (for earrings)."""
    sh = p.shape
    attach = np.array([sx * float(sh.half_width(np.array([0.11]))[0]) * 0.96, 0.11, -0.03])
    out = np.array([sx * np.sin(0.6), 0.0, -np.cos(0.6)])  # ear plane leans forward by ~35 degrees
    hw, hh = 0.11, 0.25
    t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    w = hw * (1 - 0.35 * np.clip(np.sin(t), 0, None))
    c = attach + out * hw * 0.9
    pts = c + np.outer(np.cos(t) * w, out) + np.outer(np.sin(t) * hh, [0.0, 1.0, 0.0])
    p.poly(pts, fill=scale_rgb(ident.skin, 0.93))
    p.poly(c - out * 0.02 + (pts - c) * 0.55, fill=scale_rgb(ident.skin, 0.72))
    return p.proj(c[None] + np.array([[0.0, hh * 0.92, 0.0]]))[0]


def _lobe(p: Painter, sx: float) -> np.ndarray:
    """Projected ear lobe of an ear hidden under long hair."""
    return p.proj(np.array([[sx * (p.shape.ax + 0.06), 0.34, -0.08]]))[0]


def _shadows(p: Painter, ident: Identity, look: Look, e: tuple, hat: bool) -> None:
    """Soft shadows that give the face relief: eye sockets, the nose's shadow on the side away
    from the light and under its tip, under the lower lip and the chin, under the hairline. They go
    to the shadow layer, blurred and multiplied in by ``backdrop.finish``; no label depends on them."""
    if p.shadow is None:
        return
    sh = p.shape
    lx, ly, _ = look.light
    above = float(np.clip(-ly, 0.0, 1.0))        # light from above deepens the sockets and undersides
    strength = 0.16 + 0.3 * (0.6 - look.ambient)  # harsher light (less ambient), darker shadows
    items = []
    for sx in (-1.0, 1.0):
        ex = sx * ident.eye_spacing
        if p.proj.facing(sh.normal(ex, EYE_Y)) >= 0.08:
            items.append((ellipse_xy(ex, EYE_Y - 0.04, ident.eye_size * 1.5, 0.125, 14), strength * (1.0 + 0.9 * above)))
    L = ident.nose_length
    ty = NOSE_TIP_Y + 0.03 * (L - 1)
    sd = -1.0 if lx > 0 else 1.0
    side = np.array([[sd * 0.03, -0.06], [sd * 0.1, 0.02], [sd * 0.13 * L, ty - 0.02], [sd * 0.09, ty + 0.07],
                     [sd * 0.04, ty + 0.02], [sd * 0.03, 0.1]])
    items.append((side, strength * (0.5 + 1.5 * abs(lx))))
    items.append((ellipse_xy(0.0, ty + 0.105, 0.09 * L, 0.035, 12), strength * (0.8 + 1.2 * above)))
    mw = ident.mouth_width * e[5]
    items.append((ellipse_xy(0.0, MOUTH_Y + ident.lip_thickness * 1.2 + 0.06, mw * 0.6, 0.035, 12),
                  strength * (0.6 + 1.0 * above)))
    if not ident.bald and not hat:
        xs = np.linspace(-0.5, 0.5, 9) * sh.ax
        top = sh.hairline_y(xs, acc.hairline_front(ident), HAIR_BACK, acc.HAIR_CURVE) - 0.02
        bottom = (np.full(9, BROW_Y - 0.02) if ident.bangs else top + 0.1)
        items.append((np.vstack([np.column_stack([xs, top]), np.column_stack([xs[::-1], bottom[::-1]])]),
                      strength * (0.9 if ident.bangs else 0.6)))
    p.shade_batch(items)
    chin = ellipse_xy(0.0, 1.13, sh.ax * 0.62, 0.17, 14)
    p.shade(np.column_stack([chin, np.full(len(chin), -0.1)]), strength * (1.3 + 1.2 * above))


def draw_face(img: Image.Image, ident: Identity, look: Look, cx: float, cy: float, scale: float,
              shadow: ImageDraw.ImageDraw | None = None) -> FaceGeometry:
    """Draws the head of ``ident`` centred at pixel (cx, cy), ``scale`` pixels per head unit; its
    soft shadows go to ``shadow`` (an "L" layer at half the resolution of ``img``) when given."""
    sh = head_shape(ident)
    proj = Projector(look.yaw, look.pitch, look.roll, cx, cy, scale)
    p = Painter(ImageDraw.Draw(img), proj, sh, shadow)
    e = EXPRESSIONS[look.expression]
    hair = acc.hair_mask(sh, ident)

    acc.draw_shoulders(p, ident, look)
    # Ears: the far (or frontal) ones go behind hair and face; one turned towards the camera is
    # drawn over the face outline. Long hair covers ears, but earrings still show under it.
    lobes, near = [], []
    for sx in (-1.0, 1.0):
        depth = proj.depth(np.array([sx * sh.ax, 0.11, -0.03]))
        if depth > 0.25:
            near.append(sx)
        elif not ident.long_hair:
            lobes.append(_ear(p, ident, sx))
        elif depth > -0.2:
            lobes.append(_lobe(p, sx))
    acc.draw_hair_mass(p, ident, hair)
    if look.hat:
        acc.draw_hat_back(p, ident, look)
    acc.draw_neck(p, ident, look)
    head_outline = hull(proj(sh.mesh))
    face_pts = sh.mesh if ident.bald else sh.mesh[~hair]
    p.poly2d(hull(proj(face_pts)), fill=ident.skin)
    acc.draw_side_hair(p, ident, hair)
    for sx in near:
        lobes.append(_lobe(p, sx) if ident.long_hair else _ear(p, ident, sx))

    _skin_marks(p, ident, look, e)
    _shadows(p, ident, look, e, look.hat)
    left_eye = _eye(p, ident, look, e, -1.0)
    right_eye = _eye(p, ident, look, e, 1.0)
    _brows(p, ident, e)
    _facial_hair(p, ident, e)
    tip = _nose(p, ident, look)
    corners = _mouth(p, ident, look, e)
    if ident.bangs:
        acc.draw_bangs(p, ident, look.hat)
    if look.earrings:
        acc.draw_earrings(p, look, lobes)
    if look.glasses:
        acc.draw_glasses(p, ident, look)
    if look.hat:
        acc.draw_hat_front(p, ident, look)

    landmarks = proj(np.vstack([left_eye, right_eye, tip, corners]))
    pts = np.vstack([head_outline, landmarks[2:3]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    m = proj.ellipse(sh.ax, 1.0, sh.az) / scale ** 2
    # skin texture: a window of the bank fixed per identity, stronger with age
    texture = ((ident.identity_id * 37) % 190, (ident.identity_id * 91) % 190, 0.05 if ident.young else 0.075)
    return FaceGeometry(landmarks=landmarks, bbox=np.concatenate([lo, hi - lo]), centre=proj.c.copy(), outline=m,
                        scale=float(scale), texture=texture)
