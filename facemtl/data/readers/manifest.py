"""Dataset manifests: ``data_manifests/<name>.toml`` state what a complete copy of a dataset holds.

A manifest lists the files a reader looks for (with the candidate paths of each layout), the
image and split counts of the full dataset, attribute names, landmark order and coordinate
frame, label encodings, licence and where to obtain it. Readers validate against it: attribute
names that differ are an error; counts that differ from the full dataset only a warning (a user
may prepare a subset), while counts that disagree *between* annotation files are an error.

Manifests are looked up in ``$FACEMTL_MANIFESTS`` if set, else in ``data_manifests/`` beside the
``facemtl`` package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from facemtl.errors import DataFormatError, MissingFileError, UnknownNameError


@dataclass(frozen=True)
class FileSpec:
    """One file (or folder) a dataset needs: its role, candidate paths relative to the root."""

    role: str
    paths: tuple[str, ...]
    required: bool = True
    kind: str = "file"  # "file" or "dir"
    description: str = ""

    def find(self, root: Path) -> Path | None:
        for rel in self.paths:
            p = root / rel
            if (p.is_dir() if self.kind == "dir" else p.is_file()):
                return p
        return None


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    data: Mapping[str, Any] = field(repr=False)

    @property
    def files(self) -> dict[str, FileSpec]:
        out = {}
        for role, spec in self.data.get("files", {}).items():
            out[role] = FileSpec(
                role=role, paths=tuple(spec["paths"]), required=bool(spec.get("required", True)),
                kind=spec.get("kind", "file"), description=spec.get("description", ""),
            )
        return out

    @property
    def image_count(self) -> int | None:
        return self.data.get("images", {}).get("count")

    @property
    def split_counts(self) -> dict[str, int]:
        return dict(self.data.get("splits", {}))

    @property
    def attribute_names(self) -> list[str]:
        return list(self.data.get("labels", {}).get("attribute_names", []))

    @property
    def obtain(self) -> str:
        return str(self.data.get("obtain", ""))

    def locate(self, root: Path, roles: Sequence[str] | None = None) -> tuple[dict[str, Path], list[str]]:
        """Find each file under ``root``: ``({role: path}, [missing descriptions])``."""
        found: dict[str, Path] = {}
        missing: list[str] = []
        for role, spec in self.files.items():
            if roles is not None and role not in roles:
                continue
            p = spec.find(root)
            if p is not None:
                found[role] = p
            elif spec.required:
                missing.append(f"{role} ({' or '.join(spec.paths)} under {root})")
        return found, missing

    def locate_required(self, root: Path, problems) -> dict[str, Path] | None:
        """:meth:`locate`, recording a missing root folder or file in ``problems``; None if any is missing."""
        root = Path(root)
        if not root.is_dir():
            problems.add_missing(f"root folder {root}")
            return None
        found, missing = self.locate(root)
        for what in missing:
            problems.add_missing(what)
        return None if problems.missing else found

    def count_warnings(self, n_images: int, splits: Mapping[str, int] | None = None) -> list[str]:
        """Differences from the full dataset's counts, phrased as 'subset?' warnings."""
        names = [k for k in self.split_counts if (splits or {}).get(k) is not None]
        differs = self.image_count is not None and n_images != self.image_count
        differs |= any(splits[k] != self.split_counts[k] for k in names)  # type: ignore[index]
        if not differs:
            return []
        got = f"{n_images} images" + (f" ({' / '.join(f'{k} {splits[k]}' for k in names)})" if names else "")  # type: ignore[index]
        full = f"{self.image_count}" + (f" ({' / '.join(f'{k} {self.split_counts[k]}' for k in names)})" if names else "")
        return [f"{got} where the full {self.title} has {full}: a subset?"]

    def attribute_problems(self, names: Sequence[str]) -> list[str]:
        """Differences between attribute names found in a file and the manifest's (an error)."""
        want = self.attribute_names
        if not want or list(names) == want:
            return []
        if len(names) != len(want):
            msg = [f"{len(names)} attribute names where {self.title} has {len(want)}"]
        else:
            msg = []
        for i, (a, b) in enumerate(zip(names, want)):
            if a != b:
                msg.append(f"column {i + 1} is '{a}', expected '{b}'")
        return msg[:10] + ([f"... {len(msg) - 10} more differences"] if len(msg) > 10 else [])


def manifest_dir() -> Path:
    env = os.environ.get("FACEMTL_MANIFESTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3] / "data_manifests"  # a source checkout
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parents[2] / "manifests"  # installed: shipped inside the package


def available() -> list[str]:
    d = manifest_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


@cache
def load_manifest(name: str) -> Manifest:
    """Load and check ``data_manifests/<name>.toml``."""
    path = manifest_dir() / f"{name}.toml"
    if not path.is_file():
        if not manifest_dir().is_dir():
            raise MissingFileError(f"manifest folder {manifest_dir()} not found; set FACEMTL_MANIFESTS to the data_manifests folder.")
        raise UnknownNameError("dataset manifest", name, available())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise DataFormatError(f"{path}: not valid TOML ({e}).") from None
    for key in ("name", "title", "files"):
        if key not in data:
            raise DataFormatError(f"{path}: manifest lacks the '{key}' entry.")
    if data["name"] != name:
        raise DataFormatError(f"{path}: manifest says name = '{data['name']}', expected '{name}'.")
    for role, spec in data["files"].items():
        if not isinstance(spec, dict) or not spec.get("paths"):
            raise DataFormatError(f"{path}: files.{role} needs a non-empty 'paths' list.")
    return Manifest(name=name, title=str(data["title"]), data=data)
