"""Prepare throughput on a CelebA-format folder: ``facemtl prepare celeba`` vs torchvision's CelebA.

Generates (once, then reuses) a CelebA folder in torchvision's layout with ``--num-images``
178x218 JPEGs (quality 90, content cycled from a pool of SynthFaces renders so the files decode
like faces, not like flat colour), then times, for each worker count:

- facemtl: ``prepare_dataset("celeba", ...)``: parse + validate the annotations, pre-check every
  file, decode, cut the centred 178x178 square, resize to every size and write the HDF5 cache;
- torchvision: ``torchvision.datasets.CelebA(root, split="all", target_type=[all four])`` through
  a ``DataLoader(num_workers=W, batch_size=64)`` with the same decode, crop and resizes
  (``transforms.functional.resized_crop``, PIL bilinear + antialias) and no writing at all.

Files are read once before timing so both runs see a warm page cache. Prints a markdown table.

    python benchmarks/bench_prepare_celeba.py --num-images 20000 --workers 1,2
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from facemtl.data.export_formats import CelebARecord, write_celeba

app = typer.Typer(add_completion=False)


def _pool(k: int, seed: int) -> list[np.ndarray]:
    """``k`` aligned 178x218 face images (SynthFaces if available, else textured noise)."""
    try:
        from facemtl.data.synth import SynthConfig, render_sample

        cfg = SynthConfig(seed=seed, identities=max(2, k // 4), sizes=(218,), negative_fraction=0.0)
        return [np.ascontiguousarray(render_sample(i, cfg)["images"][218][:, 20:198]) for i in range(k)]
    except ImportError:  # pragma: no cover - SynthFaces is part of facemtl
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (218, 178, 3), dtype=np.uint8) for _ in range(k)]


def make_dataset(root: Path, n: int, seed: int = 0, pool: int = 256) -> Path:
    marker = root / f".complete-{n}"
    if marker.exists():
        return root
    faces = _pool(pool, seed)
    rng = np.random.default_rng(seed)

    def records():
        for i in range(n):
            yield CelebARecord(
                aligned=faces[i % pool], attributes=rng.choice([-1, 1], 40), identity=int(rng.integers(1, 1000)),
                partition=int(rng.choice(3, p=[0.8, 0.1, 0.1])), landmarks_align=rng.integers(60, 160, (5, 2)),
                bbox=np.array([rng.integers(0, 200), rng.integers(0, 200), 180, 240]), landmarks_wild=rng.integers(50, 300, (5, 2)),
            )

    write_celeba(root, records(), layout="torchvision", quality=90)
    marker.touch()
    return root


class MultiSize:
    """torchvision-side transform: centred 178x178 square of the aligned image, resized to every size."""

    def __init__(self, sizes: tuple[int, ...]):
        self.sizes = sizes

    def __call__(self, img):
        from torchvision.transforms import functional as F

        img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        return tuple(F.pil_to_tensor(F.resized_crop(img, top, left, side, side, [s, s], antialias=True)) for s in self.sizes)


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (pool / DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_torchvision(root: Path, sizes: tuple[int, ...], workers: int) -> tuple[float, int]:
    import torch
    from torchvision.datasets import CelebA

    CelebA._check_integrity = lambda self: True  # md5s of the real files; this is a generated copy
    t0 = time.perf_counter()
    ds = CelebA(str(root), split="all", target_type=["attr", "identity", "bbox", "landmarks"], transform=MultiSize(sizes), download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, shuffle=False)
    n = 0
    it = iter(loader)
    for images, _ in it:
        n += len(images[0])
    del it  # joins the workers, so their CPU time is counted
    return time.perf_counter() - t0, n


def time_facemtl(root: Path, sizes: tuple[int, ...], workers: int, out: Path) -> tuple[float, int]:
    from facemtl.data.readers import prepare_dataset

    t0 = time.perf_counter()
    res = prepare_dataset("celeba", out, root=root, sizes=sizes, workers=workers, force=True)
    dt = time.perf_counter() - t0
    out.unlink()
    return dt, res.num_written


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import PIL
    import torch
    import torchvision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores available; Python {platform.python_version()}, Pillow {PIL.__version__}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")


@app.command()
def main(
    num_images: Annotated[int, typer.Option("--num-images", help="JPEGs in the generated CelebA folder.")] = 20000,
    workers: Annotated[str, typer.Option("--workers", help="Worker counts to time, comma-separated.")] = "1,2",
    sizes: Annotated[str, typer.Option("--sizes", help="Stored sizes, comma-separated.")] = "56,112,224",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the generated folder lives (reused across runs).")] = Path(tempfile.gettempdir()) / "facemtl-bench-celeba",
) -> None:
    size_t = tuple(int(s) for s in sizes.split(","))
    root = data_dir / f"n{num_images}"
    t0 = time.perf_counter()
    make_dataset(root, num_images)
    gen = time.perf_counter() - t0
    for p in (root / "celeba" / "img_align_celeba").iterdir():  # warm the page cache for both contenders
        p.read_bytes()
    rows = []
    load0 = f"{os.getloadavg()[0]:.1f}"
    for w in (int(x) for x in workers.split(",")):
        for name, fn in (("facemtl prepare celeba", lambda w=w: time_facemtl(root, size_t, w, data_dir / "bench.h5")),
                         ("torchvision CelebA + DataLoader", lambda w=w: time_torchvision(root, size_t, w))):
            c0 = cpu_seconds()
            dt, n = fn()
            cpu = cpu_seconds() - c0
            rows.append((name, w, n, dt, n / dt, cpu))
            typer.echo(f"{name:32s} workers={w}: {n} images in {dt:.1f} s = {n / dt:.0f} images/s ({cpu:.1f} CPU s)", err=True)
    typer.echo(f"\nMachine: {machine()}\n")
    typer.echo(f"{num_images} CelebA-format JPEGs (178x218), sizes {sizes}; data generated in {gen:.0f} s (not timed)\n")
    typer.echo(f"Load average before the runs: {load0}; after: {os.getloadavg()[0]:.1f} (a busy machine makes more workers useless)\n")
    typer.echo("| pipeline | workers | images | wall s | images/s | CPU s (all processes) | images per CPU s |")
    typer.echo("|---|---:|---:|---:|---:|---:|---:|")
    for name, w, n, dt, rate, cpu in rows:
        typer.echo(f"| {name} | {w} | {n} | {dt:.1f} | {rate:.0f} | {cpu:.1f} | {n / cpu:.0f} |")


if __name__ == "__main__":
    app()
