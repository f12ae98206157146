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
MARKERS_MAX = 30  # curves with at most this many points also draw a marker at each


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
    ax.set(xlabel="NME", ylabel="fraction of faces", ylim=(0, 1.01), title=_wrap(title, fig))
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
    ax.set(xlabel="false positive rate", ylabel="true positive rate", ylim=(0, 1.01), title=_wrap(title, fig))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def _annotate(ax: Any, im: Any, values: np.ndarray, text: np.ndarray) -> None:
    """Write ``text`` on each cell of the image ``im``, black on light cells and white on dark ones
    (by the cell colour's relative luminance, so pale cells of any colour map stay readable)."""
    rgba = im.cmap(im.norm(np.ma.masked_invalid(values)))
    for (r, c), v in np.ndenumerate(values):
        red, green, blue = rgba[r, c, :3]
        dark = np.isfinite(v) and 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5
        ax.text(c, r, text[r, c], ha="center", va="center", fontsize=7, color="white" if dark else "black")


def _wrap(text: str, fig: Figure, fontsize: float = 12.0, width: float | None = None) -> str:
    """Break a title into lines that fit ``width`` inches (default: the figure's width; a title is
    centred on its axes, so with wide tick labels on the left it has less): long ones were clipped."""
    import textwrap

    chars = max(20, int((width or fig.get_figwidth() - 0.4) * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) if len(text) > chars else text


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
    ax.set(xlabel="predicted", ylabel="true", title=_wrap(title, fig))
    _annotate(ax, im, rate, np.vectorize(str)(m))
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
    ax.set_title(_wrap(title, fig))
    if annotate if annotate is not None else max(r, c) <= ANNOTATE_MAX:
        text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(values)
        _annotate(ax, im, values, text)
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def plot_bars(
    df: pd.DataFrame,
    metric_col: str,
    err_col: str | None,
    path: PathLike,
    title: str = "",
    label_col: str | None = None,
    value_label: str | None = None,
) -> None:
    """One bar per row (labels from ``label_col`` or the index), error bars from ``err_col``;
    ``value_label`` names the value axis (default ``metric_col``).

    Bars are horizontal, so every label is written in full on one line (ablation configurations
    such as ``landmarks+pose+gender+glasses+smile [ew]``), except a few short labels, drawn as
    columns."""
    _need_columns(df, [c for c in (metric_col, err_col, label_col) if c is not None])
    if len(df) == 0:
        raise ValueError("plot_bars needs at least one row.")
    labels = [str(x) for x in (df[label_col] if label_col else df.index)]
    values = df[metric_col].to_numpy(dtype=float)
    err = df[err_col].to_numpy(dtype=float) if err_col else None
    pos = np.arange(len(df))
    longest = max(len(x) for x in labels)
    if len(df) > ANNOTATE_MAX or longest > 6:
        # width: the labels (about 0.075 in per character at 8 pt) plus room for the bars
        fig = _figure((min(14.0, 4.5 + 0.075 * longest), 2.0 + 0.28 * len(df)))
        ax = fig.add_subplot()
        ax.barh(pos, values, xerr=err, capsize=2, color="tab:blue")
        ax.set_yticks(pos, labels=labels, fontsize=8 if len(df) <= ANNOTATE_MAX else 7)
        ax.invert_yaxis()
        ax.set(xlabel=value_label or metric_col, title=_wrap(title, fig, width=fig.get_figwidth() - 0.075 * longest - 0.5))
        ax.grid(axis="x", alpha=0.3)
    else:
        fig = _figure((max(4.0, 1.0 + 0.6 * len(df)), 4.0))
        ax = fig.add_subplot()
        ax.bar(pos, values, yerr=err, capsize=3, color="tab:blue")
        ax.set_xticks(pos, labels=labels)
        ax.set(ylabel=value_label or metric_col, title=_wrap(title, fig))
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
    # markers while the points are few: a one-epoch run is one point per curve, which a line alone never draws
    marker = "o" if len(df) <= MARKERS_MAX else None
    for col in ys:
        ax.plot(df[x].to_numpy(), df[col].to_numpy(dtype=float), label=str(col), marker=marker, markersize=4)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=x, ylabel=ylabel, title=_wrap(title, fig))
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
    ax.set(xlabel=xlabel, ylabel=ylabel, title=_wrap(title, fig))
    ax.grid(alpha=0.3)
    _save(fig, path)
