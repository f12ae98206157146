"""``facemtl prepare``: turn a dataset into the facemtl HDF5 cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facemtl.cli._common import console, handle_errors, parse_float_range, parse_int_list, progress_bar

app = typer.Typer(help="Prepare a dataset into a facemtl HDF5 cache (see docs/data-format.md).", no_args_is_help=True)


@app.command("synthetic")
@handle_errors
def synthetic(
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache file to write (.h5); a new folder with --format celeba|mtfl|fer2013.")] = Path("data/synthfaces.h5"),
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Face and negative crops to render.")] = 20000,
    identities: Annotated[int, typer.Option("--identities", help="Distinct identities.")] = 200,
    sizes: Annotated[str, typer.Option("--sizes", help="Square sizes to store, comma-separated.")] = "56,112,224",
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 0,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (0 = all cores).")] = 0,
    scenes: Annotated[int, typer.Option("--scenes", help="Whole detection scenes (256x256) to render.")] = 64,
    face_scale: Annotated[str | None, typer.Option("--face-scale", help="Head height over crop side, drawn from LO,HI: 0.6,1.4 (default) loose head crops, 1.0,1.4 framed like a face detector's box (the tcdcn recipe).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing cache.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted prepare from its .partial file.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="cache (HDF5), or celeba / mtfl / fer2013: that dataset's exact files with only its labels, for exercising the real readers.")] = "cache",
    layout: Annotated[str, typer.Option("--layout", help="--format celeba: official (Img/Anno/Eval) or torchvision (celeba/).")] = "official",
) -> None:
    """Render [bold]SynthFaces[/], the embedded procedural face set with exact labels, into a cache.

    With [cyan]--format celeba[/], [cyan]mtfl[/] or [cyan]fer2013[/] the faces are written in that dataset's layout
    and file formats instead, with only the labels that dataset has (--out is then a new folder), so
    [cyan]facemtl prepare celeba --root OUT[/] can be tried without the real data.

    Example: [cyan]facemtl prepare synthetic --out data/synthfaces.h5 --num-images 20000[/]
    """
    from facemtl.data._parallel import sigterm_as_interrupt
    from facemtl.data.synth.sampling import check_face_scale
    from facemtl.data.synthetic import prepare_synthetic

    if fmt != "cache":
        from facemtl.data.export_formats import export_synthetic

        with progress_bar(f"SynthFaces -> {fmt}", num_images) as advance:
            folder = export_synthetic(fmt, out, num_images=num_images, identities=identities, seed=seed, workers=workers,
                                      layout=layout, on_progress=advance)
        console.print(f"wrote [bold]{folder}[/] in {fmt} format; read it with [cyan]facemtl prepare {fmt} --root {folder} --out {fmt}.h5[/]")
        return
    size_list = parse_int_list(sizes, "--sizes")
    # checked here, before the progress bar starts (SynthConfig checks it again, naming itself)
    framing = {"face_scale": check_face_scale(parse_float_range(face_scale, "--face-scale"), "--face-scale")} if face_scale else {}
    with sigterm_as_interrupt(), progress_bar("SynthFaces", num_images) as advance:
        path = prepare_synthetic(
            out, num_images=num_images, identities=identities, sizes=size_list, seed=seed, workers=workers,
            num_scenes=scenes, force=force, resume=resume, on_progress=advance, **framing,
        )
    console.print(f"wrote [bold]{path}[/]; inspect it with [cyan]facemtl info {path}[/]")


from facemtl.cli import prepare_real  # noqa: E402  (registers its commands on this module's app)

prepare_real.register(app)
