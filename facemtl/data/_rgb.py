"""Any decoded image as 8-bit RGB, its range kept (shared by the dataset readers and ``predict``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode, the full range kept.

    PIL's ``convert("RGB")`` clips 16- and 32-bit grey to 0..255, so a 16-bit PNG comes out almost
    white. Here ``I;16*`` and ``I`` (16-bit PNG, TIFF) map 0..65535 to 0..255; ``F`` (float TIFF) maps
    0..1 to 0..255 when its maximum is at most 1, and is clipped to 0..255 otherwise. Every other
    mode (L, LA, P, RGBA, CMYK, YCbCr, 1 ...) goes through PIL's own conversion.
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F":
            a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        else:
            a = a / 257.0  # 65535 -> 255 exactly
        grey = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return im.convert("RGB")
