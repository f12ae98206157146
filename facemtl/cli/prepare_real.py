"""``facemtl prepare celeba|lfwa|mtfl|fer2013|ckplus|folder``: real datasets into the facemtl cache.

Every command takes the same cache options (``--out --sizes --workers --limit --force --resume
--skip-bad --report``) plus ``--check``, which reports what is present, missing or inconsistent
and writes nothing. The library side is :mod:`facemtl.data.readers`.

``facemtl prepare lfw-subset`` is apart: scikit-image's 200 bundled LFW crops, a test-only set for
``facemtl evaluate --dataset lfw-subset`` (:mod:`facemtl.data.readers.lfw_subset`); it takes only
``--out --sizes --force``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from facemtl.cli._common import SpeedColumn, console, err_console, handle_errors, parse_int_list

Root = Annotated[Path, typer.Option("--root", "-r", help="Folder holding the dataset as downloaded.")]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="Cache file to write (.h5). Default: $FACEMTL_DATA/DATASET.h5 (data/DATASET.h5), where evaluate --dataset looks.", show_default=False)]
Sizes = Annotated[str, typer.Option("--sizes", help="Square sizes to store, comma-separated.")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Decoding processes (0 = all cores).")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="Only the first N images (in annotation order).")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing cache.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted prepare from its .partial file.")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Leave out missing or undecodable images; list them in the provenance and a report.")]
Report = Annotated[Optional[Path], typer.Option("--report", help="Where --skip-bad lists skipped images (default OUT.skipped.tsv).")]
Check = Annotated[bool, typer.Option("--check", help="Only report what is present, missing or inconsistent; write nothing.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the split (same seed, same split).")]


@contextmanager
def _phases() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Rich progress bars with rate and ETA, one per phase (image check, decode)."""
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        SpeedColumn(" img/s"), TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal and os.environ.get("FACEMTL_PROGRESS") == "0") as prog:
        def phase(description: str, total: int) -> Callable[[int], None]:
            task = prog.add_task(description, total=total)
            return lambda n: prog.advance(task, n)

        yield phase


