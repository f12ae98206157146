"""Any image folder with a CSV of labels; columns are mapped to tasks by name (see docs/datasets.md).

=====================================  ==============================================================
column(s)                              meaning
=====================================  ==============================================================
``image`` (or path, file, filename)    image path relative to ``--images`` (required; ``\\`` accepted)
``split``                              train / val / test (also valid, validation, 0 / 1 / 2)
``identity``                           integer, or any text (numbered by sorted value)
``expression``                         0..6 or a name: Angry Disgust Fear Happy Sad Surprise Neutral
``pose_class``                         0..4 or left_profile / left / frontal / right / right_profile
``yaw``, ``pitch``, ``roll``           head pose in degrees (all three)
``face``                               1 face / 0 non-face
``lefteye_x`` ... ``rightmouth_y``     5 landmarks in source pixels (CelebA names; ``left_eye_x``
                                       ... ``right_mouth_y`` also accepted)
``x_1 y_1 width height``               face box in source pixels (or ``bbox_x bbox_y bbox_w bbox_h``)
anything else                          a binary attribute: 1/true/yes -> 1, 0/-1/false/no -> 0,
                                       empty -> unknown
=====================================  ==============================================================

Empty cells are missing labels. Image paths must stay inside ``--images``: an absolute path or one
that climbs out with ``..`` is an error unless ``allow_outside_root`` (``--allow-outside-root``).
Without a ``split`` column rows are split 80/10/10 at random
(seeded), by identity when there is an ``identity`` column. Crop: ``center`` (the centred square of
each image) or ``bbox`` (a square around the box, as CelebA's in-the-wild variant).
"""

from __future__ import annotations

import csv
import posixpath
from pathlib import Path

import numpy as np

from facemtl.data import schema
from facemtl.data.readers._annotations import Problems
from facemtl.data.readers._plan import Plan, split_by_group
from facemtl.data.readers.celeba import wild_window
from facemtl.errors import ConfigError

IMAGE_COLUMNS = ("image", "path", "file", "filename", "image_id")
SPLIT_NAMES = {"train": 0, "training": 0, "0": 0, "val": 1, "valid": 1, "validation": 1, "1": 1, "test": 2, "2": 2}
_POINTS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
LANDMARK_COLUMNS = [[f"{p}_{a}" for p in _POINTS for a in "xy"], [f"{p}_{a}" for p in schema.LANDMARK_NAMES for a in "xy"]]
BBOX_COLUMNS = [["x_1", "y_1", "width", "height"], ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]]
TRUE, FALSE = {"1", "true", "yes"}, {"0", "-1", "false", "no"}


def _lookup(name: str, table: tuple[str, ...]) -> int | None:
    v = name.strip()
    if v.lstrip("-").isdigit():
        return int(v) if 0 <= int(v) < len(table) else None
    lower = [t.lower() for t in table]
    return lower.index(v.lower()) if v.lower() in lower else None


