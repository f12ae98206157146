"""Contact sheet of SynthFaces: crops with their landmarks and boxes drawn on, plus a few scenes.

Used to produce ``docs/synthfaces.png`` and to eyeball the generator after a change:
``python -m facemtl.data.synth.sheet docs/synthfaces.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facemtl.data.schema import EXPRESSION_NAMES
from facemtl.data.synth.render import SynthConfig, render_sample, render_scene

# left eye, right eye, nose, left mouth corner, right mouth corner
LANDMARK_COLOURS = ((255, 40, 40), (40, 220, 40), (40, 120, 255), (255, 220, 0), (255, 0, 255))


def _annotate(img: Image.Image, boxes: np.ndarray, landmarks: np.ndarray) -> None:
    draw = ImageDraw.Draw(img)
    side = img.width
    for box, marks in zip(boxes, landmarks):
        x, y, w, h = box * side
        draw.rectangle([x, y, x + w, y + h], outline=(0, 255, 255))
        for (mx, my), col in zip(marks * side, LANDMARK_COLOURS):
            draw.ellipse([mx - 1.5, my - 1.5, mx + 1.5, my + 1.5], fill=col)


def contact_sheet(cfg: SynthConfig, n: int, path: str | Path, cols: int = 8, size: int = 112,
                  scenes: int = 2, start: int = 0) -> Path:
    """Writes a PNG with ``n`` annotated crops (``size`` px) in ``cols`` columns and ``scenes`` scenes."""
    rows = -(-n // cols)
    scene_side = min(256, cols * size // max(scenes, 1)) if scenes else 0
    sheet = Image.new("RGB", (cols * size, rows * size + scene_side), (255, 255, 255))
    cfg = SynthConfig(**{**cfg.to_dict(), "sizes": (size,)})
    for k in range(n):
        s = render_sample(start + k, cfg)
        tile = Image.fromarray(s["images"][size])
        if s["face"]:
            _annotate(tile, s["bbox"][None], s["landmarks"][None])
            label = f"{EXPRESSION_NAMES[s['expression']][:3]} {s['pose'][0]:+.0f}"
        else:
            label = "non-face"
        ImageDraw.Draw(tile).text((2, size - 11), label, fill=(255, 255, 255))
        sheet.paste(tile, ((k % cols) * size, (k // cols) * size))
    for j in range(scenes):
        sc = render_scene(start + j, cfg, size=256)
        tile = Image.fromarray(sc["image"])
        _annotate(tile, sc["boxes"], sc["landmarks"])
        if scene_side != 256:
            tile = tile.resize((scene_side, scene_side), Image.LANCZOS)
        sheet.paste(tile, (j * scene_side, rows * size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


if __name__ == "__main__":
    contact_sheet(SynthConfig(), 48, sys.argv[1] if len(sys.argv) > 1 else "docs/synthfaces.png", scenes=3)
