"""Three datasets in one network against one network per dataset, on SynthFaces stand-ins.

SynthFaces is written in CelebA's, MTFL's and FER2013's own files (``prepare synthetic --format``,
different seeds, so the three hold different faces), each with only its dataset's labels, and read
back through the real readers (``prepare celeba|mtfl|fer2013``). Then, with the same backbone,
input size, augmentation, optimiser and number of epochs:

- one model per dataset, on the tasks that dataset labels (CelebA: landmarks + attributes; MTFL:
  landmarks + attributes + pose; FER2013: expression);
- one model on the three together (``--data celeba.h5,mtfl.h5,fer2013.h5``), for each ``--mix``.

Every task is measured on the test split of every dataset that labels it; Delta-m% is the mean
relative change of those headline figures against the per-dataset models (positive = better).
The CelebA stand-in's attributes are restricted to those SynthFaces models (the others are written
as "absent" for every face: CelebA has no missing marker).

    python benchmarks/multi_dataset.py --work /tmp/mt                       # print the table
    python benchmarks/multi_dataset.py --work /tmp/mt --write docs/reports.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from _markdown import replace_section

DATASETS = {"celeba": 1, "mtfl": 2, "fer2013": 3}  # stand-in -> SynthFaces seed
#: share of --images each stand-in gets: unequal, as the real ones are (CelebA 202,599 images,
#: MTFL 12,995, FER2013 35,887), so that the mixes differ
SHARES = {"celeba": 1.0, "mtfl": 0.3, "fer2013": 0.5}
TASKS = {"celeba": ["landmarks", "attributes"], "mtfl": ["landmarks", "attributes", "pose"], "fer2013": ["expression"]}
ALL_TASKS = ["landmarks", "attributes", "pose", "expression"]


def prepare(work: Path, images: int, size: int) -> dict[str, Path]:
    """The three stand-in caches (made once, remade when --images changes)."""
    from facemtl.data.cache import FaceCache

    out = {}
    for name, seed in DATASETS.items():
        cache = work / f"{name}.h5"
        if not cache.exists() or FaceCache(cache).num_samples != int(images * SHARES[name]):
            raw = work / f"raw_{name}"
            shutil.rmtree(raw, ignore_errors=True)  # the export refuses a folder that holds files
            cli = [sys.executable, "-m", "facemtl", "prepare"]
            subprocess.run([*cli, "synthetic", "--format", name, "--out", str(raw), "-n", str(int(images * SHARES[name])), "--seed", str(seed), "-w", "1",
                            "--force"], check=True)
            subprocess.run([*cli, name, "--root", str(raw), "--out", str(cache), "--sizes", str(size), "-w", "1", "--force"], check=True)
        out[name] = cache
    return out


def run(name: str, paths: list[Path], tasks: list[str], args, attrs: list[str], mix: str = "proportional") -> dict[str, dict]:
    """Train one configuration; {dataset: {task: test metrics}}."""
    from facemtl.data.mixing import source_names
    from facemtl.engine.config import apply_overrides, load_recipe
    from facemtl.engine.trainer import train

    over = {
        "name": name, "out": str(args.work / "runs" / name), "data.path": str(paths[0]),
        "data.sources": [str(p) for p in paths] if len(paths) > 1 else [], "data.mix": mix, "data.mix_by": args.mix_by,
        "tasks.names": tasks, "tasks.options": {"attributes": {"names": attrs}} if "attributes" in tasks else {},
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.seed": args.seed, "train.device": args.device,
        "model.input_size": args.size, "data.prepare_if_missing": False,
        "weighting.name": args.weighting, "weighting.options": {},
    }
    cfg = apply_overrides(load_recipe("all-in-one"), over)
    t0 = time.perf_counter()
    res = train(cfg, force=True)
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    if len(paths) > 1:
        return res.test_by_dataset
    return {source_names(paths)[0]: res.test_metrics}


def headline(task: str) -> tuple[str, bool]:
    """(metric, lower is better) of a task's report section."""
    from facemtl.tasks.registry import section

    sec = {"landmarks": "landmarks", "attributes": "attributes", "pose": "classes", "expression": "classes"}[task]
    s = section(sec)
    return s.headline, s.headline in s.lower_is_better


def table(single: dict, joint: dict[str, dict]) -> str:
    mixes = list(joint)
    lines = ["| dataset | task | metric | one model per dataset | " + " | ".join(f"3 datasets, `--mix {m}`" for m in mixes) + " |",
             "|---|---|---|---:|" + "---:|" * len(mixes)]
    deltas: dict[str, list[float]] = {m: [] for m in mixes}
    for ds, by_task in single.items():
        for task, metrics in by_task.items():
            metric, lower = headline(task)
            base = metrics[metric]
            cells = []
            for m in mixes:
                v = joint[m].get(ds, {}).get(task, {}).get(metric)
                if v is None:
                    cells.append("-")
                    continue
                rel = (base - v) / base if lower else (v - base) / base
                deltas[m].append(rel)
                cells.append(f"{v:.3f} ({100 * rel:+.1f} %)")
            lines.append(f"| {ds} | {task} | {metric}{' (lower better)' if lower else ''} | {base:.3f} | " + " | ".join(cells) + " |")
    lines.append("| **Δm%** | | | 0 | " + " | ".join(f"**{100 * np.mean(d):+.2f}**" for d in deltas.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/multi_dataset"))
    ap.add_argument("--images", type=int, default=4000, help="images of the CelebA stand-in (MTFL 30 %%, FER2013 50 %% of it)")
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mix", action="append", help="mixes of the three-dataset model (repeatable); default proportional and temperature:2")
    ap.add_argument("--mix-by", default="batch")
    ap.add_argument("--weighting", default="uw", help="loss weighting of every model (the per-dataset ones too)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--write", type=Path, help="markdown page to put the table into")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    caches = prepare(args.work, args.images, args.size)
    from facemtl.data.synth import SYNTH_ATTRIBUTES

    attrs = list(SYNTH_ATTRIBUTES)
    single = {}
    for ds, path in caches.items():
        single.update(run(f"single-{ds}", [path], TASKS[ds], args, attrs if ds == "celeba" else ["Male", "Smiling", "Eyeglasses"]))
    joint = {m: run(f"joint-{m.replace(':', '')}", list(caches.values()), ALL_TASKS, args, attrs, mix=m)
             for m in (args.mix or ["proportional", "temperature:2"])}
    (args.work / "results.json").write_text(json.dumps({"single": single, "joint": joint}, indent=1))
    text = table(single, joint)
    where = (f"{cpu_name()}, {torch.get_num_threads()} threads; {args.images} / {int(args.images * SHARES['mtfl'])} / {int(args.images * SHARES['fer2013'])} images (CelebA / MTFL / FER2013 stand-ins), "
             f"{args.size} px, {args.epochs} epochs, batch {args.batch_size}, `--mix-by {args.mix_by}`, `--weighting {args.weighting}`, seed {args.seed}")
    body = f"### `--weighting {args.weighting}`, three datasets mixed by {args.mix_by}\n\nMeasured by `benchmarks/multi_dataset.py` ({where}); test splits.\n\n{text}"
    print(body)
    if args.write:  # one section per weighting and --mix-by
        key = f"{args.weighting}:{args.mix_by}"
        start, end = f"<!-- multi_dataset:{key}:start -->", f"<!-- multi_dataset:{key}:end -->"
        replace_section(args.write, start, end, body)


if __name__ == "__main__":
    main()