def scan(
    problems: Problems, *, images: str | Path, labels: str | Path, seed: int = 0, crop: str = "center", margin: float = 0.15,
    allow_outside_root: bool = False,
) -> Plan | None:
    """Read ``labels`` (CSV) and map its columns to tasks by name."""
    if crop not in ("center", "bbox"):
        raise ConfigError(f"Invalid crop '{crop}'. Use center or bbox.")
    images, labels = Path(images), Path(labels)
    if not images.is_dir():
        problems.add_missing(f"image folder {images}")
    if not labels.is_file():
        problems.add_missing(f"label file {labels}")
    if problems.missing:
        return None
    with open(labels, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    if not header:
        problems.add(labels, 1, "empty file; expected a header row naming the columns")
        return None
    col = {h: i for i, h in enumerate(header)}
    image_col = next((c for c in IMAGE_COLUMNS if c in col), None)
    if image_col is None:
        problems.add(labels, 1, f"no image column; name one of {', '.join(IMAGE_COLUMNS)}")
        return None
    lm_cols = next((c for c in LANDMARK_COLUMNS if all(x in col for x in c)), None)
    bb_cols = next((c for c in BBOX_COLUMNS if all(x in col for x in c)), None)
    pose_cols = ["yaw", "pitch", "roll"] if all(x in col for x in ("yaw", "pitch", "roll")) else None
    known = {image_col, "split", "identity", "expression", "pose_class", "face"} | set(lm_cols or []) | set(bb_cols or []) | set(pose_cols or [])
    attr_cols = [h for h in header if h not in known]
    if crop == "bbox" and bb_cols is None:
        problems.add(labels, 1, "--crop bbox needs box columns x_1,y_1,width,height (or bbox_x,bbox_y,bbox_w,bbox_h)")
    n = len(rows)
    out = {
        "attributes": np.full((n, len(attr_cols)), -1, np.int8), "expression": np.full(n, -1, np.int8),
        "pose_class": np.full(n, -1, np.int8), "face": np.full(n, -1, np.int8), "pose": np.full((n, 3), np.nan, np.float32),
    }
    points = np.full((n, 10), np.nan) if lm_cols else None
    boxes = np.full((n, 4), np.nan) if bb_cols else None
    ids, split, idents = [], np.full(n, -1, np.int8), []
    for r, (ln, row) in enumerate(rows):
        if len(row) != len(header):
            problems.add(labels, ln, f"expected {len(header)} fields, found {len(row)}")
            ids.append("")
            idents.append("")
            continue
        cell = {h: row[i].strip() for h, i in col.items()}
        ids.append(cell[image_col].replace("\\", "/"))
        if not ids[-1]:
            problems.add(labels, ln, f"empty {image_col} cell; give the image path relative to --images")
        elif not allow_outside_root and _leaves_root(ids[-1]):
            problems.add(labels, ln, f"image path '{ids[-1]}' leaves --images {images} (absolute or climbing out with ..); "
                                     "move the image inside it, or pass --allow-outside-root to read it anyway")
        idents.append(cell.get("identity", ""))
        if cell.get("split"):
            s = SPLIT_NAMES.get(cell["split"].lower())
            if s is None:
                problems.add(labels, ln, f"split must be train, val or test, found '{cell['split']}'")
            else:
                split[r] = s
        for key, table in (("expression", schema.EXPRESSION_NAMES), ("pose_class", schema.POSE_CLASS_NAMES)):
            if cell.get(key):
                v = _lookup(cell[key], table)
                if v is None:
                    problems.add(labels, ln, f"{key} must be 0..{len(table) - 1} or one of {', '.join(table)}, found '{cell[key]}'")
                else:
                    out[key][r] = v
        if cell.get("face"):
            if cell["face"] in ("0", "1"):
                out["face"][r] = int(cell["face"])
            else:
                problems.add(labels, ln, f"face must be 0 or 1, found '{cell['face']}'")
        for j, a in enumerate(attr_cols):
            v = cell[a].lower()
            if v in TRUE:
                out["attributes"][r, j] = 1
            elif v in FALSE:
                out["attributes"][r, j] = 0
            elif v:
                problems.add(labels, ln, f"column '{a}' is not a known task, so it must be a binary attribute (1/0/-1/empty), found '{cell[a]}'")
        for cols, dest in ((lm_cols, points), (bb_cols, boxes), (pose_cols, out["pose"])):
            if cols and any(cell[c] for c in cols):
                try:
                    dest[r] = [float(cell[c]) for c in cols]
                except ValueError:
                    problems.add(labels, ln, f"non-numeric value in {', '.join(cols)}")
    seen: dict[str, int] = {}
    for (ln, _), k in zip(rows, ids):
        if k and k in seen:
            problems.add(labels, ln, f"image {k} already listed on line {seen[k]}")
        seen.setdefault(k, ln)
    if problems:
        return None
    if n == 0:
        problems.add(labels, None, "no data rows")
        return None
    identity = _identities(idents)
    if (split < 0).any():
        groups = idents if "identity" in col else list(range(n))
        auto = split_by_group(groups, seed=seed, val_fraction=0.1, test_fraction=0.1)
        split = np.where(split < 0, auto, split).astype(np.int8)
    labels_out = {k: v for k, v in out.items() if k in col or (k == "pose" and pose_cols) or (k == "attributes" and attr_cols)}
    labels_out["identity"] = identity
    crops = wild_window(boxes, margin) if crop == "bbox" else np.full((n, 3), np.nan)
    return Plan(
        source="folder", attribute_names=attr_cols, image_ids=ids, images=[str(images / k) for k in ids], split=split,
        labels=labels_out, points=None if points is None else points.reshape(n, 5, 2), boxes=boxes, crops=crops,
        provenance={"dataset": "folder", "images": str(images.resolve()), "labels": str(labels.resolve()), "crop": crop,
                    "allow_outside_root": allow_outside_root, "margin": margin, "seed": seed, "columns": header, "attribute_columns": attr_cols},
    )


def _leaves_root(rel: str) -> bool:
    """Whether a CSV path points outside the image folder: absolute (also ``C:/``), or ``..`` out of it."""
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return True
    return posixpath.normpath(rel).split("/")[0] == ".."


def _identities(values: list[str]) -> np.ndarray:
    if all(v == "" or v.lstrip("-").isdigit() for v in values):
        return np.array([int(v) if v else -1 for v in values], np.int64)
    names = sorted({v for v in values if v})
    number = {v: i for i, v in enumerate(names)}
    return np.array([number.get(v, -1) for v in values], np.int64)
