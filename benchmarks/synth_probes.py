"""What a face detector relies on: its face recall on SynthFaces *test* faces changed in controlled
ways, checkpoint by checkpoint (measuring only; no real image).

Usage: python benchmarks/synth_probes.py CACHE CHECKPOINT [CHECKPOINT ...] [--faces 500] [--out FILE.md]

Faces and non-faces are drawn (seeded) from the cache's ``test`` split (held-out identities) at the
model's input size. Each change is applied to both, and each checkpoint scores them with its
detection head: the table gives face recall / non-face false-positive rate at score 0.5. A change
that real photos share with the test faces but SynthFaces' training images lack shows as recall
that falls from one checkpoint of a run to the next; one the detector shrugs off stays near the
clean row. docs/training.md ("What the drop is not") reads such tables over the snapshots of one
long run, beside its LFW-subset accuracy, to rule out causes of the drop.

The changes: photometric (grey, contrast, histogram equalisation, gamma, side light, noise, blur,
JPEG, shrunk to 25 px and enlarged back, as LFW's crops are), geometric (stretch, squash, shear,
upside down, zoomed in on the box centre) and structural (the crop cut into 2 x 2 or 4 x 4 tiles,
shuffled with a fixed permutation: how much of the face's layout the detector needs).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Change = Callable[[torch.Tensor], torch.Tensor]


def grey(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1, keepdim=True).expand_as(x).contiguous()


def contrast(x: torch.Tensor, k: float) -> torch.Tensor:
    g = grey(x)
    m = g.mean((2, 3), keepdim=True)
    return ((g - m) * k + m).clamp(0, 1)


def equalise(x: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalisation of the grey image (rank / (pixels - 1))."""
    g = grey(x)[:, 0].flatten(1)
    ranks = g.argsort(1).argsort(1).float() / (g.shape[1] - 1)
    return ranks.view(len(x), 1, *x.shape[2:]).expand_as(x).contiguous()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma * sigma))
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(3, 1, 1, -1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(3, 1, -1, 1), groups=3)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for a in (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def resample(x: torch.Tensor, side: int) -> torch.Tensor:
    small = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=x.shape[2:], mode="bicubic", align_corners=False).clamp(0, 1)


def affine(x: torch.Tensor, a: float, b: float, c: float, d: float) -> torch.Tensor:
    """Output pixel p (centred coordinates) samples the input at [[a, b], [c, d]] p; border pixels repeat."""
    theta = torch.tensor([[a, b, 0.0], [c, d, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


def shuffle_tiles(x: torch.Tensor, n: int) -> torch.Tensor:
    """The crop cut into n x n tiles, put back in a fixed shuffled order (the same for every image)."""
    side = x.shape[-1] // n
    x = x[..., : side * n, : side * n]
    tiles = x.unfold(2, side, side).unfold(3, side, side).reshape(len(x), 3, n * n, side, side)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n * n, generator=g)
    while (perm == torch.arange(n * n)).any():  # no tile keeps its place
        perm = torch.randperm(n * n, generator=g)
    tiles = tiles[:, :, perm].reshape(len(x), 3, n, n, side, side)
    return tiles.permute(0, 1, 2, 4, 3, 5).reshape(len(x), 3, n * side, n * side)


CHANGES: dict[str, Change] = {
    "none": lambda x: x,
    "grey": grey,
    "grey, half the contrast": lambda x: contrast(x, 0.5),
    "grey, twice the contrast": lambda x: contrast(x, 2.0),
    "grey, equalised": equalise,
    "gamma 0.5": lambda x: x ** 0.5,
    "gamma 2": lambda x: x ** 2,
    "side light (x 0.35 to x 1.25)": lambda x: (x * torch.linspace(0.35, 1.25, x.shape[-1])).clamp(0, 1),
    "noise, sd 0.08": lambda x: (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1),
    "blur, sigma 1.5 px": lambda x: blur(x, 1.5),
    "JPEG quality 15": lambda x: jpeg(x, 15),
    "grey, 25 px and back": lambda x: resample(grey(x), 25),
    "stretched 1.3x wide": lambda x: affine(x, 1 / 1.3, 0, 0, 1),
    "squashed to 0.77x wide": lambda x: affine(x, 1.3, 0, 0, 1),
    "stretched 1.3x tall": lambda x: affine(x, 1, 0, 0, 1 / 1.3),
    "sheared 0.25": lambda x: affine(x, 1, 0.25, 0, 1),
    "zoomed in 1.4x": lambda x: affine(x, 1 / 1.4, 0, 0, 1 / 1.4),
    "upside down": lambda x: x.flip(2),
    "2 x 2 tiles shuffled": lambda x: shuffle_tiles(x, 2),
    "4 x 4 tiles shuffled": lambda x: shuffle_tiles(x, 4),
}


def load_test(cache: str, size: int, faces: int, non_faces: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(faces, non-faces) from the cache's test split as float (N, 3, size, size) in [0, 1]."""
    from facemtl.data.cache import FaceCache

    fc = FaceCache(cache)
    face = fc.labels.get("face")
    if face is None:
        raise SystemExit(f"{cache} has no face / non-face labels; give a SynthFaces cache (`facemtl prepare synthetic`).")
    test = fc.indices("test")
    pools = [test[face[test] == want] for want in (1, 0)]
    if not all(len(p) for p in pools):
        raise SystemExit(f"{cache}'s test split holds {len(pools[0])} faces and {len(pools[1])} non-faces; it needs both.")
    rng = np.random.default_rng(seed)
    stored = fc.pick_size(size)
    images = fc.read_images(stored, 0, fc.num_samples)  # one read: fancy indexing a compressed dataset is far slower
    fc.close()
    out = []
    for pool, n in zip(pools, (faces, non_faces)):
        idx = np.sort(rng.choice(pool, min(n, len(pool)), replace=False))
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255
        if stored != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x)
    return out[0], out[1]


def face_probability(backend, x: torch.Tensor) -> np.ndarray:
    from facemtl.export.faces import sigmoid

    return sigmoid(backend.run([x.numpy().astype(np.float32)])["detection"][:, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", help="a SynthFaces cache (its test split is used)")
    ap.add_argument("checkpoints", nargs="+", help="run folders or checkpoints with a detection task")
    ap.add_argument("--faces", type=int, default=500)
    ap.add_argument("--non-faces", type=int, default=300)
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args()

    from facemtl.export.backends import load_backend

    backends = [load_backend(c) for c in args.checkpoints]
    for c, b in zip(args.checkpoints, backends):
        if "detection" not in b.meta.task_names:
            raise SystemExit(f"{c} has no detection task (tasks: {', '.join(b.meta.task_names)}).")
    sizes = {b.meta.input_sizes[0] for b in backends}
    data = {s: load_test(args.cache, s, args.faces, args.non_faces) for s in sizes}
    names = [Path(c).parent.name + "/" + Path(c).name if Path(c).suffix == ".pt" else Path(c).name for c in args.checkpoints]
    rows = ["| change | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, change in CHANGES.items():
        cells = []
        for b in backends:
            faces, non_faces = (change(x) for x in data[b.meta.input_sizes[0]])
            cells.append(f"{np.mean(face_probability(b, faces) >= 0.5):.2f} / {np.mean(face_probability(b, non_faces) >= 0.5):.2f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    n_f, n_n = (len(x) for x in next(iter(data.values())))
    table = "\n".join(rows) + f"\n\nFace recall / non-face false-positive rate at 0.5; {n_f} test faces, {n_n} test non-faces of `{args.cache}`.\n"
    print("\n" + table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write("\n" + table)


if __name__ == "__main__":
    main()
