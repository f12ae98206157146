"""``facemtl export``: a trained run as ONNX or TorchScript, with metadata and a parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facemtl.cli._common import console, handle_errors


@handle_errors
def export(
    source: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or checkpoint file.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Model file to write (default: RUN/export/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Make the batch axis dynamic (default: batch 1).")] = False,
    half: Annotated[bool, typer.Option("--half", help="Export float16 weights and inputs (parity tolerance 2e-2).")] = False,
    tolerance: Annotated[Optional[float], typer.Option(help="Parity tolerance (default 1e-4, 2e-2 with --half).")] = None,
) -> None:
    """Export a trained model with every task head as a named output, plus metadata (model.onnx.json).

    After writing, the exported model (run by ONNX Runtime or TorchScript) and PyTorch are compared on one batch.
    The largest difference per output is printed; the export fails, writing nothing, when one exceeds the tolerance.
    MCFA's cascade becomes three files, one per sub-network (see docs/deploy.md).
    Example: [cyan]facemtl export runs/default --format onnx --dynamic-batch[/]
    """
    from facemtl.export.exporter import export_checkpoint

    result = export_checkpoint(
        source, out, fmt=fmt.lower(), opset=opset, dynamic_batch=dynamic_batch, half=half, tolerance=tolerance,
    )
    rep = result.parity
    table = Table(title=f"parity: {rep.runtime} vs PyTorch, batch {rep.batch}, {result.meta.precision}")
    table.add_column("output")
    table.add_column("max |diff|", justify="right")
    table.add_column("bound", justify="right")
    table.add_column("", justify="center")
    for name, diff in rep.max_abs_diff.items():
        table.add_row(name, f"{diff:.2e}", f"{rep.bound[name]:.1e}", "[green]ok[/]" if diff <= rep.bound[name] else "[red]FAIL[/]")
    console.print(table)
    for f in result.files:
        console.print(f"wrote {f}", highlight=False)
    console.print(f"wrote {result.metadata_path}", highlight=False)
    console.print(f"next: facemtl predict {result.metadata_path} IMAGE_OR_DIR", highlight=False)
