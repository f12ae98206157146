"""Tiny SynthFaces caches and short runs shared by the report tests (built once per test session).

Each helper builds into a fixed folder under pytest's session base temp, so the report tests
and the CLI tests (``tests/cli/test_reports_cli.py``) reuse one cache and one run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ALL_TASKS = ("detection", "landmarks", "attributes", "identity", "expression", "pose", "smile")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synth_cache(base: Path) -> Path:
    """300 SynthFaces crops at 40 px (TCDCN's input size: no resizing), 20 identities, 2 scenes."""
    from facemtl.data.synthetic import prepare_synthetic

    path = base / "synth40.h5"
    if not path.exists():
        prepare_synthetic(path, num_images=300, identities=20, sizes=(40,), workers=1, num_scenes=2, scene_size=128)
    return path


def tiny_config(cache: Path, out: Path, tasks=ALL_TASKS, steps: int = 3):
    from facemtl.engine.config import RunConfig, apply_overrides

    return apply_overrides(RunConfig(), {
        "data.path": str(cache), "model.backbone": "tcdcn", "model.input_size": 40, "tasks.names": list(tasks),
        "train.epochs": 1, "train.max_steps_per_epoch": steps, "train.batch_size": 32, "train.device": "cpu",
        "train.channels_last": False, "out": str(out),
    })


def trained_run(base: Path, tasks=ALL_TASKS, name: str = "run") -> Path:
    """A run folder trained for a few steps on :func:`synth_cache` (built once)."""
    from facemtl.engine.trainer import train

    out = base / name
    if not (out / "best.pt").exists():
        train(tiny_config(synth_cache(base), out, tasks), force=True)
    return out


def shared_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "facemtl-reports"
    base.mkdir(exist_ok=True)
    return base


def check_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, f"{path} is not a PNG"


def write_cache_without(path: Path, labels: tuple[str, ...] = ("face",), n: int = 64, size: int = 40) -> Path:
    """A cache whose only labels are ``labels`` (random values), split evenly."""
    from facemtl.data.cache import CacheWriter

    rng = np.random.default_rng(0)
    with CacheWriter(path, num_samples=n, sizes=(size,), attribute_names=("Male",), source="toy", chunk_rows=16) as w:
        batch = {"images": {size: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)},
                 "split": (np.arange(n) % 3).astype(np.int8)}
        if "face" in labels:
            batch["face"] = np.ones(n, np.int8)
        if "expression" in labels:
            batch["expression"] = rng.integers(0, 7, n).astype(np.int8)
        w.write(0, batch)
    return path


def write_labelled_cache(path: Path, labels: tuple[str, ...], attrs: tuple[str, ...] = ("Male", "Smiling"), n: int = 60,
                         size: int = 40, seed: int = 0) -> Path:
    """A cache labelling only ``labels`` (of landmarks, attributes: random values), split evenly."""
    from facemtl.data.cache import CacheWriter

    rng = np.random.default_rng(seed)
    with CacheWriter(path, num_samples=n, sizes=(size,), attribute_names=attrs, source="toy", chunk_rows=16) as w:
        batch = {"images": {size: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)},
                 "split": (np.arange(n) % 3).astype(np.int8)}
        if "landmarks" in labels:
            batch["landmarks"] = rng.uniform(0.2, 0.8, (n, 5, 2)).astype(np.float32)
        if "attributes" in labels:
            batch["attributes"] = rng.integers(0, 2, (n, len(attrs))).astype(np.int8)
        w.write(0, batch)
    return path


def two_caches(base: Path) -> tuple[Path, Path]:
    """``lm.h5`` (landmarks only) and ``at.h5`` (attributes only, Male and Smiling): two datasets of one run."""
    lm, at = base / "multi" / "lm.h5", base / "multi" / "at.h5"
    lm.parent.mkdir(exist_ok=True)
    if not lm.exists():
        write_labelled_cache(lm, ("landmarks",), attrs=("Male",))
    if not at.exists():
        write_labelled_cache(at, ("attributes",), seed=1)
    return lm, at


def multi_config(caches, out: Path, tasks=("landmarks", "smile"), steps: int = 2):
    """:func:`tiny_config` on several caches at once (``data.sources``)."""
    from facemtl.engine.config import apply_overrides

    return apply_overrides(tiny_config(caches[0], out, tasks, steps), {"data.sources": ",".join(map(str, caches)),
                                                                      "train.batch_size": 16})


def multi_run(base: Path) -> Path:
    """A run trained for 2 steps on :func:`two_caches` (built once)."""
    from facemtl.engine.trainer import train

    out = base / "multi" / "run"
    if not (out / "best.pt").exists():
        train(multi_config(two_caches(base), out), force=True)
    return out
