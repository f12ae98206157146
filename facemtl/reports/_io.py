"""Report plumbing: staged output folders, markdown tables, file-name safety, small formatting.

A report is first written into a hidden staging folder beside its target and moved into place
only when every file exists, so a failed command never leaves a partial report: either all the
files of a report appear (each moved with an atomic ``os.replace``, the manifest file last) or
none does.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facemtl.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def check_out_dir(out: Path) -> None:
    """Refuse an output path that is an existing file, or whose parent cannot be created."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the report.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create folder {out.parent}: {e.strerror}; choose a writable --out.") from None
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"folder {out.parent} is not writable; choose a writable --out.")


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, last: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into ``out`` (``last`` ones last).

    Files already in ``out`` that the report does not write are left alone (so a report can be
    written into a run folder). On any exception nothing is moved and the staging folder goes.
    """
    out = Path(out)
    check_out_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir())
        # the manifest (metrics.json, ...) is moved last: its presence means the report is complete
        for name in sorted(names, key=lambda n: (n in last, n)):
            target = out / name
            if target.is_dir() and not (tmp / name).is_dir():
                raise ConfigError(f"{target} is a folder; cannot write the report file {name} there.")
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def safe_name(text: str) -> str:
    """A file-name-safe version of a task or configuration name (``attr:Male`` -> ``attr_Male``)."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_") or "x"


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: NaN as '-', integers as they are, floats with ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.integer):
            return fmt(int(value), digits)
        if isinstance(value, np.floating):
            return fmt(float(value), digits)
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def to_markdown(df: pd.DataFrame, digits: int = 4, index: bool = True, right: Sequence[str] = ()) -> str:
    """A GitHub markdown table of ``df`` (pandas' own ``to_markdown`` needs ``tabulate``).

    Numeric columns, and those named in ``right`` (pre-formatted numbers), are right-aligned."""
    cols = [str(c) for c in df.columns]
    header = ([str(df.index.name or "")] if index else []) + cols
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    aligns = (["---"] if index else []) + ["---:" if _numeric(df[c]) or c in right else "---" for c in df.columns]
    lines.append("| " + " | ".join(aligns) + " |")
    for idx, row in zip(df.index, df.itertuples(index=False)):
        cells = ([_cell(fmt(idx, digits))] if index else []) + [_cell(fmt(v, digits)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _numeric(col: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col)) and not pd.api.types.is_bool_dtype(col)


def write_csv(df: pd.DataFrame, path: Path, index: bool = True) -> None:
    """CSV with full float precision (the markdown tables round; the CSVs do not)."""
    path.write_text(df.to_csv(index=index, float_format="%.10g"), encoding="utf-8")
