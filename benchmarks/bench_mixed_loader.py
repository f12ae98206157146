"""Several caches mixed by ``MixedLoader`` against one cache read by ``CacheLoader``: images/s.

Side by side in one run, on the same ``N`` images:

- **single**: one cache holding all ``N`` images, read by ``CacheLoader`` (the baseline);
- **mixed**: the same images split into three caches of 60 %, 30 % and 10 % of ``N`` (a CelebA-,
  an MTFL- and a FER2013-like source, the last grey: three equal channels, with only an
  expression label), read by ``MixedLoader`` with ``--mix proportional | uniform |
  temperature:2`` and ``--mix-by sample | batch``;
- **mixed, one source resized**: as mixed (proportional, per sample), but the grey source is
  stored at 48 px only (FER2013's own size) and resized to the model's 64 px in the loader; what
  that costs is reported on its own rows.

Both loaders yield the same batches' worth of work: uint8 images at 64 px and every label in the
run's layout (the single cache holds the union layout that ``MixedLoader`` builds). Each case is
timed over whole shuffled epochs, in memory and chunk-streamed (``in_memory=False``), at batch 64
and 256; one warm-up epoch each (the in-memory load and the page cache), then ``--repeats``
epochs per case, interleaved and in alternating order (forward, then reversed) so that a drifting
load on a shared machine biases no case; the median is reported. Both loaders run in this one
process and thread (no workers), so the ratio is taken on images per CPU second of the process,
which other jobs on a shared CPU disturb far less than wall time; the wall rates are printed too.
A mix that draws only part of the sources per epoch (uniform, temperature) has shorter epochs; the
rates are per image.

The images are random pixels written by ``CacheWriter`` (uncompressed, as ``prepare`` writes
them, so their content does not change the read cost); they are built once under ``--dir``.

    OMP_NUM_THREADS=1 python benchmarks/bench_mixed_loader.py                              # print the table
    OMP_NUM_THREADS=1 python benchmarks/bench_mixed_loader.py --write docs/benchmarks.md   # and update that section
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from _markdown import replace_section

from facemtl.data.cache import CacheWriter, FaceCache
from facemtl.data.loader import CacheLoader
from facemtl.data.mixing import MixedLoader, UnionLayout

START, END = "<!-- bench_mixed_loader:start -->", "<!-- bench_mixed_loader:end -->"
SIZE, FER_SIZE = 64, 48
# name, share of N, attribute names, labels it has, grey
SOURCES = (
    ("celeba", 0.6, ("Male", "Smiling", "Eyeglasses", "Young", "Bald", "Bangs"), ("attributes", "landmarks", "bbox", "face", "identity"), False),
    ("mtfl", 0.3, ("Male", "Smiling", "Eyeglasses"), ("attributes", "landmarks", "face", "pose_class"), False),
    ("fer2013", 0.1, (), ("expression",), True),
)
MIXES = [(m, by) for m in ("proportional", "uniform", "temperature:2") for by in ("sample", "batch")]


def _labels(rng: np.random.Generator, n: int, attrs: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    make = {
        "attributes": lambda: rng.integers(0, 2, (n, len(attrs))).astype(np.int8),
        "landmarks": lambda: rng.uniform(0.2, 0.8, (n, 5, 2)).astype(np.float32),
        "bbox": lambda: rng.uniform(0.1, 0.5, (n, 4)).astype(np.float32),
        "face": lambda: np.ones(n, np.int8),
        "identity": lambda: rng.integers(0, 100, n),
        "pose_class": lambda: rng.integers(0, 5, n).astype(np.int8),
        "expression": lambda: rng.integers(0, 7, n).astype(np.int8),
    }
    return {k: make[k]() for k in keys}


def _write(path: Path, images: dict[int, np.ndarray], labels: dict[str, np.ndarray], attrs: tuple[str, ...], source: str) -> Path:
    n = len(next(iter(images.values())))
    with CacheWriter(path, num_samples=n, sizes=sorted(images), attribute_names=attrs, source=source, force=True) as w:
        for a in range(0, n, 1024):
            b = min(n, a + 1024)
            w.write(a, {"images": {s: im[a:b] for s, im in images.items()}, **{k: v[a:b] for k, v in labels.items()},
                        "split": np.zeros(b - a, np.int8)})
    return path


def build_caches(folder: Path, n: int) -> tuple[list[Path], Path, Path]:
    """The three sources, the grey source at 48 px only, and one cache of all ``n`` images in the
    union layout (built once per ``n`` under ``folder``)."""
    folder = folder / f"n{n}"
    paths = [folder / f"{name}.h5" for name, *_ in SOURCES]
    fer48, single = folder / "fer2013-48.h5", folder / "single.h5"
    if all(p.exists() for p in [*paths, fer48, single]):
        return paths, fer48, single
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    counts = [int(round(share * n)) for _, share, *_ in SOURCES]
    counts[0] += n - sum(counts)
    for (name, _share, attrs, keys, grey), m, p in zip(SOURCES, counts, paths):
        img = rng.integers(0, 256, (m, SIZE, SIZE, 1 if grey else 3), dtype=np.uint8)
        img = np.ascontiguousarray(np.broadcast_to(img, (m, SIZE, SIZE, 3)))
        _write(p, {SIZE: img}, _labels(rng, m, attrs, keys), attrs, name)
        if grey:
            small = np.ascontiguousarray(np.broadcast_to(rng.integers(0, 256, (m, FER_SIZE, FER_SIZE, 1), dtype=np.uint8), (m, FER_SIZE, FER_SIZE, 3)))
            _write(fer48, {FER_SIZE: small}, _labels(rng, m, attrs, keys), attrs, name)
    caches = [FaceCache(p) for p in paths]
    lay = UnionLayout.build(caches)
    per = [lay.labels_of(i, c) for i, c in enumerate(caches)]
    labels = {k: np.concatenate([d[k] for d in per]) for k in lay.keys}
    images = np.concatenate([c.read_images(SIZE, 0, c.num_samples) for c in caches])
    for c in caches:
        c.close()
    _write(single, {SIZE: images}, labels, lay.attribute_names, "single")
    return paths, fer48, single


def epoch(loader, e: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process and images of one whole epoch (every batch's
    tensors are produced, nothing else)."""
    loader.set_epoch(e)
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for b in loader:
        n += b["index"].shape[0]
    return time.perf_counter() - t0, time.process_time() - c0, n


