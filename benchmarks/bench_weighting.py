"""Time per training step of every loss-weighting strategy relative to ``ew``, and peak memory;
optionally side by side with LibMTL on the same network, data and gradients.

Two setups:

- ``celeba40``: the FAMO CelebA network (``famo9``, 7 conv + 2 fc of 512, 5.2 M parameters),
  40 single-attribute tasks, 64x64, batch 64 — the setting REFERENCE.md's published ratios use;
- ``face6``: the default ``small`` CNN at 64 px with six face tasks (detection, landmarks,
  attributes, identity, expression, pose), batch 64.

A step is the real engine step: forward, the strategy's backward, optimizer step. Data are random
tensors already in memory, so only the step is timed. Each (library, strategy, mode) runs in its
own process (``--one``) so its peak memory is its own: peak resident memory (``ru_maxrss``) on a
CPU, ``torch.cuda.max_memory_allocated`` on a GPU. ``--mode`` picks the gradient space of the
gradient-based strategies: ``rep`` (shared representation, facemtl's default), ``params`` (shared
parameters, the papers' setting) or ``both``.

``--libmtl PATH`` (a LibMTL checkout, e.g. ``git clone https://github.com/median-research-group/LibMTL``)
adds LibMTL's implementation of each strategy it has, in params mode (LibMTL's representation
mode needs its own architecture wrapper), driven the way LibMTL's trainer drives it; the facemtl
and LibMTL processes of each strategy run one after the other (interleaved), so the machine's
load hits both alike. LibMTL is imported from PATH, never copied; its Nash-MTL needs ``cvxpy``
with ECOS (``PYTHONPATH`` may point to a folder holding it).

    python benchmarks/bench_weighting.py --setups celeba40 face6 --steps 8
    python benchmarks/bench_weighting.py --setups celeba40 --mode params --only ew,pcgrad,mgda \
        --batch 16 --steps 2 --libmtl /tmp/libmtl
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types

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


#: LibMTL module/class of each facemtl strategy it implements, with the options matching facemtl's defaults
LIBMTL = {
    "ew": ("EW", {}), "pcgrad": ("PCGrad", {}), "mgda": ("MGDA", {"mgda_gn": "none"}),
    "cagrad": ("CAGrad", {"calpha": 0.4, "rescale": 1}), "imtl": ("IMTL", {}), "aligned": ("Aligned_MTL", {}),
    "nash": ("Nash_MTL", {"update_weights_every": 1, "optim_niter": 20, "max_norm": 0.0}),
    "dbmtl": ("DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.5}), "gradnorm": ("GradNorm", {"alpha": 1.5}),
}


def load_libmtl(path: str, module: str):
    """LibMTL's class ``module`` from the checkout at ``path``, without running
    ``LibMTL/weighting/__init__.py`` (it imports every method's optional solver)."""
    for pkg, sub in (("LibMTL", "LibMTL"), ("LibMTL.weighting", "LibMTL/weighting")):
        if pkg not in sys.modules:
            mod = types.ModuleType(pkg)
            mod.__path__ = [os.path.join(path, sub)]
            sys.modules[pkg] = mod
    return getattr(importlib.import_module(f"LibMTL.weighting.{module}"), module)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(setup: str, name: str, mode: str | None, steps: int, batch: int, device: str = "cpu",
            lib: str = "facemtl", libmtl: str | None = None) -> dict:
    from facemtl.data.schema import CELEBA_ATTRIBUTES
    from facemtl.data.synth import SYNTH_ATTRIBUTES
    from facemtl.engine.steps import task_losses
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks
    from facemtl.weighting import build_weighting
    from facemtl.weighting.base import StepContext

    torch.manual_seed(0)
    dev = torch.device(device)
    s = SETUPS[setup]
    attrs = CELEBA_ATTRIBUTES if setup == "celeba40" else SYNTH_ATTRIBUTES
    info = DataInfo(tuple(attrs), 100, ("attributes", "landmarks", "bbox", "face", "identity", "expression", "pose", "pose_class"))
    tasks = build_tasks(s["tasks"], info)
    names = [t.name for t in tasks]
    model = build_model(s["backbone"], tasks, input_size=64).to(dev)
    shared = model.shared_parameters()
    b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in _batch(batch, len(attrs), 100).items()}
    x = torch.rand(batch, 3, 64, 64, device=dev)
    if lib == "libmtl":
        cls_name, kwargs = LIBMTL[name]
        w = load_libmtl(libmtl, cls_name)()
        w.task_num, w.device, w.rep_grad, w.epoch = len(names), dev, False, 0
        w.get_share_params = lambda: iter(shared)
        w.zero_grad_share_params = lambda: [p.grad.zero_() for p in shared if p.grad is not None]
        w.init_param()
        w.to(dev)
        grad_mode = "params" if name != "ew" else "none"
        opt = torch.optim.AdamW(list(model.parameters()) + list(w.parameters()), lr=1e-4)
    else:
        opts = {"main": names[0]} if name == "tcdcn" else {}
        strategy = build_weighting(name, names, **opts).to(dev)
        grad_mode = strategy.grad_mode(mode)
        opt = torch.optim.AdamW(list(model.parameters()) + strategy.extra_parameters(), lr=1e-4)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if lib == "libmtl":
            feats = model.forward_features(x)
            losses = task_losses(tasks, model.forward_heads(feats), b, model.criteria)
            w.backward(torch.stack([losses[n] for n in names]), **kwargs)
        else:
            feats = model.forward_features(x)
            ctx = StepContext.build(feats, shared, grad_mode, step=i)
            losses = task_losses(tasks, model.forward_heads(ctx.head_inputs), b, model.criteria)
            strategy.backward(losses, ctx)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= 1:  # one warm-up step
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"setup": setup, "lib": lib, "strategy": name, "mode": grad_mode, "step_s": times[len(times) // 2],
            "peak_mb": _peak_mb(dev)}


