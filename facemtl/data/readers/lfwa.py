"""LFWA reader: LFW images with a CelebA-style attribute list (40 attributes, 1 / -1).

The attribute list may or may not start with a count line; its image column may name a file
(``Aaron_Eckhart_0001.jpg``) or a path (``Aaron_Eckhart/Aaron_Eckhart_0001.jpg``); a bare name is
looked for in the person's folder, then in the image folder itself. Identity = the person name
(file name before ``_NNNN``), numbered by sorted name. Split: a CelebA-style partition file if one is
found or given, else by identity (seeded; a person is never in two splits). Images are 250x250 and
stored whole (or their centred ``--center-crop`` square).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from facemtl.data.readers._annotations import Problems, align, check_same_ids, read_table
from facemtl.data.readers._plan import Plan, split_by_group
from facemtl.data.readers.manifest import load_manifest

_NUMBERED = re.compile(r"^(?P<person>.+)_(?P<num>\d{4})\.[A-Za-z]+$")


def person_of(image: str) -> str:
    name = Path(image.replace("\\", "/")).name
    m = _NUMBERED.match(name)
    return m.group("person") if m else Path(name).stem


def scan(
    problems: Problems, *, root: str | Path, attributes: str | Path | None = None, images: str | Path | None = None,
    partition: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.5,
    center_crop: int | None = None,
) -> Plan | None:
    """Parse the LFWA attribute list (and optional partition) into a :class:`Plan`."""
    m = load_manifest("lfwa")
    root = Path(root)
    found, _ = m.locate(root) if root.is_dir() else ({}, [])
    if not root.is_dir():
        problems.add_missing(f"root folder {root}")
    attr_path = Path(attributes) if attributes else found.get("attributes")
    image_dir = Path(images) if images else found.get("images")
    part_path = Path(partition) if partition else found.get("partition")
    for what, p, role in (("attribute list", attr_path, "attributes"), ("image folder", image_dir, "images")):
        if p is None:
            problems.add_missing(f"{what}: {' or '.join(m.files[role].paths)} under {root} (or pass it explicitly)")
        elif not p.exists():
            problems.add_missing(f"{what} {p}")
    if partition and not Path(partition).is_file():
        problems.add_missing(f"partition file {partition}")
    if problems.missing:
        return None
    assert attr_path is not None and image_dir is not None
    attr = read_table(attr_path, problems, count_line=None, header_line=True, allowed=(1, -1))
    if attr.header is not None:
        for msg in m.attribute_problems(attr.header):
            problems.add(attr.path, 2 if attr.declared_count is not None else 1, msg)
    part = None
    if part_path is not None:
        part = read_table(part_path, problems, count_line=False, header_line=False, num_values=1, allowed=(0, 1, 2))
        check_same_ids([attr, part], problems)
    if problems:
        return None

    ids = attr.ids
    persons = [person_of(k) for k in ids]
    paths = [str(_resolve(image_dir, k, p)) for k, p in zip(ids, persons)]
    names = sorted(set(persons))
    number = {p: i for i, p in enumerate(names)}
    if part is not None:
        split = align(part, ids)[:, 0].astype(np.int8)
        how = f"partition file {part_path}"
    else:
        split = split_by_group(persons, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        how = f"by identity, seed {seed}, val {val_fraction}, test {test_fraction}"
    n = len(ids)
    crops = np.full((n, 3), np.nan)
    if center_crop:
        crops[:, 2] = center_crop  # x0, y0 NaN: the window is centred on each image
    plan = Plan(
        source="lfwa", attribute_names=list(attr.header or []), image_ids=list(ids), images=paths, split=split,
        labels={"attributes": ((attr.values + 1) // 2).astype(np.int8), "identity": np.array([number[p] for p in persons], np.int64),
                "face": np.ones(n, np.int8)},
        crops=crops,
        provenance={"dataset": "lfwa", "root": str(root.resolve()), "attributes_file": str(attr_path), "images": str(image_dir),
                    "split": how, "center_crop": center_crop, "identities": len(names),
                    "manifest_version": m.data.get("version")},
    )
    plan.warnings = m.count_warnings(n)
    return plan


def _resolve(image_dir: Path, image: str, person: str) -> Path:
    rel = image.replace("\\", "/")
    if "/" in rel:
        return image_dir / rel
    in_person = image_dir / person / rel
    return in_person if in_person.exists() or not (image_dir / rel).exists() else image_dir / rel
