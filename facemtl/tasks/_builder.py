"""Building tasks by name: :data:`TASKS` maps each name to a builder ``(name, info, options, hidden) -> Task``.

Register a new one with ``@register_task("name")`` (docs/extending.md); ``attr:<attribute>`` and
the aliases of :data:`~facemtl.tasks.kinds.ALIASES` are built from the data's attribute names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facemtl._registry import Registry
from facemtl.data import schema
from facemtl.errors import ConfigError, UnknownNameError
from facemtl.tasks.base import DataInfo, Task
from facemtl.tasks.kinds import (
    ALIASES,
    AttributesTask,
    ClassTask,
    DetectionTask,
    IdentityTask,
    LandmarksTask,
    PoseTask,
)

#: ``builder(name, info, options, hidden) -> Task``; ``options`` is the task's own table of
#: ``[tasks.options.<name>]`` without ``hidden`` (the builder may pop its own keys)
TaskBuilder = Callable[[str, DataInfo, dict[str, Any], int], Task]
TASKS: Registry[TaskBuilder] = Registry("task")
register_task = TASKS.register


@register_task("detection")
def _detection(name, info, opts, hidden):
    return DetectionTask(name, "face", 5, hidden, opts)


@register_task("landmarks")
def _landmarks(name, info, opts, hidden):
    return LandmarksTask(name, "landmarks", 10, hidden, opts)


@register_task("attributes")
def _attributes(name, info, opts, hidden):
    chosen = opts.pop("names", None) or list(info.attribute_names)
    bad = [a for a in chosen if a not in info.attribute_names]
    if bad or not chosen:
        raise ConfigError(f"attributes {bad or '[]'} are not in this data; it has: {', '.join(info.attribute_names)}.")
    cols = tuple(info.attribute_names.index(a) for a in chosen)
    return AttributesTask(name, "attributes", len(cols), hidden, opts, columns=cols, names=tuple(chosen))


@register_task("identity")
def _identity(name, info, opts, hidden):
    if info.num_identities < 2:
        raise ConfigError("task 'identity' needs identity labels, and this data has fewer than 2 identities.")
    dim = int(opts.pop("embedding_dim", 128))
    return IdentityTask(name, "identity", dim, hidden, opts, num_classes=info.num_identities)


@register_task("expression")
def _expression(name, info, opts, hidden):
    return ClassTask(name, "expression", len(schema.EXPRESSION_NAMES), hidden, opts)


@register_task("pose")
def _pose(name, info, opts, hidden):
    return PoseTask(name, "pose_class", len(schema.POSE_CLASS_NAMES), hidden, opts)


def _one_attribute(name: str, info: DataInfo, opts: dict[str, Any], hidden: int) -> Task:
    attr = ALIASES.get(name, name[5:])
    if attr not in info.attribute_names:
        raise ConfigError(
            f"task '{name}' needs attribute '{attr}', which this data does not have; "
            f"its attributes are: {', '.join(info.attribute_names) or 'none'}."
        )
    col = info.attribute_names.index(attr)
    return AttributesTask(name, "attributes", 1, hidden, opts, columns=(col,), names=(attr,))


def valid_task_names(info: DataInfo | None = None) -> list[str]:
    names = list(TASKS.in_order()) + sorted(ALIASES) + ["attr:*"]  # registration order: the built-ins first
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
        return _one_attribute(name, info, opts, hidden)
    if name not in TASKS:
        raise UnknownNameError("task", name, valid_task_names(info))
    return TASKS.get(name)(name, info, opts, hidden)


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
    """Registered task names the cache has labels for (``facemtl info`` shows them)."""
    info = DataInfo.from_cache(cache)
    out = []
    for name in TASKS.in_order():
        try:
            task = build_task(name, info)
        except ConfigError:  # e.g. identity with fewer than 2 identities, attributes without any
            continue
        if task.label_key in info.labels:
            out.append(name)
    out += [a for a, attr in ALIASES.items() if attr in info.attribute_names and "attributes" in info.labels]
    return out
