"""Face verification from embeddings: balanced pairs, cosine scores, ROC, AUC, EER, TAR@FAR.

- Pairs: ``make_pairs`` draws the same number of genuine (same identity) and impostor
  (different identities) unordered pairs i < j, without repetition, deterministically from
  ``seed``: n = min(max_pairs // 2, available genuine pairs, available impostor pairs) of each.
- Score of a pair = cosine similarity of the two embeddings (each L2-normalised).
- ROC: :func:`roc_curve`, identical to ``sklearn.metrics.roc_curve`` (genuine = positive).
- AUC: trapezoidal area under the ROC (= ``roc_auc_score``).
- EER: the ROC is linear between its points; the EER is the FPR where FPR = FNR = 1 - TPR on
  that polyline (the first crossing of FPR + TPR - 1 = 0).
- TAR@FAR f: the TPR of the polyline at FPR = f; where the ROC has a vertical segment at f the
  largest TPR is taken (the best operating point whose FPR does not exceed f).
"""

from __future__ import annotations

import numpy as np

from facemtl.metrics._ranking import roc_curve, trapezoid

__all__ = ["eer", "make_pairs", "roc_curve", "tar_at_far", "verification_from_embeddings"]

_ENUMERATE_LIMIT = 2_000_000  # below this many candidate pairs, enumerate them all


def _sample_unique(draw, n: int, rng: np.random.Generator) -> np.ndarray:
    """Collect ``n`` distinct (i, j) pairs from ``draw(rng, k) -> (k, 2)`` with i < j, sorted."""
    found = np.empty((0, 2), dtype=np.int64)
    while len(found) < n:
        batch = draw(rng, 2 * (n - len(found)) + 16)
        found = np.unique(np.concatenate([found, batch]), axis=0)
    # keep a random subset of size n, independent of the unique() ordering
    return found[np.sort(rng.choice(len(found), n, replace=False))]


