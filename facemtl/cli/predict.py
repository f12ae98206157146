"""``facemtl predict``: run a model on images (aligned crops or whole photos) and print the faces."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from facemtl.cli._common import console, err_console, handle_errors
from facemtl.errors import ConfigError, DataFormatError


def _cell_attributes(rec: dict[str, Any], top: int = 4) -> str:
    attrs = sorted(((p, n) for n, p in (rec.get("attributes") or {}).items() if p >= 0.5), reverse=True)
    text = ", ".join(f"{n} {p:.2f}" for p, n in attrs[:top])
    return text + (f" +{len(attrs) - top}" if len(attrs) > top else "")


def _cell_class(entry: dict[str, Any] | None, yaw: bool = False) -> str:
    if not entry:
        return ""
    text = f"{entry['label']} {entry['probability']:.2f}"
    return text + (f" ({entry['yaw']:+.0f}°)" if yaw and "yaw" in entry else "")


def _table(res: Any) -> Table:
    """One table per image: a row per face."""
    t = Table(title=f"{res.path} ({res.width}x{res.height}): {len(res.faces)} face(s)", title_justify="left")
    for col in ("#", "box x y w h", "score", "landmarks x,y", "attributes", "expression", "pose"):
        t.add_column(col, overflow="fold")
    for i, f in enumerate(res.faces):
        lm = " ".join(f"{x:.0f},{y:.0f}" for x, y in (f.get("landmarks") or {}).values())
        t.add_row(
            str(i), " ".join(f"{v:.0f}" for v in f["box"]), "" if f["score"] is None else f"{f['score']:.3f}", lm,
            _cell_attributes(f), _cell_class(f.get("expression")), _cell_class(f.get("pose"), yaw=True),
        )
    return t


@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="Exported model (.onnx / .torchscript / its .json), run folder or checkpoint.", show_default=False)],
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.", show_default=False)],
    aligned: Annotated[bool, typer.Option("--aligned", help="Each image is one aligned face crop: run the model directly.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line per image instead of a table.")] = False,
    draw: Annotated[Optional[Path], typer.Option("--draw", help="Write each image with boxes and landmarks drawn into this folder.")] = None,
    threshold: Annotated[float, typer.Option(help="Face probability needed to report a face (whole photos).")] = 0.9,
    min_face: Annotated[Optional[float], typer.Option(help="Smallest face height searched, pixels (default: max(20, shorter side / 10)).")] = None,
    nms_iou: Annotated[float, typer.Option(help="IoU above which overlapping detections are merged.")] = 0.3,
    nested: Annotated[float, typer.Option(help="A box this much inside a better box (or holding one) is merged into it; 1 = off.")] = 0.7,
    stride: Annotated[float, typer.Option(help="Sliding-window step as a fraction of the window.")] = 0.25,
    scale_step: Annotated[float, typer.Option(help="Ratio between pyramid levels.")] = 1.25,
    max_faces: Annotated[int, typer.Option(help="At most this many faces per image.")] = 20,
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Also run each face crop mirrored and average the two outputs (landmarks swapped back, box mirrored, yaw negated), as evaluate --flip-test does; the window scan is not repeated.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for inference (default: the runtime's).")] = None,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Skip images with more pixels than this (0 = no limit).")] = 100_000_000,
) -> None:
    """Find faces and run every task of a model on them.

    Whole photos: faces are found first (the detection head over an image pyramid with NMS, or MCFA's cascade), then every task runs on each face.
    [bold]--aligned[/]: each image is one face crop and the model runs on it directly.
    MODEL: an exported ONNX model (ONNX Runtime alone suffices), a TorchScript model, a run folder or a checkpoint.
    Images in folders that do not decode are reported and skipped.
    Example: [cyan]facemtl predict runs/default/export/model.onnx photos/ --draw out/[/] (see docs/deploy.md).
    """
    from facemtl.export.backends import load_backend
    from facemtl.export.faces import FinderConfig
    from facemtl.export.predict import Predictor, collect_images

    items = collect_images(images)
    finder = FinderConfig(threshold=threshold, nms_iou=nms_iou, nested=nested, min_face=min_face, scale_step=scale_step,
                          stride=stride, max_faces=max_faces, flip_test=flip_test)
    if max_pixels < 0:
        raise ConfigError(f"--max-pixels must be 0 (no limit) or positive, got {max_pixels}.")
    predictor = Predictor(load_backend(model, threads=threads), finder, max_pixels=max_pixels or None)
    explicit_failures: list[str] = []
    failures: list[str] = []
    done: list[Any] = []
    for item, res in zip(items, predictor.predict_files(items, aligned=aligned, draw_dir=draw)):
        if res.error is not None:
            err_console.print(f"[yellow]skipped[/] {res.error}", highlight=False, soft_wrap=True)
            failures.append(f"{item.path} ({res.reason})")
            if not item.from_folder:
                explicit_failures.append(failures[-1])
            continue
        if as_json:
            sys.stdout.write(json.dumps(res.to_dict()) + "\n")
            sys.stdout.flush()
        else:
            console.print(_table(res))
        done.append(res)
    if draw is not None and done:
        err_console.print(f"drawn images in {draw}", highlight=False)
    if explicit_failures or not done:
        bad = explicit_failures or failures
        raise DataFormatError(f"{len(bad)} image(s) could not be used: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}.")
