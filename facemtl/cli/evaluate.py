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
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="celeba, lfwa, mtfl, synthetic (found under $FACEMTL_DATA, default data/), lfw-subset (real-face check, prepared on first use) or PATH.h5; for a run trained on several caches also one of its dataset names (the caches' file stems). Default: the run's training cache(s), each one of a multi-cache run.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Cache file to evaluate on (overrides the --dataset location).")] = None,
    split: Annotated[str, typer.Option("--split", help="train, val, test or all.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default RUN/eval-SPLIT).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass (memory, not results).")] = 128,
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Verification pairs (half genuine, half impostor).")] = 6000,
    scenes: Annotated[bool, typer.Option("--scenes/--no-scenes", help="End-to-end detection on the cache's scenes (sliding windows).")] = True,
    max_scenes: Annotated[int, typer.Option("--max-scenes", help="Scenes to scan at most.")] = 32,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write the PNG figures.")] = True,
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Also run every image mirrored and average each task's two outputs (landmarks swapped back, box mirrored, yaw negated), as landmark benchmarks often report; twice the time. Recorded in metrics.json.")] = False,
) -> None:
    """Evaluate a run on a cache: attributes, landmarks, detection, identity, expression, pose.

    Writes [bold]metrics.json[/], one CSV per task, [bold]summary.md[/], CED / ROC / confusion PNGs and
    the run's training curves. Definitions: docs/reports.md.
    With [cyan]--dataset lfw-subset[/] it checks transfer to real faces: the face / non-face accuracy of the
    detection task on scikit-image's 200 LFW crops (written to $FACEMTL_DATA/lfw-subset.h5 on first use).
    A run trained on several caches ([cyan]--data a.h5,b.h5[/]) is evaluated on each, every task where the cache
    labels it: RUN/eval-SPLIT/NAME/ per dataset and one combined metrics.json and summary.md.
    Example: [cyan]facemtl evaluate runs/tcdcn --dataset mtfl[/], [cyan]facemtl evaluate runs/default/best.pt --split val[/],
    [cyan]facemtl evaluate runs/default --dataset lfw-subset[/], [cyan]facemtl evaluate runs/default --flip-test[/].
    """
    from dataclasses import replace

    from facemtl.errors import ConfigError
    from facemtl.reports._io import fmt
    from facemtl.reports.evaluate import LFW_SUBSET, headline_table
    from facemtl.reports.evaluate import evaluate as run_eval
    from facemtl.reports.scenes import ScanConfig

    if batch_size < 1 or max_pairs < 2 or max_scenes < 0:
        raise ConfigError("--batch-size must be >= 1, --max-pairs >= 2 and --max-scenes >= 0.")
    scan = replace(ScanConfig(), max_scenes=max_scenes)
    with console.status("evaluating..."):
        result = run_eval(source, dataset=dataset, data=data, split=split, out=out, device=device, batch_size=batch_size,
                          max_pairs=max_pairs, scenes=scenes and max_scenes > 0, figures=figures, scan=scan,
                          flip_test=flip_test)
    doc = result.document
    if result.datasets:
        _datasets_summary(result)
        return
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
    if doc.get("data_source") == LFW_SUBSET:
        _lfw_subset_summary(result)
    else:
        for name, why in result.skipped.items():
            console.print(f"[yellow]skipped[/] {escape(name)}: {escape(why)}")
    console.print(f"report: [bold]{result.out_dir}[/] (metrics.json, summary.md, CSV tables, PNG figures)")


def _datasets_summary(result) -> None:
    """A multi-cache run: one row per task and metric, one column per dataset (blank: not labelled there)."""
    from facemtl.reports._io import fmt
    from facemtl.reports.evaluate import dataset_table

    doc = result.document
    sizes = ", ".join(f"{n} {e['samples']}" for n, e in doc["datasets"].items())
    console.print(escape(f"{doc['recipe']} on {len(doc['datasets'])} datasets, split {doc['split']} (samples: {sizes})"))
    df = dataset_table(result.datasets, doc["model_tasks"])
    t = Table()
    for col, just in (("task", "left"), ("metric", "left"), *((n, "right") for n in result.datasets), ("", "left")):
        t.add_column(escape(col), justify=just)  # type: ignore[arg-type]
    last = None
    for (task, metric), row in df.iterrows():
        t.add_row(escape(task) if task != last else "", escape(metric),
                  *["" if row[n] != row[n] else fmt(row[n]) for n in result.datasets], "↓" if row["better"] == "lower" else "↑")
        last = task
    console.print(t)
    for name, e in doc["datasets"].items():
        if not e["tasks"]:
            console.print(f"[yellow]nothing measured[/] on {escape(name)}: "
                          f"{escape('; '.join(f'{k}: {v}' for k, v in e['skipped'].items()))}", highlight=False)
        elif e["skipped"]:
            console.print(f"[dim]not on {escape(name)}: {escape(', '.join(e['skipped']))} (no labels there)[/]", highlight=False)
    console.print(f"report: [bold]{result.out_dir}[/] (metrics.json and summary.md over every dataset; "
                  f"one folder per dataset: {escape(', '.join(e['report'] for e in doc['datasets'].values() if e['report']))})")


def _lfw_subset_summary(result) -> None:
    """The real-face check's verdict in one sentence per detection task."""
    from facemtl.reports._io import fmt

    for r in result.reports:
        if r.kind != "detection":
            continue
        m, info = r.metrics, r.info
        line = (f"[bold]real-face check[/] (LFW-subset, {r.n} real crops: {info.get('faces', 0)} faces, "
                f"{info.get('non_faces', 0)} non-faces): {escape(r.task)} face / non-face accuracy "
                f"[bold]{fmt(m['accuracy'], 3)}[/] at face score >= 0.5 (chance 0.5)")
        if "roc_auc" in m:
            line += (f"; faces called faces {fmt(m['face_recall'], 3)}, non-faces called non-faces "
                     f"{fmt(m['non_face_recall'], 3)}; ROC AUC {fmt(m['roc_auc'], 3)}")
        console.print(line + ".", highlight=False)
    if result.skipped:  # one line: MCFA alone has 30 tasks LFW-subset cannot measure
        names = list(result.skipped)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        console.print(f"[yellow]skipped[/] {escape(shown)}: LFW-subset has no labels for "
                      f"{'it' if len(names) == 1 else 'them'} (it labels face / non-face only).", highlight=False)
