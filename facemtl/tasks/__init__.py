"""Tasks: one self-contained unit per face task, built by name.

Names: ``detection``, ``landmarks``, ``attributes`` (every attribute of the cache, one head of A
logits), ``identity``, ``expression``, ``pose``, a single attribute ``attr:<CelebA name>`` (aliases
``gender`` = Male, ``glasses`` = Eyeglasses, ``smile`` = Smiling) and ``attr:*``, which expands to
one task per attribute (the 40-task CelebA benchmark).
"""

from __future__ import annotations

from typing import Any

from facemtl.data import schema
from facemtl.errors import ConfigError, UnknownNameError
from facemtl.tasks.base import DataInfo, Task
from facemtl.tasks.kinds import (
    ALIASES, AttributesTask, ClassTask, DetectionTask, IdentityTask, LandmarksTask, PoseTask,
)

BASE_TASKS = ("detection", "landmarks", "attributes", "identity", "expression", "pose")
LABEL_OF = {
    "detection": "face", "landmarks": "landmarks", "attributes": "attributes", "identity": "identity",
    "expression": "expression", "pose": "pose_class",
}

__all__ = ["DataInfo", "Task", "build_task", "build_tasks", "expand_task_names", "available_tasks", "valid_task_names"]


def valid_task_names(info: DataInfo | None = None) -> list[str]:
    names = list(BASE_TASKS) + sorted(ALIASES) + ["attr:*"]
    if info is not None:
        names += [f"attr:{a}" for a in info.attribute_names]
    return names


def expand_task_names(names: list[str], info: DataInfo) -> list[str]:
    out: list[str] = []
    for n in names:
        if n == "attr:*":
            out += [f"attr:{a}" for a in info.attribute_names]
        else:
            out.append(n)
    if len(set(out)) != len(out):
        raise ConfigError(f"task list {names} names a task twice.")
    return out


def build_task(name: str, info: DataInfo, options: dict[str, Any] | None = None) -> Task:
    """Build task ``name`` for data described by ``info``; unknown names list the valid ones."""
    opts = dict(options or {})
    hidden = int(opts.pop("hidden", 0))
    if name in ALIASES or name.startswith("attr:"):
        attr = ALIASES.get(name, name[5:])
        if attr not in info.attribute_names:
            raise ConfigError(
                f"task '{name}' needs attribute '{attr}', which this data does not have; "
                f"its attributes are: {', '.join(info.attribute_names) or 'none'}."
            )
        col = info.attribute_names.index(attr)
        return AttributesTask(name, "attributes", 1, True, "accuracy", hidden, opts, columns=(col,), names=(attr,))
    if name == "attributes":
        chosen = opts.pop("names", None) or list(info.attribute_names)
        bad = [a for a in chosen if a not in info.attribute_names]
        if bad or not chosen:
            raise ConfigError(f"attributes {bad or '[]'} are not in this data; it has: {', '.join(info.attribute_names)}.")
        cols = tuple(info.attribute_names.index(a) for a in chosen)
        return AttributesTask(name, "attributes", len(cols), True, "accuracy", hidden, opts, columns=cols, names=tuple(chosen))
    if name == "landmarks":
        return LandmarksTask(name, "landmarks", 10, False, "nme", hidden, opts)
    if name == "detection":
        return DetectionTask(name, "face", 5, True, "accuracy", hidden, opts)
    if name == "expression":
        return ClassTask(name, "expression", len(schema.EXPRESSION_NAMES), True, "accuracy", hidden, opts)
    if name == "pose":
        return PoseTask(name, "pose_class", len(schema.POSE_CLASS_NAMES), True, "accuracy", hidden, opts)
    if name == "identity":
        if info.num_identities < 2:
            raise ConfigError("task 'identity' needs identity labels, and this data has fewer than 2 identities.")
        dim = int(opts.pop("embedding_dim", 128))
        return IdentityTask(name, "identity", dim, True, "verification_auc", hidden, opts, num_classes=info.num_identities)
    raise UnknownNameError("task", name, valid_task_names(info))


def build_tasks(names: list[str], info: DataInfo, options: dict[str, dict[str, Any]] | None = None) -> list[Task]:
    options = options or {}
    names = expand_task_names(names, info)
    tasks = [build_task(n, info, options.get(n)) for n in names]
    for t in tasks:
        if t.label_key not in info.labels:
            raise ConfigError(
                f"task '{t.name}' needs '{t.label_key}' labels, which this cache does not have "
                f"(it has: {', '.join(info.labels) or 'none'}); drop the task or use another dataset."
            )
    return tasks


def available_tasks(cache) -> list[str]:
    """Base task names the cache has labels for (``facemtl info`` shows them)."""
    info = DataInfo.from_cache(cache)
    out = [t for t in BASE_TASKS if LABEL_OF[t] in info.labels and not (t == "identity" and info.num_identities < 2)]
    out += [a for a, attr in ALIASES.items() if attr in info.attribute_names and "attributes" in info.labels]
    return out
