"""Time per training step of every loss-weighting strategy relative to ``ew``, and peak memory.

Two setups, each strategy side by side in one run:

- ``celeba40``: the FAMO CelebA network (``famo9``, 7 conv + 2 fc of 512, 5.2 M parameters),
  40 single-attribute tasks, 64x64, batch 64 — the setting REFERENCE.md's published ratios use;
- ``face6``: the default ``small`` CNN at 64 px with six face tasks (detection, landmarks,
  attributes, identity, expression, pose), batch 64.

A step is the real engine step: forward, the strategy's backward (per-task gradients on the shared
representation by default), optimizer step. Data are random tensors already in memory, so only
the step is timed. Each strategy runs in its own process (``--one``) so its peak resident memory
(``ru_maxrss``) is its own; the table gives it as the increase over a process that only built the
model and ran ``ew``. Gradient strategies are also timed in ``params`` mode (per-task gradients on
the shared parameters, one backward per task) where they support it.

    python benchmarks/bench_weighting.py --setups celeba40 face6 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

SETUPS = {
    "celeba40": {"backbone": "famo9", "tasks": ["attr:*"]},
    "face6": {"backbone": "small", "tasks": ["detection", "landmarks", "attributes", "identity", "expression", "pose"]},
}


def _batch(B: int, attrs: int, ids: int) -> dict:
    g = torch.Generator().manual_seed(0)
    box = torch.rand(B, 4, generator=g) * 0.3 + 0.3
    return {
        "attributes": torch.randint(0, 2, (B, attrs), generator=g, dtype=torch.int8),
        "landmarks": torch.rand(B, 5, 2, generator=g) * 0.5 + 0.25,
        "bbox": box, "face": torch.ones(B, dtype=torch.int8),
        "identity": torch.randint(0, ids, (B,), generator=g), "expression": torch.randint(0, 7, (B,), generator=g, dtype=torch.int8),
        "pose": torch.randn(B, 3, generator=g) * 20, "pose_class": torch.randint(0, 5, (B,), generator=g, dtype=torch.int8),
        "present": {k: B for k in ("attributes", "landmarks", "bbox", "face", "identity", "expression", "pose", "pose_class")},
    }


def run_one(setup: str, name: str, mode: str | None, steps: int, batch: int) -> dict:
    from facemtl.data.synth import SYNTH_ATTRIBUTES
    from facemtl.data.schema import CELEBA_ATTRIBUTES
    from facemtl.engine.steps import task_losses
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks
    from facemtl.weighting import build_weighting
    from facemtl.weighting.base import StepContext

    torch.manual_seed(0)
    s = SETUPS[setup]
    attrs = CELEBA_ATTRIBUTES if setup == "celeba40" else SYNTH_ATTRIBUTES
    info = DataInfo(tuple(attrs), 100, ("attributes", "landmarks", "bbox", "face", "identity", "expression", "pose", "pose_class"))
    tasks = build_tasks(s["tasks"], info)
    names = [t.name for t in tasks]
    model = build_model(s["backbone"], tasks, input_size=64)
    opts = {"main": names[0]} if name == "tcdcn" else {}
    strategy = build_weighting(name, names, **opts)
    grad_mode = strategy.grad_mode(mode)
    params = list(model.parameters()) + strategy.extra_parameters()
    opt = torch.optim.AdamW(params, lr=1e-4)
    shared = model.shared_parameters()
    b = _batch(batch, len(attrs), 100)
    x = torch.rand(batch, 3, 64, 64)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        feats = model.forward_features(x)
        ctx = StepContext.build(feats, shared, grad_mode, step=i)
        out = model.forward_heads(ctx.head_inputs)
        losses = task_losses(tasks, out, b, model.criteria)
        strategy.backward(losses, ctx)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"setup": setup, "strategy": name, "mode": grad_mode, "step_s": times[len(times) // 2],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", nargs="+", default=list(SETUPS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params-setups", nargs="*", default=["face6"],
                    help="setups where gradient strategies are also timed on the shared parameters (40 backwards per step on celeba40 take minutes)")
    ap.add_argument("--one", nargs=3, metavar=("SETUP", "STRATEGY", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        setup, name, mode = args.one
        print(json.dumps(run_one(setup, name, None if mode == "default" else mode, args.steps, args.batch)))
        return

    from facemtl.weighting import WEIGHTINGS, build_weighting

    jobs = [("ew", "default")]
    for name in WEIGHTINGS.names():
        w = build_weighting(name, ["a", "b"], **({"main": "a"} if name == "tcdcn" else {}))
        if w.grad_mode(None) == "params":  # dbmtl: only defined on the shared parameters
            jobs.append((name, "params"))
            continue
        if name != "ew":
            jobs.append((name, "default"))
        if w.needs != "losses":
            jobs.append((name, "params"))
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads; "
          f"batch {args.batch}, median of {args.steps} steps after 2 warm-up steps; load average {os.getloadavg()[0]:.1f}\n")
    for setup in args.setups:
        rows = []
        for name, mode in jobs:
            if mode == "params" and setup not in args.params_setups:
                rows.append({"strategy": name, "mode": mode, "error": "not timed here (per-task backwards on the shared parameters: minutes per step)"})
                continue
            cmd = [sys.executable, __file__, "--one", setup, name, mode, "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                rows.append({"strategy": name, "mode": mode, "error": r.stderr.strip().splitlines()[-1][:120]})
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  {setup} {name} {mode}: {rows[-1].get('step_s', rows[-1].get('error'))}", file=sys.stderr)
        ew = next(r for r in rows if r["strategy"] == "ew")
        print(f"### {setup} ({SETUPS[setup]['backbone']}, {'40 attribute tasks' if setup == 'celeba40' else '6 face tasks'}); ew step {ew['step_s'] * 1000:.0f} ms\n")
        print("| strategy | gradients on | step time / ew | peak memory over ew (MB) |")
        print("|---|---|---|---|")
        for r in rows:
            if "error" in r:
                print(f"| {r['strategy']} | {r['mode']} | {r['error']} | |")
                continue
            where = {"none": "- (losses only)", "rep": "representation", "params": "shared parameters"}[r["mode"]]
            print(f"| {r['strategy']} | {where} | {r['step_s'] / ew['step_s']:.2f} | {r['peak_mb'] - ew['peak_mb']:+.0f} |")
        print()


if __name__ == "__main__":
    main()