def _jobs(mode: str, only: list[str] | None) -> list[tuple[str, str]]:
    from facemtl.weighting import WEIGHTINGS, build_weighting

    jobs = [("ew", "default")]
    for name in WEIGHTINGS.names():
        if name == "ew" or (only and name not in only):
            continue
        w = build_weighting(name, ["a", "b"], **({"main": "a"} if name == "tcdcn" else {}))
        if w.needs == "losses":
            jobs.append((name, "default"))
            continue
        for m in ("rep", "params"):
            if mode in (m, "both") and m not in w.refused_modes:
                jobs.append((name, m))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", nargs="+", default=list(SETUPS))
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run (after one warm-up step); the median is shown")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--mode", choices=("rep", "params", "both"), default="both",
                    help="gradient space of the gradient-based strategies")
    ap.add_argument("--only", help="comma-separated strategies (ew is always run: it is the reference)")
    ap.add_argument("--libmtl", help="path to a LibMTL checkout: adds LibMTL's implementation, params mode")
    ap.add_argument("--one", nargs=4, metavar=("LIB", "SETUP", "STRATEGY", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        lib, setup, name, mode = args.one
        print(json.dumps(run_one(setup, name, None if mode == "default" else mode, args.steps, args.batch,
                                 args.device, lib, args.libmtl)))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA device here; use --device cpu")
    if args.libmtl and not os.path.isdir(os.path.join(args.libmtl, "LibMTL", "weighting")):
        sys.exit(f"--libmtl {args.libmtl}: not a LibMTL checkout (no LibMTL/weighting folder); clone "
                 "https://github.com/median-research-group/LibMTL or leave the option out")
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    jobs = _jobs(args.mode, only)
    mem = "peak GPU memory allocated" if args.device.startswith("cuda") else "peak resident memory of the process"
    print(f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads, device {args.device}; batch {args.batch}, median of "
          f"{args.steps} steps after 1 warm-up step; load average {os.getloadavg()[0]:.1f}; memory: {mem}\n")

    def one(lib: str, setup: str, name: str, mode: str) -> dict:
        cmd = [sys.executable, __file__, "--one", lib, setup, name, mode, "--steps", str(args.steps), "--batch",
               str(args.batch), "--threads", str(args.threads), "--device", args.device]
        if args.libmtl:
            cmd += ["--libmtl", args.libmtl]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            lines = r.stderr.strip().splitlines() or ["failed"]
            row = {"lib": lib, "strategy": name, "mode": mode, "error": lines[-1][:160]}
        else:
            row = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {setup} {lib} {name} {mode}: {row.get('step_s', row.get('error'))}", file=sys.stderr)
        return row

    for setup in args.setups:
        rows, lib_rows = [], {}
        for name, mode in jobs:  # interleaved: each strategy's LibMTL run right after facemtl's
            rows.append(one("facemtl", setup, name, mode))
            wanted = args.libmtl and name in LIBMTL and mode in ("params", "default") and (name, mode) not in lib_rows
            if wanted and (name == "ew" or mode == "params"):
                lib_rows[name] = one("libmtl", setup, name, "params" if name != "ew" else "default")
        ew = next(r for r in rows if r["strategy"] == "ew")
        lew = lib_rows.get("ew", {})
        print(f"### {setup} ({SETUPS[setup]['backbone']}, {'40 attribute tasks' if setup == 'celeba40' else '6 face tasks'}); "
              f"facemtl ew step {ew['step_s'] * 1000:.0f} ms" + (f", LibMTL ew step {lew['step_s'] * 1000:.0f} ms" if "step_s" in lew else "") + "\n")
        head = "| strategy | gradients on | step (s) | step / ew | peak memory (MB) |"
        if args.libmtl:
            head += " LibMTL step (s) | LibMTL step / its ew | LibMTL peak memory (MB) | time facemtl / LibMTL | memory facemtl / LibMTL |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            where = {"none": "- (losses only)", "rep": "representation", "params": "shared parameters"}.get(r["mode"], r["mode"])
            if "error" in r:
                print(f"| {r['strategy']} | {where} | {r['error']} |" + " |" * (head.count("|") - 4))
                continue
            line = f"| {r['strategy']} | {where} | {r['step_s']:.2f} | {r['step_s'] / ew['step_s']:.2f} | {r['peak_mb']:.0f} |"
            if args.libmtl:
                lr = lib_rows.get(r["strategy"]) if r["mode"] in ("params", "none") else None
                if lr and "step_s" in lr:
                    line += (f" {lr['step_s']:.2f} | {lr['step_s'] / lew['step_s']:.2f} | {lr['peak_mb']:.0f} |"
                             f" {r['step_s'] / lr['step_s']:.2f} | {r['peak_mb'] / lr['peak_mb']:.2f} |")
                elif lr:
                    line += f" {lr['error']} | | | | |"
                else:
                    line += " - | | | | |"
            print(line)
        print()


if __name__ == "__main__":
    main()
