"""Multi-task summary metrics: Delta-m%, Pearson / cosine matrices, strongest pairs.

- Delta-m% (Maninis et al. 2019; Vandenhende et al.; the sign used by FAMO, Nash-MTL, CAGrad):

      Delta_m = (100 / T) * sum_i (-1)^{l_i} * (M_mtl,i - M_single,i) / |M_single,i|,
      l_i = 1 if higher is better for metric i, else 0.

  A metric that got *worse* under multi-task training adds a positive term, so **lower is
  better** and a negative Delta-m means the multi-task model beats the single-task models on
  average (FAMO reports CelebA's 40 F1 scores this way; its code multiplies by
  (-1) ** [1 for higher-is-better]). The literature divides by M_single,i; dividing by its
  absolute value is the same for the usual positive metrics and keeps the sign meaning when a
  baseline is negative.
- Pearson r(x, y) = sum (x - x̄)(y - ȳ) / sqrt(sum (x - x̄)^2 sum (y - ȳ)^2), NaN when either
  vector is constant (as ``scipy.stats.pearsonr``, which also warns).
- Cosine(x, y) = x·y / (||x|| ||y||), NaN when either vector is zero.
Vectors (for instance the last-layer weight vectors of two task heads, TCDCN's analysis) are
flattened before comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def delta_m(mtl: Mapping[str, float], single: Mapping[str, float], higher_is_better: Mapping[str, bool]) -> float:
    """Delta-m% of multi-task metrics against single-task baselines (lower is better).

    All three mappings must have the same keys (one per metric); baselines must be non-zero.
    """
    keys = set(mtl)
    if not keys:
        raise ValueError("delta_m needs at least one metric; got none.")
    if set(single) != keys or set(higher_is_better) != keys:
        raise ValueError(
            "delta_m needs the same metric names in mtl, single and higher_is_better; "
            f"only in mtl: {sorted(keys - set(single))}, missing from mtl: {sorted(set(single) - keys)}, "
            f"mismatched directions: {sorted(keys ^ set(higher_is_better))}."
        )
    terms = []
    for k in sorted(keys):
        base, value = float(single[k]), float(mtl[k])
        if base == 0 or not np.isfinite(base) or not np.isfinite(value):
            raise ValueError(f"metric '{k}': baseline must be finite and non-zero and the value finite; "
                             f"got single={base}, mtl={value}.")
        sign = -1.0 if higher_is_better[k] else 1.0
        terms.append(sign * (value - base) / abs(base))
    return float(np.mean(terms) * 100.0)


def _as_vector(x: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf.")
    return v


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equally long vectors (flattened); NaN if either is constant."""
    x, y = _as_vector(x, "x"), _as_vector(y, "y")
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}.")
    if x.size < 2:
        raise ValueError(f"pearson needs at least 2 values; got {x.size}.")
    return float(_normalised_gram(np.stack([x, y]), centre=True)[0, 1])


def _normalised_gram(stack: np.ndarray, centre: bool) -> np.ndarray:
    # a constant vector has no correlation; test before centring leaves rounding residue
    zero = np.ptp(stack, axis=1) == 0 if centre else ~stack.any(1)
    if centre:
        stack = stack - stack.mean(1, keepdims=True)
    # scale by the max first so that tiny or huge vectors do not under/overflow
    scale = np.abs(stack).max(1, keepdims=True)
    stack = np.divide(stack, scale, out=np.zeros_like(stack), where=scale > 0)
    norms = np.linalg.norm(stack, axis=1)
    unit = np.divide(stack, norms[:, None], out=np.zeros_like(stack), where=norms[:, None] > 0)
    gram = np.clip(unit @ unit.T, -1.0, 1.0)
    gram[zero, :] = np.nan
    gram[:, zero] = np.nan
    return gram


def _matrix(vectors: Mapping[str, np.ndarray], centre: bool) -> pd.DataFrame:
    import pandas as pd

    if not vectors:
        raise ValueError("need at least one named vector; got none.")
    names = list(vectors)
    vs = [_as_vector(vectors[n], n) for n in names]
    sizes = {v.size for v in vs}
    if len(sizes) != 1:
        raise ValueError(f"all vectors must have one length; got {dict(zip(names, (v.size for v in vs)))}.")
    if centre and sizes.pop() < 2:
        raise ValueError("Pearson correlation needs vectors of at least 2 values.")
    gram = _normalised_gram(np.stack(vs), centre)
    return pd.DataFrame(gram, index=names, columns=names)


def pearson_matrix(vectors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Square DataFrame of pairwise Pearson correlations (as ``numpy.corrcoef``), names as labels."""
    return _matrix(vectors, centre=True)


def cosine_matrix(vectors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Square DataFrame of pairwise cosine similarities, names as labels."""
    return _matrix(vectors, centre=False)


def strongest_pairs(matrix_df: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` off-diagonal pairs of a square, symmetric matrix with the largest |value|.

    Each unordered pair appears once (upper triangle, in the matrix's order); NaN entries are
    skipped; ties keep the matrix order. Columns: ``a``, ``b``, ``value``, ``abs``.
    """
    import pandas as pd

    if matrix_df.shape[0] != matrix_df.shape[1] or list(matrix_df.index) != list(matrix_df.columns):
        raise ValueError("strongest_pairs needs a square matrix with the same row and column labels.")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    values = matrix_df.to_numpy(dtype=np.float64)
    i, j = np.triu_indices(len(values), 1)
    v = values[i, j]
    ok = ~np.isnan(v)
    i, j, v = i[ok], j[ok], v[ok]
    order = np.argsort(-np.abs(v), kind="stable")[:k]
    labels = list(matrix_df.index)
    return pd.DataFrame(
        {
            "a": [labels[t] for t in i[order]],
            "b": [labels[t] for t in j[order]],
            "value": v[order],
            "abs": np.abs(v[order]),
        }
    )
