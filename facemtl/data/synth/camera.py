"""Camera effects of SynthFaces: what a real photo has on top of the scene.

One :class:`Camera` per image, drawn from the image's camera stream in a fixed number of draws
(so forcing an attribute changes none of them): exposure and a light gradient, sensor noise and
chroma noise, white balance (a colour cast), gamma and contrast, vignetting, and for part of the
images a low-resolution capture (downscaled, then upscaled back), a mild motion blur and JPEG
compression. None of them moves a pixel's content, so every label stays exact. Strong blur is
reserved for ``Blurry`` images: a defocus or a very low resolution; the mild effects of the other
images stay below the weakest ``Blurry`` blur (tested).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

_NOISE_SIDE = 640  # largest stored image plus room for random offsets


@lru_cache(maxsize=1)
def noise_bank() -> np.ndarray:
    # fixed seed: the bank is part of the generator, identical in every process
    return np.random.default_rng(20_240_613).standard_normal((_NOISE_SIDE, _NOISE_SIDE, 3), dtype=np.float32)


@lru_cache(maxsize=1)
def chroma_bank() -> np.ndarray:
    """Colour noise in 2x2 blotches (demosaicing spreads sensor noise), zero luminance, sd about 1."""
    half = np.random.default_rng(31_337).standard_normal((_NOISE_SIDE // 2, _NOISE_SIDE // 2, 3), dtype=np.float32)
    half -= half.mean(axis=2, keepdims=True)
    half /= half.std()
    return np.ascontiguousarray(np.repeat(np.repeat(half, 2, axis=0), 2, axis=1))


def noise_offset(rng: np.random.Generator, size: int) -> tuple[int, int]:
    hi = _NOISE_SIDE - min(size, _NOISE_SIDE)
    return int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))


@dataclass(frozen=True)
class Camera:
    """Per-image camera settings; lengths in pixels of the render (``base``) unless noted."""

    base: int = 0                                  # side of the render these pixel sizes refer to
    intensity: float = 1.0
    gradient: tuple[float, float] = (0.0, 0.0)
    noise_sd: float = 0.0                          # grey levels
    offset: tuple[int, int] = (0, 0)               # window of the noise bank
    defocus: float = 0.0                           # Gaussian sigma (Blurry images only)
    lowres: int = 0                                # side of the low-resolution capture, 0 = none
    motion: tuple[float, float] = (0.0, 0.0)       # blur length (px) and direction (radians)
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance
    gamma: float = 1.0
    contrast: float = 1.0
    vignette: float = 0.0                          # darkening at the corners, 0..1
    chroma_sd: float = 0.0                         # colour noise in 2x2 blotches, grey levels
    jpeg_quality: int = 0                          # 0 = stored losslessly
    jpeg_444: bool = False                         # full-resolution chroma (else 4:2:0)

    @property
    def detail(self) -> float:
        """How much fine detail (skin pores, which are added after the optics) survives: 0..1."""
        if self.defocus > 0:
            return 0.0
        keep = 1.0
        if self.lowres:
            keep = min(keep, max(0.0, 2.0 * self.lowres / self.base - 0.8))
        if self.motion[0] > 0:
            keep = min(keep, 0.5)
        return keep


def draw_camera(fx: np.random.Generator, cfg, base: int, head_px: float, blurry: bool) -> Camera:
    """The camera of one image rendered at ``base`` px whose head is ``head_px`` px tall there.

    Always the same number of draws from ``fx``, whatever is used, so that forcing Blurry (or
    switching effects off) changes no other choice."""
    intensity = fx.uniform(0.8, 1.15)
    gradient = tuple(float(g) for g in fx.uniform(-0.25, 0.25, 2))
    noise = fx.uniform(*cfg.noise_sd)
    offset = noise_offset(fx, max(cfg.sizes))
    defocus = fx.uniform(0.013, 0.023) * head_px  # 0.009-0.016 of the side for a typical head
    n = fx.standard_normal(2)
    u = fx.random(16)
    cam = {"base": int(base), "intensity": float(intensity), "gradient": gradient, "noise_sd": float(noise),
           "offset": offset}
    if blurry:  # Blurry: a defocused lens, or a head of only 14-28 pixels blown up
        if u[0] < 0.5:
            cam["defocus"] = float(defocus)
        else:
            cam["lowres"] = _lowres_side(base, head_px, 14.0 + 14.0 * u[1])
    if not cfg.camera_effects:
        return Camera(**cam)
    if not blurry and u[2] < cfg.lowres_fraction:
        lo, hi = cfg.lowres_face_px
        cam["lowres"] = _lowres_side(base, head_px, lo * (hi / lo) ** u[1])
    if u[3] < cfg.motion_blur_fraction and not cam.get("lowres"):
        # at most 1.2 % of the side (a box of that length is a Gaussian of 0.35 %: mild)
        cam["motion"] = (float(min(5.0, max(2.0, (0.006 + 0.006 * u[4]) * base))), float(np.pi * u[5]))
    wb = cfg.white_balance
    amber, green = n[0] * wb, n[1] * wb * 0.4
    cam["gains"] = tuple(float(np.exp(g)) for g in (amber - green / 2, green, -amber - green / 2))
    cam["gamma"] = float(np.exp((u[6] - 0.5) * 2 * np.log(cfg.gamma_max)))
    cam["contrast"] = float(0.8 + 0.35 * u[7])
    cam["vignette"] = float(cfg.vignette * u[8] if u[9] < 0.6 else 0.0)
    cam["chroma_sd"] = float(cfg.chroma_noise * u[10] if u[11] < 0.5 else 0.0)
    if u[12] < cfg.jpeg_fraction:
        q_lo, q_hi = cfg.jpeg_quality
        cam["jpeg_quality"] = round(q_lo + (q_hi - q_lo) * float(u[13]))
        cam["jpeg_444"] = bool(u[14] < 0.3)
    return Camera(**cam)


def _lowres_side(base: int, head_px: float, face_px: float) -> int:
    """Side of a capture in which the head is ``face_px`` pixels tall (0: no reduction needed)."""
    side = round(base * face_px / max(head_px, 1.0))
    return side if side < base * 0.9 else 0


@lru_cache(maxsize=64)
def _motion_kernel(length: float, angle: float) -> ImageFilter.Kernel:
    """A 5x5 line kernel of ``length`` px at ``angle``, anti-aliased by bilinear splatting."""
    k = np.zeros((5, 5))
    for t in np.linspace(-0.5, 0.5, 15) * (length - 1):
        x, y = 2 + t * np.cos(angle), 2 + t * np.sin(angle)
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= ix + dx < 5 and 0 <= iy + dy < 5:
                k[iy + dy, ix + dx] += w
    return ImageFilter.Kernel((5, 5), (k / k.sum()).ravel().tolist(), scale=1)


def optics(img: Image.Image, cam: Camera) -> Image.Image:
    """Effects on the render, before the light field: motion blur, defocus, and a low-resolution
    capture (downscaled, stored through JPEG there when the image is a JPEG one, upscaled back)."""
    if cam.motion[0] > 0:
        img = img.filter(_motion_kernel(round(cam.motion[0], 1), round(cam.motion[1], 2)))
    if cam.defocus > 0:
        img = img.filter(ImageFilter.GaussianBlur(cam.defocus))
    if cam.lowres:
        base = img.width
        small = img.resize((cam.lowres, cam.lowres), Image.BOX)
        if cam.jpeg_quality:
            small = jpeg(small, cam.jpeg_quality, cam.jpeg_444)
        img = small.resize((base, base), Image.BICUBIC)
    return img


def jpeg(img: Image.Image, quality: int, full_chroma: bool) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=0 if full_chroma else 2)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def sensor(arr: np.ndarray, cam: Camera) -> Image.Image:
    """Float (s, s, 3) lit image -> the stored picture: sensor and chroma noise, then white balance
    and the tone curve (one lookup table per channel), then JPEG (unless the low-resolution capture
    already went through it). ``arr`` is modified in place."""
    size = arr.shape[0]
    oy, ox = cam.offset
    arr += noise_bank()[oy:oy + size, ox:ox + size] * np.float32(cam.noise_sd)
    if cam.chroma_sd > 0:
        arr += chroma_bank()[ox:ox + size, oy:oy + size] * np.float32(cam.chroma_sd)
    np.clip(arr, 0, 255, out=arr)
    img = Image.fromarray(arr.astype(np.uint8))
    if cam.gains != (1.0, 1.0, 1.0) or cam.gamma != 1.0 or cam.contrast != 1.0:
        img = img.point(_tone_curves(tuple(round(g, 3) for g in cam.gains), round(cam.gamma, 3), round(cam.contrast, 3)))
    if cam.jpeg_quality and not cam.lowres:
        img = jpeg(img, cam.jpeg_quality, cam.jpeg_444)
    return img


@lru_cache(maxsize=256)
def _tone_curves(gains: tuple[float, float, float], gamma: float, contrast: float) -> list[int]:
    """768 entries: per channel, the white-balance gain, then gamma, then contrast about mid-grey."""
    y = np.minimum(np.arange(256)[None, :] * (np.asarray(gains)[:, None] / 255.0), 1.0) ** gamma
    y = 0.5 + (y - 0.5) * contrast
    return np.clip(np.round(y * 255), 0, 255).astype(int).ravel().tolist()
