"""Detection metrics on (x, y, w, h) boxes: IoU, NMS, ROC AUC / AP, matching, rate and FPPI.

Boxes are x, y (top-left corner), w, h as in CelebA's ``list_bbox_celeba.txt``; a box covers
[x, x + w) x [y, y + h). Negative widths or heights count as 0.

- IoU(a, b) = area(a ∩ b) / (area(a) + area(b) - area(a ∩ b)); 0 when the union is empty.
- NMS: visit boxes by decreasing score (ties: input order); keep a box unless its IoU with an
  already-kept box is > ``iou_threshold`` (``torchvision.ops.nms``, which takes x1, y1, x2, y2).
- Matching in one image: predictions by decreasing score; each takes the still-unmatched ground
  truth with the highest IoU if that IoU >= ``iou`` (true positive), else it is a false positive
  (COCO-style greedy matching; each ground truth is matched at most once).
- Detection rate = matched ground truths / all ground truths (recall) over a set of images,
  counting predictions with score >= ``score_threshold``; FPPI = false positives / images.
- ``roc_auc`` and ``average_precision`` of face/non-face scores: see :mod:`._ranking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from facemtl.metrics._ranking import average_precision, roc_auc

__all__ = [
    "average_precision",
    "box_iou_xywh",
    "detection_rate_and_fppi",
    "match_detections",
    "nms",
    "pairwise_iou_xywh",
    "roc_auc",
]


def _as_boxes(b: np.ndarray, name: str) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 4)
    if b.shape[-1:] != (4,):
        raise ValueError(f"{name} must end in a dimension of 4 (x, y, w, h); got shape {b.shape}.")
    return b


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable (..., 4) x, y, w, h arrays."""
    aw, ah = np.clip(a[..., 2], 0, None), np.clip(a[..., 3], 0, None)
    bw, bh = np.clip(b[..., 2], 0, None), np.clip(b[..., 3], 0, None)
    iw = np.minimum(a[..., 0] + aw, b[..., 0] + bw) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 1] + ah, b[..., 1] + bh) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = aw * ah + bw * bh - inter
    out = np.zeros(np.broadcast(inter, union).shape)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of (N, 4) boxes ``a[i]`` and ``b[i]`` (broadcasting allowed) -> (N,)."""
    return _iou(_as_boxes(a, "a"), _as_boxes(b, "b"))


def pairwise_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4)."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"pairwise IoU takes (N, 4) and (M, 4); got {a.shape} and {b.shape}.")
    return _iou(a[:, None, :], b[None, :, :])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by non-maximum suppression, by decreasing score.

    Args:
        boxes: (N, 4) x, y, w, h.
        scores: (N,) scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box is above it.
    """
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if boxes.ndim != 2 or len(boxes) != len(scores):
        raise ValueError(f"boxes (N, 4) and scores (N,) must agree; got {boxes.shape} and {scores.shape}.")
    order = np.argsort(-scores, kind="stable")
    iou = pairwise_iou_xywh(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def match_detections(
    pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5
) -> dict[str, Any]:
    """Greedy matching of one image's predictions to its ground truths (module docstring).

    Returns:
        ``tp`` / ``fp``: (P,) bool flags in the input order of the predictions;
        ``gt_index``: (P,) int64 matched ground truth or -1; ``n_gt``: number of ground truths.
    """
    pred_boxes, gt_boxes = _as_boxes(pred_boxes, "pred_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    pred_scores = np.asarray(pred_scores, dtype=np.float64).ravel()
    if pred_boxes.ndim != 2 or gt_boxes.ndim != 2 or len(pred_boxes) != len(pred_scores):
        raise ValueError(
            f"need (P, 4) pred_boxes, (P,) pred_scores and (G, 4) gt_boxes; got "
            f"{pred_boxes.shape}, {pred_scores.shape} and {gt_boxes.shape}."
        )
    gt_index = np.full(len(pred_boxes), -1, dtype=np.int64)
    if len(pred_boxes) and len(gt_boxes):
        ious = pairwise_iou_xywh(pred_boxes, gt_boxes)
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for p in np.argsort(-pred_scores, kind="stable"):
            cand = np.where(taken, -1.0, ious[p])
            g = int(cand.argmax())
            if cand[g] >= iou:
                gt_index[p], taken[g] = g, True
    tp = gt_index >= 0
    return {"tp": tp, "fp": ~tp, "gt_index": gt_index, "n_gt": len(gt_boxes)}


def _unpack_pred(pred: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(pred, Mapping):
        return pred["boxes"], pred["scores"]
    boxes, scores = pred
    return boxes, scores


def detection_rate_and_fppi(
    per_image_preds: Sequence[Any],
    per_image_gts: Sequence[np.ndarray],
    iou: float = 0.5,
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """End-to-end detection rate (recall) and false positives per image over a set of images.

    Args:
        per_image_preds: one ``(boxes (P, 4), scores (P,))`` pair (or a mapping with ``boxes``
            and ``scores``) per image.
        per_image_gts: one (G, 4) array of ground-truth boxes per image (may be empty).
        iou: IoU needed for a match.
        score_threshold: predictions scored below it are discarded first.

    Returns:
        ``detection_rate`` (NaN when there is no ground truth at all), ``fppi``, and the counts
        ``n_images``, ``n_gt``, ``n_tp``, ``n_fp``.
    """
    if len(per_image_preds) != len(per_image_gts):
        raise ValueError(f"{len(per_image_preds)} prediction entries for {len(per_image_gts)} images.")
    if len(per_image_gts) == 0:
        raise ValueError("detection_rate_and_fppi needs at least one image; got none.")
    n_gt = n_tp = n_fp = 0
    for pred, gt in zip(per_image_preds, per_image_gts):
        boxes, scores = _unpack_pred(pred)
        boxes, scores = _as_boxes(boxes, "pred boxes"), np.asarray(scores, dtype=np.float64).ravel()
        keep = scores >= score_threshold
        m = match_detections(boxes[keep], scores[keep], gt, iou)
        n_gt += m["n_gt"]
        n_tp += int(m["tp"].sum())
        n_fp += int(m["fp"].sum())
    n_images = len(per_image_gts)
    return {
        "detection_rate": n_tp / n_gt if n_gt else float("nan"),
        "fppi": n_fp / n_images,
        "n_images": n_images,
        "n_gt": n_gt,
        "n_tp": n_tp,
        "n_fp": n_fp,
    }
