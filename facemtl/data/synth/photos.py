"""Real photographs for SynthFaces backgrounds and non-face crops: scikit-image's sample images.

scikit-image ships a few dozen sample images inside its package (``skimage.data.<name>()``, no
download). The ones in :data:`PHOTO_NAMES` contain no face and are used as real photographic
texture: random windows at random scales behind faces and as non-faces, so that a model trained on
SynthFaces learns that textures, objects and real-world statistics are not faces.

When scikit-image is missing the generator falls back to procedural content with one logged
warning; ``SynthConfig.photo_source`` records which source a set was rendered with. The decoded
photos are cached per process, each as a small pyramid so that cutting a window costs about as
much as the window itself.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from PIL import Image

from facemtl.errors import ConfigError

log = logging.getLogger(__name__)

# Photos without faces, all bundled with scikit-image (checked to load offline).
PHOTO_NAMES: tuple[str, ...] = (
    "brick", "grass", "gravel", "cell", "clock", "coins", "colorwheel", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "retina", "rocket", "stereo_motorcycle", "text",
    "logo", "checkerboard", "horse", "binary_blobs",
)
# Never used, in any way: these are held out as real-face checks of models trained on SynthFaces
# (a model that saw them, even as background, could not be judged on them), or they show faces:
# astronaut (a person), camera (a cameraman), cat and chelsea (the same cat photo), coffee, and
# lfw_subset (LFW faces); nor any other LFW or face image.
EXCLUDED_PHOTOS: tuple[str, ...] = ("astronaut", "camera", "cat", "chelsea", "coffee", "lfw_subset")
assert not set(PHOTO_NAMES) & set(EXCLUDED_PHOTOS)

PHOTO_SOURCES = ("auto", "skimage", "none")
_MAX_SIDE = 512  # photos are stored at most this large (retina and hubble are bigger)
_LEVELS = 4      # pyramid levels: full, 1/2, 1/4, 1/8


@lru_cache(maxsize=1)
def skimage_available() -> bool:
    try:
        import skimage.data  # noqa: F401  (importing it is the check: it may fail on a broken install)
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _warn_fallback() -> None:
    log.warning("scikit-image is not installed: SynthFaces draws procedural backgrounds and non-faces "
                "instead of real photos (install facemtl[real] for photos)")


def resolve_source(source: str) -> str:
    """``auto`` becomes ``skimage`` when scikit-image is importable, else ``none`` (warned once)."""
    if source not in PHOTO_SOURCES:
        raise ConfigError(f"SynthConfig.photo_source must be one of {PHOTO_SOURCES}, got {source!r}.")
    if source != "auto":
        return source
    if skimage_available():
        return "skimage"
    _warn_fallback()
    return "none"


def _load(name: str) -> np.ndarray:
    """uint8 (H, W, 3) of one allowed sample image."""
    if name not in PHOTO_NAMES:
        raise ConfigError(f"{name!r} is not one of the SynthFaces photos {PHOTO_NAMES}.")
    if not skimage_available():
        raise ConfigError("This SynthFaces set uses scikit-image photos (photo_source='skimage'), but "
                          "scikit-image is not installed: install facemtl[real], or use photo_source='none'.")
    import skimage.data

    if name == "binary_blobs":
        try:  # fixed seed: the same blobs in every process
            img = skimage.data.binary_blobs(length=256, rng=7)
        except TypeError:  # scikit-image before 0.21 called it seed
            img = skimage.data.binary_blobs(length=256, seed=7)
    elif name == "stereo_motorcycle":
        img = skimage.data.stereo_motorcycle()[0]
    else:
        img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


@lru_cache(maxsize=len(PHOTO_NAMES))
def photo_pyramid(name: str) -> tuple[Image.Image, ...]:
    """The photo (long side at most 512 px) and its halvings, decoded once per process."""
    img = Image.fromarray(_load(name))
    long = max(img.size)
    if long > _MAX_SIDE:
        f = _MAX_SIDE / long
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    levels = [img]
    for _ in range(_LEVELS - 1):
        if min(levels[-1].size) < 32:
            break
        levels.append(levels[-1].reduce(2))
    return tuple(levels)


_GREY = frozenset({"brick", "grass", "gravel", "cell", "clock", "coins", "moon", "page", "text",
                   "checkerboard", "horse", "binary_blobs"})


def photo_window(rng: np.random.Generator, size: int, tiny: float = 0.15) -> Image.Image:
    """A ``size`` x ``size`` RGB window of a random photo.

    A fixed number of draws: the photo, the window's side (in ``tiny`` of the cases only 4 to 16
    photo pixels, upscaled into a blurry texture; otherwise from half the output size to the whole
    photo, log-uniform), a slightly non-square aspect, its position, a flip and a quarter turn, then
    the colour: grey photos are tinted in half of the cases, colour ones sometimes turned grey;
    contrast, brightness, sometimes inverted; and in a quarter of the cases a defocus blur.
    """
    u = rng.random(16)
    name = PHOTO_NAMES[int(u[0] * len(PHOTO_NAMES))]
    levels = photo_pyramid(name)
    w0, h0 = levels[0].size
    short = min(w0, h0)
    if u[1] < tiny:
        side = 4.0 + 12.0 * u[2]
    else:
        lo = min(short, max(8.0, 0.5 * size))
        side = float(np.exp(np.log(lo) + u[2] * (np.log(short) - np.log(lo))))
    aspect = float(np.exp((u[3] - 0.5) * 0.5))  # 0.78 .. 1.28
    bw, bh = min(w0, side * aspect), min(h0, side / aspect)
    x0, y0 = u[4] * (w0 - bw), u[5] * (h0 - bh)
    # the pyramid level whose pixels are at most 2x finer than the output's
    k = int(np.clip(np.floor(np.log2(max(bw, bh) / size)), 0, len(levels) - 1))
    f = 2.0 ** -k
    box = (x0 * f, y0 * f, (x0 + bw) * f, (y0 + bh) * f)
    # box filtering when shrinking (half the cost of bilinear), bilinear when blowing up
    img = levels[k].resize((size, size), Image.BOX if bw >= size else Image.BILINEAR, box=box)
    if u[6] < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if u[7] < 0.25:
        img = img.transpose(Image.ROTATE_90 if u[8] < 0.5 else Image.ROTATE_270)
    col = rng.uniform(0.7, 1.3, 3)
    if name in _GREY:
        gains = col if u[9] < 0.5 else np.ones(3)  # a tinted print, a coloured surface ...
    elif u[9] < 0.2:
        img = img.convert("L").convert("RGB")
        gains = np.ones(3)
    else:
        gains = 1.0 + (col - 1.0) * 0.5
    # contrast about the window's mean, a new mean level, sometimes inverted, then the tint: one
    # lookup table per channel
    mean = float(np.asarray(img)[::3, ::3].mean())
    y = (np.arange(256) - mean) * (0.45 + 0.9 * u[10]) + 30.0 + 195.0 * u[11]
    if u[12] < 0.1:
        y = 255.0 - y
    lut = np.clip(np.round(y[None, :] * gains[:, None]), 0, 255).astype(int).ravel().tolist()
    img = img.point(lut)
    if u[13] < 0.25:  # defocus: down and up again (a Gaussian blur costs 10x more)
        small = max(4, int(size / (1.5 + 5.0 * u[14])))
        img = img.resize((small, small), Image.BOX).resize((size, size), Image.BILINEAR)
    return img
