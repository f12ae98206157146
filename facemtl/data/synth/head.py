"""The 3-D head model of SynthFaces: a deformed ellipsoid, its rotation and its projection.

Head frame: x to the image right, y down, z towards the camera; the origin is the head centre and
one unit is half the head height (skull top at y = -1, chin at y = +1). Facial features are 2-D
shapes in the (x, y) "face plane" lifted onto the front surface (``HeadShape.lift``), so that
rotating the head foreshortens them exactly like the surface; the nose adds explicit depth.

Every point (features, landmarks, outline) goes through the same rotation and orthographic
projection (``Projector``), which is why the drawn pixels and the landmark labels agree.

Angles (degrees): yaw about the vertical axis, negative = the face turned to its own left (the nose
moves to the image right, matching ``schema.pose_class_from_yaw``); pitch positive = chin up; roll
positive = counter-clockwise in the image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from facemtl.data.synth.identity import Identity

_RING_Y = np.linspace(-0.99, 0.99, 17)
_PHI = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
_HULL_ANGLES = np.linspace(0.0, 2 * np.pi, 56, endpoint=False)
_HULL_DIRS = np.stack([np.cos(_HULL_ANGLES), np.sin(_HULL_ANGLES)])  # (2, K)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (head frame -> camera frame): yaw first, then pitch, then roll."""
    y, p, r = np.radians([yaw, pitch, roll])
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def hull(points2d: np.ndarray) -> np.ndarray:
    """Convex outline of 2-D points as the support point in each of K directions, in angle order.

    Cheaper than an exact convex hull and good enough for a polygon fill (K = 56 vertices).
    """
    idx = np.argmax(points2d @ _HULL_DIRS, axis=0)
    return points2d[idx]


_Y_TABLE = np.linspace(-1.0, 1.0, 801)
_FRONT_Q = 2.6  # exponent of the front cross-section (2 = ellipse)
_U_TABLE = np.linspace(-1.0, 1.0, 81)


