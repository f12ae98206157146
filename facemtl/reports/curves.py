"""Figures of a run's training: loss curves, validation metrics and task weights over time.

Read from the run folder's ``metrics.csv`` (one row per epoch) and ``weights.csv`` (one row per
step: ``loss/<task>``, ``weight/<task>``). Written by ``facemtl plot RUN`` and by
``facemtl evaluate RUN``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from facemtl.errors import DataFormatError, MissingFileError
from facemtl.metrics import plots

log = logging.getLogger(__name__)


def _read(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path} is not a readable CSV ({e}); it was damaged or not written by facemtl train.") from None
    return df if len(df) else None


def _smooth(df: pd.DataFrame, cols: list[str], window: int) -> pd.DataFrame:
    out = df.copy()
    if window > 1:
        out[cols] = df[cols].rolling(window, min_periods=1).mean()
    return out


def curve_figures(run_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Write the training figures of ``run_dir`` into ``out_dir``; returns the file names written.

    - ``curves_loss.png``: total and per-task train / val loss per epoch (log scale)
    - ``curves_val_<task>.png``: each task's validation metrics per epoch
    - ``curves_weights.png``: each task's loss weight per step (what the strategy chose)
    - ``curves_step_loss.png``: each task's training loss per step (moving average)
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"run folder {run_dir} does not exist.")
    epochs = _read(run_dir / "metrics.csv")
    steps = _read(run_dir / "weights.csv")
    if epochs is None and steps is None:
        raise MissingFileError(f"{run_dir} holds neither metrics.csv nor weights.csv; is it a facemtl run folder?")
    written: list[str] = []
    if epochs is not None and "epoch" in epochs:
        loss_cols = [c for c in epochs.columns if c.startswith(("train_loss", "val_loss"))]
        if loss_cols:
            positive = all((epochs[c].dropna() > 0).all() for c in loss_cols)
            plots.plot_curves(epochs, "epoch", loss_cols, out_dir / "curves_loss.png", title="loss per epoch",
                              ylabel="loss", logy=positive)
            written.append("curves_loss.png")
        tasks = sorted({c.split("/")[1] for c in epochs.columns if c.startswith("val/") and c.count("/") >= 2})
        for t in tasks:
            cols = [c for c in epochs.columns if c.startswith(f"val/{t}/")]
            name = f"curves_val_{_stem(t)}.png"
            plots.plot_curves(epochs, "epoch", cols, out_dir / name, title=f"validation metrics of {t}", ylabel="value")
            written.append(name)
    if steps is not None and "step" in steps:
        wcols = [c for c in steps.columns if c.startswith("weight/") and c.count("/") == 1]
        if wcols:
            plots.plot_curves(steps, "step", wcols, out_dir / "curves_weights.png", title="task weights per step", ylabel="weight")
            written.append("curves_weights.png")
        lcols = [c for c in steps.columns if c.startswith("loss/")]
        if lcols:
            window = max(1, len(steps) // 50)
            sm = _smooth(steps, lcols, window)
            positive = all((steps[c].dropna() > 0).all() for c in lcols)
            plots.plot_curves(sm, "step", lcols, out_dir / "curves_step_loss.png",
                              title=f"training loss per step (moving average of {window})", ylabel="loss", logy=positive)
            written.append("curves_step_loss.png")
    return written


def _stem(task: str) -> str:
    from facemtl.reports._io import safe_name

    return safe_name(task)
