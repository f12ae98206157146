"""CelebA reader: the official nested layout (``Img/``, ``Anno/``, ``Eval/``) or torchvision's flat one.

Labels in the cache (see ``docs/datasets.md``):

- ``attributes``: the 40 columns of ``list_attr_celeba.txt``, 1 / -1 -> 1 / 0 (as torchvision);
- ``identity``: ``identity_CelebA.txt`` as given; ``split``: ``list_eval_partition.txt`` 0/1/2;
- ``aligned`` variant: ``img_align_celeba`` (178x218) is cut to its centred 178x178 square
  (rows 20..197) and resized; ``list_landmarks_align_celeba.txt`` becomes
  ``(x / 178, (y - 20) / 178)``. ``bbox`` stays missing: the boxes are in-the-wild pixels;
- ``wild`` variant: ``img_celeba`` is cut to a square around the face box (side
  ``max(w, h) * (1 + 2 * margin)``, centred on the box, rounded to whole pixels, black outside
  the photo; :func:`wild_window`), and both the box and ``list_landmarks_celeba.txt`` are carried
  into that window, so the cache serves detection and landmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facemtl.data.readers._annotations import Problems, Table, align, check_same_ids, read_table
from facemtl.data.readers._plan import Plan
from facemtl.data.readers.manifest import Manifest, load_manifest
from facemtl.errors import ConfigError

log = logging.getLogger(__name__)

VARIANTS = ("aligned", "wild")
DEFAULT_MARGIN = 0.15


def wild_window(bbox: np.ndarray, margin: float) -> np.ndarray:
    """(N, 4) boxes x, y, w, h -> (N, 3) square windows x0, y0, side around them (float pixels)."""
    bbox = np.asarray(bbox, dtype=np.float64)
    side = np.maximum(bbox[:, 2], bbox[:, 3]) * (1.0 + 2.0 * margin)
    cx, cy = bbox[:, 0] + bbox[:, 2] / 2, bbox[:, 1] + bbox[:, 3] / 2
    return np.stack([cx - side / 2, cy - side / 2, side], -1)


def locate(manifest: Manifest, root: Path, variant: str, problems: Problems) -> dict[str, Path]:
    """Find the files the variant needs under ``root`` in any known layout; report each missing one."""
    if not root.is_dir():
        problems.add_missing(f"root folder {root}")
        return {}
    requires = manifest.data["variants"][variant]["requires"]
    found, _ = manifest.locate(root)
    for role in requires:
        if role not in found:
            spec = manifest.files[role]
            problems.add_missing(f"{role}: {' or '.join(spec.paths)} under {root} ({spec.description})")
    return found


def scan(problems: Problems, *, root: str | Path, variant: str = "aligned", margin: float = DEFAULT_MARGIN) -> Plan | None:
    """Parse and cross-check every CelebA annotation file into a :class:`Plan` (problems collected)."""
    if variant not in VARIANTS:
        raise ConfigError(f"Invalid variant '{variant}'. Use aligned or wild.")
    if margin < 0:
        raise ConfigError(f"--margin must be 0 or more, got {margin}.")
    m = load_manifest("celeba")
    root = Path(root)
    found = locate(m, root, variant, problems)
    if problems.missing:
        return None
    attr = read_table(found["attributes"], problems, count_line=True, header_line=True, allowed=(1, -1))
    if attr.header is not None:
        for msg in m.attribute_problems(attr.header):
            problems.add(attr.path, 2, msg)
    bbox = read_table(found["bbox"], problems, count_line=True, header_line=True, num_values=4)
    lm_align = read_table(found["landmarks_align"], problems, count_line=True, header_line=True, num_values=10)
    lm_wild = None
    if "landmarks_wild" in found:
        lm_wild = read_table(found["landmarks_wild"], problems, count_line=True, header_line=True, num_values=10)
    identity = read_table(found["identity"], problems, count_line=False, header_line=False, num_values=1)
    part = read_table(found["partition"], problems, count_line=False, header_line=False, num_values=1, allowed=(0, 1, 2))
    _check_header(lm_align, m.data["labels"]["landmark_columns"], problems)
    if lm_wild is not None:
        _check_header(lm_wild, m.data["labels"]["landmark_columns"], problems)
    _check_header(bbox, m.data["labels"]["bbox_columns"], problems)
    for i in np.flatnonzero((bbox.values[:, 2] <= 0) | (bbox.values[:, 3] <= 0)) if len(bbox.ids) else []:
        problems.add(bbox.path, bbox.lines[i], f"box of {bbox.ids[i]} has width or height <= 0")
    tables = [part, attr, identity, bbox, lm_align] + ([lm_wild] if lm_wild is not None else [])
    check_same_ids(tables, problems)
    if problems:
        return None

    ids = part.ids
    n = len(ids)
    image_dir = found["images_aligned" if variant == "aligned" else "images_wild"]
    attributes = ((align(attr, ids) + 1) // 2).astype(np.int8)
    rel = {role: str(p.relative_to(root)) for role, p in found.items()}
    plan = Plan(
        source="celeba", attribute_names=list(attr.header or m.attribute_names), image_ids=list(ids),
        images=[str(image_dir / k) for k in ids], split=align(part, ids)[:, 0].astype(np.int8),
        labels={"attributes": attributes, "identity": align(identity, ids)[:, 0].astype(np.int64), "face": np.ones(n, np.int8)},
        provenance={"dataset": "celeba", "variant": variant, "root": str(root.resolve()), "files": rel,
                    "manifest_version": m.data.get("version")},
    )
    if variant == "aligned":
        plan.points = align(lm_align, ids).reshape(n, 5, 2).astype(np.float64)
        plan.crops = np.full((n, 3), np.nan)  # the centred square of each image: (0, 20, 178) for 178x218
        plan.provenance["crop"] = "centred square of the aligned image (0, 20, 178, 178 for 178x218); landmarks (x - x0) / side"
    else:
        boxes = align(bbox, ids).astype(np.float64)
        plan.boxes = boxes
        plan.points = align(lm_wild, ids).reshape(n, 5, 2).astype(np.float64)
        plan.crops = wild_window(boxes, margin)
        plan.provenance.update(margin=margin, crop="square window around the box: side max(w, h) * (1 + 2 margin), centred, rounded")
    plan.warnings = m.count_warnings(n, plan.split_counts())
    return plan


def _check_header(table: Table, expected: list[str], problems: Problems) -> None:
    if table.header is not None and table.header != expected:
        problems.add(table.path, 2, f"header is '{' '.join(table.header)}', expected '{' '.join(expected)}'")