class HeadShape:
    """The surface of one identity's head (cached per identity).

    The profiles are closed-form, but features call them dozens of times per image on a few points
    each, so they are tabulated once and read back with ``np.interp`` (10x cheaper).
    """

    def __init__(self, ident: Identity):
        self.ax = ident.head_width
        self.az = ident.head_depth
        self.azb = ident.head_depth * 1.08  # the back of the skull reaches further than the face
        self.taper = ident.jaw_taper
        self.p_lo = ident.jaw_square
        self._x_table = self._half_width(_Y_TABLE)
        self._zf_table = self._front_depth(_Y_TABLE)
        ring_x = self._half_width(_RING_Y)
        zf, zb = self._front_depth(_RING_Y), self.back_depth(_RING_Y)
        s, c = np.sin(_PHI), np.cos(_PHI)
        # front half: superellipse cross-section (flatter face, sharper turn at the cheeks)
        sf = np.where(c >= 0, np.sign(s) * np.abs(s) ** (2 / _FRONT_Q), s)
        cf = np.where(c >= 0, np.abs(c) ** (2 / _FRONT_Q), c)
        x = ring_x[:, None] * sf[None, :]
        z = np.where(c[None, :] >= 0, zf[:, None], zb[:, None]) * cf[None, :]
        y = np.broadcast_to(_RING_Y[:, None], x.shape)
        self.mesh = np.stack([x, y, z], axis=-1).reshape(-1, 3)  # (17*24, 3)
        # horizontal normals of the front cross-section at u = x / half_width, for limb clipping
        w = (1 - np.abs(_U_TABLE) ** _FRONT_Q) ** (1 / _FRONT_Q)
        n = np.column_stack([np.sign(_U_TABLE) * np.abs(_U_TABLE) ** (_FRONT_Q - 1) / self.ax,
                             w ** (_FRONT_Q - 1) / self.az])
        self.cross_normals = n / np.linalg.norm(n, axis=1, keepdims=True)  # (81, 2): (nx, nz)

    def _half_width(self, y: np.ndarray) -> np.ndarray:
        a = np.abs(np.clip(y, -0.999, 0.999))
        upper = (1 - a ** 2.2) ** (1 / 2.2)
        yl = np.clip(y, 0, 0.999)
        lower = (1 - self.taper * yl ** 2) * (1 - yl ** self.p_lo) ** (1 / self.p_lo)
        return self.ax * np.where(y < 0, upper, lower)

    def _front_depth(self, y: np.ndarray) -> np.ndarray:
        a = np.abs(np.clip(y, -0.999, 0.999))
        # the lower face is flatter than an ellipsoid so that the chin stays forward in profile
        return self.az * np.where(y < 0, (1 - a ** 2.2) ** (1 / 2.2), (1 - a ** 4) ** 0.25)

    def half_width(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _Y_TABLE, self._x_table)

    def front_depth(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _Y_TABLE, self._zf_table)

    def back_depth(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        a = np.clip(np.abs(y), 0, 0.999)
        return self.azb * np.sqrt(1 - a ** 2) * np.where(y < 0, 1.0, 0.8)

    def surface_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = np.abs(x) / np.maximum(np.interp(y, _Y_TABLE, self._x_table), 1e-6)
        return np.interp(y, _Y_TABLE, self._zf_table) * np.maximum(1.0 - u ** _FRONT_Q, 0.0) ** (1 / _FRONT_Q)

    def lift(self, xy: np.ndarray, dz: float | np.ndarray = 0.0,
             limb: tuple[float, float] | None = None) -> np.ndarray:
        """Face-plane points (N, 2) -> points on the front surface (N, 3), raised by ``dz``.

        ``limb`` (u_lo, u_hi) clamps x to that range of the half-width first: drawing code uses it
        to fold hidden far-side points onto the visible outline (labels never do).
        """
        xy = np.array(xy, dtype=np.float64)
        if limb is not None:
            half = np.interp(xy[:, 1], _Y_TABLE, self._x_table)
            xy[:, 0] = np.minimum(np.maximum(xy[:, 0], limb[0] * half), limb[1] * half)
        out = np.empty((len(xy), 3))
        out[:, :2] = xy
        out[:, 2] = self.surface_z(xy[:, 0], xy[:, 1]) + dz
        return out

    def visible_range(self, r: np.ndarray) -> tuple[float, float]:
        """(u_lo, u_hi): the part of the front cross-section facing the camera under rotation r."""
        facing = self.cross_normals @ np.array([r[2, 0], r[2, 2]])
        vis = _U_TABLE[facing > 0.03]
        return (float(vis[0]), float(vis[-1])) if len(vis) else (-1.0, 1.0)

    def normal(self, x: float, y: float) -> np.ndarray:
        """Outward unit normal of the front surface at face-plane point (x, y)."""
        e = 1e-3
        z = self.surface_z(np.array([x, x + e, x]), np.array([y, y, y + e]))
        n = np.array([-(z[1] - z[0]) / e, -(z[2] - z[0]) / e, 1.0])
        return n / np.linalg.norm(n)

    def hairline_y(self, x: np.ndarray, front: float, back: float, curve: float = 1.6) -> np.ndarray:
        """Front hairline of the hair cap y < front + (back - front) * t ** curve, t going from 0 at
        the face (z = az) to 1 at the back of the head (z = -azb)."""
        u = np.minimum(np.abs(np.asarray(x)) / self.ax, 1.0)
        zn = (1 - u ** _FRONT_Q) ** (1 / _FRONT_Q)  # normalised depth of the surface at that x (ignores y)
        t = self.az * (1 - zn) / (self.az + self.azb)
        return front + (back - front) * t ** curve


@lru_cache(maxsize=4096)
def head_shape(ident: Identity) -> HeadShape:
    return HeadShape(ident)


class Projector:
    """Rotates head-frame points and projects them orthographically to pixels."""

    def __init__(self, yaw: float, pitch: float, roll: float, cx: float, cy: float, scale: float):
        self.r = rotation(yaw, pitch, roll)
        self.c = np.array([cx, cy])
        self.s = float(scale)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) head-frame points -> (N, 2) pixel coordinates."""
        return self.c + self.s * (pts @ self.r[:2].T)

    def depth(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.r[2]

    def facing(self, normal: np.ndarray) -> float:
        """Cosine between a head-frame normal and the direction to the camera."""
        return float(self.r[2] @ normal)

    def ellipse(self, ax: float, ay: float, az: float) -> np.ndarray:
        """2x2 matrix M of the projected outline q^T M q = 1 (q in head units) of an ellipsoid."""
        m = self.r @ np.diag([1 / ax ** 2, 1 / ay ** 2, 1 / az ** 2]) @ self.r.T
        return m[:2, :2] - np.outer(m[:2, 2], m[2, :2]) / m[2, 2]
