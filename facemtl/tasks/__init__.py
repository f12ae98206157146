"""Tasks: one self-contained unit per face task, built by name.

Names: ``detection``, ``landmarks``, ``attributes`` (every attribute of the cache, one head of A
logits), ``identity``, ``expression``, ``pose``, a single attribute ``attr:<CelebA name>`` (aliases
``gender`` = Male, ``glasses`` = Eyeglasses, ``smile`` = Smiling) and ``attr:*``, which expands to
one task per attribute (the 40-task CelebA benchmark).

- :mod:`.base`      the :class:`Task` interface and :class:`DataInfo`
- :mod:`.kinds`     the concrete tasks
- :mod:`._builder`  the name registry (``register_task``) and ``build_tasks``
- :mod:`.registry`  what each kind of task says to export, predict and the reports (no torch)

The names below are imported on first use, so ``facemtl.tasks.registry`` (which ``predict``
reads) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facemtl.tasks._builder import (
        TASKS,
        available_tasks,
        build_task,
        build_tasks,
        expand_task_names,
        register_task,
        valid_task_names,
    )
    from facemtl.tasks.base import DataInfo, Task

_LAZY = {
    "DataInfo": "facemtl.tasks.base", "Task": "facemtl.tasks.base",
    **{n: "facemtl.tasks._builder" for n in ("TASKS", "available_tasks", "build_task", "build_tasks",
                                             "expand_task_names", "register_task", "valid_task_names")},
}

__all__ = [
    "TASKS",
    "DataInfo",
    "Task",
    "available_tasks",
    "build_task",
    "build_tasks",
    "expand_task_names",
    "register_task",
    "valid_task_names",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facemtl.tasks' has no attribute '{name}'")
