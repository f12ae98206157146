"""Report figures: CED, ROC, confusion matrix, heatmap, bars, curves and sweeps, saved as PNG.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``) and
rendered by the Agg PNG printer, without pyplot: no GUI backend is needed, the global backend
is never switched (a notebook user's backend stays as it was), and no figure is left open in
pyplot's registry. matplotlib is imported inside the functions, never when facemtl is
imported. Every PNG is written atomically through :func:`facemtl.utils.io.atomic_path`: on any
error the target is left untouched and no temporary file remains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from facemtl.metrics._ranking import trapezoid
from facemtl.utils.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PathLike = str | os.PathLike
ANNOTATE_MAX = 12  # annotate heatmap cells when both sides have at most this many cells


def _figure(figsize: tuple[float, float] = (6.0, 4.5)) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig: Figure, path: PathLike, dpi: int = 120) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _need(curves: Mapping[str, Any], what: str) -> None:
    if not curves:
        raise ValueError(f"{what} needs at least one curve; got none.")


def _need_columns(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}.")


def plot_ced(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: PathLike, title: str = "Cumulative error distribution"
) -> None:
    """CED curves ``{name: (thresholds, fraction)}``; the legend gives each normalised AUC."""
    _need(curves, "plot_ced")
    fig = _figure()
    ax = fig.add_subplot()
    for name, (thr, frac) in curves.items():
        thr, frac = np.asarray(thr, float), np.asarray(frac, float)
        span = thr[-1] - thr[0]
        auc = trapezoid(frac, thr) / span if span > 0 else float("nan")
        ax.plot(thr, frac, label=f"{name} (AUC {auc:.3f})")
    ax.set(xlabel="NME", ylabel="fraction of faces", ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_roc(
    curves: Mapping[str, Sequence[np.ndarray]], path: PathLike, title: str = "ROC", log_fpr: bool = False
) -> None:
    """ROC curves ``{name: (fpr, tpr[, thresholds])}``; ``log_fpr`` for a log false-positive axis."""
    _need(curves, "plot_roc")
    fig = _figure()
    ax = fig.add_subplot()
    for name, curve in curves.items():
        fpr, tpr = np.asarray(curve[0], float), np.asarray(curve[1], float)
        label = f"{name} (AUC {trapezoid(tpr, fpr):.3f})"
        if log_fpr:
            keep = fpr > 0
            ax.plot(fpr[keep], tpr[keep], label=label)
        else:
            ax.plot(fpr, tpr, label=label)
    if log_fpr:
        ax.set_xscale("log")
    else:
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def _annotate(ax: Any, values: np.ndarray, text: np.ndarray, lo: float, hi: float) -> None:
    mid = (lo + hi) / 2
    half = (hi - lo) / 2 or 1.0
    for (r, c), v in np.ndenumerate(values):
        strong = np.isfinite(v) and abs(v - mid) / half > 0.6
        ax.text(c, r, text[r, c], ha="center", va="center", fontsize=7, color="white" if strong else "black")


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], path: PathLike, title: str = "Confusion matrix"
) -> None:
    """Confusion matrix (rows true, columns predicted) coloured by row-normalised rate,
    each cell annotated with its count."""
    m = np.asarray(matrix)
    n = len(class_names)
    if m.shape != (n, n):
        raise ValueError(f"matrix must be ({n}, {n}) for {n} class names; got {m.shape}.")
    rows = m.sum(1, keepdims=True)
    rate = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)
    size = 2.5 + 0.5 * n
    fig = _figure((size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _annotate(ax, rate, np.vectorize(str)(m), 0.0, 1.0)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    _save(fig, path)


def plot_heatmap(
    df: pd.DataFrame,
    path: PathLike,
    title: str = "",
    vmin: float = -1.0,
    vmax: float = 1.0,
    annotate: bool | None = None,
    cmap: str = "RdBu_r",
) -> None:
    """Heatmap of a labelled matrix (correlations by default: diverging colours in [-1, 1]).

    Cells are annotated with their value when ``annotate`` is True, or by default when both
    sides have at most 12 cells; NaN cells are left blank.
    """
    values = df.to_numpy(dtype=float)
    if values.size == 0:
        raise ValueError("plot_heatmap needs a non-empty table.")
    r, c = values.shape
    fig = _figure((max(4.0, 1.5 + 0.35 * c), max(3.0, 1.0 + 0.3 * r)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(c), labels=[str(x) for x in df.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(r), labels=[str(x) for x in df.index], fontsize=7)
    ax.set_title(title)
    if annotate if annotate is not None else max(r, c) <= ANNOTATE_MAX:
        text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(values)
        _annotate(ax, values, text, vmin, vmax)
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def plot_bars(
    df: pd.DataFrame,
    metric_col: str,
    err_col: str | None,
    path: PathLike,
    title: str = "",
    label_col: str | None = None,
) -> None:
    """One bar per row (labels from ``label_col`` or the index), error bars from ``err_col``.

    More than 12 bars are drawn horizontally (for instance 40 attributes)."""
    _need_columns(df, [c for c in (metric_col, err_col, label_col) if c is not None])
    if len(df) == 0:
        raise ValueError("plot_bars needs at least one row.")
    labels = [str(x) for x in (df[label_col] if label_col else df.index)]
    values = df[metric_col].to_numpy(dtype=float)
    err = df[err_col].to_numpy(dtype=float) if err_col else None
    pos = np.arange(len(df))
    if len(df) > ANNOTATE_MAX:
        fig = _figure((6.0, 1.0 + 0.22 * len(df)))
        ax = fig.add_subplot()
        ax.barh(pos, values, xerr=err, capsize=2, color="tab:blue")
        ax.set_yticks(pos, labels=labels, fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel=metric_col, title=title)
        ax.grid(axis="x", alpha=0.3)
    else:
        fig = _figure((max(4.0, 1.0 + 0.6 * len(df)), 4.0))
        ax = fig.add_subplot()
        ax.bar(pos, values, yerr=err, capsize=3, color="tab:blue")
        ax.set_xticks(pos, labels=labels, rotation=45, ha="right")
        ax.set(ylabel=metric_col, title=title)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_curves(
    df: pd.DataFrame,
    x: str,
    ys: str | Sequence[str],
    path: PathLike,
    title: str = "",
    ylabel: str = "",
    logy: bool = False,
) -> None:
    """Line plot of columns ``ys`` against column ``x`` (training curves, task weights over time)."""
    ys = [ys] if isinstance(ys, str) else list(ys)
    if not ys:
        raise ValueError("plot_curves needs at least one y column.")
    _need_columns(df, [x, *ys])
    fig = _figure()
    ax = fig.add_subplot()
    for col in ys:
        ax.plot(df[x].to_numpy(), df[col].to_numpy(dtype=float), label=str(col))
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=x, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend(fontsize=7, ncol=1 + len(ys) // 10)
    _save(fig, path)


def plot_sweep(
    x: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray | None,
    path: PathLike,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> None:
    """Mean over repeats against a swept parameter, with a +-1 std band when ``std`` is given."""
    x, mean = np.asarray(x, float), np.asarray(mean, float)
    if x.ndim != 1 or x.shape != mean.shape or x.size == 0:
        raise ValueError(f"x and mean must be non-empty 1-D arrays of one length; got {x.shape} and {mean.shape}.")
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(x, mean, marker="o")
    if std is not None:
        std = np.asarray(std, float)
        if std.shape != x.shape:
            raise ValueError(f"std must match x's shape {x.shape}; got {std.shape}.")
        ax.fill_between(x, mean - std, mean + std, alpha=0.25)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    _save(fig, path)
