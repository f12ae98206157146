"""``facemtl correlate``: head-weight, label and gradient correlations between a model's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from facemtl.cli._common import console, handle_errors


@handle_errors
def correlate(
    source: Annotated[Path, typer.Argument(help="Run folder or checkpoint of a multi-task model.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="Cache for the label and gradient matrices (default: the run's).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="celeba, lfwa, mtfl, synthetic (under $FACEMTL_DATA) or PATH.h5; for a run trained on several caches also one of its dataset names (default: its first cache).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split the labels and gradient batches come from.")] = "train",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default RUN/correlate).")] = None,
    reduce: Annotated[str, typer.Option("--reduce", help="Multi-output heads: norm (per-feature L2 over outputs), mean, or rows (no reduction).")] = "norm",
    batches: Annotated[int, typer.Option("--batches", help="Batches the gradient cosines are averaged over.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch of the gradient cosines.")] = 64,
    grad_space: Annotated[str, typer.Option("--grad-space", help="params (shared parameters) or rep (shared representation).")] = "params",
    stage: Annotated[int, typer.Option("--stage", help="Cascade stage whose heads are compared (-1 = L_Net).")] = -1,
    top: Annotated[int, typer.Option("--top", help="Strongest pairs listed per matrix.")] = 10,
    all_labels: Annotated[bool, typer.Option("--all-labels", help="Label matrix over every label of the data, not just the model's tasks.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Correlate a model's tasks: Pearson r of head weights (TCDCN), label correlations, gradient cosines.

    Writes CSV matrices, heatmap PNGs, strongest_pairs.csv and summary.md. Definitions: docs/reports.md.
    Example: [cyan]facemtl correlate runs/tcdcn --reduce rows[/]
    """
    from facemtl.reports._io import fmt
    from facemtl.reports.correlate import correlate as run_correlate

    with console.status("correlating..."):
        res = run_correlate(source, data=data, dataset=dataset, split=split, out=out, reduce=reduce, stage=stage, batches=batches,
                            batch_size=batch_size, space=grad_space, device=device, top=top, all_labels=all_labels)
    t = Table(title="strongest pairs")
    for col in ("matrix", "a", "b", "value"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for _, r in res.pairs.groupby("matrix", sort=False).head(5).iterrows():
        t.add_row(r["matrix"], escape(str(r["a"])), escape(str(r["b"])), fmt(float(r["value"]), 3))
    console.print(t)
    for n in res.notes:
        console.print(f"[dim]note: {escape(n)}[/]")
    console.print(f"report: [bold]{res.out_dir}[/] ({', '.join(f'{k}.csv' for k in res.matrices)}, heatmaps, summary.md)")
