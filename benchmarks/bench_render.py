"""SynthFaces rendering rate: images per second for 112-only and (56, 112, 224) output, 1 and 2 workers.

Workers are a ``multiprocessing`` pool fed chunks of indices with ``imap`` (as a cache writer
would), and the rendered samples travel back to the parent, so pickling is part of the cost.
Prints a markdown table with the machine. Run: ``python benchmarks/bench_render.py [--n 1000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np
import PIL

from facemtl.data.synth import SynthConfig, render_sample

CHUNK = 50


def _render_chunk(args: tuple[SynthConfig, int, int]) -> tuple[list[dict], float]:
    """Samples of one chunk and the CPU seconds this process spent rendering them."""
    cfg, start, stop = args
    t0 = time.process_time()
    samples = [render_sample(i, cfg) for i in range(start, stop)]
    return samples, time.process_time() - t0


def measure(cfg: SynthConfig, n: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds summed over workers) to render ``n`` samples with ``workers``
    processes, pool start included. CPU time stays meaningful when other jobs share the cores."""
    chunks = [(cfg, s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]
    cpu = 0.0
    t0 = time.perf_counter()
    if workers == 1:
        for c in chunks:
            cpu += _render_chunk(c)[1]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _, sec in pool.imap(_render_chunk, chunks):
                cpu += sec
    return time.perf_counter() - t0, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    _render_chunk((SynthConfig(sizes=(112,)), 0, 20))  # warm caches (noise bank, identities, imports)
    rows = []
    for sizes in ((112,), (56, 112, 224)):
        cfg = SynthConfig(sizes=sizes, identities=2000)
        for w in args.workers:
            wall, cpu = measure(cfg, args.n, w)
            rows.append((sizes, w, args.n, wall, args.n / wall, 1000 * cpu / args.n))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, Pillow {PIL.__version__}; load average at the end {load:.1f}\n")
    print("| output sizes | workers | images | wall s | images/s (wall) | CPU ms/image | images/s per core (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for sizes, w, n, wall, rate, cpu_ms in rows:
        print(f"| {', '.join(map(str, sizes))} | {w} | {n} | {wall:.2f} | {rate:.0f} | {cpu_ms:.2f} | {1000 / cpu_ms:.0f} |")


if __name__ == "__main__":
    main()
