"""What mining hard non-faces (``[mine]``) costs: a round's time against a training epoch's.

Side by side in one run, the quick recipe (the default before stop 40) on the same SynthFaces cache, interleaved
``--repeats`` times (median shown):

- ``facemtl train`` for two epochs of ``--steps`` steps without mining (the run a user would
  otherwise make);
- the same with a mining round of ``--scenes`` fresh scenes before the second epoch and
  ``mine.per_batch`` (8) mined windows appended to every batch of the second epoch.

It reports the round's own time (the engine's record), the time per scene, the round in epochs of
the quick recipe's cache (6,400 training images at the engine's measured images/s), and the
step time of the second epoch with the appended windows against the run without them. The model
is two short epochs old, so it keeps more windows than a trained one; the scan itself (rendering
and scoring every window) does not depend on that.

    python benchmarks/bench_mining.py --scenes 40 --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_train import small_cache  # benchmarks/ is on sys.path when a script runs

from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import Callbacks, train

#: training images per epoch of the quick recipe's cache (8,000 images, 80 % train)
DEFAULT_TRAIN_IMAGES = 6400


class _Timer(Callbacks):
    """When each step of each epoch ended, and the mining rounds' records."""

    def __init__(self) -> None:
        self.rounds: list[dict] = []
        self.steps: dict[int, list[float]] = {}

    def on_step(self, *, epoch, step, losses, weights) -> None:
        self.steps.setdefault(epoch, []).append(time.perf_counter())

    def on_mine(self, *, epoch, record) -> None:
        self.rounds.append(record)

    def step_ms(self, epoch: int) -> float:
        """Mean time between the epoch's step ends (the round before it and validation excluded)."""
        t = self.steps[epoch]
        return (t[-1] - t[0]) / (len(t) - 1) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=2000)
    ap.add_argument("--scenes", type=int, default=40, help="scenes scanned in the round (the engine's default is 160)")
    ap.add_argument("--steps", type=int, default=30, help="steps per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facemtl-bench-mining")
    args = ap.parse_args()
    cache = small_cache(args.dir, args.num_images)
    base = load_recipe("quick")
    common = {"data.path": str(cache), "out": str(args.dir / "run"), "train.epochs": 2, "train.max_steps_per_epoch": args.steps,
              "train.val_batches": 1, "train.device": args.device}
    mining = {"mine.every": 1, "mine.start": 1, "mine.scenes": args.scenes}
    runs = {"no mining": common, f"one round of {args.scenes} scenes, 8 windows per batch": {**common, **mining}}
    step_ms: dict[str, list[float]] = {k: [] for k in runs}
    round_s: list[float] = []
    kept: list[int] = []
    ips: list[float] = []
    for _ in range(args.repeats):
        for label, over in runs.items():
            timer = _Timer()
            res = train(apply_overrides(base, over), force=True, callbacks=timer)
            # the second epoch: its steps carry the mined windows (the round itself runs before it starts)
            step_ms[label].append(timer.step_ms(max(timer.steps)))
            if timer.rounds:
                round_s.append(timer.rounds[0]["seconds"])
                kept.append(timer.rounds[0]["kept"])
            else:
                ips.append(res.images_per_second)
    gpu = f"; {torch.cuda.get_device_name(torch.device(args.device))}" if args.device.startswith("cuda") else ""
    print(f"\nMachine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"quick recipe ({base.model.backbone} at {base.model.input_size} px), batch {base.train.batch_size}, "
          f"{args.steps} steps per epoch, median of {args.repeats} interleaved repeats\n")
    r, per_image = statistics.median(round_s), 1.0 / statistics.median(ips)
    epoch = DEFAULT_TRAIN_IMAGES * per_image
    ref = statistics.median(step_ms["no mining"])
    print("| measure | value |\n|---|---:|")
    print(f"| mining round, {args.scenes} scenes (windows kept: median {statistics.median(kept):.0f}) | {r:.1f} s |")
    print(f"| per scene | {r / args.scenes * 1000:.0f} ms |")
    print(f"| a training epoch of the default cache ({DEFAULT_TRAIN_IMAGES:,} images) at the measured images/s | {epoch:.1f} s |")
    print(f"| a round of 160 scenes (the default), in such epochs | {r / args.scenes * 160 / epoch:.2f} |")
    for label, v in step_ms.items():
        print(f"| step time, {label} | {statistics.median(v):.0f} ms ({statistics.median(v) / ref:.2f}x) |")


if __name__ == "__main__":
    main()
