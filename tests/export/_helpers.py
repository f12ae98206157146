"""Shared builders for the export tests: every recipe's network at a CPU-friendly width, tiny
checkpoints, and stub backends whose detector the tests control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemtl.data.schema import CELEBA_ATTRIBUTES
from facemtl.engine.checkpoint import save_checkpoint
from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.export.backends import Backend
from facemtl.export.metadata import ModelMetadata, TaskOutput
from facemtl.models import build_model
from facemtl.tasks import DataInfo, build_tasks

INFO = DataInfo(
    attribute_names=tuple(CELEBA_ATTRIBUTES[:6]) + ("Male", "Smiling", "Eyeglasses"), num_identities=7,
    labels=("attributes", "landmarks", "expression", "identity", "face", "pose_class", "pose", "bbox"),
)
#: per backbone: options that keep the recipe's architecture but make it quick on a CPU
FAST: dict[str, dict[str, Any]] = {
    "small": {"width": 8},
    "famo9": {"width": 0.125},
    "mcfa": {"width": 0.0625},
    "gender-glasses": {},
    "tcdcn": {},
}
RECIPES = ["default", "tcdcn", "gender-glasses", "celeba40", "dynamic-fr-fer", "mcfa"]


def recipe_model(recipe: str, *, mcfa_size: int = 128):
    """(model, tasks, cfg) of ``recipe``'s network with random weights (eval mode)."""
    cfg = load_recipe(recipe)
    size = mcfa_size if cfg.model.backbone == "mcfa" else cfg.model.input_size
    cfg = apply_overrides(cfg, {"model.options": {**cfg.model.options, **FAST[cfg.model.backbone]}, "model.input_size": size})
    tasks = build_tasks(list(cfg.tasks.names), INFO, cfg.tasks.options)
    torch.manual_seed(0)
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, **cfg.model.options).eval()
    return model, tasks, cfg


def write_checkpoint(path: Path, recipe: str = "default", **overrides: Any) -> Path:
    """A loadable checkpoint (random weights) of ``recipe``'s network, as ``facemtl train`` writes."""
    model, _tasks, cfg = recipe_model(recipe)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    save_checkpoint(path, {"config": cfg.to_dict(), "data_info": INFO.to_dict(), "model": model.state_dict()})
    return path


# -- stub backends: a "face" is a bright square on a dark photo -------------------------------------
#: landmarks of a stub face, as fractions of its box
STUB_POINTS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.8], [0.65, 0.8]])


def stub_meta(sizes: list[int], cascade: bool = False) -> ModelMetadata:
    tasks = [TaskOutput("detection", "detection", 5, ["face_logit", "x", "y", "w", "h"]),
             TaskOutput("landmarks", "landmarks", 10, [])]
    meta = ModelMetadata("onnx", ["stub"] * len(sizes), sizes, tasks, dynamic_batch=True)
    if cascade:
        meta.cascade = {"stages": [], "threshold": 0.5, "gate_task": "detection"}
    return meta


class StubBackend(Backend):
    """Detection from pixels: the bright square's extent in the window is the box; the window is a
    face when the whole square is in it, framed as training crops are (height 0.5-0.9 of the
    window, centred within 0.15). Landmarks sit at :data:`STUB_POINTS` of the box. Records every call."""

    def __init__(self, sizes: list[int] | None = None, cascade: bool = False):
        super().__init__(stub_meta(sizes or [32], cascade))
        self.calls: list[tuple[int, int]] = []  # (stage, batch)

    def _call(self, i: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["image"]
        n, s = len(x), x.shape[-1]
        self.calls.append((i, n))
        if i:
            assert feeds["prev_feature"].shape == (n, 4)
        bright = x.mean(1) > 0.5  # (N, S, S)
        det = np.full((n, 5), 0.0, np.float32)
        det[:, 0] = -8.0
        lm = np.zeros((n, 10), np.float32)
        for k in range(n):
            rows, cols = np.flatnonzero(bright[k].any(1)), np.flatnonzero(bright[k].any(0))
            if not len(rows):
                continue
            x0, y0 = cols[0] / s, rows[0] / s
            w, h = (cols[-1] + 1) / s - x0, (rows[-1] + 1) / s - y0
            inside = rows[0] > 0 and cols[0] > 0 and rows[-1] < s - 1 and cols[-1] < s - 1
            framed = inside and 0.5 <= h <= 0.9 and abs(x0 + w / 2 - 0.5) < 0.15 and abs(y0 + h / 2 - 0.5) < 0.15
            det[k] = [8.0 if framed else -8.0, x0, y0, w, h]
            lm[k] = (np.array([x0, y0]) + STUB_POINTS * np.array([w, h])).ravel()
        out = {"detection": det, "landmarks": lm}
        if i < self.num_stages - 1:
            out["feature"] = np.zeros((n, 4), np.float32)
        return out


def stub_photo(size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A dark uint8 photo (H, W) with bright squares at x, y, w, h."""
    img = np.full((*size, 3), 20, np.uint8)
    for x, y, w, h in boxes:
        img[y:y + h, x:x + w] = 235
    return img
