"""``facemtl plot``: a run's training curves and task weights over time as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facemtl.cli._common import console, handle_errors


@handle_errors
def plot(
    run: Annotated[Path, typer.Argument(help="Run folder (reads metrics.csv and weights.csv).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default RUN/plots).")] = None,
) -> None:
    """Plot a run's loss curves, validation metrics and task weights (matplotlib, no display needed).

    Example: [cyan]facemtl plot runs/tcdcn[/]
    """
    from facemtl.errors import MissingFileError
    from facemtl.reports._io import staged_dir
    from facemtl.reports.curves import curve_figures

    if not run.is_dir():
        raise MissingFileError(f"run folder {run} does not exist.")
    target = out or run / "plots"
    with staged_dir(target) as tmp:
        written = curve_figures(run, tmp)
    console.print(f"wrote {len(written)} figures to [bold]{target}[/]: {', '.join(written)}")
