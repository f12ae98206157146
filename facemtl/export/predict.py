"""``facemtl predict``'s library side: images in, one record per face out.

:class:`Predictor` joins a backend (:mod:`facemtl.export.backends`: ONNX Runtime, TorchScript or a
checkpoint) and the face finder (:mod:`facemtl.export.faces`). With ``aligned=True`` each image is
one face crop and the model runs on it directly; otherwise faces are found first. A face record
(:func:`face_record`, also the JSON written by ``--json``) holds, in pixels of the given image:

``box`` [x, y, w, h], ``score`` (face probability, or null without a detection head),
``landmarks`` {point: [x, y]} in CelebA order, ``attributes`` {name: probability},
``expression`` {label, probability, probabilities}, ``pose`` {label, probability, yaw (degrees)},
``embedding`` (identity models; JSON only).

Images that do not decode, exceed ``max_pixels`` or are too small raise :class:`ImageError` (a
:class:`~facemtl.errors.DataFormatError`); :func:`collect_images`
expands folders (their images sorted by name) and refuses a folder without images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from facemtl.data._rgb import to_rgb
from facemtl.errors import DataFormatError, MissingFileError
from facemtl.export.backends import Backend
from facemtl.export.faces import Face, FaceFinder, FinderConfig, Photo, run_aligned
from facemtl.tasks.registry import output_kind

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
#: what PIL raises for a file that is not a readable image
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass
class ImageItem:
    path: Path
    from_folder: bool


def collect_images(paths: Iterable[str | Path]) -> list[ImageItem]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    items: list[ImageItem] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise MissingFileError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}); give image files or another folder.")
            items += [ImageItem(f, True) for f in files]
        elif p.is_file():
            items.append(ImageItem(p, False))
        else:
            raise MissingFileError(f"image {p} does not exist.")
    return items


#: Largest image ``predict`` decodes unless told otherwise (``--max-pixels``): 100 megapixels, about
#: 300 MB as 8-bit RGB before the face search's own copies.
DEFAULT_MAX_PIXELS = 100_000_000
#: Smallest side that can hold a face the models read.
MIN_SIDE = 8


class ImageError(DataFormatError):
    """An image ``predict`` cannot use; ``reason`` is the short form for a summary line."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied, 16-bit images scaled to 8 bits.

    Raises :class:`ImageError` when the file does not decode, is larger than ``max_pixels``
    (None: no limit; checked from the header, before any pixel is decoded) or is too small for a
    face. PIL's own decompression-bomb limit and warning are replaced by ``max_pixels``."""
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the limit below applies instead, with a message that says what to do
    try:
        with Image.open(path) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(
                    f"image {path} is too large ({w * h:,} pixels, {w}x{h}; limit {max_pixels:,}); "
                    f"pass --max-pixels {w * h} (or more) to read it anyway, or downscale it.",
                    f"too large: {w * h:,} pixels; limit {max_pixels:,}",
                )
            im.load()
            rgb = to_rgb(ImageOps.exif_transpose(im))
    except _IMAGE_ERRORS as e:
        raise ImageError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); it is damaged or not an image.",
                         "does not decode") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"image {path} is {rgb.size[0]}x{rgb.size[1]} pixels; it is too small to hold a face "
                         f"(at least {MIN_SIDE}x{MIN_SIDE}).", f"too small: {rgb.size[0]}x{rgb.size[1]} pixels")
    return np.asarray(rgb)


def face_record(face: Face, backend: Backend) -> dict[str, Any]:
    """One face as a JSON-ready dict (see the module docstring); coordinates in image pixels.

    Each output adds the fields its kind's ``read`` gives (:data:`facemtl.tasks.registry.OUTPUTS`);
    an output of a kind this facemtl does not know adds nothing."""
    rec: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box],
                           "score": None if face.score is None else round(face.score, 4)}
    for t in backend.meta.tasks:
        kind = output_kind(t.kind)
        if kind is None:
            continue
        for key, value in kind.read(np.asarray(face.outputs[t.name], dtype=np.float64), t.labels, face.crop).items():
            if isinstance(value, dict) and isinstance(rec.get(key), dict):
                rec[key].update(value)  # two attribute tasks share one "attributes" field
            else:
                rec[key] = value
    return rec


@dataclass
class ImageResult:
    path: Path
    width: int = 0
    height: int = 0
    faces: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None  # short form of ``error`` ("does not decode", "too small: 1x1 pixels", ...)
    drawn: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": str(self.path), "error": self.error}
        return {"image": str(self.path), "width": self.width, "height": self.height, "faces": self.faces}


class Predictor:
    """``predict(rgb, aligned)`` -> face records; ``predict_files`` streams :class:`ImageResult`."""

    def __init__(self, backend: Backend, finder: FinderConfig | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.backend = backend
        self.finder_cfg = finder or FinderConfig()
        self.max_pixels = max_pixels
        self._finder: FaceFinder | None = None

    @property
    def finder(self) -> FaceFinder:
        if self._finder is None:
            self._finder = FaceFinder(self.backend, self.finder_cfg)  # raises when there is no detection head
        return self._finder

    def faces(self, rgb: np.ndarray, aligned: bool = False) -> list[Face]:
        photo = Photo(rgb)
        return [run_aligned(self.backend, photo, self.finder_cfg.flip_test)] if aligned else self.finder.find(photo)

    def predict(self, rgb: np.ndarray, aligned: bool = False) -> list[dict[str, Any]]:
        return [face_record(f, self.backend) for f in self.faces(rgb, aligned)]

    def predict_files(self, items: list[ImageItem], aligned: bool = False, draw_dir: Path | None = None) -> Iterator[ImageResult]:
        """One result per image; an image that cannot be used gives a result with ``error`` and ``reason`` set."""
        if not aligned:
            _ = self.finder  # fail before the first image when the model cannot find faces
        used: set[str] = set()
        for item in items:
            try:
                rgb = read_image(item.path, self.max_pixels)
            except ImageError as e:
                yield ImageResult(item.path, error=str(e), reason=e.reason)
                continue
            res = ImageResult(item.path, rgb.shape[1], rgb.shape[0], self.predict(rgb, aligned))
            if draw_dir is not None:
                res.drawn = draw_faces(rgb, res.faces, _unique_name(draw_dir, item.path, used))
            yield res


def _unique_name(folder: Path, src: Path, used: set[str]) -> Path:
    name, k = f"{src.stem}.png", 1
    while name in used:
        k += 1
        name = f"{src.stem}-{k}.png"
    used.add(name)
    return folder / name


def draw_faces(rgb: np.ndarray, faces: list[dict[str, Any]], out: Path) -> Path:
    """Write ``rgb`` with each face's box, landmarks and score drawn to ``out`` (PNG)."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    lw = max(1, round(min(img.size) / 200))
    for f in faces:
        x, y, w, h = f["box"]
        draw.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=lw)
        for px, py in (f.get("landmarks") or {}).values():
            r = 1.5 * lw
            draw.ellipse([px - r, py - r, px + r, py + r], fill=(255, 40, 40))
        if f.get("score") is not None:
            draw.text((x + 2, max(0, y - 11)), f"{f['score']:.2f}", fill=(255, 255, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
