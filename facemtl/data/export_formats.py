"""Write face data in CelebA's and MTFL's own layouts and file formats (``prepare synthetic --format``).

Two layers: :func:`write_celeba` / :func:`write_mtfl` turn records (images plus labels in source
pixels) into the exact files of the real datasets (header lines, runs of spaces, Windows paths),
and :func:`export_synthetic` renders SynthFaces into those records. Anyone can then exercise the
real readers end to end without the real data; the tests build their fixtures with the first layer.

Formats reproduced (from the published files):

- ``list_attr_celeba.txt``: ``202599``, then the 40 names each followed by a space, then
  ``000001.jpg -1  1  1 -1 ...`` (every value right-aligned in 2 columns after one space);
- ``list_bbox_celeba.txt``: ``image_id x_1 y_1 width height``, rows ``000001.jpg    95  71 226 313``;
- ``list_landmarks[_align]_celeba.txt``: ``lefteye_x lefteye_y ... rightmouth_y``, rows
  ``000001.jpg 69  109  106  113   77  142 ...`` (first value, then each right-aligned in 5);
- ``identity_CelebA.txt`` / ``list_eval_partition.txt``: ``000001.jpg 2880`` / ``000001.jpg 0``;
- MTFL ``training.txt`` / ``testing.txt``: `` lfw_5590\\name.jpg x1 .. x5 y1 .. y5 g s gl p``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from facemtl.data import schema

log = logging.getLogger(__name__)

LANDMARK_HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
BBOX_HEADER = "image_id x_1 y_1 width height"
ALIGNED_W, ALIGNED_H = 178, 218
LAYOUTS = {
    # role -> folder, for the official download and for torchvision's copy
    "official": {"anno": "Anno", "eval": "Eval", "img": "Img"},
    "torchvision": {"anno": "celeba", "eval": "celeba", "img": "celeba"},
}


@dataclass
class CelebARecord:
    """One CelebA image pair and its labels, in CelebA's own units (pixels, 1 / -1)."""

    aligned: np.ndarray  # uint8 (218, 178, 3)
    attributes: np.ndarray  # int (40,) of 1 / -1
    identity: int
    partition: int  # 0 train, 1 valid, 2 test
    landmarks_align: np.ndarray  # (5, 2) pixels of the aligned image
    wild: np.ndarray | None = None  # uint8 (H, W, 3) in-the-wild photo
    bbox: np.ndarray | None = None  # (4,) x, y, w, h in wild pixels
    landmarks_wild: np.ndarray | None = None  # (5, 2) wild pixels


def attr_line(name: str, values: Iterable[int]) -> str:
    return name + "".join(f" {int(v):2d}" for v in values)


def bbox_line(name: str, box: Iterable[float]) -> str:
    x, y, w, h = (int(round(float(v))) for v in box)
    return f"{name} {x:5d}{y:4d}{w:4d}{h:4d}"


def landmark_line(name: str, points: np.ndarray) -> str:
    v = [int(round(float(a))) for a in np.asarray(points).reshape(-1)]
    return f"{name} {v[0]}" + "".join(f"{a:5d}" for a in v[1:])


