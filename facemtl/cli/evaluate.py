"""``facemtl evaluate``: every metric of a trained model, as metrics.json, CSV tables, markdown and PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from facemtl.cli._common import console, handle_errors


@handle_errors
def evaluate(
    source: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint file.", show_default=False)],
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="celeba, lfwa, mtfl, synthetic (found under $FACEMTL_DATA, default data/) or PATH.h5; default: the run's training cache.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Cache file to evaluate on (overrides the --dataset location).")] = None,
    split: Annotated[str, typer.Option("--split", help="train, val, test or all.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default RUN/eval-SPLIT).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Verification pairs (half genuine, half impostor).")] = 6000,
    scenes: Annotated[bool, typer.Option("--scenes/--no-scenes", help="End-to-end detection on the cache's scenes (sliding windows).")] = True,
    max_scenes: Annotated[int, typer.Option("--max-scenes", help="Scenes to scan at most.")] = 32,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write the PNG figures.")] = True,
) -> None:
    """Evaluate a run on a cache: attributes, landmarks, detection, identity, expression, pose.

    Writes [bold]metrics.json[/], one CSV per task, [bold]summary.md[/], CED / ROC / confusion PNGs and
    the run's training curves. Definitions: docs/reports.md.
    Example: [cyan]facemtl evaluate runs/tcdcn --dataset mtfl[/], [cyan]facemtl evaluate runs/default/best.pt --split val[/].
    """
    from dataclasses import replace

    from facemtl.errors import ConfigError
    from facemtl.reports.evaluate import evaluate as run_eval
    from facemtl.reports.evaluate import headline_table
    from facemtl.reports._io import fmt
    from facemtl.reports.scenes import ScanConfig

    if batch_size < 1 or max_pairs < 2 or max_scenes < 0:
        raise ConfigError("--batch-size must be >= 1, --max-pairs >= 2 and --max-scenes >= 0.")
    scan = replace(ScanConfig(), max_scenes=max_scenes)
    with console.status("evaluating..."):
        result = run_eval(source, dataset=dataset, data=data, split=split, out=out, device=device, batch_size=batch_size,
                          max_pairs=max_pairs, scenes=scenes and max_scenes > 0, figures=figures, scan=scan)
    doc = result.document
    console.print(escape(f"{doc['recipe']} on {Path(doc['data']).name}, split {doc['split']} ({doc['samples']} samples)"))
    t = Table()
    for col, just in (("task", "left"), ("metric", "left"), ("value", "right"), ("baseline", "right"), ("", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for task, row in headline_table(result.reports).iterrows():
        t.add_row(escape(task) if task != last else "", escape(row["metric"]), fmt(row["value"]), fmt(row["baseline"]),
                  "↓" if row["better"] == "lower" else "↑", end_section=False)
        last = task
    console.print(t)
    for name, why in result.skipped.items():
        console.print(f"[yellow]skipped[/] {escape(name)}: {escape(why)}")
    console.print(f"report: [bold]{result.out_dir}[/] (metrics.json, summary.md, CSV tables, PNG figures)")