def run(paths: list[Path], fer48: Path, single: Path, batches: list[int], repeats: int) -> list[dict]:
    names = [name for name, *_ in SOURCES]
    caches = [FaceCache(p) for p in paths]
    resized = [*caches[:-1], FaceCache(fer48)]
    one = FaceCache(single)
    cases: list[dict] = []
    for mem, mem_label in ((True, "in memory"), (False, "chunk-streamed")):
        for bs in batches:
            common = {"in_memory": mem, "seed": 1}
            cases.append({"mem": mem_label, "batch": bs, "loader": "single cache", "mix": "-", "by": "-",
                          "obj": CacheLoader(one, "train", [SIZE], bs, **common)})
            for mix, by in MIXES:
                cases.append({"mem": mem_label, "batch": bs, "loader": "mixed", "mix": mix, "by": by,
                              "obj": MixedLoader(caches, names, [SIZE], bs, mix=mix, mix_by=by, **common)})
            cases.append({"mem": mem_label, "batch": bs, "loader": f"mixed, fer2013 {FER_SIZE}->{SIZE} px", "mix": "proportional",
                          "by": "sample", "obj": MixedLoader(resized, names, [SIZE], bs, mix="proportional", mix_by="sample", **common)})
    for c in cases:  # warm-up: the in-memory load, the page cache, the label layout
        epoch(c["obj"], 0)
        c["rates"], c["cpu_rates"], c["images"] = [], [], 0
    for r in range(repeats):
        for c in cases if r % 2 == 0 else cases[::-1]:
            sec, cpu, n = epoch(c["obj"], r + 1)
            c["rates"].append(n / sec)
            c["cpu_rates"].append(n / max(cpu, 1e-9))
            c["images"] = n
    for c in cases:
        c["rate"], c["cpu_rate"] = statistics.median(c["rates"]), statistics.median(c["cpu_rates"])
    for c in cases:
        base = next(b for b in cases if b["mem"] == c["mem"] and b["batch"] == c["batch"] and b["loader"] == "single cache")
        c["ratio"], c["wall_ratio"] = c["cpu_rate"] / base["cpu_rate"], c["rate"] / base["rate"]
        if "fer2013" in c["loader"]:
            plain = next(b for b in cases if b["mem"] == c["mem"] and b["batch"] == c["batch"] and b["loader"] == "mixed"
                         and b["mix"] == "proportional" and b["by"] == "sample")
            c["vs_plain"] = c["cpu_rate"] / plain["cpu_rate"]
    for x in (*caches, resized[-1], one):
        x.close()
    return cases


