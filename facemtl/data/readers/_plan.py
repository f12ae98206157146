"""The reader-independent half of every real-dataset prepare: a :class:`Plan` and :func:`run_prepare`.

A reader parses and validates a dataset's annotation files into a :class:`Plan`: one row per
image with its source (file or in-memory array), crop window, labels already in cache encoding,
and landmarks/boxes still in source pixels. :func:`run_prepare` then

1. cuts the plan to ``--limit`` rows;
2. pre-checks every image file in parallel (exists, header readable): problems are listed all at
   once and nothing is written, unless ``skip_bad`` drops those rows;
3. decodes, crops and resizes in parallel (:func:`~facemtl.data._parallel.map_blocks`) into a
   resumable :class:`~facemtl.data.cache.CacheWriter`, normalising landmarks and boxes by the
   window actually cut;
4. handles images that fail only at full decode: an error listing all of them (and no file left
   behind), or with ``skip_bad`` a cache assembled without those rows;
5. records every skip in the cache's provenance and in a tab-separated report file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.data import schema
from facemtl.data._parallel import check_workers, make_blocks, map_blocks
from facemtl.data.cache import CacheWriter
from facemtl.data.readers._annotations import MAX_SHOWN, Problems
from facemtl.data.readers._images import LANDMARK_MARGIN, PlanHandle, attach_block, check_block, decode_block, prepare_shared
from facemtl.errors import ConfigError
from facemtl.utils.io import check_writable_target, write_text_atomic

log = logging.getLogger(__name__)

BLOCK = 64
CHECK_BLOCK = 1024
#: Skips listed one by one in the cache's provenance (HDF5 attributes are limited to 64 KiB).
MAX_SKIPS_IN_PROVENANCE = 200

#: ``phase(description, total)`` returns ``advance(n)``; the CLI backs it with rich progress bars.
PhaseFn = Callable[[str, int], Callable[[int], None]]


@dataclass
class Plan:
    """Everything needed to write a cache for one dataset, before any image is decoded."""

    source: str
    attribute_names: list[str]
    image_ids: list[str]
    images: Any  # list of file paths (kind "file") or a uint8 array (N, H, W[, 3]) (kind "array")
    split: np.ndarray  # int8 (N,)
    kind: str = "file"
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # cache-encoded, except landmarks/bbox
    points: np.ndarray | None = None  # float (N, 5, 2) landmarks in source pixels, NaN = missing
    boxes: np.ndarray | None = None  # float (N, 4) x, y, w, h in source pixels, NaN = missing
    crops: np.ndarray | None = None  # float (N, 3) x0, y0, side in source pixels; NaN = centred square
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, rows: Sequence[int] | np.ndarray) -> Plan:
        idx = np.asarray(rows, dtype=np.int64)
        pick = (lambda a: None if a is None else a[idx])
        images = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        return replace(
            self, image_ids=[self.image_ids[i] for i in idx], images=images, split=self.split[idx],
            labels={k: v[idx] for k, v in self.labels.items()}, points=pick(self.points),
            boxes=pick(self.boxes), crops=pick(self.crops),
        )

    def split_counts(self) -> dict[str, int]:
        return {name: int((self.split == code).sum()) for name, code in schema.SPLITS.items()}

    def describe_image(self, i: int) -> str:
        return str(self.images[i]) if self.kind == "file" else f"{self.image_ids[i]}"


@dataclass
class PrepareResult:
    path: Path
    num_written: int
    skipped: list[tuple[str, str]]  # (image id or path, reason)
    report: Path | None
    warnings: list[str]


def normalise(values: np.ndarray, windows: np.ndarray, kind: str) -> np.ndarray:
    """Source-pixel landmarks (n, 5, 2) or boxes (n, 4) -> fractions of the cut window."""
    x0, y0, side = (windows[:, k].astype(np.float64) for k in range(3))
    if kind == "points":
        out = (values - np.stack([x0, y0], -1)[:, None, :]) / side[:, None, None]
    else:
        out = np.stack([(values[:, 0] - x0) / side, (values[:, 1] - y0) / side, values[:, 2] / side, values[:, 3] / side], -1)
    return out.astype(np.float32)


def _bad_sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".partial.bad.json")


def default_report_path(out: Path) -> Path:
    return out.with_name(out.stem + ".skipped.tsv")


def run_prepare(
    plan: Plan,
    out: str | os.PathLike,
    *,
    sizes: Sequence[int],
    workers: int = 0,
    limit: int | None = None,
    force: bool = False,
    resume: bool = False,
    skip_bad: bool = False,
    report: str | os.PathLike | None = None,
    phase: PhaseFn | None = None,
) -> PrepareResult:
    """Decode ``plan`` into a cache at ``out`` (see the module docstring for the steps)."""
    out = Path(out)
    sizes = tuple(sorted({int(s) for s in sizes}))
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}.")
        plan = plan.take(np.arange(min(limit, len(plan))))
    check_writable_target(out, force=force, what="cache")
    report_path = Path(report) if report else default_report_path(out)
    advance = phase or (lambda _d, _t: (lambda _n: None))

    # 2. pre-check: missing or unreadable files, all listed before anything is written
    skipped: list[tuple[str, str]] = []
    with PlanHandle(plan) as handle:
        step = advance("checking images", len(plan)) if plan.kind == "file" else None
        bad: list[tuple[int, str]] = []
        far: list[int] = []
        if step is not None:
            for start, (found, outside) in map_blocks(partial(check_block, handle=handle), make_blocks(range(len(plan)), CHECK_BLOCK), workers):
                bad.extend(found)
                far.extend(outside)
                step(min(CHECK_BLOCK, len(plan) - start))
    if far:
        plan.warnings.append(_far_warning(plan, far))
    if bad and not skip_bad:
        _raise_bad(plan, bad)
    if bad:
        skipped = [(plan.describe_image(i), why) for i, why in bad]
        keep = np.setdiff1d(np.arange(len(plan)), [i for i, _ in bad])
        plan = plan.take(keep)
        log.warning("skipping %d bad images (see %s)", len(bad), report_path)
    if len(plan) == 0:
        raise ConfigError(f"{plan.source}: no usable image left to write.")

    provenance = dict(plan.provenance)
    provenance.update(sizes=list(sizes), limit=limit, skip_bad=skip_bad, landmarks_far_outside=len(far))
    provenance.update(_skip_provenance(skipped, report_path))
    writer = CacheWriter(
        out, num_samples=len(plan), sizes=sizes, attribute_names=plan.attribute_names, source=plan.source,
        provenance=provenance, force=force, resume=resume, keep_partial=True,
    )
    sidecar = _bad_sidecar(out)
    decode_bad: dict[int, str] = {}
    with writer as w, PlanHandle(plan) as handle:
        done = w.done_rows()
        if done.any() and sidecar.is_file():
            decode_bad = {int(k): v for k, v in json.loads(sidecar.read_text()).items()}
        else:
            sidecar.unlink(missing_ok=True)
        step = advance("decoding", len(plan))
        step(int(done.sum()))
        blocks = make_blocks(np.flatnonzero(~done).tolist(), BLOCK)
        shared = check_workers(workers) > 1 and len(blocks) > 1  # only when blocks cross processes
        if shared:
            prepare_shared()
        fn = partial(decode_block, handle=handle, sizes=sizes, shared=shared)
        for start, res in map_blocks(fn, blocks, workers):
            n = len(res["windows"])
            if res["bad"]:  # recorded before the block itself: a kill in between re-decodes the block
                decode_bad.update(dict(res["bad"]))
                write_text_atomic(sidecar, json.dumps(decode_bad))
            images, release = attach_block(res, sizes)
            try:
                w.write(start, _batch(plan, start, n, res, images))
            finally:
                release()
            step(n)
        if decode_bad and not skip_bad:
            w.keep_partial = False  # the contract: an error leaves no cache, not even a partial one
            sidecar.unlink(missing_ok=True)
            _raise_bad(plan, sorted(decode_bad.items()))
        if decode_bad:
            rows = sorted(decode_bad)
            skipped += [(plan.describe_image(i), decode_bad[i]) for i in rows]
            w.drop_rows(rows)  # the finished cache holds only the rows that decoded
            w.add_provenance(**_skip_provenance(skipped, report_path))
    sidecar.unlink(missing_ok=True)
    if skipped:
        lines = ["image\treason"] + [f"{img}\t{why}" for img, why in skipped]
        write_text_atomic(report_path, "\n".join(lines) + "\n")
    else:
        report_path = None
    return PrepareResult(out, len(plan) - len(decode_bad), skipped, report_path, list(plan.warnings))


def _batch(plan: Plan, start: int, n: int, res: dict[str, Any], images: dict[int, np.ndarray]) -> dict[str, Any]:
    rows = slice(start, start + n)
    batch: dict[str, Any] = {"images": images, "split": plan.split[rows], "image_ids": plan.image_ids[rows]}
    for k, v in plan.labels.items():
        batch[k] = v[rows]
    if plan.points is not None:
        batch["landmarks"] = normalise(plan.points[rows], res["windows"], "points")
    if plan.boxes is not None:
        batch["bbox"] = normalise(plan.boxes[rows], res["windows"], "boxes")
    return batch


def _far_warning(plan: Plan, rows: Sequence[int]) -> str:
    shown = ", ".join(plan.describe_image(i) for i in rows[:MAX_SHOWN])
    more = f" and {len(rows) - MAX_SHOWN} more" if len(rows) > MAX_SHOWN else ""
    return (f"{len(rows)} image(s) have landmarks more than {LANDMARK_MARGIN:.0%} of the image's size outside it "
            f"(swapped x/y columns, coordinates of another size or unit?); they are stored as given: {shown}{more}")


def _raise_bad(plan: Plan, bad: Sequence[tuple[int, str]]) -> None:
    problems = Problems()
    for i, why in bad:
        problems.add(plan.describe_image(i), None, why)
    problems.raise_if_any(plan.source, hint="fix or remove these images, or pass --skip-bad to leave them out and list them in a report")


def _skip_provenance(skipped: list[tuple[str, str]], report_path: Path) -> dict[str, Any]:
    if not skipped:
        return {"skipped_count": 0}
    return {
        "skipped_count": len(skipped),
        "skipped": [{"image": a, "reason": b} for a, b in skipped[:MAX_SKIPS_IN_PROVENANCE]],
        "skip_report": str(report_path),
    }


def split_by_group(groups: Sequence[Any], *, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Seeded split that keeps every group (subject, identity) in one split: int8 (N,) codes.

    Groups are sorted, shuffled with ``seed``; the first ``round(G * test_fraction)`` go to test,
    the next ``round(G * val_fraction)`` to val (each at least 1 when there are 3 groups or more).
    """
    for name, v in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {v}.")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError("--val-fraction plus --test-fraction must leave some data for training.")
    uniq = sorted(set(groups), key=str)
    order = np.random.default_rng(seed).permutation(len(uniq))
    g = len(uniq)
    n_test = int(round(g * test_fraction))
    n_val = int(round(g * val_fraction))
    if g >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    code = {}
    for rank, k in enumerate(order):
        code[uniq[k]] = schema.SPLITS["test"] if rank < n_test else schema.SPLITS["val"] if rank < n_test + n_val else schema.SPLITS["train"]
    return np.array([code[x] for x in groups], dtype=np.int8)
