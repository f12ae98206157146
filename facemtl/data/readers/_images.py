"""Decode, crop and resize dataset images in worker processes.

A worker gets only ``(start, stop)`` and the key of a :class:`~facemtl.data.readers._plan.Plan`
registered here *before* the pool forks, so the (possibly 200k-row) plan is never pickled per
block. Where processes are spawned instead of forked, the plan is read once per worker from a
pickle file. Decoded blocks travel back in shared memory rather than through the pool's pipe.

Crop convention (every reader): a square window ``(x0, y0, side)`` in source pixels, rounded to
whole pixels, is cut out (zero padding where it leaves the image) and resized to every stored
size with PIL's antialiased bilinear filter. A NaN window means the centred square of the image:
side ``min(w, h)``, ``x0 = (w - side) // 2``, ``y0 = (h - side) // 2`` (CelebA's aligned 178x218
images: ``(0, 20, 178)``); NaN ``x0, y0`` with a given side: the centred square of that side.
Labels in source pixels then become ``(p - x0) / side``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import pickle
import tempfile
import uuid
import warnings
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facemtl.data._rgb import to_rgb

log = logging.getLogger(__name__)

_PLANS: dict[str, Any] = {}
_PLAN_FILES: dict[str, str] = {}

#: Errors that mean "this image file is bad" rather than "facemtl has a bug".
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


class PlanHandle:
    """A picklable reference to a registered plan (the key, plus a pickle file under spawn)."""

    def __init__(self, plan: Any):
        self.key = uuid.uuid4().hex
        self.path: str | None = None
        _PLANS[self.key] = plan
        if "fork" not in mp.get_all_start_methods():
            fd, self.path = tempfile.mkstemp(prefix="facemtl-plan-", suffix=".pkl")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(plan, f, protocol=pickle.HIGHEST_PROTOCOL)

    def get(self) -> Any:
        plan = _PLANS.get(self.key)
        if plan is None:
            if self.path is None:
                raise RuntimeError("plan not registered in this process")
            with open(self.path, "rb") as f:
                plan = _PLANS[self.key] = pickle.load(f)
        return plan

    def close(self) -> None:
        _PLANS.pop(self.key, None)
        if self.path:
            Path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> PlanHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_source(plan: Any, i: int) -> Image.Image:
    """The image of row ``i`` of ``plan`` (a file path, or a row of an in-memory uint8 array)."""
    if plan.kind == "array":
        return Image.fromarray(np.asarray(plan.images[i]))
    im = Image.open(plan.images[i])
    return im


def square_window(crop: np.ndarray | None, w: int, h: int) -> tuple[int, int, int]:
    """The integer window ``(x0, y0, side)`` for a requested float window.

    All NaN: the centred square of side ``min(w, h)``; x0, y0 NaN but side given: the centred
    square of that side."""
    if crop is None or not np.all(np.isfinite(crop)):
        side = int(round(crop[2])) if crop is not None and np.isfinite(crop[2]) else min(w, h)
        return (w - side) // 2, (h - side) // 2, side
    x0, y0, side = (float(v) for v in crop)
    return int(round(x0)), int(round(y0)), max(1, int(round(side)))


def decode_one(plan: Any, i: int, sizes: tuple[int, ...]) -> tuple[dict[int, np.ndarray], tuple[int, int, int]]:
    """Decode row ``i`` and return ``({size: (S, S, 3) uint8}, (x0, y0, side))``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = open_source(plan, i)
        w, h = im.size
        crop = plan.crops[i] if plan.crops is not None else None
        x0, y0, side = square_window(crop, w, h)
        scale = 1.0
        biggest = max(sizes)
        if im.format == "JPEG" and side >= 2 * biggest:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: large in-the-wild photos decode several
            # times faster and the window still holds at least `biggest` pixels.
            k = 1
            while k < 8 and side / (k * 2) >= biggest:
                k *= 2
            im.draft("RGB", (math.ceil(w / k), math.ceil(h / k)))
            scale = w / im.size[0]
        im = to_rgb(im)  # JPEGs decode to RGB already (no copy); 16-bit grey keeps its range
        W, H = im.size
        box = (x0 / scale, y0 / scale, (x0 + side) / scale, (y0 + side) / scale)
        if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H:
            # PIL pads outside the image with black; whole pixels around the (maybe fractional,
            # after draft) window, which stays exact as a float box inside the padded crop
            ib = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))
            im = im.crop(ib)
            box = (box[0] - ib[0], box[1] - ib[1], box[2] - ib[0], box[3] - ib[1])
        out = {s: np.asarray(im.resize((s, s), Image.Resampling.BILINEAR, box=box)) for s in sizes}
    return out, (x0, y0, side)


