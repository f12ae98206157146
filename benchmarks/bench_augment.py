"""What batch augmentation costs per batch, preset by preset and for each of its random changes alone.

One batch of uint8-range floats (64 x 3 x 64 x 64 by default, a quarter of them non-faces, labels
for every task) through :class:`facemtl.data.augment.BatchAugment`, every setting timed in turn,
interleaved over ``--repeats`` rounds (median shown), so the machine's drift hits them alike. The
ratio column is the time over the ``standard`` preset's in the same run.

    python benchmarks/bench_augment.py --batches 20 --repeats 5 [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from facemtl.data.augment import AugmentConfig, BatchAugment
from facemtl.data.schema import CELEBA_ATTRIBUTES

#: each change alone at this strength: probability 1, or the largest range of any preset and more
ALONE = {"flip": 1.0, "rotate": 20.0, "brightness": 0.4, "hue": 1.0, "grey": 1.0, "blur": 1.0, "lowres": 1.0,
         "texture": 1.0, "randconv": 1.0, "noise": 0.4, "erase": 1.0}


def settings() -> dict[str, AugmentConfig]:
    out = {f"preset {p}": AugmentConfig(preset=p) for p in ("light", "standard", "strong")}
    out["standard + lowres 0.2 + texture 0.3"] = AugmentConfig(preset="standard", lowres=0.2, texture=0.3)
    out["standard + randconv 0.25"] = AugmentConfig(preset="standard", randconv=0.25)
    out["standard + randconv 0.5, kernels <= 3"] = AugmentConfig(preset="standard", randconv=0.5, randconv_kernel=3)
    for name, value in ALONE.items():
        out[f"{name} alone"] = AugmentConfig(**{name: value})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    n, s = args.batch_size, args.size
    g = torch.Generator().manual_seed(0)
    x = [torch.rand(n, 3, s, s, generator=g).to(dev)]
    face = torch.ones(n, dtype=torch.int8)
    face[::4] = 0
    batch = {"landmarks": torch.rand(n, 5, 2, generator=g).to(dev), "bbox": torch.rand(n, 4, generator=g).to(dev),
             "pose": torch.zeros(n, 3, device=dev), "attributes": torch.ones(n, 40, dtype=torch.int8, device=dev),
             "face": face.to(dev)}
    augs = {k: BatchAugment(c, attribute_names=CELEBA_ATTRIBUTES) for k, c in settings().items()}
    times: dict[str, list[float]] = {k: [] for k in augs}
    for a in augs.values():  # warm-up
        a(x, batch, epoch=0, batch_index=0)
    for _ in range(args.repeats):
        for k, a in augs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(args.batches):
                a(x, batch, epoch=1, batch_index=i)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[k].append((time.perf_counter() - t) / args.batches * 1000)
    ref = statistics.median(times["preset standard"])
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.platform()}, {torch.get_num_threads()} torch threads"
    print(f"Machine: {dev_name}, torch {torch.__version__}; batch {n} x 3 x {s} x {s}, "
          f"{args.batches} batches x {args.repeats} interleaved repeats (median)\n")
    print("| setting | ms per batch | vs standard |\n|---|---:|---:|")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"| {k} | {m:.1f} | {m / ref:.2f} |")


if __name__ == "__main__":
    main()