def write_celeba(
    out: str | Path, records: Iterable[CelebARecord], *, layout: str = "official", newline: str = "\n",
    attribute_names: tuple[str, ...] = schema.CELEBA_ATTRIBUTES, readme: str | None = None, quality: int = 95,
) -> Path:
    """Write ``records`` as a CelebA folder (``layout`` official or torchvision); returns ``out``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    out = Path(out)
    d = {k: out / v for k, v in LAYOUTS[layout].items()}
    aligned_dir, wild_dir = d["img"] / "img_align_celeba", d["img"] / "img_celeba"
    for p in (d["anno"], d["eval"], aligned_dir):
        p.mkdir(parents=True, exist_ok=True)
    attr, bbox, lm_a, lm_w, ident, part = [], [], [], [], [], []
    for i, r in enumerate(records, start=1):
        name = f"{i:06d}.jpg"
        Image.fromarray(r.aligned).save(aligned_dir / name, quality=quality)
        if r.wild is not None:
            wild_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(r.wild).save(wild_dir / name, quality=quality)
        attr.append(attr_line(name, r.attributes))
        bbox.append(bbox_line(name, r.bbox if r.bbox is not None else (0, 0, 1, 1)))
        lm_a.append(landmark_line(name, r.landmarks_align))
        lm_w.append(landmark_line(name, r.landmarks_wild if r.landmarks_wild is not None else np.zeros((5, 2))))
        ident.append(f"{name} {int(r.identity)}")
        part.append(f"{name} {int(r.partition)}")
    n = len(attr)

    def write(path: Path, lines: list[str]) -> None:
        path.write_text("".join(line + newline for line in lines), encoding="utf-8", newline="")

    write(d["anno"] / "list_attr_celeba.txt", [str(n), "".join(a + " " for a in attribute_names)] + attr)
    write(d["anno"] / "list_bbox_celeba.txt", [str(n), BBOX_HEADER] + bbox)
    write(d["anno"] / "list_landmarks_align_celeba.txt", [str(n), LANDMARK_HEADER] + lm_a)
    write(d["anno"] / "list_landmarks_celeba.txt", [str(n), LANDMARK_HEADER] + lm_w)
    write(d["anno"] / "identity_CelebA.txt", ident)
    write(d["eval"] / "list_eval_partition.txt", part)
    if readme:
        (out / "README.txt").write_text(readme, encoding="utf-8")
    log.info("wrote %d CelebA-format images to %s (%s layout)", n, out, layout)
    return out


@dataclass
class MTFLRecord:
    image: np.ndarray  # uint8 (H, W, 3)
    landmarks: np.ndarray  # (5, 2) pixels, CelebA order
    male: bool
    smiling: bool
    glasses: bool
    pose: int  # 1..5
    test: bool
    folder: str = "lfw_5590"


def mtfl_line(path: str, r: MTFLRecord) -> str:
    xs = " ".join(f"{v:.6g}" for v in r.landmarks[:, 0])
    ys = " ".join(f"{v:.6g}" for v in r.landmarks[:, 1])
    code = lambda b: 1 if b else 2
    return f" {path} {xs} {ys} {code(r.male)} {code(r.smiling)} {code(r.glasses)} {int(r.pose)}"


def write_mtfl(out: str | Path, records: Iterable[MTFLRecord], *, newline: str = "\r\n", readme: str | None = None) -> Path:
    """Write ``records`` as MTFL: image folders, ``training.txt`` and ``testing.txt`` (Windows paths)."""
    out = Path(out)
    lines = {False: [], True: []}
    for i, r in enumerate(records, start=1):
        folder = out / r.folder
        folder.mkdir(parents=True, exist_ok=True)
        name = f"synth_{i:06d}.jpg"
        Image.fromarray(r.image).save(folder / name, quality=95)
        lines[r.test].append(mtfl_line(f"{r.folder}\\{name}", r))
    for test, fname in ((False, "training.txt"), (True, "testing.txt")):
        (out / fname).write_text("".join(s + newline for s in lines[test]), encoding="utf-8", newline="")
    if readme:
        (out / "README.txt").write_text(readme, encoding="utf-8")
    return out


# -- SynthFaces -> records -------------------------------------------------------------------
SYNTH_README = """SynthFaces exported in {fmt} format by `facemtl prepare synthetic --format {fmt}`.

These images are procedurally generated (SynthFaces, seed {seed}, {identities} identities), not {real}.
The files follow {real}'s exact layout and formats so that `facemtl prepare {fmt} --root THIS_FOLDER`
exercises the real reader end to end.
{extra}"""


def _attribute_note(modelled: list[str]) -> str:
    missing = [a for a in schema.CELEBA_ATTRIBUTES if a not in modelled]
    return ("CelebA has no missing marker (every attribute is 1 or -1), so the attributes SynthFaces does not "
            "model are written as -1 for every image; they are NOT modelled, do not train or evaluate on them:\n  "
            + "\n  ".join(missing) + "\n")


def _backdrop(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    grid = rng.uniform(30, 225, (4, 4, 3)).astype(np.uint8)
    return Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)


def _paste(rng: np.random.Generator, face: np.ndarray, sample: dict, canvas: tuple[int, int], scale: tuple[float, float],
           jitter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a square face render on a backdrop; return the photo, its face box and landmarks in pixels."""
    w, h = canvas
    side = int(round(rng.uniform(*scale) * min(w, h)))
    ox = int(round((w - side) / 2 + rng.uniform(-jitter, jitter) * (w - side) / 2))
    oy = int(round((h - side) / 2 + rng.uniform(-jitter, jitter) * (h - side) / 2))
    img = _backdrop(rng, w, h)
    img.paste(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR), (ox, oy))
    box = np.asarray(sample["bbox"], np.float64) * side + [ox, oy, 0, 0]
    pts = np.asarray(sample["landmarks"], np.float64) * side + [ox, oy]
    return np.asarray(img), box, pts


