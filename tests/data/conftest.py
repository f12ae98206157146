"""Tiny fixtures in each dataset's official format (10-40 images), built in ``tmp_path``.

CelebA and MTFL folders are written by :mod:`facemtl.data.export_formats` (the same code as
``prepare synthetic --format``) from small procedural images, so the format writers and the readers
are tested against each other *and* against hand-written edge cases in the test modules.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facemtl.data.export_formats import CelebARecord, MTFLRecord, write_celeba, write_mtfl

PARTITIONS = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2]


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEMTL_PROGRESS", "0")


def picture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random picture (compresses small, survives JPEG)."""
    grid = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))


def celeba_records(n: int = 12, seed: int = 0) -> list[CelebARecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(180, 260)), int(rng.integers(160, 240))
        bw, bh = int(rng.integers(50, 90)), int(rng.integers(70, 120))
        box = np.array([rng.integers(-10, w - bw + 10), rng.integers(0, h - bh), bw, bh])  # may leave the photo
        lm_wild = box[:2] + rng.uniform(0.2, 0.8, (5, 2)) * box[2:]
        out.append(CelebARecord(
            aligned=picture(rng, 218, 178), attributes=rng.choice([-1, 1], 40), identity=int(rng.integers(1, 5)),
            partition=PARTITIONS[i % len(PARTITIONS)], landmarks_align=rng.integers(60, 160, (5, 2)),
            wild=picture(rng, h, w), bbox=box, landmarks_wild=np.round(lm_wild),
        ))
    return out


@pytest.fixture
def celeba_truth() -> Callable[..., list[CelebARecord]]:
    """The records behind :func:`make_celeba` (same ``n`` and ``seed`` give the same records)."""
    return celeba_records


@pytest.fixture
def make_celeba(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "celeba", n: int = 12, layout: str = "official", newline: str = "\n", seed: int = 0) -> Path:
        return write_celeba(tmp_path / name, celeba_records(n, seed), layout=layout, newline=newline)

    return make


def mtfl_records(n_train: int = 10, n_test: int = 4, seed: int = 0) -> list[MTFLRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_train + n_test):
        centre = rng.uniform(100, 150, 2)
        pts = centre + np.array([[-20, -15], [20, -15], [0, 5], [-15, 25], [15, 25]]) + rng.uniform(-3, 3, (5, 2))
        out.append(MTFLRecord(
            image=picture(rng, 250, 250), landmarks=np.round(pts * 4) / 4, male=bool(rng.random() < 0.5),
            smiling=bool(rng.random() < 0.5), glasses=bool(rng.random() < 0.3), pose=int(rng.integers(1, 6)),
            test=i >= n_train, folder="AFLW" if i >= n_train else ("lfw_5590" if i % 2 else "net_7876"),
        ))
    return out


@pytest.fixture
def mtfl_truth() -> Callable[..., list[MTFLRecord]]:
    return mtfl_records


@pytest.fixture
def make_mtfl(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "MTFL", n_train: int = 10, n_test: int = 4) -> Path:
        return write_mtfl(tmp_path / name, mtfl_records(n_train, n_test))

    return make


FER_USAGE = ["Training"] * 8 + ["PublicTest"] * 3 + ["PrivateTest"] * 3


@pytest.fixture
def make_fer(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "fer2013.csv", newline: str = "\n") -> Path:
        rng = np.random.default_rng(1)
        path = tmp_path / name
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator=newline)
            w.writerow(["emotion", "pixels", "Usage"])
            for i, use in enumerate(FER_USAGE):
                w.writerow([i % 7, " ".join(str(v) for v in rng.integers(0, 256, 48 * 48)), use])
        return path

    return make


def write_png(path: Path, rng: np.random.Generator, size: tuple[int, int] = (64, 48), grey: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(picture(rng, size[1], size[0]))
    (img.convert("L") if grey else img).save(path)


# (subject, sequence, frames, CK+ emotion code or None when unlabelled)
CK_SEQUENCES = [
    ("S005", "001", 5, 3), ("S010", "002", 4, 7), ("S011", "001", 6, 5), ("S014", "003", 3, 2),
    ("S022", "001", 4, 1), ("S026", "002", 5, None), ("S032", "004", 4, 6), ("S037", "001", 3, 4),
]


@pytest.fixture
def make_ckplus(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "CK+") -> Path:
        rng = np.random.default_rng(2)
        root = tmp_path / name
        for subject, seq, frames, code in CK_SEQUENCES:
            for k in range(1, frames + 1):
                write_png(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{k:08d}.png", rng)
            if code is not None:
                label = root / "Emotion" / subject / seq / f"{subject}_{seq}_{frames:08d}_emotion.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(f"   {code:.7e}\n")
        (root / "cohn-kanade-images" / ".DS_Store").write_text("junk")
        return root

    return make


LFW_PEOPLE = {"Aaron_Eckhart": 2, "Abel_Pacheco": 3, "Ana_Guevara": 1, "Bill_Gates": 4, "Colin_Powell": 3, "Zoe_Ball": 2}


@pytest.fixture
def make_lfwa(tmp_path: Path) -> Callable[..., Path]:
    from facemtl.data.export_formats import attr_line
    from facemtl.data.schema import CELEBA_ATTRIBUTES

    def make(name: str = "LFWA", count_line: bool = True, paths: bool = False) -> Path:
        rng = np.random.default_rng(3)
        root = tmp_path / name
        lines = []
        for person, k in LFW_PEOPLE.items():
            for j in range(1, k + 1):
                fname = f"{person}_{j:04d}.jpg"
                d = root / "lfw" / person
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(picture(rng, 250, 250)).save(d / fname)
                lines.append(attr_line(f"{person}/{fname}" if paths else fname, rng.choice([-1, 1], 40)))
        head = ([str(len(lines))] if count_line else []) + [" ".join(CELEBA_ATTRIBUTES)]
        (root / "list_attr_lfwa.txt").write_text("\n".join(head + lines) + "\n")
        return root

    return make


@pytest.fixture
def cli() -> Callable[..., object]:
    from facemtl.cli.main import app

    runner = CliRunner()

    def invoke(*args: object):
        return runner.invoke(app, [str(a) for a in args])

    return invoke

