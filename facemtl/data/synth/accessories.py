"""Hair, body, glasses, hats and earrings of SynthFaces (drawn around the face by ``face.py``).

Solid masses that must occlude correctly at every pose (hair, hat crowns, brims) are drawn as the
convex outline of projected 3-D point sets; thin things lying on the face (bangs, hat bands,
glasses) are ordered 3-D polygons or lines.
"""

from __future__ import annotations

import numpy as np

from facemtl.data.synth.head import HeadShape, hull
from facemtl.data.synth.identity import Identity
from facemtl.data.synth.paint import (
    BROW_Y,
    EYE_Y,
    HAIR_BACK,
    HAIRLINE_FRONT,
    HAIRLINE_RECEDING,
    Look,
    Painter,
    mix_rgb,
    scale_rgb,
)

_PHI = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
_PHI_FRONT = np.linspace(-1.35, 1.35, 19)
_STRAND_T = np.linspace(0.03, 1.0, 6)
# where each identity's strands lie: a fixed table (part of the generator, like the noise bank)
_STRAND_JITTER = np.random.default_rng(4_711).uniform(-1.0, 1.0, (97, 19))
_HANG = np.linspace(0.55, 1.0, 7)  # long hair: hanging strands at these fractions of the half-width


HAIR_CURVE = 1.6


def hairline_front(ident: Identity) -> float:
    return HAIRLINE_RECEDING if ident.receding else HAIRLINE_FRONT


def hair_mask(shape: HeadShape, ident: Identity) -> np.ndarray:
    """Mesh points covered by hair: above the plane through the front hairline and the nape."""
    if ident.bald:
        return np.zeros(len(shape.mesh), dtype=bool)
    front = hairline_front(ident)
    t = (shape.az - shape.mesh[:, 2]) / (shape.az + shape.azb)
    # a convex cut (t ** HAIR_CURVE) keeps the skin region convex, so its hull is exact, while
    # the hairline rises at the temples and falls behind the ears like a real one
    return shape.mesh[:, 1] < front + (HAIR_BACK - front) * t ** HAIR_CURVE


def draw_hair_mass(p: Painter, ident: Identity, mask: np.ndarray) -> None:
    """The hair volume behind the face: inflated cap (plus hanging curtain for long hair)."""
    if ident.bald:
        return
    sh = p.shape
    vol = ident.hair_volume
    pts = sh.mesh[mask] * np.array([1 + vol, 1 + 1.3 * vol, 1 + vol])
    if ident.long_hair:
        side = np.cos(_PHI) < 0.45  # sides and back only, never in front of the face
        ring = np.column_stack([
            (sh.ax * (1 + vol) + 0.08) * np.sin(_PHI[side]),
            np.full(side.sum(), ident.hair_length),
            sh.azb * 0.9 * np.cos(_PHI[side]),
        ])
        ring[:, 1] -= 0.12 * np.abs(np.sin(_PHI[side]))  # a little shorter at the sides
        mid = ring.copy()
        mid[:, 1] = 0.2
        pts = np.vstack([pts, ring, mid])
    p.poly2d(hull(p.proj(pts)), fill=ident.hair_rgb)
    dark, light = strand_colours(ident.hair_rgb)
    width = p.px(0.011)
    if ident.long_hair:  # strands hanging down both sides, behind the face and neck
        x = np.concatenate([-_HANG, _HANG]) * (sh.ax * (1 + vol) + 0.04)           # (14,)
        ys = np.array([0.2, 0.5 * (0.2 + ident.hair_length), ident.hair_length - 0.16])
        lines = np.stack([x[:, None] * np.array([1.0, 1.01, 0.98]), np.broadcast_to(ys, (14, 3)),
                          np.zeros((14, 3))], axis=-1)
        px = p.proj(lines.reshape(-1, 3)).reshape(14, -1)
        for j in range(14):
            p.draw.line(px[j].tolist(), fill=dark if j % 2 else light, width=width)
    # a sheen across the crown, then fine strands of darker and lighter hair over the cap
    front = hairline_front(ident)
    gloss = np.linspace(-1.1, 1.1, 9)
    gy = np.full(9, -0.72)
    arc = np.column_stack([sh.half_width(gy) * np.sin(gloss) * (1 + vol), gy * (1 + vol),
                           sh.front_depth(gy) * np.cos(gloss) * (1 + vol)])
    arc = arc[p.proj.depth(arc * np.array([1.0, 0.0, 1.0])) > 0.2]
    if len(arc) >= 2:
        p.draw.line(p.proj(arc).ravel().tolist(), fill=light, width=p.px(0.06))
    phi = _PHI_FRONT + 0.05 * _STRAND_JITTER[ident.identity_id % len(_STRAND_JITTER)]
    top = sh.hairline_y(np.sin(phi) * sh.ax, front, HAIR_BACK, HAIR_CURVE) - 0.02      # (19,)
    y = -0.97 + (_STRAND_T[None, :]) * (top[:, None] + 0.97)                          # (19, 6)
    r = 1 + vol * 0.8
    strands = np.stack([sh.half_width(y) * np.sin(phi)[:, None] * r, y * (1 + vol),
                        sh.front_depth(y) * np.cos(phi)[:, None] * r], axis=-1)
    facing = p.proj.depth(strands[:, 2])
    px = p.proj(strands.reshape(-1, 3)).reshape(len(phi), -1, 2)
    for k in np.flatnonzero(facing > 0.15):
        p.draw.line(px[k].ravel().tolist(), fill=dark if k % 3 else light, width=width)


