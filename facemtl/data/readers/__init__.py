"""Real-dataset readers: CelebA, LFWA, MTFL, FER2013, CK+ and any folder + CSV, into the facemtl cache.

Each reader is one ``scan(problems, **options) -> Plan | None`` function that parses and validates
a dataset's own files, collecting *every* problem; the shared :func:`~._plan.run_prepare` does the
parallel decode into the cache. Readers are looked up by dataset name::

    from facemtl.data.readers import prepare_dataset, check_dataset, READERS
    prepare_dataset("celeba", "data/celeba.h5", root="~/data/CelebA", sizes=(112,))

Apart from these: :mod:`.lfw_subset` writes scikit-image's bundled LFW subset as a test-only cache
for ``facemtl evaluate RUN --dataset lfw-subset`` (no files to read, so no scan / Plan).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facemtl._registry import Registry
from facemtl.data.readers import celeba, ckplus, fer2013, folder, lfwa, mtfl
from facemtl.data.readers._annotations import Problems
from facemtl.data.readers._plan import Plan, PrepareResult, run_prepare
from facemtl.data.readers.manifest import load_manifest


@dataclass(frozen=True)
class DatasetReader:
    """A dataset name, its scan function and its manifest (None for ``folder``)."""

    name: str
    scan: Callable[..., Plan | None]
    manifest: str | None

    def __call__(self, problems: Problems, **options: Any) -> Plan | None:
        return self.scan(problems, **options)


READERS: Registry = Registry("dataset")
for _name, _mod, _manifest in (
    ("celeba", celeba, "celeba"), ("lfwa", lfwa, "lfwa"), ("mtfl", mtfl, "mtfl"),
    ("fer2013", fer2013, "fer2013"), ("ckplus", ckplus, "ckplus"), ("folder", folder, None),
):
    READERS.register(_name)(DatasetReader(_name, _mod.scan, _manifest))


_PATH_OPTIONS = ("root", "images", "labels", "attributes", "partition")


def _paths(options: dict[str, Any]) -> dict[str, Any]:
    """Path options as ``Path`` with ``~`` expanded (Python callers pass plain strings)."""
    return {k: Path(v).expanduser() if k in _PATH_OPTIONS and v is not None else v for k, v in options.items()}


def check_command(dataset: str, options: dict[str, Any]) -> str:
    """The ``facemtl prepare DATASET ... --check`` command for the same files (for error hints)."""
    parts = ["facemtl", "prepare", dataset]
    for key in _PATH_OPTIONS:
        if options.get(key) is not None:
            parts += [f"--{key}", shlex.quote(str(options[key]))]
    if dataset == "folder" and options.get("allow_outside_root"):
        parts.append("--allow-outside-root")
    return " ".join(parts + ["--check"])


def build_plan(dataset: str, **options: Any) -> Plan:
    """Parse and validate ``dataset``; raise one error listing every problem found."""
    reader = READERS.get(dataset)
    options = _paths(options)
    problems = Problems()
    plan = reader(problems, **options)
    problems.raise_if_any(dataset, hint=f"fix the files named above; `{check_command(dataset, options)}` checks them again without writing anything")
    assert plan is not None
    return plan


def prepare_dataset(
    dataset: str, out: str | os.PathLike, *, sizes: tuple[int, ...] = (56, 112, 224), workers: int = 0,
    limit: int | None = None, force: bool = False, resume: bool = False, skip_bad: bool = False,
    report: str | os.PathLike | None = None, phase: Any = None, **options: Any,
) -> PrepareResult:
    """Validate ``dataset`` (reader ``options``: root, variant, ...) and write its cache to ``out``."""
    plan = build_plan(dataset, **options)
    return run_prepare(
        plan, out, sizes=sizes, workers=workers, limit=limit, force=force, resume=resume,
        skip_bad=skip_bad, report=report, phase=phase,
    )


@dataclass
class CheckReport:
    """What ``prepare DATASET --check`` found: files, counts, errors and warnings. Nothing is written."""

    dataset: str
    files: list[tuple[str, str, str]] = field(default_factory=list)  # (role, path or candidates, status)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # at most MAX_SHOWN, then "... and N more problems"
    warnings: list[str] = field(default_factory=list)
    num_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_dataset(dataset: str, **options: Any) -> CheckReport:
    """Report what is present, missing or inconsistent for ``dataset`` without writing anything."""
    reader = READERS.get(dataset)
    options = _paths(options)
    report = CheckReport(dataset)
    root = options.get("root")
    if reader.manifest and root is not None and Path(root).is_dir():
        found, _ = load_manifest(reader.manifest).locate(Path(root))
        for role, spec in load_manifest(reader.manifest).files.items():
            p = found.get(role)
            status = "present" if p else ("missing" if spec.required else "absent (optional)")
            report.files.append((role, str(p) if p else " or ".join(spec.paths), status))
    elif reader.manifest is None:
        for role in ("images", "labels"):
            p = Path(options[role])
            report.files.append((role, str(p), "present" if p.exists() else "missing"))
    problems = Problems()
    plan = reader(problems, **options)
    if plan is not None:
        report.counts = {"images": len(plan), **plan.split_counts()}
        report.warnings = list(plan.warnings)
        if plan.kind == "file":
            absent = [p for p in plan.images if not os.path.isfile(p)]
            report.counts["image_files_missing"] = len(absent)
            for p in absent:
                problems.add(p, None, "is missing")
    report.errors = problems.shown()  # the same rule as prepare's errors: MAX_SHOWN, then a count
    report.num_problems = problems.count()
    return report


__all__ = ["READERS", "CheckReport", "DatasetReader", "Plan", "PrepareResult", "build_plan", "check_command", "check_dataset", "prepare_dataset", "run_prepare"]
