"""Landmark metrics: normalised mean error, failure rate, CED curve and its area.

Landmarks are (N, 5, 2) arrays in CelebA order (left eye, right eye, nose, left mouth corner,
right mouth corner), x then y; (N, 10) arrays laid out x1, y1, ..., x5, y5 are accepted too.

- NME of sample n = (1/5) sum_p ||pred[n, p] - target[n, p]||_2 / d_n, with d_n
  - ``"inter_ocular"``: ||target[n, 0] - target[n, 1]||, the distance between the two *eye
    landmarks*. Five-point annotations (CelebA, MTFL) mark eye centres and have no outer eye
    corners, so inter-ocular and inter-pupil distance are the same thing here (TCDCN's metric).
  - ``"bbox"``: sqrt(w * h) of the face box (x, y, w, h) given in ``boxes``.
- failure rate = fraction of samples with NME > threshold (strictly; TCDCN uses 0.10).
- CED(t) = fraction of samples with NME <= t, on a grid of thresholds 0..max_threshold.
- CED AUC = (1/T) * integral_0^T CED(t) dt, in [0, 1]. Computed exactly: a sample with error
  e contributes max(T - e, 0) to the integral, so AUC = mean(clip(1 - e / T, 0, 1)).
"""

from __future__ import annotations

import numpy as np

NORMS = ("inter_ocular", "bbox")


def _as_points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 10:
        x = x.reshape(-1, 5, 2)
    if x.ndim != 3 or x.shape[1:] != (5, 2):
        raise ValueError(f"{name} must be (N, 5, 2) or (N, 10) landmarks; got shape {x.shape}.")
    return x


def nme(
    pred: np.ndarray, target: np.ndarray, norm: str = "inter_ocular", boxes: np.ndarray | None = None
) -> np.ndarray:
    """(N,) normalised mean error of each sample (see the module docstring).

    Args:
        pred, target: (N, 5, 2) or (N, 10) landmarks in one coordinate frame.
        norm: ``"inter_ocular"`` (distance between the target's two eye landmarks) or ``"bbox"``
            (sqrt(w * h) of ``boxes``).
        boxes: (N, 4) x, y, w, h face boxes, required for ``norm="bbox"``.

    Raises:
        ValueError: empty input, mismatched shapes, non-finite targets or a normaliser <= 0.
    """
    pred, target = _as_points(pred, "pred"), _as_points(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}.")
    if len(target) == 0:
        raise ValueError("nme needs at least one sample; got N = 0.")
    if not np.isfinite(target).all():
        raise ValueError("target landmarks contain NaN or inf; drop unlabelled samples first.")
    if norm == "inter_ocular":
        d = np.linalg.norm(target[:, 0] - target[:, 1], axis=1)
    elif norm == "bbox":
        if boxes is None:
            raise ValueError('norm="bbox" needs boxes, an (N, 4) array of x, y, w, h.')
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (len(target), 4):
            raise ValueError(f"boxes must be ({len(target)}, 4); got {boxes.shape}.")
        d = np.sqrt(np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None))
    else:
        raise ValueError(f"Invalid norm '{norm}'. Only {', '.join(NORMS)} are supported.")
    bad = ~(d > 0)
    if bad.any():
        raise ValueError(f"normalising distance is <= 0 or NaN for samples {np.flatnonzero(bad)[:10].tolist()}.")
    return np.linalg.norm(pred - target, axis=2).mean(1) / d


def _as_errors(errors: np.ndarray) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("need at least one NME value; got none.")
    if not np.isfinite(e).all():
        raise ValueError("NME values must be finite (found NaN or inf).")
    return e


def _check_threshold(t: float) -> None:
    if not t > 0:
        raise ValueError(f"threshold must be > 0; got {t}.")


def failure_rate(nme: np.ndarray, threshold: float = 0.10) -> float:
    """Fraction of samples whose NME is strictly above ``threshold``."""
    e = _as_errors(nme)
    _check_threshold(threshold)
    return float((e > threshold).mean())


def ced_curve(nme: np.ndarray, max_threshold: float = 0.10, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: ``steps`` thresholds from 0 to ``max_threshold``
    (inclusive, evenly spaced) and the fraction of samples with NME <= each threshold."""
    e = np.sort(_as_errors(nme))
    _check_threshold(max_threshold)
    if steps < 2:
        raise ValueError(f"steps must be >= 2; got {steps}.")
    thresholds = np.linspace(0.0, max_threshold, steps)
    fraction = np.searchsorted(e, thresholds, side="right") / e.size
    return thresholds, fraction


def ced_auc(nme: np.ndarray, max_threshold: float = 0.10) -> float:
    """Area under the CED curve on [0, max_threshold] divided by ``max_threshold`` (in [0, 1])."""
    e = _as_errors(nme)
    _check_threshold(max_threshold)
    return float(np.clip(1.0 - e / max_threshold, 0.0, 1.0).mean())