def _synth_block(start: int, stop: int, fmt: str, cfg) -> list:
    """Worker: the records of samples ``start:stop`` (the config renders no negatives)."""
    from facemtl.data.synth import SYNTH_ATTRIBUTES, render_sample
    from facemtl.data.synthetic import _split_for

    out = []
    for i in range(start, stop):
        s = render_sample(i, cfg)
        if int(s["face"]) != 1:  # only if a config with negatives is passed in
            continue
        rng = np.random.default_rng([cfg.seed, 4_000_037, i])
        attrs = dict(zip(SYNTH_ATTRIBUTES, np.asarray(s["attributes"]).tolist()))
        split = _split_for(i, int(s["identity"]), cfg)
        img = s["images"][max(s["images"])]
        if fmt == "celeba":
            big = np.asarray(Image.fromarray(img).resize((ALIGNED_H, ALIGNED_H), Image.Resampling.BILINEAR)) if len(img) != ALIGNED_H else img
            x0 = (ALIGNED_H - ALIGNED_W) // 2  # 218-square render -> 178 x 218 aligned image
            lm = np.asarray(s["landmarks"], np.float64) * ALIGNED_H - [x0, 0]
            wild, box, pts = _paste(rng, img, s, (int(rng.integers(260, 420)), int(rng.integers(300, 460))), (0.45, 0.8), 0.8)
            out.append(CelebARecord(
                aligned=np.ascontiguousarray(big[:, x0:x0 + ALIGNED_W]),
                attributes=np.array([1 if attrs.get(a) == 1 else -1 for a in schema.CELEBA_ATTRIBUTES]),
                identity=int(s["identity"]) + 1, partition=split, landmarks_align=lm, wild=wild, bbox=box, landmarks_wild=pts,
            ))
        else:
            photo, _, pts = _paste(rng, img, s, (250, 250), (0.5, 0.65), 0.25)
            test = split == schema.SPLITS["test"]
            folder = "AFLW" if test else ("lfw_5590" if i % 2 else "net_7876")
            out.append(MTFLRecord(
                image=photo, landmarks=pts, male=attrs.get("Male") == 1, smiling=attrs.get("Smiling") == 1,
                glasses=attrs.get("Eyeglasses") == 1, pose=int(s["pose_class"]) + 1, test=test, folder=folder,
            ))
    return out


def export_synthetic(
    fmt: str, out: str | Path, *, num_images: int = 1000, identities: int = 100, seed: int = 0, workers: int = 0,
    layout: str = "official", on_progress=None,
) -> Path:
    """Render ``num_images`` SynthFaces faces into ``out`` in CelebA's or MTFL's layout."""
    from facemtl.data._parallel import make_blocks, map_blocks
    from facemtl.data.synth import SYNTH_ATTRIBUTES, SynthConfig
    from facemtl.errors import ConfigError

    if fmt not in ("celeba", "mtfl"):
        raise ConfigError(f"Invalid format '{fmt}'. Use cache, celeba or mtfl.")
    if num_images < 1:
        raise ConfigError(f"--num-images must be at least 1, got {num_images}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new folder for --format {fmt}.")
    # CelebA and MTFL hold faces only: no detection negatives. CelebA's aligned image is cut from a
    # 218-pixel square render; MTFL's face is pasted at about 150 pixels into a 250x250 photo like LFW's.
    cfg = SynthConfig(seed=seed, identities=identities, sizes=(ALIGNED_H if fmt == "celeba" else 160,), negative_fraction=0.0)

    def records():
        for _, recs in map_blocks(partial(_synth_block, fmt=fmt, cfg=cfg), make_blocks(range(num_images), 32), workers):
            for r in recs:
                if on_progress:
                    on_progress(1)
                yield r

    readme = SYNTH_README.format(
        fmt=fmt, seed=seed, identities=identities, real="CelebA" if fmt == "celeba" else "MTFL",
        extra=_attribute_note(list(SYNTH_ATTRIBUTES)) if fmt == "celeba" else "Male, Smiling and Eyeglasses come from SynthFaces' attributes; pose from its pose class.\n",
    )
    if fmt == "celeba":
        return write_celeba(out, records(), layout=layout, readme=readme)
    return write_mtfl(out, records(), readme=readme)