def table(cases: list[dict], args, seconds: float) -> str:
    head = (f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs shared with other sessions' jobs (load average "
            f"{os.getloadavg()[0]:.1f} at the end), {torch.get_num_threads()} torch thread(s), OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; Python {platform.python_version()}, torch {torch.__version__}. "
            f"{args.num_images} images at {SIZE} px; median of {args.repeats} interleaved epochs per case; ratios on CPU time. "
            f"Measured in {seconds:.0f} s with `python benchmarks/bench_mixed_loader.py {' '.join(sys.argv[1:])}`.\n\n")
    lines = ["| images | batch | loader | mix | mix by | images / epoch | images/s (wall) | images per CPU s | "
             "mixed / single (CPU) | mixed / single (wall) |", "|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        if "fer2013" in c["loader"]:
            continue
        ratio = ("1.00 (baseline)", "1.00") if c["loader"] == "single cache" else (f"**{c['ratio']:.2f}**", f"{c['wall_ratio']:.2f}")
        lines.append(f"| {c['mem']} | {c['batch']} | {c['loader']} | {c['mix']} | {c['by']} | {c['images']:,} | "
                     f"{c['rate']:,.0f} | {c['cpu_rate']:,.0f} | {ratio[0]} | {ratio[1]} |")
    lines += ["", f"One source resized in the loader (fer2013 stored at {FER_SIZE} px only, the model reads {SIZE} px; "
              "mix proportional, per sample):", "",
              "| images | batch | images/s (wall) | images per CPU s | vs the same mix without resizing (CPU) | mixed / single (CPU) |",
              "|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        if "fer2013" in c["loader"]:
            lines.append(f"| {c['mem']} | {c['batch']} | {c['rate']:,.0f} | {c['cpu_rate']:,.0f} | {c['vs_plain']:.2f} | {c['ratio']:.2f} |")
    worst = min((c for c in cases if c["loader"] == "mixed"), key=lambda c: c["ratio"])
    lines += ["", f"Slowest mixed case without resizing: {worst['ratio']:.2f} of the single cache's images per CPU second ({worst['mem']}, "
              f"batch {worst['batch']}, {worst['mix']} per {worst['by']}); the goal is at least 0.67 (within 1.5x)."]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=12000, help="N, the total over the three sources")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (on a shared CPU keep this below the core count)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facemtl-bench-mixed")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("facemtl.data.mixing").setLevel(logging.ERROR)  # the resize warning, once per loader built
    t0 = time.perf_counter()
    paths, fer48, single = build_caches(args.dir, args.num_images)
    t1 = time.perf_counter()
    cases = run(paths, fer48, single, args.batch_sizes, args.repeats)
    text = table(cases, args, time.perf_counter() - t1)
    print(f"(caches built or found in {t1 - t0:.0f} s under {args.dir})\n")
    print(text)
    if args.write:
        replace_section(args.write, START, END, text, new_heading="## Several caches mixed against one cache (issue 13)\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