def _block_arrays(buf: Any, n: int, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Views of one flat buffer as the (n, S, S, 3) image arrays of every size."""
    out, offset = {}, 0
    for s in sizes:
        out[s] = np.ndarray((n, s, s, 3), np.uint8, buffer=buf, offset=offset)
        offset += n * s * s * 3
    return out


def prepare_shared() -> None:
    """Start the resource tracker before the pool forks, so workers and writer share it (it then
    removes any block left in shared memory if the prepare dies)."""
    resource_tracker.ensure_running()


def attach_block(res: dict[str, Any], sizes: tuple[int, ...]) -> tuple[dict[int, np.ndarray], Callable[[], None]]:
    """Writer side of :func:`decode_block` with ``shared``: the image arrays and a ``release()``."""
    if res.get("shm") is None:
        return res["images"], lambda: None
    shm = shared_memory.SharedMemory(name=res["shm"])
    images = _block_arrays(shm.buf, len(res["windows"]), sizes)

    def release() -> None:
        images.clear()
        shm.close()
        shm.unlink()

    return images, release


def decode_block(start: int, stop: int, handle: PlanHandle, sizes: tuple[int, ...], shared: bool = False) -> dict[str, Any]:
    """Worker: decode rows ``start:stop``; bad images become black rows listed in ``bad``.

    With ``shared`` the images go to a shared-memory block whose name is returned (the writer
    unlinks it): a block is 13 MB at sizes 56/112/224, and pickling it through the pool's pipe
    cost about a third of the decode time.
    """
    plan = handle.get()
    n = stop - start
    shm = None
    if shared:
        shm = shared_memory.SharedMemory(create=True, size=max(1, sum(n * s * s * 3 for s in sizes)))
        images = _block_arrays(shm.buf, n, sizes)
    else:
        images = {s: np.zeros((n, s, s, 3), np.uint8) for s in sizes}
    windows = np.zeros((n, 3), np.float64)
    bad: list[tuple[int, str]] = []
    for j, i in enumerate(range(start, stop)):
        try:
            arrs, win = decode_one(plan, i, sizes)
        except IMAGE_ERRORS as e:
            bad.append((i, f"does not decode ({type(e).__name__}: {e})"))
            windows[j] = (0, 0, 1)
            continue
        for s in sizes:
            images[s][j] = arrs[s]
        windows[j] = win
    if shm is not None:
        images.clear()
        name = shm.name
        shm.close()
        return {"images": None, "shm": name, "windows": windows, "bad": bad}
    return {"images": images, "windows": windows, "bad": bad}


#: A landmark further outside its image than this fraction of the image's width (x) or height (y)
#: is reported ("far outside": swapped columns, coordinates of another image size, another unit).
LANDMARK_MARGIN = 0.5


def check_block(start: int, stop: int, handle: PlanHandle) -> tuple[list[tuple[int, str]], list[int]]:
    """Worker: cheap pre-check of rows ``start:stop`` (file exists, header identifies an image).

    Returns the bad rows with a reason, and the rows whose landmarks lie far outside the image
    (:data:`LANDMARK_MARGIN`), found from the header's size alone."""
    plan = handle.get()
    if plan.kind != "file":
        return [], []
    bad, far = [], []
    for i in range(start, stop):
        path = plan.images[i]
        if not os.path.isfile(path):
            bad.append((i, "is missing"))
            continue
        try:
            with Image.open(path) as im:
                w, h = im.size
            if w < 1 or h < 1:
                bad.append((i, "has an empty image"))
                continue
        except IMAGE_ERRORS as e:
            bad.append((i, f"is not a readable image ({type(e).__name__}: {e})"))
            continue
        if plan.points is not None:
            p = plan.points[i] / np.array([w, h])
            if np.any(np.isfinite(p) & ((p < -LANDMARK_MARGIN) | (p > 1 + LANDMARK_MARGIN))):
                far.append(i)
    return bad, far
