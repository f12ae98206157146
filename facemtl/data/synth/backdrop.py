"""Backgrounds, lighting, noise and resampling for SynthFaces images.

Everything per-pixel is vectorised numpy or a single PIL call: a smooth colour field comes from
upsampling a tiny random grid, clutter is a handful of ImageDraw shapes, sensor noise is a window
into one precomputed Gaussian bank (drawing fresh normals for a 224x224x3 image would cost more
than rendering the face), and lighting is one multiplicative field.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facemtl.data.synth.face import FaceGeometry
from facemtl.data.synth.identity import SKIN_TONES

_NOISE_SIDE = 640  # largest stored image plus room for random offsets


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    # fixed seed: the bank is part of the generator, identical in every process
    return np.random.default_rng(20_240_613).standard_normal((_NOISE_SIDE, _NOISE_SIDE, 3), dtype=np.float32)


@lru_cache(maxsize=8)
def _grid(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) + 0.5


def clutter(rng: np.random.Generator, size: int, shapes: tuple[int, int] = (2, 9),
            skin_blob: float = 0.12) -> Image.Image:
    """A cluttered background: smooth colour field plus random shapes (some skin-coloured)."""
    k = int(rng.integers(2, 5))
    grey = rng.uniform(40, 215)
    tint = rng.uniform(0.8, 1.2, 3)  # warm or cool rooms rather than rainbow fields
    field = np.clip((rng.uniform(0, 255, (k, k, 3)) * 0.35 + grey * 0.65) * tint, 0, 255).astype(np.uint8)
    img = Image.fromarray(field).resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(shapes[0], shapes[1] + 1))
    kinds = rng.integers(0, 5, n)
    geo = rng.uniform(0, 1, (n, 4)) * size
    cols = rng.integers(0, 256, (n, 3)) * 0.6 + rng.uniform(30, 220, (n, 1)) * 0.4
    widths = rng.integers(1, max(2, size // 28), n)
    for kind, (x0, y0, w, h), col, lw in zip(kinds, geo, cols, widths):
        w, h = w * 0.6 + 2, h * 0.6 + 2
        col = tuple(int(c) for c in col)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        elif kind == 2:
            draw.line([x0, y0, x0 + w - h * 0.5, y0 + h], fill=col, width=int(lw))
        elif kind == 3:  # stripes: blinds, shelves, tiles
            step = max(3.0, w / 6)
            for j in range(5):
                draw.line([x0 + j * step, y0, x0 + j * step, y0 + h], fill=col, width=int(lw))
        else:
            draw.polygon([x0, y0, x0 + w, y0 + h * 0.3, x0 + w * 0.3, y0 + h], fill=col)
    if rng.random() < skin_blob:  # a skin-coloured blob with no face: a hard negative
        tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        x0, y0 = rng.uniform(-0.2, 0.8, 2) * size
        w, h = rng.uniform(0.15, 0.45, 2) * size
        draw.ellipse([x0, y0, x0 + w, y0 + h * 1.2], fill=tone)
    return img


def lighting(size: int, intensity: float, gradient: tuple[float, float],
             faces: list[tuple[FaceGeometry, tuple[float, float, float], float]], base: int) -> np.ndarray:
    """Multiplicative light field (size, size) for an image rendered at ``base`` pixels: a global
    gradient plus Lambert shading of each head, modelled as the ellipsoid whose projected outline
    is ``FaceGeometry.outline``. Smooth, so it is computed at each output size directly."""
    grid = _grid(size)
    g = grid / size - 0.5
    shade = np.float32(intensity) * (1.0 + np.float32(gradient[1]) * g[:, None] + np.float32(gradient[0]) * g[None, :])
    k = size / base
    for geo, light, ambient in faces:
        evals, evecs = np.linalg.eigh(geo.outline / (k * k))
        if evals.min() <= 0:
            continue
        root = ((evecs * np.sqrt(evals)) @ evecs.T).astype(np.float32)  # maps the outline onto the unit disc
        reach = 1.25 / np.sqrt(evals.min())
        cx, cy = geo.centre * k
        x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
        y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        X = grid[x0:x1][None, :] - np.float32(cx)
        Y = grid[y0:y1][:, None] - np.float32(cy)
        dx = root[0, 0] * X + root[0, 1] * Y
        dy = root[1, 0] * X + root[1, 1] * Y
        r = np.sqrt(dx * dx + dy * dy)
        inv = 1.0 / np.maximum(r, 1.0)  # outside the outline (hair, nose tip): the rim normal
        dx *= inv
        dy *= inv
        nz = np.sqrt(np.maximum(1.0 - dx * dx - dy * dy, 0.0))
        lam = np.maximum(dx * np.float32(light[0]) + dy * np.float32(light[1]) + nz * np.float32(light[2]), 0.0)
        gain = intensity / (ambient + (1 - ambient) * light[2])  # the face centre keeps its colour
        head = np.float32(gain * ambient) + np.float32(gain * (1 - ambient)) * lam
        w = np.minimum(np.maximum((1.2 - r) * 5.0, 0.0), 1.0)
        region = shade[y0:y1, x0:x1]
        region += w * (head - region)
    return shade


def finish(img: Image.Image, sizes, intensity: float, gradient: tuple[float, float], faces,
           noise_sd: float, offset: tuple[int, int], blur: float = 0.0) -> dict[int, np.ndarray]:
    """The stored images: optional blur (a defocused camera) on the render, then for every size
    a resample, the light field and sensor noise (both cheap at the output size)."""
    base = img.width
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    bank = _noise_bank()
    oy, ox = offset
    out = {}
    for size in sizes:
        # the light field is smooth: above 128 px compute it on a coarser grid of f x f blocks
        f = max(1, size // 112)
        while size % f:
            f -= 1
        shade = lighting(size // f, intensity, gradient, faces, base)
        arr = resample(img, size).astype(np.float32)
        blocks = arr.reshape(size // f, f, size // f, f, 3)
        blocks *= shade[:, None, :, None, None]
        arr += bank[oy:oy + size, ox:ox + size] * np.float32(noise_sd)
        np.clip(arr, 0, 255, out=arr)
        out[size] = arr.astype(np.uint8)
    return out


def noise_offset(rng: np.random.Generator, size: int) -> tuple[int, int]:
    hi = _NOISE_SIDE - min(size, _NOISE_SIDE)
    return int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))


def resample(img: Image.Image, size: int) -> np.ndarray:
    """One requested square size from the render: box filter for integer factors, else Lanczos."""
    base = img.width
    if size == base:
        return np.asarray(img)
    if base % size == 0:
        return np.asarray(img.reduce(base // size))
    return np.asarray(img.resize((size, size), Image.LANCZOS))
