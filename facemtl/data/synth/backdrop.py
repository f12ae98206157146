"""Backgrounds, lighting and the finishing of SynthFaces images.

Everything per-pixel is vectorised numpy or a single PIL call: a smooth colour field comes from
upsampling a tiny random grid, clutter is a handful of ImageDraw shapes, real photos are windows
of scikit-image's sample photos (``photos.py``), and lighting is one multiplicative field: the
light gradient and vignetting, Lambert shading of each head with a skin texture, and the soft
shadows that ``draw_face`` paints into a half-resolution shadow layer. The camera effects
(``camera.py``) frame it: optics on the render before, the sensor after.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facemtl.data.synth.camera import Camera, noise_bank, optics, sensor
from facemtl.data.synth.face import FaceGeometry
from facemtl.data.synth.identity import SKIN_TONES
from facemtl.data.synth.photos import photo_window

_SKIN_SIDE = 512  # skin texture bank; a head spans about 110 of its pixels
_SKIN_PX = 52.0   # bank pixels per head radius


@lru_cache(maxsize=8)
def _grid(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) + 0.5


@lru_cache(maxsize=2)
def skin_bank(fine: bool) -> np.ndarray:
    """Fixed skin texture (float32, sd about 1), looked up in head coordinates so that it is the
    same at every stored size: blotches a fifth of the face wide (``fine`` False), or smaller
    mottling and pore-sized noise (``fine`` True), which a blurred picture does not show."""
    rng = np.random.default_rng(90_210 + int(fine))
    out = np.zeros((_SKIN_SIDE, _SKIN_SIDE), np.float32)
    for cells, weight in (((52, 0.8), (_SKIN_SIDE, 0.3)) if fine else ((16, 1.0),)):
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        if cells < _SKIN_SIDE:
            grid = np.asarray(Image.fromarray(grid, mode="F").resize((_SKIN_SIDE, _SKIN_SIDE), Image.BICUBIC))
        out += weight * grid / grid.std()
    return (out / out.std()).ravel()


def field(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth colour field: warm or cool rooms rather than rainbow fields."""
    k = int(rng.integers(2, 5))
    grey = rng.uniform(40, 215)
    tint = rng.uniform(0.8, 1.2, 3)
    grid = np.clip((rng.uniform(0, 255, (k, k, 3)) * 0.35 + grey * 0.65) * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.BILINEAR)


def shapes(rng: np.random.Generator, img: Image.Image, n_range: tuple[int, int], skin_blob: float) -> None:
    """Random shapes (some stripes, sometimes a skin-coloured blob with no face) drawn on ``img``."""
    size = img.width
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(n_range[0], n_range[1] + 1))
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


def clutter(rng: np.random.Generator, size: int, shapes_range: tuple[int, int] = (2, 9),
            skin_blob: float = 0.12) -> Image.Image:
    """A cluttered background: smooth colour field plus random shapes (some skin-coloured)."""
    img = field(rng, size)
    shapes(rng, img, shapes_range, skin_blob)
    return img


def procedural_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """What stands in for a photo without scikit-image: two octaves of tinted smooth noise."""
    bank = noise_bank()
    u = rng.random(6)
    acc = np.zeros((size, size, 3), np.float32)
    for octave, cells in enumerate((4 + int(28 * u[0]), 16 + int(100 * u[1]))):
        oy, ox = int(u[2 + octave] * (bank.shape[0] - cells)), int(u[4 + octave] * (bank.shape[1] - cells))
        win = bank[oy:oy + cells, ox:ox + cells]
        win = np.clip(win * 40 + 128, 0, 255).astype(np.uint8)
        acc += np.asarray(Image.fromarray(win).resize((size, size), Image.BICUBIC), np.float32) * (0.7 - 0.3 * octave)
    grey = acc.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.0, 0.6)
    acc = grey + (acc - grey) * sat
    acc = (acc - acc.mean()) * rng.uniform(0.8, 2.2) + rng.uniform(50, 200)
    return Image.fromarray(np.clip(acc * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8))


def photo_or_texture(rng: np.random.Generator, size: int, photos: bool, tiny: float = 0.15) -> Image.Image:
    return photo_window(rng, size, tiny=tiny) if photos else procedural_texture(rng, size)


