"""MTFL reader (TCDCN's ``training.txt`` / ``testing.txt``).

Each line: ``<path> x1 x2 x3 x4 x5 y1 y2 y3 y4 y5 gender smile glasses pose``, paths with Windows
backslashes (``lfw_5590\\Aaron_Eckhart_0001.jpg``), landmarks all x first then all y, in the order
left eye, right eye, nose, left mouth corner, right mouth corner (= facemtl's order, so only the
x/y interleaving changes). Codes: gender 1 male / 2 female -> attribute ``Male`` 1 / 0; smile and
glasses 1 yes / 2 no -> ``Smiling`` / ``Eyeglasses``; pose 1..5 -> ``pose_class`` 0..4.

Split: ``testing.txt`` -> test; ``training.txt`` -> train, except a seeded ``val_fraction`` of its
lines -> val. No expression or identity. Crop: ``landmarks`` (default) cuts a square of side
``context * max(w, h)`` of the five points' bounding box, centred on it; ``center`` the centred
square of the photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemtl.data import schema
from facemtl.data.readers._annotations import Problems, Table, read_table
from facemtl.data.readers._plan import Plan
from facemtl.data.readers.manifest import load_manifest
from facemtl.errors import ConfigError

ATTRIBUTES = ["Male", "Smiling", "Eyeglasses"]
CROPS = ("landmarks", "center")
DEFAULT_CONTEXT = 2.5


def landmark_window(points: np.ndarray, context: float) -> np.ndarray:
    """(N, 5, 2) points -> (N, 3) square windows x0, y0, side around their bounding box."""
    lo, hi = points.min(axis=1), points.max(axis=1)
    side = (hi - lo).max(axis=1) * context
    centre = (lo + hi) / 2
    return np.stack([centre[:, 0] - side / 2, centre[:, 1] - side / 2, side], -1)


def _codes(table: Table, problems: Problems) -> np.ndarray:
    """Rows of ``table`` whose four codes are valid (bad ones reported with their line)."""
    ok = np.ones(len(table.ids), bool)
    rules = (("gender", 10, (1, 2)), ("smile", 11, (1, 2)), ("glasses", 12, (1, 2)), ("pose", 13, (1, 2, 3, 4, 5)))
    for name, col, allowed in rules:
        bad = ~np.isin(table.values[:, col], allowed) if len(table.ids) else np.zeros(0, bool)
        for i in np.flatnonzero(bad):
            problems.add(table.path, table.lines[i], f"{name} must be one of {list(allowed)}, found {table.values[i, col]:g}")
        ok &= ~bad
    return ok


def scan(
    problems: Problems, *, root: str | Path, val_fraction: float = 0.1, seed: int = 0,
    crop: str = "landmarks", context: float = DEFAULT_CONTEXT,
) -> Plan | None:
    """Parse ``training.txt`` and ``testing.txt`` into a :class:`Plan`."""
    if crop not in CROPS:
        raise ConfigError(f"Invalid crop '{crop}'. Use landmarks or center.")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}.")
    if context <= 0:
        raise ConfigError(f"--context must be positive, got {context}.")
    m = load_manifest("mtfl")
    root = Path(root)
    found = m.locate_required(root, problems)
    if found is None:
        return None
    tables = {}
    for role in ("training", "testing"):
        tables[role] = read_table(found[role], problems, count_line=False, header_line=False, num_values=14, dtype="float64")
        _codes(tables[role], problems)
    seen: dict[str, str] = {}
    for role, t in tables.items():
        for k, ln in zip(t.ids, t.lines):
            key = k.replace("\\", "/")
            if key in seen and seen[key] != role:
                problems.add(t.path, ln, f"{k} is also listed in {seen[key]}.txt (a face in both train and test)")
            seen.setdefault(key, role)
    if problems:
        return None

    train, test = tables["training"], tables["testing"]
    values = np.concatenate([train.values, test.values])
    ids = [k.replace("\\", "/") for k in train.ids + test.ids]
    n, n_train = len(ids), len(train.ids)
    split = np.full(n, schema.SPLITS["test"], np.int8)
    rng = np.random.default_rng(seed)
    split[:n_train] = np.where(rng.random(n_train) < val_fraction, schema.SPLITS["val"], schema.SPLITS["train"])
    # x1..x5 y1..y5 -> 5 (x, y) pairs
    points = np.stack([values[:, 0:5], values[:, 5:10]], axis=-1)
    codes = values[:, 10:14].astype(np.int64)
    attributes = (codes[:, :3] == 1).astype(np.int8)  # 1 = male / smiling / glasses, 2 = not
    crops = landmark_window(points, context) if crop == "landmarks" else np.full((n, 3), np.nan)
    plan = Plan(
        source="mtfl", attribute_names=list(ATTRIBUTES), image_ids=ids, images=[str(root / k) for k in ids], split=split,
        labels={"attributes": attributes, "pose_class": (codes[:, 3] - 1).astype(np.int8), "face": np.ones(n, np.int8)},
        points=points, crops=crops,
        provenance={"dataset": "mtfl", "root": str(root.resolve()), "val_fraction": val_fraction, "seed": seed,
                    "crop": crop, "context": context, "manifest_version": m.data.get("version")},
    )
    counts = plan.split_counts()
    plan.warnings = m.count_warnings(n, {"test": counts["test"]})
    if n_train != m.split_counts.get("train_and_val", n_train):
        plan.warnings.append(f"training.txt lists {n_train} faces where the full MTFL has {m.split_counts['train_and_val']}: a subset?")
    return plan
