"""Binary (multi-label) and multi-class classification metrics.

Binary attributes, per column k of (N, K) arrays, over the *known* entries only (target -1 is
unknown and ignored; 0 and 1 are the classes). With predictions ``p = prob >= threshold`` and
TP, FP, TN, FN counted over the known entries:

- accuracy            = (TP + TN) / n
- precision           = TP / (TP + FP), 0 when nothing is predicted positive
- recall              = TP / (TP + FN), 0 when the column has no positive
- F1                  = 2 TP / (2 TP + FP + FN), 0 when the denominator is 0 (no positive
  predicted and none true)
- balanced accuracy   = mean recall over the classes *present* in the column's targets:
  (TPR + TNR) / 2 when both classes occur, and the recall of the only class when one does
  (so it equals the accuracy there)
- majority accuracy   = accuracy of always predicting the column's majority class
  (max(n_pos, n_neg) / n); its balanced accuracy is 0.5 whenever both classes occur
  (1.0 for a single-class column, by the rule above)

These follow ``sklearn.metrics`` with ``zero_division=0`` (``accuracy_score``,
``precision_score``, ``recall_score``, ``f1_score``, ``balanced_accuracy_score``). A column with
no known entry gets NaN for every rate and 0 for its counts.

Multi-class (single label per sample; target -1 ignored): accuracy, per-class recall
(NaN for a class absent from the targets), macro recall = mean recall over the classes present
in the targets (= ``balanced_accuracy_score``), and the confusion matrix C with
C[i, j] = number of samples of true class i predicted as class j (rows true, as sklearn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

RATE_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "precision",
    "recall",
    "majority_accuracy",
    "majority_balanced_accuracy",
    "positive_rate",
)
COUNT_KEYS = ("support", "positives")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den == 0 (sklearn's zero_division=0)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, K); got shape {x.shape}.")
    return x


def binary_metrics(prob: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-column binary metrics of thresholded scores; see the module docstring for definitions.

    Args:
        prob: (N, K) or (N,) probabilities (any score works with a matching ``threshold``).
        target: same shape; 1 positive, 0 negative, -1 unknown (ignored).
        threshold: an entry is predicted positive when ``prob >= threshold``.

    Returns:
        A dict of (K,) float arrays keyed by :data:`RATE_KEYS` and :data:`COUNT_KEYS`
        (``support`` = known entries, ``positives`` = known positives). Columns without a known
        entry hold NaN rates.
    """
    prob, target = _as_2d(prob, "prob"), _as_2d(target, "target")
    if prob.shape != target.shape:
        raise ValueError(f"prob and target shapes differ: {prob.shape} vs {target.shape}.")
    if prob.shape[0] == 0:
        raise ValueError("binary_metrics needs at least one sample; got N = 0.")
    bad = ~np.isin(target, (-1, 0, 1))
    if bad.any():
        raise ValueError(f"target values must be 1, 0 or -1 (unknown); found {np.unique(target[bad])[:5].tolist()}.")
    if np.isnan(prob[target >= 0]).any():
        raise ValueError("prob contains NaN at known entries.")

    known = target >= 0
    pos = (target == 1) & known
    neg = (target == 0) & known
    pred = (prob >= threshold) & known
    tp = (pred & pos).sum(0).astype(float)
    fp = (pred & neg).sum(0).astype(float)
    fn = (~pred & pos).sum(0).astype(float)
    tn = (~pred & neg).sum(0).astype(float)
    n_pos, n_neg = pos.sum(0).astype(float), neg.sum(0).astype(float)
    n = n_pos + n_neg

    tpr, tnr = _safe_div(tp, n_pos), _safe_div(tn, n_neg)
    both = (n_pos > 0) & (n_neg > 0)
    # balanced accuracy = mean recall over the classes present (sklearn's definition)
    bacc = np.where(both, (tpr + tnr) / 2, np.where(n_pos > 0, tpr, tnr))
    out = {
        "accuracy": _safe_div(tp + tn, n),
        "balanced_accuracy": bacc,
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "precision": _safe_div(tp, tp + fp),
        "recall": tpr,
        "majority_accuracy": _safe_div(np.maximum(n_pos, n_neg), n),
        "majority_balanced_accuracy": np.where(both, 0.5, 1.0),
        "positive_rate": _safe_div(n_pos, n),
    }
    empty = n == 0
    for key in RATE_KEYS:
        out[key] = np.where(empty, np.nan, out[key])
    out["support"] = n
    out["positives"] = n_pos
    return out


def attribute_table(
    names: Sequence[str], prob: np.ndarray, target: np.ndarray, threshold: float = 0.5
) -> pd.DataFrame:
    """One row per attribute (indexed by ``names``) plus a final ``"mean"`` row.

    Columns: :data:`RATE_KEYS` then :data:`COUNT_KEYS`. The mean row is the unweighted mean over
    the attributes with at least one known entry (NaN-skipping), for the counts as well.
    """
    import pandas as pd

    m = binary_metrics(prob, target, threshold)
    names = list(names)
    if len(names) != len(m["support"]):
        raise ValueError(f"{len(names)} names for {len(m['support'])} attribute columns.")
    df = pd.DataFrame({k: m[k] for k in (*RATE_KEYS, *COUNT_KEYS)}, index=pd.Index(names, name="attribute"))
    valid = df["support"] > 0
    mean = df[valid].mean(axis=0) if valid.any() else pd.Series(np.nan, index=df.columns)
    df.loc["mean"] = mean
    return df


def multiclass_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, object]:
    """Accuracy, per-class and macro recall, and the confusion matrix of single-label predictions.

    Args:
        pred: (N,) predicted class indices, or (N, num_classes) scores (arg-maxed).
        target: (N,) true class indices; -1 marks an unknown label (ignored).
        num_classes: number of classes C; labels must lie in [0, C).

    Returns:
        ``accuracy`` (float), ``per_class_recall`` ((C,) array, NaN for classes absent from the
        targets), ``macro_recall`` (float, mean over present classes), ``confusion`` ((C, C)
        int64, rows true, columns predicted), ``support`` ((C,) int64 true counts).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim == 2:
        if pred.shape[1] != num_classes:
            raise ValueError(f"pred scores have {pred.shape[1]} columns for {num_classes} classes.")
        pred = pred.argmax(1)
    if pred.ndim != 1 or target.ndim != 1 or len(pred) != len(target):
        raise ValueError(f"pred and target must be (N,) of one length; got {pred.shape} and {target.shape}.")
    keep = target >= 0
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if len(target) == 0:
        raise ValueError("multiclass_metrics needs at least one known label; got none.")
    for name, x in (("pred", pred), ("target", target)):
        if x.min() < 0 or x.max() >= num_classes:
            raise ValueError(f"{name} labels must lie in [0, {num_classes}); found {x.min()}..{x.max()}.")
    confusion = np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    support = confusion.sum(1)
    present = support > 0
    recall = np.full(num_classes, np.nan)
    recall[present] = np.diag(confusion)[present] / support[present]
    return {
        "accuracy": float(np.trace(confusion) / len(target)),
        "per_class_recall": recall,
        "macro_recall": float(recall[present].mean()),
        "confusion": confusion,
        "support": support,
    }
