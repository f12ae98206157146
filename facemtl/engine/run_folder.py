"""What a run folder holds and how it stays consistent.

A run folder belongs to one process at a time (``RUN/.lock``, :mod:`facemtl.utils.lock`).
``last.pt`` is the run's record: at the end of an epoch it is written first, then ``best.pt``
(a copy of it when the epoch improved), ``metrics.csv`` and ``weights.csv``; a resume rebuilds
the last three from ``last.pt`` (:func:`repair`), so a kill between any two writes leaves
nothing inconsistent.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

from facemtl.utils.io import atomic_path, write_text_atomic

#: files train() writes into a run folder (their stale temporary files are removed on the next run)
RUN_FILES = ["last.pt", "best.pt", "config.toml", "metrics.csv", "weights.csv"]


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of dict rows whose keys may differ (the union of keys, in first-seen order)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_logs(run_dir: Path, history: list[dict[str, Any]] | None, weight_log: list[dict[str, Any]]) -> None:
    """``metrics.csv`` (one row per epoch; skipped when ``history`` is None) and ``weights.csv`` (one row per step)."""
    if history:
        write_text_atomic(run_dir / "metrics.csv", rows_to_csv(history))
    if weight_log:
        write_text_atomic(run_dir / "weights.csv", rows_to_csv(weight_log))


def copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst, size_hint=src.stat().st_size) as tmp:
        shutil.copyfile(src, tmp)


def repair(run_dir: Path, last: Path, state: dict[str, Any]) -> None:
    """Make ``best.pt``, ``metrics.csv`` and ``weights.csv`` agree with ``last.pt`` (the record),
    whatever write a kill cut short."""
    write_logs(run_dir, state.get("history"), state.get("weight_log") or [])
    if state.get("batches_done", 0) == 0 and state["epoch"] > 0 and state["best_epoch"] == state["epoch"]:
        copy_atomic(last, run_dir / "best.pt")  # last.pt of the best epoch is best.pt, byte for byte


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter on ``RUN/tb``, or None when tensorboard is not installed (metrics.csv is the record)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(run_dir / "tb"))