def _show_check(report: Any) -> None:
    if report.files:
        t = Table(title=f"{report.dataset}: files")
        for col in ("role", "path", "status"):
            t.add_column(col)
        for role, path, status in report.files:
            colour = {"present": "green", "missing": "red"}.get(status, "yellow")
            t.add_row(role, path, f"[{colour}]{status}[/]")
        console.print(t)
    if report.counts:
        console.print("counts: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()))
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for e in report.errors:
        console.print(f"[red]problem:[/] {e}", highlight=False, soft_wrap=True)
    console.print("[green]ok: ready to prepare[/]" if report.ok else f"[red]{report.num_problems} problem(s)[/]")


def _run(dataset: str, out: Optional[Path], check: bool, common: dict[str, Any], options: dict[str, Any]) -> None:
    from facemtl.data._parallel import sigterm_as_interrupt
    from facemtl.data.readers import check_dataset, prepare_dataset

    if check:
        report = check_dataset(dataset, **options)
        _show_check(report)
        if not report.ok:
            raise typer.Exit(1)
        return
    if out is None:  # where `facemtl evaluate --dataset NAME` looks for it
        from facemtl.reports._data import DATASET_FILES, data_root

        out = data_root() / DATASET_FILES.get(dataset, f"{dataset}.h5")
        console.print(f"writing [bold]{out}[/] (the default for {dataset}; --out PATH to choose)", highlight=False)
    common["sizes"] = parse_int_list(common["sizes"], "--sizes")
    with sigterm_as_interrupt(), _phases() as phase:
        res = prepare_dataset(dataset, out, phase=phase, **common, **options)
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if res.skipped:
        console.print(f"[yellow]skipped {len(res.skipped)} bad image(s)[/]; listed in [bold]{res.report}[/] and the cache's provenance")
    console.print(f"wrote [bold]{res.path}[/] ({res.num_written} images); inspect it with [cyan]facemtl info {res.path}[/]")


def _common(sizes: str, workers: int, limit: Optional[int], force: bool, resume: bool, skip_bad: bool, report: Optional[Path]) -> dict[str, Any]:
    return {"sizes": sizes, "workers": workers, "limit": limit, "force": force, "resume": resume, "skip_bad": skip_bad, "report": report}


def register(app: typer.Typer) -> None:
    """Add the real-dataset commands to the ``prepare`` app."""

    @app.command("celeba")
    @handle_errors
    def celeba(
        root: Root, out: Out = None,
        variant: Annotated[str, typer.Option("--variant", help="aligned (img_align_celeba) or wild (img_celeba cut around the face box).")] = "aligned",
        margin: Annotated[float, typer.Option("--margin", help="wild: extra border on each side, as a fraction of the box's longer side.")] = 0.15,
        sizes: Sizes = "56,112,224", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """[bold]CelebA[/] (official or torchvision layout): 40 attributes, identity, landmarks, box, official split.

        Example: [cyan]facemtl prepare celeba --root ~/data/CelebA --out data/celeba.h5 --workers 8[/]
        """
        _run("celeba", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report),
             {"root": root, "variant": variant, "margin": margin})

    @app.command("lfwa")
    @handle_errors
    def lfwa(
        root: Root, out: Out = None,
        attributes: Annotated[Optional[Path], typer.Option("--attributes", help="Attribute list, if not found under --root.")] = None,
        images: Annotated[Optional[Path], typer.Option("--images", help="LFW image folder, if not found under --root.")] = None,
        partition: Annotated[Optional[Path], typer.Option("--partition", help="CelebA-style partition file (else split by identity).")] = None,
        center_crop: Annotated[Optional[int], typer.Option("--center-crop", help="Keep only the centred NxN square of each 250x250 image.")] = None,
        seed: Seed = 0,
        sizes: Sizes = "56,112,224", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """[bold]LFWA[/]: LFW images with CelebA's 40 attributes; identity from the person's name.

        Example: [cyan]facemtl prepare lfwa --root ~/data/LFWA --out data/lfwa.h5[/]
        """
        _run("lfwa", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report),
             {"root": root, "attributes": attributes, "images": images, "partition": partition, "center_crop": center_crop, "seed": seed})

    @app.command("mtfl")
    @handle_errors
    def mtfl(
        root: Root, out: Out = None,
        val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of training.txt held out as val (seeded).")] = 0.1,
        crop: Annotated[str, typer.Option("--crop", help="landmarks (square around the 5 points) or center (centred square).")] = "landmarks",
        context: Annotated[float, typer.Option("--context", help="landmarks crop: window side / side of the 5 points' box.")] = 2.5,
        seed: Seed = 0,
        sizes: Sizes = "40,56,112", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """[bold]MTFL[/] (TCDCN): 5 landmarks, Male / Smiling / Eyeglasses and 5 head-pose classes.

        Example: [cyan]facemtl prepare mtfl --root ~/data/MTFL --out data/mtfl.h5[/]
        """
        _run("mtfl", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report),
             {"root": root, "val_fraction": val_fraction, "crop": crop, "context": context, "seed": seed})

    @app.command("fer2013")
    @handle_errors
    def fer2013(
        root: Annotated[Path, typer.Option("--root", "-r", help="fer2013.csv or the folder holding it.")], out: Out = None,
        sizes: Sizes = "48,56,112", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """[bold]FER2013[/]: 48x48 grey expressions (7 classes) with the Usage split.

        Example: [cyan]facemtl prepare fer2013 --root ~/data/fer2013/fer2013.csv --out data/fer2013.h5[/]
        """
        _run("fer2013", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report), {"root": root})

    @app.command("ckplus")
    @handle_errors
    def ckplus(
        root: Root, out: Out = None,
        peak_frames: Annotated[int, typer.Option("--peak-frames", help="Frames up to the labelled peak that get its label.")] = 3,
        neutral: Annotated[bool, typer.Option("--neutral", help="Also label the first frame of each sequence Neutral.")] = False,
        contempt: Annotated[str, typer.Option("--contempt", help="skip contempt sequences, or label them disgust.")] = "skip",
        seed: Seed = 0,
        val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of subjects in val.")] = 0.1,
        test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of subjects in test.")] = 0.2,
        sizes: Sizes = "56,112,224", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """[bold]CK+[/]: expression sequences; peak frames labelled, split by subject.

        Example: [cyan]facemtl prepare ckplus --root ~/data/CK+ --out data/ckplus.h5 --neutral[/]
        """
        _run("ckplus", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report),
             {"root": root, "peak_frames": peak_frames, "neutral": neutral, "contempt": contempt, "seed": seed,
              "val_fraction": val_fraction, "test_fraction": test_fraction})

    @app.command("lfw-subset")
    @handle_errors
    def lfw_subset(
        out: Out = None,
        sizes: Sizes = "25,40,50,56,64,112,224",
        force: Force = False,
    ) -> None:
        """[bold]LFW-subset[/]: scikit-image's 200 real 25x25 grey crops (100 faces, 100 non-faces), test split only.

        A check of transfer to real faces, never a training set: only the face / non-face label, every image
        in the test split. Needs scikit-image (bundled data, no download). Default --out:
        $FACEMTL_DATA/lfw-subset.h5 (data/lfw-subset.h5), where [cyan]facemtl evaluate RUN --dataset lfw-subset[/]
        looks (and prepares it itself when missing).

        Example: [cyan]facemtl prepare lfw-subset --out data/lfw-subset.h5[/]
        """
        from facemtl.data.readers.lfw_subset import default_path, prepare_lfw_subset

        path = prepare_lfw_subset(out or default_path(), parse_int_list(sizes, "--sizes"), force=force)
        how = "--dataset lfw-subset" if out is None else f"--data {path}"
        console.print(f"wrote [bold]{path}[/] (200 LFW-subset crops, test split only); evaluate a run on it with "
                      f"[cyan]facemtl evaluate RUN {how}[/]")

    @app.command("folder")
    @handle_errors
    def folder(
        images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
        labels: Annotated[Path, typer.Option("--labels", help="CSV: an image column plus columns named after tasks (docs/datasets.md).")],
        out: Out = None,
        crop: Annotated[str, typer.Option("--crop", help="center (centred square) or bbox (square around the box columns).")] = "center",
        margin: Annotated[float, typer.Option("--margin", help="bbox crop: extra border per side, fraction of the box.")] = 0.15,
        allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help="Accept CSV image paths outside --images (absolute, or ../).")] = False,
        seed: Seed = 0,
        sizes: Sizes = "56,112,224", workers: Workers = 0, limit: Limit = None, force: Force = False, resume: Resume = False,
        skip_bad: SkipBad = False, report: Report = None, check: Check = False,
    ) -> None:
        """Any [bold]folder + CSV[/]: columns mapped to tasks by name (see docs/datasets.md).

        Columns: image, split, identity, expression, pose_class, yaw/pitch/roll, face, the 10 landmark
        coordinates, the box; any other column is a binary attribute. Image paths must stay inside --images
        (no absolute paths, no ../) unless [cyan]--allow-outside-root[/].

        Example: [cyan]facemtl prepare folder --images faces/ --labels faces.csv --out data/faces.h5[/]
        """
        _run("folder", out, check, _common(sizes, workers, limit, force, resume, skip_bad, report),
             {"images": images, "labels": labels, "crop": crop, "margin": margin, "seed": seed, "allow_outside_root": allow_outside_root})
