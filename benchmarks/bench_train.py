"""Training throughput of the quick recipe (the default before stop 40: no IBN, MixStyle or random convolutions), and how much of a step is spent waiting for data.

Side by side in one run, the same model, batches of 64 and step code:

- ``facemtl train`` (the engine) reading the cache in memory (the default for a cache this size),
  with each augmentation preset (none, light, standard, strong: their cost);
- the engine reading the cache in streaming mode (chunk windows, as for caches larger than RAM);
- a loop over the same number of batches that were materialised as tensors beforehand: the
  upper bound if data cost nothing.

The engine reports its images/s and the fraction of wall time spent in ``next(loader)``.

    python benchmarks/bench_train.py --num-images 4000 --steps 60 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from facemtl.data.synthetic import prepare_synthetic
from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import train


def tensor_loop(cfg, steps: int, device: torch.device) -> float:
    """The engine's step on pre-built batches already on ``device``: images/s with zero data cost. The
    step takes the engine's autocast and memory format for ``cfg`` on ``device`` (on CUDA by default:
    bf16, channels-last)."""
    from facemtl.data.cache import FaceCache
    from facemtl.data.loader import CacheLoader, to_device
    from facemtl.engine.steps import autocast_for, input_plan, make_inputs, task_losses
    from facemtl.engine.trainer import resolve_channels_last
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks
    from facemtl.weighting import build_weighting
    from facemtl.weighting.base import StepContext

    cache = FaceCache(cfg.data.path)
    info = DataInfo.from_cache(cache)
    tasks = build_tasks(list(cfg.tasks.names), info)
    channels_last = resolve_channels_last(cfg.train.channels_last, device)
    autocast, _ = autocast_for(device, cfg.train.amp)
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    strategy = build_weighting(cfg.weighting.name, [t.name for t in tasks]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    plan = input_plan(model, cache)
    loader = CacheLoader(cache, "train", sorted({s for s, _ in plan}), cfg.train.batch_size, in_memory=True)
    batches = []
    for b in loader:
        batches.append(to_device(b, device))
        if len(batches) == steps:
            break
    shared = model.shared_parameters()
    t0 = time.perf_counter()
    n = 0
    for i, b in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        with autocast():
            feats = model.forward_features(*make_inputs(b, plan, channels_last))
            ctx = StepContext.build(feats, shared, strategy.grad_mode(None), step=i)
            losses = task_losses(tasks, model.forward_heads(ctx.head_inputs), b, model.criteria)
        torch.stack([v.detach() for v in losses.values()]).tolist()
        strategy.backward(losses, ctx)
        opt.step()
        n += len(b["index"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def small_cache(directory: Path, num_images: int) -> Path:
    """A SynthFaces cache of ``num_images`` crops at 64 px (100 people, no scenes) in
    ``directory``, rendered on first use; the quick recipe reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    cache = directory / f"synth{num_images}.h5"
    if not cache.exists():
        prepare_synthetic(cache, num_images=num_images, identities=100, num_scenes=0, sizes=(64,))
    return cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (on CUDA the engine's defaults: bf16 autocast, channels-last)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facemtl-bench-train")
    args = ap.parse_args()
    cache = small_cache(args.dir, args.num_images)
    base = load_recipe("quick")
    rows = []
    runs = (("engine, cache in memory, augment none", "true", "none"), ("engine, cache in memory, augment light", "true", "light"),
            ("engine, cache in memory, augment standard", "true", "standard"),
            ("engine, cache in memory, augment strong", "true", "strong"), ("engine, streaming chunks, augment none", "false", "none"))
    # interleaved repeats (A B C ... A B C ...), median per configuration: a shared machine's load
    # drifts, and interleaving spreads the drift over every configuration alike
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for label, in_memory, augment in runs:
            cfg = apply_overrides(base, {"data.path": str(cache), "data.in_memory": in_memory, "out": str(args.dir / "run"),
                                         "train.epochs": 1, "train.max_steps_per_epoch": args.steps, "train.val_batches": 1,
                                         "train.device": args.device, "augment.preset": augment})
            res = train(cfg, force=True)
            results.setdefault(label, []).append((res.images_per_second, res.data_wait_fraction))
        results.setdefault("pre-built tensors (no data cost)", []).append((tensor_loop(cfg, args.steps, torch.device(args.device)), 0.0))
    for label, vals in results.items():
        ips = sorted(v[0] for v in vals)[len(vals) // 2]
        wait = sorted(v[1] for v in vals)[len(vals) // 2]
        rows.append((label, ips, wait))
    gpu = f"; {torch.cuda.get_device_name(torch.device(args.device))}" if args.device.startswith("cuda") else ""
    print(f"\nMachine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"quick recipe ({base.model.backbone} at {base.model.input_size} px, tasks {', '.join(base.tasks.names)}), "
          f"batch {base.train.batch_size}, {args.steps} steps, median of {args.repeats} interleaved repeats\n")
    print("| data path | images/s | share of step time waiting for data | images/s vs tensors |")
    print("|---|---|---|---|")
    for label, ips, wait in rows:
        print(f"| {label} | {ips:,.0f} | {wait:.1%} | {ips / rows[-1][1]:.2f} |")


if __name__ == "__main__":
    main()
