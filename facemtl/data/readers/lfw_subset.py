"""LFW-subset: scikit-image's 200 grey 25x25 LFW crops as a facemtl cache, for *measuring only*.

``skimage.data.lfw_subset()`` ships inside the scikit-image wheel (no download): a float64 array
(200, 25, 25) in [0, 1]; rows 0-99 are faces picked at random from LFW, rows 100-199 are
non-faces (background patches of the same photos). This module turns it into a cache that
``facemtl evaluate RUN --dataset lfw-subset`` reads, to check how a model trained on SynthFaces
separates *real* faces from non-faces.

It is a test set and nothing else: every row is in the ``test`` split (none in train or val), so
it cannot be trained on, early-stopped on or used to pick a threshold by accident. Keep it so.

What the cache holds:

- ``face`` = 1 for rows 0-99 and 0 for rows 100-199; every other label is missing;
- images: the grey value replicated to RGB; size 25 is the source exactly (``round(255 * x)``);
  every other size is the 25 px crop upscaled with PIL's bicubic filter (on the float image,
  then rounded and clipped to uint8). No face-specific re-framing is done: the faces are LFW's
  tight crops (roughly eyebrows to chin, the face filling nearly the whole square, hair and
  most of the forehead cut off), about as tight as SynthFaces' tightest crops (head height 0.6-1.4 of
  the side: from loose head crops to brow-to-chin); non-faces often show black borders or parts of a face or body;
- ``image_ids`` ``lfw_subset_000`` ... ``lfw_subset_199`` (row of ``lfw_subset()``);
- provenance: source ``lfw-subset``, the scikit-image version, the SHA-256 of the source array,
  the resize method and the framing note.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facemtl.data import schema
from facemtl.data.cache import CacheWriter, validate_sizes
from facemtl.errors import DataFormatError, MissingDependencyError, MissingFileError
from facemtl.utils.io import check_writable_target

SOURCE = "lfw-subset"
FILE_NAME = "lfw-subset.h5"
NUM_FACES = 100
NUM_NON_FACES = 100
SIDE = 25
#: 25 is the source itself; the others cover every packaged recipe's inputs (TCDCN 40, gender-glasses 50,
#: MCFA 56/112/224, small and famo9 64); other sizes read the next larger one and downscale.
DEFAULT_SIZES = (25, 40, 50, 56, 64, 112, 224)
FRAMING = (
    "LFW's tight 25x25 crops (roughly eyebrows to chin; the face fills nearly the whole square, hair and most of "
    "the forehead cut off), upscaled as they are: no face-specific re-framing. SynthFaces frames heads at 0.6-1.4 of the "
    "side (loose head crops to brow-to-chin crops), so only its tightest crops are framed like these. Non-faces are background patches of the same photos."
)
INSTALL_HINT = "install it with `pip install scikit-image` (or `pip install facemtl[real]`)"


def default_path() -> Path:
    """``$FACEMTL_DATA/lfw-subset.h5`` (default folder ``data/``): where ``--dataset lfw-subset`` looks."""
    return Path(os.environ.get("FACEMTL_DATA") or "data") / FILE_NAME


def load_lfw_subset() -> tuple[np.ndarray, str]:
    """``(images float64 (200, 25, 25) in [0, 1], scikit-image version)``; raises
    :class:`MissingDependencyError` when scikit-image is not installed."""
    try:
        import skimage
        from skimage.data import lfw_subset
    except ImportError:
        raise MissingDependencyError(
            f"the lfw-subset check reads skimage.data.lfw_subset(), but scikit-image is not installed; {INSTALL_HINT}."
        ) from None
    try:
        images = np.asarray(lfw_subset(), dtype=np.float64)
    except (ImportError, OSError, ValueError, RuntimeError) as e:  # a build without the bundled file downloads it (pooch)
        raise MissingFileError(
            f"scikit-image {skimage.__version__} could not provide skimage.data.lfw_subset() "
            f"({type(e).__name__}: {e}); reinstall it from a wheel: `pip install --force-reinstall scikit-image`."
        ) from None
    if images.shape != (NUM_FACES + NUM_NON_FACES, SIDE, SIDE):
        raise DataFormatError(
            f"skimage.data.lfw_subset() of scikit-image {skimage.__version__} returned shape {images.shape}, "
            f"expected ({NUM_FACES + NUM_NON_FACES}, {SIDE}, {SIDE}); install another scikit-image (>= 0.22)."
        )
    return images, str(skimage.__version__)


def resize_grey(images: np.ndarray, size: int) -> np.ndarray:
    """Float grey images (N, 25, 25) in [0, 1] -> uint8 RGB (N, size, size, 3) (module docstring)."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(np.asarray(images, np.float64) * 255.0):
        if size != img.shape[0]:  # PIL resizes float images as mode "F" (float32)
            img = np.asarray(Image.fromarray(img.astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC))
        out[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)[:, :, None]
    return out


def prepare_lfw_subset(out: str | os.PathLike, sizes: Sequence[int] = DEFAULT_SIZES, *, force: bool = False) -> Path:
    """Write the LFW-subset cache to ``out`` (module docstring) and return its path.

    The file appears under ``out`` only when complete (written beside it under a unique
    temporary name, then renamed), so an error or a concurrent prepare never leaves a partial
    cache there. Raises :class:`MissingDependencyError` without scikit-image, ConfigError for
    an existing ``out`` (without ``force``) or bad sizes."""
    out = Path(out)
    sizes = validate_sizes(sizes)
    try:
        images, version = load_lfw_subset()
    except (MissingDependencyError, MissingFileError) as e:
        raise type(e)(f"cannot write {out}: {e}") from None
    check_writable_target(out, force=force, what="cache")
    n = len(images)
    face = np.zeros(n, np.int8)
    face[:NUM_FACES] = 1
    provenance: dict[str, Any] = {
        "dataset": SOURCE,
        "origin": "skimage.data.lfw_subset() (bundled with scikit-image; a subset of LFW, http://vis-www.cs.umass.edu/lfw/)",
        "scikit_image_version": version,
        "source_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
        "faces": f"rows 0-{NUM_FACES - 1}", "non_faces": f"rows {NUM_FACES}-{n - 1}",
        "labels": "face only (1 face, 0 non-face); every other label missing",
        "image_id": "lfw_subset_<row of lfw_subset()>",
        "resize": f"grey -> RGB; {SIDE} px stored as round(255 x); other sizes PIL bicubic from {SIDE} px (float), rounded",
        "framing": FRAMING,
        "sizes": list(sizes),
        "use": "evaluation only (every row in the test split): never train, tune or pick thresholds on it",
    }
    batch: dict[str, Any] = {
        "images": {s: resize_grey(images, s) for s in sizes},
        "face": face,
        "split": np.full(n, schema.SPLITS["test"], np.int8),
        "image_ids": [f"lfw_subset_{i:03d}" for i in range(n)],
    }
    # a unique partial folder instead of the shared ``<out>.partial``: two evaluations preparing the
    # cache at once each write their own and rename a complete file onto ``out``
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    writer = CacheWriter(out, num_samples=n, sizes=sizes, attribute_names=[], source=SOURCE, provenance=provenance,
                         force=force, compression="gzip", partial=tmp)
    try:
        with writer as w:
            w.write(0, batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left there when the write failed
    return out
