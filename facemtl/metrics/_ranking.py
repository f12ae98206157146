"""Score-ranking metrics shared by detection and verification: ROC curve, ROC AUC, AP.

For scores s and binary labels y (P positives, N negatives), a threshold t predicts positive
when s >= t. At each distinct score (descending) TP(t) and FP(t) count the positives and
negatives with s >= t.

- ROC curve: FPR = FP / N and TPR = TP / P at every distinct score, preceded by the point (0, 0)
  at threshold +inf. With ``drop_intermediate`` the points that are collinear with their
  neighbours are dropped exactly as ``sklearn.metrics.roc_curve`` does, which leaves the
  piecewise-linear curve unchanged.
- ROC AUC: trapezoidal area under that curve = P(s+ > s-) + 0.5 P(s+ = s-) (the Mann-Whitney
  statistic; tied scores give a diagonal segment), as ``roc_auc_score``.
- Average precision: sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, precision and
  recall at each, no interpolation, as ``average_precision_score``.
"""

from __future__ import annotations

import numpy as np


def _check_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.size != y.size:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}.")
    if s.size == 0:
        raise ValueError("need at least one score; got none.")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (found NaN or inf).")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 or boolean.")
    return s, y.astype(bool)


def binary_clf_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (FP, TP, threshold) at each distinct score, thresholds descending."""
    s, y = _check_scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    return fps, tps, s[last]


def roc_curve(
    scores: np.ndarray, labels: np.ndarray, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as ``sklearn.metrics.roc_curve``; thresholds[0] is +inf.

    Needs at least one positive and one negative (ValueError otherwise).
    """
    fps, tps, thr = binary_clf_curve(scores, labels)
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs both classes; got {int(n_pos)} positives and {int(n_neg)} negatives.")
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    return fps / n_neg, tps / n_pos, thr


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), as ``sklearn.metrics.roc_auc_score``."""
    fpr, tpr, _ = roc_curve(scores, labels, drop_intermediate=False)
    return trapezoid(tpr, fpr)


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal integral of y over x (``np.trapezoid`` is numpy >= 2 only)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP, as ``sklearn.metrics.average_precision_score``; needs a positive."""
    fps, tps, _ = binary_clf_curve(scores, labels)
    if tps[-1] == 0:
        raise ValueError("average precision needs at least one positive label; got none.")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
