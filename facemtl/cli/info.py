"""``facemtl info``: what a cache holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facemtl.cli._common import console, handle_errors


@handle_errors
def info(
    path: Annotated[Path, typer.Argument(help="A facemtl cache (.h5).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show counts per split, tasks and label coverage, image sizes and provenance of a cache."""
    from facemtl.data.cache import FaceCache
    from facemtl.tasks import available_tasks

    cache = FaceCache(path)
    summary = cache.summary()
    summary["tasks"] = available_tasks(cache)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    t = Table(title=f"{path}  ({summary['source']}, schema {summary['schema_version']}, facemtl {summary['facemtl_version']})")
    t.add_column("what")
    t.add_column("value")
    t.add_row("samples", f"{summary['num_samples']:,}  (train {summary['splits']['train']:,} / val {summary['splits']['val']:,} / test {summary['splits']['test']:,})")
    t.add_row("image sizes", ", ".join(f"{s}x{s}" for s in summary["sizes"]) + f"   ({summary['file_mb']} MB)")
    t.add_row("identities", str(summary["identities"]))
    t.add_row("scenes", str(summary["scenes"]))
    t.add_row("tasks", ", ".join(summary["tasks"]) or "-")
    for k, v in summary["label_coverage"].items():
        t.add_row(f"  label {k}", f"{v:.1%} of samples")
    if summary["attribute_prevalence"]:
        prev = "  ".join(f"{n} {p:.0%}" for n, p in summary["attribute_prevalence"].items())
        t.add_row(f"attributes ({summary['num_attributes']})", prev)
    t.add_row("created", summary["created"])
    t.add_row("provenance", json.dumps(summary["provenance"])[:400])
    console.print(t)