def background(rng: np.random.Generator, size: int, cfg, shapes_range: tuple[int, int] = (2, 9),
               skin_blob: float = 0.12) -> Image.Image:
    """Behind a face: in ``cfg.photo_background`` of the cases a window of a real photo (with a few
    shapes in front of it half of the time), otherwise procedural clutter. Without photos
    (``photo_source`` none) the same share gets procedural texture instead."""
    u = rng.random(2)
    if u[0] < cfg.photo_background:
        img = photo_or_texture(rng, size, cfg.photo_source == "skimage", tiny=0.05)
        if u[1] < 0.5:
            shapes(rng, img, (1, max(1, shapes_range[1] // 3)), skin_blob)
        return img
    return clutter(rng, size, shapes_range, skin_blob)


def lighting(size: int, cam: Camera, faces: list[tuple[FaceGeometry, tuple[float, float, float], float]],
             base: int) -> np.ndarray:
    """Multiplicative light field (size, size) for an image rendered at ``base`` pixels: a global
    gradient and vignetting, plus Lambert shading of each head, modelled as the ellipsoid whose
    projected outline is ``FaceGeometry.outline``, times its skin texture. Smooth (the texture
    lives in head coordinates), so it is computed at the output size directly."""
    grid = _grid(size)
    g = grid / size - 0.5
    gy, gx = g[:, None], g[None, :]
    shade = np.float32(cam.intensity) * (1.0 + np.float32(cam.gradient[1]) * gy + np.float32(cam.gradient[0]) * gx)
    if cam.vignette > 0:
        shade *= 1.0 - np.float32(2.0 * cam.vignette) * (gx * gx + gy * gy)
    k = size / base
    smooth, fine = skin_bank(False), skin_bank(True)
    detail = np.float32(cam.detail)
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
        ox, oy, amp = geo.texture
        if amp > 0:  # skin texture, looked up where this pixel lies on the head (in range where it counts)
            ix = (dx * np.float32(_SKIN_PX) + np.float32(160 + ox)).astype(np.int32)
            iy = (dy * np.float32(_SKIN_PX) + np.float32(160 + oy)).astype(np.int32)
            idx = iy * _SKIN_SIDE + ix
            tex = smooth.take(idx, mode="clip")
            if detail > 0:
                tex += (np.float32(0.5) * detail) * fine.take(idx, mode="clip")
            tex *= np.float32(amp)
            tex += np.float32(1.0)
        inv = 1.0 / np.maximum(r, 1.0)  # outside the outline (hair, nose tip): the rim normal
        dx *= inv
        dy *= inv
        nz = np.sqrt(np.maximum(1.0 - dx * dx - dy * dy, 0.0))
        lam = np.maximum(dx * np.float32(light[0]) + dy * np.float32(light[1]) + nz * np.float32(light[2]), 0.0)
        gain = cam.intensity / (ambient + (1 - ambient) * light[2])  # the face centre keeps its colour
        head = np.float32(gain * ambient) + np.float32(gain * (1 - ambient)) * lam
        if amp > 0:
            head *= tex
        w = np.minimum(np.maximum((1.2 - r) * 5.0, 0.0), 1.0)
        region = shade[y0:y1, x0:x1]
        region += w * (head - region)
    return shade


def finish(img: Image.Image, sizes, cam: Camera, faces, shadow: Image.Image | None = None,
           shadow_radius: float = 0.0) -> dict[int, np.ndarray]:
    """The stored images. On the render: the optics (motion blur, defocus, low resolution; see
    ``camera.optics``). Then the largest stored size is made like a photo: a resample, the light
    field times the blurred shadow layer, and the sensor (noise, white balance, tone curve, JPEG);
    the smaller sizes are that photo downscaled, as a dataset would shrink a photo."""
    base = img.width
    img = optics(img, cam)
    top = max(sizes)
    # the light field is smooth: above 128 px compute it on a coarser grid of f x f blocks
    f = max(1, top // 112)
    while top % f:
        f -= 1
    n = top // f
    shade = lighting(n, cam, faces, base)
    if shadow is not None and shadow.getbbox() is not None:
        shadow = shadow.filter(ImageFilter.GaussianBlur(max(0.5, shadow_radius)))
        shade *= 1.0 - np.asarray(shadow.resize((n, n), Image.BILINEAR), np.float32) * np.float32(1 / 255)
    arr = resample(img, top).astype(np.float32)
    blocks = arr.reshape(n, f, n, f, 3)
    blocks *= shade[:, None, :, None, None]
    photo = sensor(arr, cam)
    return {size: resample(photo, size) for size in sizes}


def resample(img: Image.Image, size: int) -> np.ndarray:
    """One requested square size from the render: box filter for integer factors, else Lanczos."""
    base = img.width
    if size == base:
        return np.array(img)
    if base % size == 0:
        return np.asarray(img.reduce(base // size))
    return np.asarray(img.resize((size, size), Image.LANCZOS))
