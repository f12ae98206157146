"""A shuffled epoch through the facemtl loader vs the JPEG-folder baseline users have today.

Side by side in one run, on the same SynthFaces images:

- **baseline**: the images as JPEG files (224x224, quality 95, like a folder of face crops),
  read by a torchvision-style ``Dataset`` (PIL open + decode, ``Resize(112)``, ``ToTensor``) in a
  ``DataLoader`` with shuffling;
- **facemtl streaming**: ``CacheLoader`` reading whole HDF5 chunks, shuffled chunk order and
  shuffling within 8-chunk windows (for caches larger than RAM);
- **facemtl in-memory**: ``CacheLoader`` with the split read once, then shuffled in RAM (the
  default when the split fits under 4 GiB); the one-off load is included in its epoch time;
- **contiguous read**: a plain sequential read of the same cache one HDF5 chunk at a time, cut
  into the same batches, no shuffling: what reading the file in order costs, for reference.

Every variant yields float tensors (B, 3, 112, 112) in [0, 1] (facemtl's uint8 batches are
converted on the CPU here, as the training step would do on the device), batch 64, same worker
counts. Prints a markdown table; quote ratios, not absolute numbers (shared, noisy machines).

    python benchmarks/bench_loader.py --num-images 8000 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from facemtl.data.cache import FaceCache
from facemtl.data.loader import CacheLoader, images_to_float
from facemtl.data.synthetic import prepare_synthetic


class JpegFolder(Dataset):
    """What users write today: one JPEG per sample, decoded and resized per access."""

    def __init__(self, files: list[Path], size: int):
        from torchvision import transforms

        self.files = files
        self.tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB")), i


def write_jpegs(cache: FaceCache, folder: Path, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, cache.num_samples, 512):
        block = cache.read_images(size, start, min(start + 512, cache.num_samples))
        for j, img in enumerate(block):
            p = folder / f"{start + j:06d}.jpg"
            if not p.exists():
                Image.fromarray(img).save(p, quality=95)
            files.append(p)
    return files


def epoch_rate(batches) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x in batches:
        n += x.shape[0]
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=8000)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facemtl-bench-loader")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.dir.mkdir(parents=True, exist_ok=True)
    cache_path = args.dir / f"synth{args.num_images}.h5"
    if not cache_path.exists():
        prepare_synthetic(cache_path, num_images=args.num_images, identities=200, sizes=(args.size, 224), num_scenes=0)
    cache = FaceCache(cache_path)
    files = write_jpegs(cache, args.dir / f"jpeg{args.num_images}", 224)
    B, S = args.batch_size, args.size

    rows = []
    for w in args.workers:
        base = DataLoader(JpegFolder(files, S), batch_size=B, shuffle=True, num_workers=w)
        r_base, n = epoch_rate(x for x, _ in base)

        def facemtl_batches(loader: CacheLoader, epoch: int):
            loader.set_epoch(epoch)
            for b in loader:
                yield images_to_float(b["images"][S])

        r_stream, _ = epoch_rate(facemtl_batches(CacheLoader(cache, None, [S], B, in_memory=False, num_workers=w, seed=1), 0))
        mem = CacheLoader(cache, None, [S], B, in_memory=True, seed=1)
        r_mem_first, _ = epoch_rate(facemtl_batches(mem, 0))  # includes reading the split into RAM
        r_mem, _ = epoch_rate(facemtl_batches(mem, 1))        # every later epoch
        rows.append((w, n, r_base, r_stream, r_mem_first, r_mem))

    def contiguous():
        for a in range(0, cache.num_samples, cache.chunk_rows):
            block = torch.from_numpy(cache.read_images(S, a, min(a + cache.chunk_rows, cache.num_samples))).permute(0, 3, 1, 2)
            for b in range(0, block.shape[0], B):  # same batch size and conversion as the loaders
                yield images_to_float(block[b:b + B])

    r_contig, _ = epoch_rate(contiguous())

    print(f"\nMachine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{cache.num_samples} SynthFaces images, {S}x{S}, batch {B}, one shuffled epoch; contiguous read of the cache: {r_contig:,.0f} images/s\n")
    print("| workers | JPEG + torchvision (img/s) | facemtl streaming (img/s) | facemtl in-memory, 1st epoch incl. load (img/s) | facemtl in-memory, later epochs (img/s) | streaming / JPEG | in-memory / JPEG | contiguous / streaming |")
    print("|---|---|---|---|---|---|---|---|")
    for w, _n, rb, rs, rm1, rm in rows:
        print(f"| {w} | {rb:,.0f} | {rs:,.0f} | {rm1:,.0f} | {rm:,.0f} | {rs / rb:.1f}x | {rm / rb:.1f}x | {r_contig / rs:.2f}x |")
    print("\n(in-memory mode reads in the main process; its worker count does not apply)")


if __name__ == "__main__":
    main()
