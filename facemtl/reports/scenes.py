"""End-to-end face detection on whole scenes (the cache's ``/scenes``): sliding windows over an
image pyramid, the model's face score and box regression on each window, NMS, then matching.

Windows are squares of side ``s`` for each ``s`` in ``window_sizes`` (pixels of the scene),
stepped by ``stride * s``. Rather than cropping and resizing every window, the scene is resized
once per ``s`` so that a window becomes exactly the model's input size, and the windows are cut
from that level with ``unfold``. A window's regressed box (x, y, w, h in [0, 1] of the window)
is mapped back to scene pixels. Boxes scoring at least ``score_threshold`` go through NMS
(IoU > ``nms_iou`` suppressed) and are matched to the ground truth at IoU >= ``match_iou``
(:func:`facemtl.metrics.detection_rate_and_fppi`).

For MCFA's cascade the windows go through :meth:`CascadeModel.cascade_infer`: S_Net sees every
window, and only those it calls faces reach M_Net and then L_Net (the threshold-control layer),
so the score of a window is the face probability at the deepest stage it reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.metrics import detection_rate_and_fppi, nms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanConfig:
    # SynthFaces' scene faces are 40-110 px tall in 256 px scenes, and a face fills about 0.7 of
    # a training crop's height: windows of 56-160 px, sqrt(2) apart, cover them
    window_sizes: tuple[int, ...] = (56, 80, 112, 160)
    stride: float = 1 / 3
    score_threshold: float = 0.5
    nms_iou: float = 0.3
    match_iou: float = 0.5
    max_scenes: int = 32
    batch_size: int = 256


def scene_rows(cache: FaceCache, split: str) -> np.ndarray:
    """Scene indices of a split (empty when the cache has no scenes)."""
    if not cache.num_scenes:
        return np.zeros(0, np.int64)
    code = schema.SPLITS.get(split)
    sp = cache.h5["scenes/split"][:]
    return np.flatnonzero(sp == code) if code is not None else np.arange(cache.num_scenes)


def window_tiles(scene: torch.Tensor, size: int, win: int, stride: float) -> tuple[torch.Tensor, np.ndarray]:
    """(K, 3, size, size) windows of side ``win`` scene pixels and their (K, 2) top-left corners."""
    _, h, w = scene.shape
    scale = size / win
    level = F.interpolate(scene[None], size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)[0]
    step = max(1, round(size * stride))
    tiles = level.unfold(1, size, step).unfold(2, size, step)  # (3, ny, nx, size, size)
    ny, nx = tiles.shape[1:3]
    crops = tiles.permute(1, 2, 0, 3, 4).reshape(ny * nx, 3, size, size)
    ys, xs = np.meshgrid(np.arange(ny) * step / scale, np.arange(nx) * step / scale, indexing="ij")
    return crops, np.stack([xs.ravel(), ys.ravel()], 1)


@torch.no_grad()
def score_windows(model, crops: torch.Tensor, is_cascade: bool, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(K,) face scores and (K, 4) boxes in window coordinates for crops at the model's largest input size."""
    sizes = [s for s, _ in model.input_spec]
    inputs = [crops if s == crops.shape[-1] else
              F.interpolate(crops, size=(s, s), mode="bilinear", antialias=True, align_corners=False) for s in sizes]
    if is_cascade:
        res = model.cascade_infer(*inputs, threshold=0.5, detection_task=task)
        out = res.outputs[task].float()
        return res.face_prob.cpu().numpy(), out[:, 1:5].cpu().numpy()
    out = model(*inputs)[task].float()
    return torch.sigmoid(out[:, 0]).cpu().numpy(), out[:, 1:5].cpu().numpy()


def scan_windows(model, img: torch.Tensor, size: int, window_sizes, stride: float, is_cascade: bool, task: str,
                 batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every square window of ``window_sizes`` pixels of the (3, H, W) scene ``img`` (sizes larger
    than the scene skipped), stepped by ``stride`` of its side and scored in batches of
    ``batch_size``: (N, 3) x, y, side of each window, (N,) face scores, (N, 4) boxes in window units."""
    wins, scores, boxes = [], [], []
    for win in window_sizes:
        if win > min(img.shape[1:]):
            continue
        crops, corners = window_tiles(img, size, win, stride)
        for i in range(0, len(crops), batch_size):
            s, b = score_windows(model, crops[i:i + batch_size].contiguous(), is_cascade, task)
            c = corners[i:i + batch_size]
            wins.append(np.concatenate([c, np.full((len(c), 1), float(win))], 1))
            scores.append(s)
            boxes.append(b)
    if not wins:
        return np.zeros((0, 3)), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    return np.concatenate(wins), np.concatenate(scores), np.concatenate(boxes)


def scan_scenes(model, cache: FaceCache, split: str, device: torch.device, task: str = "detection",
                cfg: ScanConfig = ScanConfig()) -> dict[str, float] | None:
    """Detection rate and FPPI of ``model`` on the scenes of ``split``; None when there are none."""
    from facemtl.models.cascade import CascadeModel

    rows = scene_rows(cache, split)[: cfg.max_scenes]
    if not len(rows):
        return None
    model.eval()
    is_cascade = isinstance(model, CascadeModel)
    size = max(s for s, _ in model.input_spec)
    preds, gts = [], []
    for r in rows:
        img = torch.from_numpy(cache.h5["scenes/images"][r]).permute(2, 0, 1).float().div(255.0).to(device)
        side = np.array([img.shape[2], img.shape[1], img.shape[2], img.shape[1]], np.float64)
        gt = cache.h5["scenes/boxes"][r].astype(np.float64)
        gts.append(gt[np.isfinite(gt).all(1)] * side)
        wins, s, b = scan_windows(model, img, size, cfg.window_sizes, cfg.stride, is_cascade, task, cfg.batch_size)
        keep = s >= cfg.score_threshold
        b, s = b[keep] * wins[keep, 2:3].astype(b.dtype), s[keep]  # boxes in scene pixels, in the model's float type
        b[:, :2] += wins[keep, :2]
        if len(b):
            k = nms(b, s, cfg.nms_iou)
            b, s = b[k], s[k]
        preds.append((b, s))
    res = detection_rate_and_fppi(preds, gts, iou=cfg.match_iou, score_threshold=cfg.score_threshold)
    res["cascade"] = is_cascade
    return res
