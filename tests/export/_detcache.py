"""A SynthFaces cache for training a sliding-window face detector in the slow predict test.

Face crops come from :func:`render_sample`; half of the rows are negatives, and half of those are
windows cut from whole SynthFaces scenes (bodies, clutter, faces at the wrong scale or offset)
whose IoU with every face's training-style window is below 0.3: the negatives MTCNN-style
detectors are trained on. SynthFaces' own negatives are background clutter only, which leaves a
detector firing on scene clutter it never saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facemtl.data import schema
from facemtl.data.cache import CacheWriter
from facemtl.data.synth import SYNTH_ATTRIBUTES, SynthConfig, render_scene
from facemtl.data.synthetic import render_block
from facemtl.metrics.detection import pairwise_iou_xywh

SCENE_SEED = 991  # training scenes; test scenes use other seeds


def scene_negatives(n: int, size: int, seed: int = SCENE_SEED, box_height: float = 0.7) -> np.ndarray:
    """``n`` uint8 (size, size, 3) windows from scenes with IoU < 0.3 to every framed face."""
    rng = np.random.default_rng(seed)
    cfg = SynthConfig(seed=seed, identities=40)
    out, i = [], 0
    while len(out) < n:
        sc = render_scene(i, cfg, 256)
        i += 1
        img = Image.fromarray(sc["image"])
        boxes = sc["boxes"] * 256
        side = boxes[:, 3:4] / box_height
        ideal = np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2 - side / 2, side, side], 1)
        for _ in range(12):
            s = rng.uniform(24, 200)
            x, y = rng.uniform(0, 256 - s, 2)
            if len(ideal) and pairwise_iou_xywh(np.array([[x, y, s, s]]), ideal).max() >= 0.3:
                continue
            out.append(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + s, y + s))))
    return np.stack(out[:n])


def write_detection_cache(path: Path, n: int = 2400, size: int = 64, identities: int = 40) -> Path:
    """``n`` rows at ``size`` px: 50 % faces, 25 % clutter negatives, 25 % scene negatives."""
    cfg = SynthConfig(seed=0, identities=identities, sizes=(size,), negative_fraction=1 / 3)
    n_scene = n // 4
    n_render = n - n_scene
    with CacheWriter(path, num_samples=n, sizes=(size,), attribute_names=SYNTH_ATTRIBUTES, source="synthetic") as w:
        for start in range(0, n_render, 256):
            w.write(start, render_block(start, min(n_render, start + 256), cfg))
        neg = scene_negatives(n_scene, size)
        rows = {k: spec.empty(n_scene, len(SYNTH_ATTRIBUTES)) for k, spec in schema.LABELS.items()}
        rows["face"][:] = 0
        split = np.where(np.arange(n_scene) % 10 == 0, schema.SPLITS["val"], schema.SPLITS["train"]).astype(np.int8)
        w.write(n_render, {"images": {size: neg}, **rows, "split": split,
                           "image_ids": [f"scene_neg_{i}" for i in range(n_scene)]})
    return path


__all__ = ["scene_negatives", "write_detection_cache"]
