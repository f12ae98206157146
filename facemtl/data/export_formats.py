"""Write face data in CelebA's, MTFL's and FER2013's own layouts and file formats (``prepare synthetic --format``).

Two layers: :func:`write_celeba` / :func:`write_mtfl` / :func:`write_fer2013` turn records (images
plus labels in source pixels) into the exact files of the real datasets (header lines, runs of
spaces, Windows paths, pixel strings), and :func:`export_synthetic` renders SynthFaces into those
records, each with only the labels that dataset has. Anyone can then exercise the
real readers end to end without the real data; the tests build their fixtures with the first layer.

Formats reproduced (from the published files):

- ``list_attr_celeba.txt``: ``202599``, then the 40 names each followed by a space, then
  ``000001.jpg -1  1  1 -1 ...`` (every value right-aligned in 2 columns after one space);
- ``list_bbox_celeba.txt``: ``image_id x_1 y_1 width height``, rows ``000001.jpg    95  71 226 313``;
- ``list_landmarks[_align]_celeba.txt``: ``lefteye_x lefteye_y ... rightmouth_y``, rows
  ``000001.jpg 69  109  106  113   77  142 ...`` (first value, then each right-aligned in 5);
- ``identity_CelebA.txt`` / ``list_eval_partition.txt``: ``000001.jpg 2880`` / ``000001.jpg 0``;
- MTFL ``training.txt`` / ``testing.txt``: `` lfw_5590\\name.jpg x1 .. x5 y1 .. y5 g s gl p``;
- FER2013 ``fer2013.csv``: header ``emotion,pixels,Usage``, rows ``0,70 80 82 ... 106,Training``
  (2304 grey values of a 48x48 image, row-major), the Training rows first, then PublicTest, then
  PrivateTest, as in the Kaggle file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import ExitStack
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


@dataclass
class FER2013Record:
    pixels: np.ndarray  # uint8 (48, 48) grey
    emotion: int  # 0..6 in schema.EXPRESSION_NAMES order (FER2013's own)
    usage: str  # Training, PublicTest or PrivateTest


FER_SIDE = 48
FER_HEADER = "emotion,pixels,Usage"
FER_USAGES = ("Training", "PublicTest", "PrivateTest")  # indexed by schema.SPLITS: train, val, test


def fer_line(r: FER2013Record) -> str:
    px = np.asarray(r.pixels)
    if px.shape != (FER_SIDE, FER_SIDE) or px.dtype != np.uint8:
        raise ValueError(f"FER2013 pixels must be uint8 ({FER_SIDE}, {FER_SIDE}), got {px.dtype} {px.shape}")
    if not 0 <= int(r.emotion) <= 6 or r.usage not in FER_USAGES:
        raise ValueError(f"FER2013 emotion must be 0..6 and Usage one of {FER_USAGES}, got {r.emotion}, {r.usage!r}")
    return f"{int(r.emotion)},{' '.join(map(str, px.ravel().tolist()))},{r.usage}"


def write_fer2013(out: str | Path, records: Iterable[FER2013Record], *, newline: str = "\n", readme: str | None = None) -> Path:
    """Write ``records`` as ``out/fer2013.csv`` (Training rows first, then PublicTest, then PrivateTest).

    Rows stream to one temporary file per Usage, joined into ``fer2013.csv.partial`` and renamed,
    so an interrupted export never leaves a CSV that looks complete; returns the CSV's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fer2013.csv"
    partial = path.with_name(path.name + ".partial")
    counts = dict.fromkeys(FER_USAGES, 0)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".fer2013-") as tmp:
            with ExitStack() as stack:
                parts = {u: stack.enter_context(open(Path(tmp) / u, "w", encoding="utf-8", newline="")) for u in FER_USAGES}
                for r in records:
                    line = fer_line(r)  # checks the usage before it picks a file
                    parts[r.usage].write(line + newline)
                    counts[r.usage] += 1
            with open(partial, "w", encoding="utf-8", newline="") as f:
                f.write(FER_HEADER + newline)
                for u in FER_USAGES:
                    with open(Path(tmp) / u, encoding="utf-8", newline="") as part:
                        shutil.copyfileobj(part, f)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    if readme:
        (out / "README.txt").write_text(readme, encoding="utf-8")
    log.info("wrote %d FER2013-format images to %s (%s)", sum(counts.values()), path,
             ", ".join(f"{u} {n}" for u, n in counts.items()))
    return path


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


