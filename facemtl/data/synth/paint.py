"""Shared drawing pieces of SynthFaces: the per-image ``Look``, the face layout and a ``Painter``.

The ``Painter`` joins a PIL ``ImageDraw`` with the head's ``Projector``: callers give head-frame
3-D points (usually face-plane shapes lifted onto the surface) and it projects and draws them, so
no drawing code ever works in pixels except for things that hang under gravity (earrings).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import ImageDraw

from facemtl.data.synth.head import HeadShape, Projector

# Face layout in head units (y down; skull top -1, chin +1).
EYE_Y = -0.02
BROW_Y = -0.165
NOSE_TIP_Y = 0.33
MOUTH_Y = 0.585
HAIRLINE_FRONT = -0.52
HAIRLINE_RECEDING = -0.74
HAIR_BACK = 0.45

# Expression shapes in EXPRESSION_NAMES order (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral):
# brow raise, inner-brow raise, eye opening, mouth-corner lift, mouth opening when open,
# mouth width factor, sneer (one-sided upper-lip raise), teeth visible when open.
EXPRESSIONS = (
    (-0.045, -0.05, 0.78, -0.02, 0.065, 0.94, 0.0, True),
    (-0.025, -0.03, 0.68, -0.035, 0.06, 0.95, 0.04, True),
    (0.05, 0.055, 1.35, -0.02, 0.1, 1.06, 0.0, True),
    (0.005, 0.0, 0.88, 0.095, 0.085, 1.2, 0.0, True),
    (0.0, 0.06, 0.8, -0.055, 0.055, 0.94, 0.0, False),
    (0.085, 0.02, 1.4, 0.0, 0.17, 0.72, 0.0, False),
    (0.0, 0.0, 1.0, 0.0, 0.065, 1.0, 0.0, False),
)


@dataclass(frozen=True)
class Look:
    """Everything about one image of an identity that is not the identity itself."""

    yaw: float
    pitch: float
    roll: float
    expression: int
    mouth_open: bool
    glasses: bool
    hat: bool
    hat_style: int                 # 0 beanie, 1 brimmed hat, 2 cap with a visor
    hat_rgb: tuple[int, int, int]
    lipstick: bool
    earrings: bool
    earring_style: int             # 0 stud, 1 hoop, 2 drop
    light: tuple[float, float, float]  # unit vector towards the light, camera frame
    ambient: float
    gaze: tuple[float, float]      # small iris offset in head units


def scale_rgb(rgb, f: float) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(c * f))) for c in rgb)


def mix_rgb(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))


@lru_cache(maxsize=32)
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.cos(t), np.sin(t)])


def ellipse_xy(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    return _unit_circle(n) * np.array([rx, ry]) + np.array([cx, cy])


class Painter:
    """Projects head-frame points and draws them on one PIL image."""

    def __init__(self, draw: ImageDraw.ImageDraw, proj: Projector, shape: HeadShape,
                 shadow: ImageDraw.ImageDraw | None = None):
        self.draw, self.proj, self.shape, self.shadow = draw, proj, shape, shadow
        self.limb = shape.visible_range(proj.r)

    def px(self, units: float) -> int:
        """A line width in pixels for a width in head units (at least one pixel)."""
        return max(1, int(round(units * self.proj.s)))

    def poly(self, pts3: np.ndarray, fill=None, outline=None, width: float = 0.0) -> None:
        flat = self.proj(pts3).ravel().tolist()
        if outline is None:
            self.draw.polygon(flat, fill=fill)
        else:
            self.draw.polygon(flat, fill=fill, outline=outline, width=self.px(width))

    def poly2d(self, pts2: np.ndarray, fill) -> None:
        self.draw.polygon(pts2.ravel().tolist(), fill=fill)

    def line(self, pts3: np.ndarray, fill, width: float) -> None:
        self.draw.line(self.proj(pts3).ravel().tolist(), fill=fill, width=self.px(width))

    def surf(self, xy: np.ndarray, fill, dz: float = 0.0, outline=None, width: float = 0.0) -> None:
        """Fill a face-plane polygon lifted onto the head surface (hidden parts folded to the limb)."""
        self.poly(self.shape.lift(xy, dz, self.limb), fill=fill, outline=outline, width=width)

    def surf_line(self, xy: np.ndarray, fill, width: float, dz: float = 0.0) -> None:
        self.line(self.shape.lift(xy, dz, self.limb), fill=fill, width=width)

    def surf_batch(self, items: list[tuple[np.ndarray, object, float, float | None]]) -> None:
        """Several face-plane shapes ``(xy, fill, dz, width)`` lifted and projected in one call and
        drawn in order: a filled polygon when ``width`` is None, else a polyline of that width."""
        xy = np.vstack([it[0] for it in items])
        dz = np.concatenate([np.full(len(it[0]), it[2]) for it in items])
        pts = self.proj(self.shape.lift(xy, dz, self.limb))
        k = 0
        for shape, fill, _, width in items:
            seg = pts[k:k + len(shape)].ravel().tolist()
            k += len(shape)
            if width is None:
                self.draw.polygon(seg, fill=fill)
            else:
                self.draw.line(seg, fill=fill, width=self.px(width))

    def shade_batch(self, items: list[tuple[np.ndarray, float]], dz: float = 0.0) -> None:
        """Several face-plane shadows ``(xy, darkness)`` on the surface, lifted in one call."""
        if self.shadow is None:
            return
        xy = np.vstack([it[0] for it in items])
        pts = self.proj(self.shape.lift(xy, dz, self.limb)) * 0.5
        k = 0
        for shape, darkness in items:
            seg = pts[k:k + len(shape)].ravel().tolist()
            k += len(shape)
            if darkness > 0:
                self.shadow.polygon(seg, fill=int(min(255.0, 255.0 * darkness)))

    def shade(self, pts3: np.ndarray, darkness: float) -> None:
        """A soft shadow (0..1 darkening, blurred later) on the half-resolution shadow layer."""
        if self.shadow is not None and darkness > 0:
            flat = (self.proj(pts3) * 0.5).ravel().tolist()
            self.shadow.polygon(flat, fill=int(min(255.0, 255.0 * darkness)))

    def surf_shade(self, xy: np.ndarray, darkness: float, dz: float = 0.0) -> None:
        self.shade(self.shape.lift(xy, dz, self.limb), darkness)