def strand_colours(rgb) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A darker and a lighter shade of a hair colour (black hair gets lighter sheen, not darker)."""
    if sum(rgb) > 200:
        return scale_rgb(rgb, 0.72), scale_rgb(rgb, 1.18)
    return scale_rgb(rgb, 0.6), mix_rgb(rgb, (120, 110, 105), 0.3)


def draw_side_hair(p: Painter, ident: Identity, mask: np.ndarray) -> None:
    """Hair behind the ears, down to the nape (and long hair hanging there), seen at large yaw.

    The face-skin outline is the convex part of the head below the hair plane, which leaves the
    back of the head as skin; this covers it, using only the points turned towards the camera
    (at frontal poses there are none, so nothing is drawn over the cheeks).
    """
    if ident.bald:
        return
    sh = p.shape
    vol = ident.hair_volume
    # only the side turned towards the camera: the band around the back is not convex, one side is
    sx = -1.0 if p.proj.depth(np.array([-1.0, 0.0, 0.0])) > 0 else 1.0
    m = sh.mesh
    back = m[(~mask) & (m[:, 2] < -0.08) & (m[:, 1] < HAIR_BACK + 0.05) & (sx * m[:, 0] > 0.25 * sh.ax)]
    pts = back * np.array([1 + vol, 1.0, 1 + vol])
    if ident.long_hair:
        side = (np.cos(_PHI) < 0.0) & (sx * np.sin(_PHI) > 0.3)
        hang = np.column_stack([(sh.ax * (1 + vol) + 0.08) * np.sin(_PHI[side]),
                                np.full(side.sum(), ident.hair_length - 0.12),
                                sh.azb * 0.9 * np.cos(_PHI[side])])
        pts = np.vstack([pts, hang])
    vis = pts[p.proj.depth(pts) > 0.02]
    if len(vis) >= 3:
        p.poly2d(hull(p.proj(vis)), fill=ident.hair_rgb)


def draw_bangs(p: Painter, ident: Identity, hat: bool = False) -> None:
    """A fringe over the forehead, down to just above the eyebrows, with a jagged edge."""
    sh = p.shape
    xs = np.linspace(-1.0, 1.0, 15) * sh.ax * 0.8
    u = xs / (sh.ax * 0.8)
    jag = np.where(np.arange(15) % 2 == 0, 0.0, -0.045)
    bottom = BROW_Y - 0.055 + 0.12 * u ** 4 + jag
    # start well inside the hair: the skin outline follows the coarse mesh, not the exact hairline
    top = sh.hairline_y(xs, hairline_front(ident), HAIR_BACK, HAIR_CURVE) - 0.15
    if hat:  # the fringe comes out from under the band instead of covering the crown
        top = np.maximum(top, _BAND_Y - 0.08)
    # keep the columns facing the camera: the far side of the fringe would fold over the near side
    un = xs / sh.ax
    normals = np.column_stack([un, np.zeros(15), np.sqrt(1 - un * un)])
    keep = p.proj.depth(normals) > 0.12
    if keep.sum() < 3:
        return
    xs, top, bottom = xs[keep], top[keep], bottom[keep]
    xy = np.vstack([np.column_stack([xs, top]), np.column_stack([xs[::-1], bottom[::-1]])])
    p.surf(xy, fill=ident.hair_rgb, dz=ident.hair_volume * 0.7)
    dark, light = strand_colours(ident.hair_rgb)
    for k in range(1, len(xs) - 1):
        line = np.array([[xs[k], top[k] + 0.05], [xs[k] * 0.97, bottom[k] - 0.03]])
        p.surf_line(line, fill=dark if k % 3 else light, width=0.011, dz=ident.hair_volume * 0.75)


def _body_frame(p: Painter, look: Look):
    """Pixel mapping of the body frame: the torso turns only a little with the head."""
    proj = p.proj
    ang = np.radians(look.roll * 0.35)
    rot = np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])
    origin = proj.c + proj.s * np.array([-look.yaw / 150.0, 0.0])
    return lambda pts: origin + proj.s * (pts @ rot.T)


def draw_shoulders(p: Painter, ident: Identity, look: Look) -> None:
    """The torso in the identity's clothes: plain, collared shirt (a tie for some men), striped or
    V-necked; no label depends on them."""
    body = _body_frame(p, look)
    xs = np.array([0.34, 0.75, 1.25, 1.6, 1.8, 1.9])
    ys = np.array([1.25, 1.35, 1.5, 1.75, 2.2, 3.5])
    shoulders = np.vstack([np.column_stack([-xs[::-1], ys[::-1]]), np.column_stack([xs, ys])])
    rgb = ident.clothes_rgb
    p.poly2d(body(shoulders), fill=rgb)
    style = ident.clothes_style
    if style == 2:  # horizontal stripes across the torso
        stripe = scale_rgb(rgb, 0.6) if sum(rgb) > 360 else mix_rgb(rgb, (235, 235, 230), 0.5)
        for y in np.arange(1.5, 3.4, 0.22):
            half = float(np.interp(y, ys, xs)) * 0.99
            p.draw.line(body(np.array([[-half, y], [half, y]])).ravel().tolist(), fill=stripe, width=p.px(0.07))
    deep = (1.62 if ident.male else 1.7) + (0.3 if style == 3 else 0.0)
    neckline = np.array([[-0.36, 1.26], [0.36, 1.26], [0.0, deep]])
    p.poly2d(body(neckline), fill=scale_rgb(ident.skin, 0.8))
    if style == 1:  # collar points, and a tie
        collar = mix_rgb(rgb, (240, 240, 236), 0.7)
        for sx in (-1.0, 1.0):
            p.poly2d(body(np.array([[sx * 0.36, 1.24], [sx * 0.05, 1.62], [sx * 0.3, 1.6]])), fill=collar)
        if ident.male and ident.identity_id % 2 == 0:
            tie = TIE_COLOURS[ident.identity_id % len(TIE_COLOURS)]
            p.poly2d(body(np.array([[-0.06, 1.55], [0.06, 1.55], [0.13, 2.6], [0.0, 2.78], [-0.13, 2.6]])), fill=tie)


TIE_COLOURS = ((120, 25, 35), (30, 40, 90), (40, 40, 45), (150, 120, 40))


def draw_neck(p: Painter, ident: Identity, look: Look) -> None:
    """Drawn after the hair mass: long hair hangs behind the neck."""
    body = _body_frame(p, look)
    w = 0.3 * (1.1 if ident.male else 0.95) * (1.15 if ident.chubby else 1.0)
    top = p.proj(np.array([[w, 0.5, -0.12], [-w, 0.5, -0.12]]))
    bottom = body(np.array([[-w * 1.08, 1.4], [w * 1.08, 1.4]]))
    p.poly2d(np.vstack([top, bottom]), fill=scale_rgb(ident.skin, 0.8))
    if ident.clothes_style == 3 and not ident.male:  # a necklace in the V of the neckline
        t = np.linspace(-1.0, 1.0, 9)
        chain = np.column_stack([t * w * 1.1, 1.38 + 0.28 * (1 - t * t)])
        p.draw.line(body(chain).ravel().tolist(), fill=(214, 186, 90), width=p.px(0.018))


def draw_glasses(p: Painter, ident: Identity, look: Look) -> None:
    sh = p.shape
    style = ident.glasses_style  # 0 thin metal, 1 thick plastic, 2 sunglasses, 3 round metal
    hw, hh = ((0.13, 0.09), (0.14, 0.1), (0.14, 0.1), (0.11, 0.105))[style]
    width = (0.02, 0.032, 0.026, 0.018)[style]
    rgb = ident.glasses_rgb if style != 2 else (25, 25, 28)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    # rounded rectangle: superellipse with exponent 2.6 (a circle for round frames)
    q = 2.0 if style == 3 else 2.6
    rx = hw * np.sign(c) * np.abs(c) ** (2 / q)
    ry = hh * np.sign(s) * np.abs(s) ** (2 / q)
    ex = ident.eye_spacing
    zl = float(sh.surface_z(np.array([ex]), np.array([EYE_Y]))[0]) + 0.09
    for sx in (-1.0, 1.0):
        rim = np.column_stack([sx * ex + rx, EYE_Y + 0.005 + ry, np.full(20, zl)])
        if style == 2:
            p.poly(rim, fill=(28, 30, 36), outline=rgb, width=width)
        else:
            p.poly(rim, outline=rgb, width=width)
            glint = np.array([[sx * ex - 0.07, EYE_Y - 0.04, zl], [sx * ex - 0.03, EYE_Y - 0.07, zl]])
            p.line(glint, fill=(236, 240, 246), width=0.012)
        # the temple arm runs back to the ear; only the side facing the camera shows
        arm = np.array([[sx * (ex + hw), EYE_Y - 0.03, zl], [sx * sh.ax * 1.01, EYE_Y + 0.02, -0.1]])
        if sx * look.yaw <= 12:
            p.line(arm, fill=rgb, width=width)
    inner = ex - hw
    bx = np.linspace(-inner, inner, 5)
    bridge = np.column_stack([bx, EYE_Y - 0.035 + 0.02 * (bx / inner) ** 2, np.full(5, zl + 0.01)])
    p.line(bridge, fill=rgb, width=width)


def _ring(sh: HeadShape, y: float, grow: float, phi: np.ndarray) -> np.ndarray:
    x = float(sh.half_width(np.array([y]))[0]) * grow
    zf = float(sh.front_depth(np.array([y]))[0]) * grow
    zb = float(sh.back_depth(np.array([y]))[0]) * grow
    c = np.cos(phi)
    return np.column_stack([x * np.sin(phi), np.full(len(phi), y), np.where(c >= 0, zf, zb) * c])


def _visible_band(p: Painter, top: np.ndarray, bottom: np.ndarray) -> np.ndarray | None:
    """Polygon of the camera-facing part of a band between two rings (same angles)."""
    normal_z = p.proj.depth(top * np.array([1.0, 0.0, 1.0]))
    vis = normal_z > 0
    if vis.sum() < 3:
        return None
    # rotate the ring so that the visible run is contiguous
    start = int(np.argmax(~vis & np.roll(vis, -1))) + 1 if not vis.all() else 0
    order = np.roll(np.arange(len(vis)), -start)
    order = order[vis[order]]
    return np.vstack([top[order], bottom[order][::-1]])


_BAND_Y = -0.4


def _hat_grow(ident: Identity) -> float:
    return 1.0 + ident.hair_volume + 0.05


def draw_hat_back(p: Painter, ident: Identity, look: Look) -> None:
    """Crown (and brim) as convex masses, drawn before the face: the face hides their far parts."""
    sh = p.shape
    rgb = look.hat_rgb
    cap = sh.mesh[sh.mesh[:, 1] < _BAND_Y + 0.08 * (sh.az - sh.mesh[:, 2]) / (sh.az + sh.azb)]
    grow = _hat_grow(ident)
    crown = cap * np.array([grow, 1.0 + ident.hair_volume + 0.12, grow])
    if look.hat_style == 1:  # brimmed hat: a flat disc, then a taller crown
        brim = _ring(sh, _BAND_Y + 0.04, 1.45, _PHI)
        p.poly2d(hull(p.proj(brim)), fill=scale_rgb(rgb, 0.85))
        top = _ring(sh, -0.6, 0.75, _PHI)
        top[:, 1] = -1.28
        crown = np.vstack([crown, top])
    p.poly2d(hull(p.proj(crown)), fill=rgb)


def draw_hat_front(p: Painter, ident: Identity, look: Look) -> None:
    """The camera-facing parts in front of the face: band over the forehead, brim front, visor."""
    sh = p.shape
    rgb = look.hat_rgb
    grow = _hat_grow(ident)
    if look.hat_style == 1:
        outer = _ring(sh, _BAND_Y + 0.04, 1.45, _PHI)
        inner = _ring(sh, _BAND_Y + 0.04, grow, _PHI)
        brim = _visible_band(p, outer, inner)
        if brim is not None:
            p.poly(brim, fill=scale_rgb(rgb, 0.85))
    upper = _ring(sh, _BAND_Y - (0.14 if look.hat_style == 0 else 0.1), grow + 0.03, _PHI)
    lower = _ring(sh, _BAND_Y + 0.03, grow + 0.03, _PHI)
    band = _visible_band(p, upper, lower)
    if band is not None:
        p.poly(band, fill=scale_rgb(rgb, 0.7 if look.hat_style else 0.82))
    if look.hat_style == 2:  # baseball cap: a visor sticking out in front
        phi = np.linspace(-1.1, 1.1, 11)
        inner = _ring(sh, _BAND_Y + 0.04, grow, phi)
        outer = inner.copy()
        outer[:, 2] += 0.5 * np.cos(phi)
        outer[:, 0] *= 1.08
        outer[:, 1] += 0.1
        p.poly(np.vstack([inner, outer[::-1]]), fill=scale_rgb(rgb, 0.8))


def draw_earrings(p: Painter, look: Look, lobes: list[np.ndarray]) -> None:
    """Earrings hang under gravity, so they are placed in pixels below the projected lobes."""
    s = p.proj.s
    gold = (214, 178, 60) if look.earring_style != 1 else (205, 205, 215)
    for lobe in lobes:
        x, y = lobe
        if look.earring_style == 0:
            r = 0.028 * s
            p.draw.ellipse([x - r, y + 0.01 * s - r, x + r, y + 0.01 * s + r], fill=gold)
        elif look.earring_style == 2:  # a drop on a short chain
            r = 0.03 * s
            p.draw.line([x, y, x, y + 0.07 * s], fill=gold, width=p.px(0.012))
            p.draw.ellipse([x - r, y + 0.07 * s, x + r, y + 0.07 * s + 2.2 * r], fill=gold)
        else:
            r = 0.055 * s
            cy = y + r * 0.9
            p.draw.ellipse([x - r, cy - r, x + r, cy + r], outline=gold, width=p.px(0.016))


def brow_colour(ident: Identity) -> tuple[int, int, int]:
    """Eyebrows: darker than the hair (blond and gray people's brows are darker than their hair)."""
    if ident.bald:
        return (110, 104, 98) if ident.age > 55 else (52, 40, 32)
    if ident.hair == "blond":
        return mix_rgb(ident.hair_rgb, (90, 62, 35), 0.6)
    if ident.hair == "gray":
        return mix_rgb(ident.hair_rgb, (70, 64, 58), 0.5)
    return mix_rgb(ident.hair_rgb, (18, 13, 10), 0.35)


def hair_colour_for_face(ident: Identity) -> tuple[int, int, int]:
    """Colour of brows and beards: like the hair, darker for blond, neutral for bald heads."""
    if ident.bald:
        return (150, 145, 140) if ident.age > 55 else (64, 50, 40)
    if ident.hair == "blond":
        return mix_rgb(ident.hair_rgb, (110, 80, 40), 0.45)
    return mix_rgb(ident.hair_rgb, (20, 15, 12), 0.15)