def _genuine_pairs(groups: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.array([len(g) * (len(g) - 1) // 2 for g in groups], dtype=np.int64)
    total = int(counts.sum())
    if total <= _ENUMERATE_LIMIT:
        parts = []
        for g in groups:
            i, j = np.triu_indices(len(g), 1)
            parts.append(np.stack([g[i], g[j]], 1))
        allp = np.concatenate(parts)
        return allp[np.sort(rng.choice(len(allp), n, replace=False))]
    p = counts / total

    def draw(r: np.random.Generator, k: int) -> np.ndarray:
        gi = r.choice(len(groups), k, p=p)
        sizes = np.array([len(groups[g]) for g in gi])
        a = r.integers(0, sizes)
        b = r.integers(0, sizes - 1)
        b = b + (b >= a)
        x = np.array([groups[g][u] for g, u in zip(gi, a)])
        y = np.array([groups[g][u] for g, u in zip(gi, b)])
        return np.stack([np.minimum(x, y), np.maximum(x, y)], 1)

    return _sample_unique(draw, n, rng)


def _impostor_pairs(labels: np.ndarray, n: int, n_available: int, rng: np.random.Generator) -> np.ndarray:
    m = len(labels)
    total = m * (m - 1) // 2
    if total <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(m, 1)
        diff = labels[i] != labels[j]
        allp = np.stack([i[diff], j[diff]], 1).astype(np.int64)
        return allp[np.sort(rng.choice(len(allp), n, replace=False))]

    accept = n_available / total  # fraction of random pairs that are impostors

    def draw(r: np.random.Generator, k: int) -> np.ndarray:
        k = min(int(np.ceil(k / accept)), 5_000_000)
        x, y = r.integers(0, m, k), r.integers(0, m, k)
        ok = labels[x] != labels[y]
        x, y = x[ok], y[ok]
        return np.stack([np.minimum(x, y), np.maximum(x, y)], 1).astype(np.int64)

    return _sample_unique(draw, n, rng)


def make_pairs(labels: np.ndarray, max_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced genuine / impostor pairs of sample indices.

    Returns:
        ``pairs`` (P, 2) int64 with pairs[:, 0] < pairs[:, 1], genuine pairs first, and
        ``is_genuine`` (P,) bool; P = 2 n with n as in the module docstring.

    Raises:
        ValueError: fewer than 2 pairs asked for, or no genuine or no impostor pair exists.
    """
    labels = np.asarray(labels).ravel()
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be >= 2 (one genuine and one impostor); got {max_pairs}.")
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    groups = [g for g in np.split(order, np.cumsum(sizes)[:-1]) if len(g) >= 2]
    n_gen = int(sum(s * (s - 1) // 2 for s in sizes))
    n_imp = len(labels) * (len(labels) - 1) // 2 - n_gen
    if n_gen == 0 or n_imp == 0:
        raise ValueError(
            f"cannot form verification pairs from {len(labels)} samples of {len(sizes)} identities: "
            f"{n_gen} genuine and {n_imp} impostor pairs exist; need at least one of each."
        )
    n = min(max_pairs // 2, n_gen, n_imp)
    rng = np.random.default_rng(seed)
    gen = _genuine_pairs(groups, n, rng)
    imp = _impostor_pairs(labels, n, n_imp, rng)
    pairs = np.concatenate([gen, imp]).astype(np.int64)
    is_genuine = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    return pairs, is_genuine


def _check_roc(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or fpr.size < 2:
        raise ValueError(f"fpr and tpr must be 1-D arrays of one length >= 2; got {fpr.shape} and {tpr.shape}.")
    if np.any(np.diff(fpr) < 0) or np.any(np.diff(tpr) < 0):
        raise ValueError("fpr and tpr must be non-decreasing (an ROC curve from roc_curve).")
    return fpr, tpr


def eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Equal error rate of an ROC polyline (module docstring), in [0, 1]."""
    fpr, tpr = _check_roc(fpr, tpr)
    g = fpr + tpr - 1.0  # non-decreasing along the curve; FPR = FNR where g = 0
    k = int(np.searchsorted(g, 0.0, side="left"))
    if k == 0:
        return float(fpr[0])
    if k == len(g):  # the curve never reaches FPR = FNR (not an ROC from (0,0) to (1,1))
        return float(fpr[-1])
    t = -g[k - 1] / (g[k] - g[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """True accept rate at false accept rate ``far`` by linear interpolation (module docstring)."""
    fpr, tpr = _check_roc(fpr, tpr)
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must lie in [0, 1]; got {far}.")
    k = int(np.searchsorted(fpr, far, side="right")) - 1  # last point with fpr <= far
    if k < 0:
        return 0.0
    if k == len(fpr) - 1:
        return float(tpr[k])
    t = (far - fpr[k]) / (fpr[k + 1] - fpr[k])
    return float(tpr[k] + t * (tpr[k + 1] - tpr[k]))


def verification_from_embeddings(
    emb: np.ndarray, labels: np.ndarray, max_pairs: int = 6000, seed: int = 0
) -> dict[str, object]:
    """Verification metrics of cosine-similarity scores on balanced pairs.

    Returns exactly the keys ``auc`` (float), ``eer`` (float), ``tar_at_far``
    ({1e-3: float, 1e-2: float}) and ``roc`` ((fpr, tpr, thresholds) arrays).
    """
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if emb.ndim != 2 or len(emb) != len(labels):
        raise ValueError(f"emb must be (N, D) with one label per row; got {emb.shape} and {labels.shape}.")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf.")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{int((norms == 0).sum())} embeddings are all zeros; cosine similarity is undefined.")
    pairs, genuine = make_pairs(labels, max_pairs, seed)
    unit = emb / norms
    scores = np.einsum("pd,pd->p", unit[pairs[:, 0]], unit[pairs[:, 1]])
    fpr, tpr, thresholds = roc_curve(scores, genuine)
    return {
        "auc": trapezoid(tpr, fpr),
        "eer": eer(fpr, tpr),
        "tar_at_far": {far: tar_at_far(fpr, tpr, far) for far in (1e-3, 1e-2)},
        "roc": (fpr, tpr, thresholds),
    }