def _fer_crop(rng: np.random.Generator, img: np.ndarray, sample: dict) -> np.ndarray:
    """A FER2013-like crop: 48x48 grey, the face filling the frame (a square of 0.75-0.9 head heights
    centred between the eyes and the mouth), cut from the square render ``img``."""
    n = len(img)
    x, _, w, h = np.asarray(sample["bbox"], np.float64) * n  # head box: skull top to chin
    lm = np.asarray(sample["landmarks"], np.float64) * n
    side = h * rng.uniform(0.75, 0.9)
    cx = x + w / 2 + rng.uniform(-0.04, 0.04) * side
    cy = (lm[:2, 1].mean() + lm[3:, 1].mean()) / 2 + rng.uniform(-0.04, 0.04) * side
    # the window may leave the render (a head at the edge): extend its border pixels, as no black frame is in FER2013
    grey = np.pad(np.asarray(Image.fromarray(img).convert("L")), n, mode="edge")
    box = (cx - side / 2 + n, cy - side / 2 + n, cx + side / 2 + n, cy + side / 2 + n)
    small = Image.fromarray(grey).resize((FER_SIDE, FER_SIDE), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    return np.asarray(small)


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
        if fmt == "fer2013":  # expression and Usage only: FER2013 has no other label
            out.append(FER2013Record(pixels=_fer_crop(rng, img, s), emotion=int(s["expression"]), usage=FER_USAGES[split]))
        elif fmt == "celeba":
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


FORMATS = {"celeba": "CelebA", "mtfl": "MTFL", "fer2013": "FER2013"}  # --format -> the real dataset


def _fer_note() -> str:
    from facemtl.data.synth.sampling import EXPRESSION_WEIGHTS

    share = ", ".join(f"{n} {w / sum(EXPRESSION_WEIGHTS):.0%}" for n, w in zip(schema.EXPRESSION_NAMES, EXPRESSION_WEIGHTS))
    return ("Only FER2013's labels: emotion, SynthFaces' rendered expression (all 7 classes, in SynthFaces' own "
            f"frequencies: {share}; not FER2013's), and Usage, SynthFaces' identity split (Training / PublicTest / "
            "PrivateTest = train / val / test; the test identities appear in no other split).\n")


def export_synthetic(
    fmt: str, out: str | Path, *, num_images: int = 1000, identities: int = 100, seed: int = 0, workers: int = 0,
    layout: str = "official", on_progress=None,
) -> Path:
    """Render ``num_images`` SynthFaces faces into the new folder ``out`` in CelebA's, MTFL's or
    FER2013's layout, each with only the labels that dataset has; returns ``out``."""
    from facemtl.data._parallel import make_blocks, map_blocks
    from facemtl.data.synth import SYNTH_ATTRIBUTES, SynthConfig
    from facemtl.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"Invalid format '{fmt}'. Use cache, {', '.join(FORMATS)}.")
    if num_images < 1:
        raise ConfigError(f"--num-images must be at least 1, got {num_images}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new folder for --format {fmt}.")
    # The three hold faces only: no detection negatives. CelebA's aligned image is cut from a
    # 218-pixel square render; MTFL's face is pasted at about 150 pixels into a 250x250 photo like
    # LFW's; FER2013's 48-pixel face is cut from a 96-pixel render (the head 58 to 96 pixels tall).
    size = {"celeba": ALIGNED_H, "mtfl": 160, "fer2013": 96}[fmt]
    cfg = SynthConfig(seed=seed, identities=identities, sizes=(size,), negative_fraction=0.0)

    def records():
        for _, recs in map_blocks(partial(_synth_block, fmt=fmt, cfg=cfg), make_blocks(range(num_images), 32), workers):
            for r in recs:
                if on_progress:
                    on_progress(1)
                yield r

    readme = SYNTH_README.format(
        fmt=fmt, seed=seed, identities=identities, real=FORMATS[fmt],
        extra={"celeba": lambda: _attribute_note(list(SYNTH_ATTRIBUTES)), "fer2013": _fer_note,
               "mtfl": lambda: "Male, Smiling and Eyeglasses come from SynthFaces' attributes; pose from its pose class.\n"}[fmt](),
    )
    if fmt == "celeba":
        return write_celeba(out, records(), layout=layout, readme=readme)
    if fmt == "mtfl":
        return write_mtfl(out, records(), readme=readme)
    write_fer2013(out, records(), readme=readme)
    return out
