"""Inference speed on a CPU: single-face latency on one core and throughput at batch 64.

Networks (random weights: speed does not depend on them): the default recipe's model (``small``
with IBN, 64 px, detection + landmarks + attributes + expression + pose), the same without IBN
(the ``quick`` recipe's), TCDCN's network (40 px grey, 5
tasks) and MCFA's sub-networks (width 0.25: S_Net 56 px, L_Net 224 px, fed the previous stage's
feature). Each is exported to ONNX (``--dynamic-batch``) and run by ONNX Runtime with
``intra_op_num_threads=1``, and by PyTorch eager with ``torch.set_num_threads(1)``.

Latency: median of timed single-image calls after a warm-up. Throughput: batch-64 calls on the
same single core, in faces per second. TCDCN's paper reports 17 ms per face on a CPU.

    python benchmarks/bench_inference.py                       # print the markdown table
    python benchmarks/bench_inference.py --write docs/benchmarks.md   # and update that section
"""

from __future__ import annotations

import argparse
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

START, END = "<!-- bench_inference:start -->", "<!-- bench_inference:end -->"


def build(name: str):
    """(label, module, example inputs) for one benchmarked network."""
    from facemtl.data.schema import CELEBA_ATTRIBUTES
    from facemtl.engine.config import load_recipe
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    info = DataInfo(tuple(CELEBA_ATTRIBUTES), 100, ("attributes", "landmarks", "expression", "face", "pose_class", "identity"))
    cfg = load_recipe({"default": "default", "quick": "quick", "tcdcn": "tcdcn"}.get(name, "mcfa"))
    tasks = build_tasks(list(cfg.tasks.names), info, cfg.tasks.options)
    torch.manual_seed(0)
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, **cfg.model.options).eval()
    if name in ("default", "quick", "tcdcn"):
        size = model.input_spec[0][0]
        return model, [("image", (3, size, size))]
    i = {"mcfa_s": 0, "mcfa_l": 2}[name]
    stage = model.stage(i).eval()
    inputs = [("image", (3, model.input_spec[i][0], model.input_spec[i][0]))]
    if i:
        inputs.append(("prev_feature", (model.feature_dims[i - 1],)))
    return stage, inputs


def timed(fn, n_min: int, budget_s: float) -> float:
    """Median seconds per call of ``fn`` (at least ``n_min`` calls or ``budget_s`` seconds)."""
    for _ in range(3):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < n_min or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 2000:
            break
    return statistics.median(times)


def bench(name: str, label: str, folder: Path, budget: float) -> dict[str, float | str]:
    import onnxruntime as ort

    from facemtl.export.exporter import _tuple_module
    from facemtl.export.onnx import export_onnx, session_options

    module, inputs = build(name)
    names = [n for n, _ in inputs]
    rng = np.random.default_rng(0)

    def feeds(b: int) -> dict[str, np.ndarray]:
        return {n: rng.random((b, *shape), dtype=np.float32) for n, shape in inputs}

    with torch.no_grad():
        out_names = list(module(*[torch.from_numpy(v) for v in feeds(2).values()]).keys())
    path = folder / f"{name}.onnx"
    export_onnx(_tuple_module(module, out_names), [torch.from_numpy(v) for v in feeds(2).values()], path,
                input_names=names, output_names=out_names, dynamic_batch=True)
    sess = ort.InferenceSession(str(path), session_options(threads=1), providers=["CPUExecutionProvider"])
    f1, f64 = feeds(1), feeds(64)
    t1, t64 = {k: torch.from_numpy(v) for k, v in f1.items()}, {k: torch.from_numpy(v) for k, v in f64.items()}
    params = sum(p.numel() for n, p in module.named_parameters() if not n.startswith("criteria."))

    def eager(t):
        with torch.inference_mode():
            module(*t.values())

    return {
        "network": label, "params": f"{params / 1e6:.2f} M",
        "ort_ms": 1e3 * timed(lambda: sess.run(None, f1), 20, budget),
        "torch_ms": 1e3 * timed(lambda: eager(t1), 20, budget),
        "ort_fps": 64 / timed(lambda: sess.run(None, f64), 3, budget),
        "torch_fps": 64 / timed(lambda: eager(t64), 3, budget),
    }


def table(rows: list[dict], seconds: float) -> str:
    import onnxruntime as ort

    head = (
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs (one used); Python {platform.python_version()}, "
        f"PyTorch {torch.__version__}, ONNX Runtime {ort.__version__}; measured in {seconds:.0f} s by "
        "`python benchmarks/bench_inference.py`.\n\n"
        "| network | parameters | latency, 1 face, ORT (ms) | latency, 1 face, PyTorch eager (ms) "
        "| batch 64, ORT (faces/s) | batch 64, PyTorch eager (faces/s) |\n|---|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['network']} | {r['params']} | {r['ort_ms']:.2f} | {r['torch_ms']:.2f} | {r['ort_fps']:.0f} | {r['torch_fps']:.0f} |\n"
        for r in rows
    )
    return head + body


def write_section(path: Path, text: str) -> None:
    replace_section(path, START, END, text, new_page="# Benchmarks\n\n", new_heading="## Inference on a CPU\n\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per measurement (default 2)")
    ap.add_argument("--write", type=Path, help="update the inference section of this markdown file")
    ap.add_argument("--only", nargs="*", default=None, help="default, quick, tcdcn, mcfa_s, mcfa_l")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    nets = {"default": "default (`small` with IBN, 64 px, 5 tasks)", "quick": "quick (`small`, 64 px, 5 tasks)",
            "tcdcn": "TCDCN (40 px grey, 5 tasks)",
            "mcfa_s": "MCFA S_Net (56 px, width 0.25)", "mcfa_l": "MCFA L_Net (224 px, width 0.25)"}
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, label in nets.items():
            if args.only and name not in args.only:
                continue
            rows.append(bench(name, label, Path(tmp), args.budget))
            print(f"measured {label}", file=sys.stderr)
    text = table(rows, time.perf_counter() - start)
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
