"""Multi-task architectures side by side: parameters, training-step time and peak memory against ``hps``.

Every architecture is built on the same backbone and tasks (random weights), and one training step
is timed: forward, the five task losses (their sum: equal weights), backward and an AdamW step, on a
fixed random batch. Repeats are **interleaved** (hps, cross-stitch, ..., hps, cross-stitch, ...)
so that a machine whose load drifts (a shared CPU) biases no architecture; the median per
architecture is reported, with its ratio to hps. Peak memory: on CUDA ``max_memory_allocated`` of
one step; on the CPU the growth of the process's peak RSS while stepping that architecture alone
(a rough upper bound: freed memory is not returned to the OS; run it before the others).

    python benchmarks/bench_architectures.py                                   # print the table
    python benchmarks/bench_architectures.py --write docs/benchmarks.md        # and update that section
    python benchmarks/bench_architectures.py --device cuda --size 224 --amp bf16 --batch 64
    python benchmarks/bench_architectures.py --architectures hps,hps:ibn=true,hps:ibn=true+mixstyle=0.5

An entry ``NAME:KEY=VALUE+KEY=VALUE...`` builds architecture NAME with those backbone options on top of
``--width`` (values read as ``--set`` reads them: TOML literals such as ``true`` and ``0.5``, other
text as a string), so an option's cost is measured side by side with the plain ``hps`` in the same
interleaved run.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from _markdown import replace_section  # benchmarks/ is on sys.path when a script runs

START, END = "<!-- bench_architectures:start -->", "<!-- bench_architectures:end -->"
TASKS = ["detection", "landmarks", "attributes", "expression", "pose"]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_entry(entry: str) -> tuple[str, dict]:
    """'hps:ibn=true+mixstyle=0.5' -> ('hps', {'ibn': True, 'mixstyle': 0.5})."""
    from facemtl.utils.options import parse_literal

    name, _, opts = entry.partition(":")
    options = {}
    for item in filter(None, opts.split("+")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--architectures entry {entry!r}: write options as KEY=VALUE, got {item!r}")
        options[key.strip()] = parse_literal(value.strip())
    return name.strip(), options


def build(entry: str, backbone: str, size: int, width: float | None, device: torch.device):
    from facemtl.data.schema import CELEBA_ATTRIBUTES
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    info = DataInfo(attribute_names=tuple(CELEBA_ATTRIBUTES[:6]), num_identities=10,
                    labels=("attributes", "landmarks", "expression", "face", "pose_class", "pose", "bbox"))
    tasks = build_tasks(TASKS, info)
    arch, extra = parse_entry(entry)
    opts = {**({"width": width} if width is not None else {}), **extra}
    torch.manual_seed(0)
    model = build_model(backbone, tasks, input_size=size, architecture=arch, **opts).to(device).train()
    return model


def make_step(model, batch: int, amp: str, device: torch.device):
    size = model.input_spec[0][0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp == "bf16" else (lambda: torch.autocast(device.type, enabled=False))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx():
            out = model(x)
            loss = sum(o.float().pow(2).mean() for o in out.values())  # stands in for the task losses
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(archs: list[str], backbone: str, size: int, width: float | None, batch: int, repeats: int, amp: str,
        device: torch.device) -> list[dict]:
    models, steps, mem = {}, {}, {}
    for a in archs:
        models[a] = build(a, backbone, size, width, device)
        steps[a] = make_step(models[a], batch, amp, device)
        # memory of one step of this architecture (also the warm-up)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            steps[a]()
            mem[a] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            before = peak_rss_mb()
            steps[a]()
            steps[a]()
            mem[a] = max(0.0, peak_rss_mb() - before)
    times: dict[str, list[float]] = {a: [] for a in archs}
    for _ in range(repeats):  # interleaved
        for a in archs:
            t0 = time.perf_counter()
            steps[a]()
            times[a].append(time.perf_counter() - t0)
    rows = []
    for a in archs:
        d = models[a].describe()["parameters"]
        rows.append({"architecture": a, "shared": d["shared"], "deployed": d["deployed"],
                     "step_ms": 1000 * statistics.median(times[a]), "mem_mb": mem[a]})
    base = next(r for r in rows if r["architecture"] == "hps")
    for r in rows:
        r["params_x"] = r["deployed"] / base["deployed"]
        r["step_x"] = r["step_ms"] / base["step_ms"]
    return rows


def table(rows: list[dict], args, device: torch.device, seconds: float) -> str:
    mem_label = "peak GPU memory MiB" if device.type == "cuda" else "peak RSS growth MiB"
    head = (f"Backbone `{args.backbone}`" + (f" (width {args.width:g})" if args.width is not None else "")
            + f", {args.size} px, batch {args.batch}, tasks {', '.join(TASKS)}; {args.repeats} interleaved repeats, "
            f"median step (forward, losses, backward, AdamW){', bf16 autocast' if args.amp == 'bf16' else ''}. "
            f"Machine: {machine(device)}. Measured in {seconds:.0f} s with `python benchmarks/bench_architectures.py"
            f" {' '.join(sys.argv[1:])}`.\n\n")
    lines = [f"| architecture | shared params | deployed params | x hps | step ms | x hps | {mem_label} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['architecture']} | {r['shared']:,} | {r['deployed']:,} | {r['params_x']:.2f} | "
                     f"{r['step_ms']:.1f} | {r['step_x']:.2f} | {r['mem_mb']:.0f} |")
    return head + "\n".join(lines) + "\n"


def write_section(path: Path, text: str, key: str) -> None:
    replace_section(path, START.replace(":start", f":{key}:start"), END.replace(":end", f":{key}:end"), text)


def main(argv: list[str] | None = None) -> int:
    from facemtl.models import ARCHITECTURES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="small")
    ap.add_argument("--width", type=float, default=None, help="backbone width option (small: int)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--amp", default="off", choices=["off", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--architectures", default=",".join(["hps", *[a for a in ARCHITECTURES.names() if a != "hps"]]))
    ap.add_argument("--write", type=Path, help="update this markdown file's section for this device")
    ap.add_argument("--section", default="", help="name of the section --write updates (default: the device type)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); on a shared CPU, "
                    "fewer threads than cores avoids the oversubscription that made steps 10x slower")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.width is not None and args.backbone == "small":
        args.width = int(args.width)
    device = torch.device(args.device)
    archs = [a.strip() for a in args.architectures.split(",")]
    if "hps" not in archs:
        archs.insert(0, "hps")
    t0 = time.perf_counter()
    rows = run(archs, args.backbone, args.size, args.width, args.batch, args.repeats, args.amp, device)
    text = table(rows, args, device, time.perf_counter() - t0)
    print(text)
    if args.write:
        write_section(args.write, text, args.section or device.type)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
