"""FER2013 reader: one CSV of 48x48 grey images as pixel strings.

Columns ``emotion``, ``pixels``, ``Usage`` are found by name (case and surrounding spaces ignored,
so Kaggle's ``icml_face_data.csv`` with `` Usage`` and `` pixels`` also works). ``emotion`` 0..6 is
already facemtl's expression order; grey is replicated to RGB; Usage ``Training`` / ``PublicTest``
/ ``PrivateTest`` -> train / val / test. All pixel strings are parsed and checked up front (2304
values in 0..255), so a bad row is reported with its line before anything is written.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from facemtl.data import schema
from facemtl.data.readers._annotations import Problems
from facemtl.data.readers._plan import Plan
from facemtl.data.readers.manifest import load_manifest

USAGE = {"training": schema.SPLITS["train"], "publictest": schema.SPLITS["val"], "privatetest": schema.SPLITS["test"]}
SIDE = 48


def find_csv(root: Path) -> Path | None:
    if root.is_file():
        return root
    found, _ = load_manifest("fer2013").locate(root) if root.is_dir() else ({}, [])
    return found.get("csv")


def scan(problems: Problems, *, root: str | Path) -> Plan | None:
    """Parse and check every row of ``fer2013.csv`` (``root`` is the CSV itself or its folder)."""
    m = load_manifest("fer2013")
    root = Path(root)
    path = find_csv(root)
    if path is None:
        where = f"{' or '.join(m.files['csv'].paths)} under {root}" if root.is_dir() else f"{root} (give fer2013.csv or its folder)"
        problems.add_missing(f"csv: {where}")
        return None
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            problems.add(path, 1, "file is empty; expected the header emotion,pixels,Usage")
            return None
        cols = {h.strip().lower(): i for i, h in enumerate(header)}
        absent = [c for c in ("emotion", "pixels", "usage") if c not in cols]
        if absent:
            problems.add(path, 1, f"header lacks column(s) {', '.join(absent)} (found: {', '.join(h.strip() for h in header)})")
            return None
        ce, cp, cu = cols["emotion"], cols["pixels"], cols["usage"]
        images, labels, splits, lines = [], [], [], []
        for row in reader:
            ln = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank (trailing) lines
            if len(row) != len(header):
                problems.add(path, ln, f"expected {len(header)} fields, found {len(row)}")
                continue
            err, img = _pixels(row[cp])
            emo = row[ce].strip()
            use = row[cu].strip().lower()
            if not emo.isdigit() or not 0 <= int(emo) <= 6:
                problems.add(path, ln, f"emotion must be 0..6, found '{row[ce]}'")
            elif use not in USAGE:
                problems.add(path, ln, f"Usage must be Training, PublicTest or PrivateTest, found '{row[cu]}'")
            elif err:
                problems.add(path, ln, err)
            else:
                images.append(img)
                labels.append(int(emo))
                splits.append(USAGE[use])
                lines.append(ln)
    if problems:
        return None
    n = len(images)
    if n == 0:
        problems.add(path, None, "no image rows")
        return None
    plan = Plan(
        source="fer2013", attribute_names=[], image_ids=[f"fer2013_{ln:06d}" for ln in lines],
        images=np.stack(images), kind="array", split=np.array(splits, np.int8),
        labels={"expression": np.array(labels, np.int8), "face": np.ones(n, np.int8)},
        provenance={"dataset": "fer2013", "csv": str(path.resolve()), "image_id": "fer2013_<line number in the CSV>",
                    "manifest_version": m.data.get("version")},
    )
    plan.warnings = m.count_warnings(n, plan.split_counts())
    return plan


def _pixels(text: str) -> tuple[str | None, np.ndarray | None]:
    parts = text.split()
    if len(parts) != SIDE * SIDE:
        return f"pixels must hold {SIDE * SIDE} values, found {len(parts)}", None
    try:
        v = np.array(parts, dtype=np.int32)
    except ValueError:
        return "pixels must be integers separated by spaces", None
    if v.min() < 0 or v.max() > 255:
        return "pixel values must be in 0..255", None
    return None, v.astype(np.uint8).reshape(SIDE, SIDE)
