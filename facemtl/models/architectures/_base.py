"""What every multi-task architecture shares: the registry, the base class and option checking.

An architecture is a :class:`~facemtl.models.MultiTaskModel` subclass registered with
``@ARCHITECTURES.register(name)``; it is built as ``cls(backbone, tasks, config=..., **options)``
from the :class:`~facemtl.models.Backbone` record of any backbone it accepts.

Every architecture keeps the engine's two halves (:mod:`facemtl.weighting.base`):

- ``forward_features(image)`` returns the **shared representation**: the tensors at the point
  after which no parameter serves more than one task. Gradient-based strategies in ``rep`` mode
  take the per-task gradients with respect to these tensors (the heads side runs on detached
  copies of them), so everything upstream of them is shared and gets the combined gradient.
- ``forward_heads(feats)`` runs the task-specific part: ``towers[task]`` (gates, task experts,
  attention modules, a task's column end) followed by ``heads[task]``.

``shared_parameters()`` (``params`` mode, GradNorm) is every parameter outside ``heads``,
``towers`` and ``criteria``: exactly those that more than one task's loss can depend on.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from facemtl._registry import Registry
from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone, count_parameters
from facemtl.models.multitask import MultiTaskModel
from facemtl.tasks.base import Task

ARCHITECTURES: Registry = Registry("architecture")


class TaskTower(nn.Module):
    """A plain container for one task's own modules and parameters (attributes set by the architecture)."""


class ArchitectureModel(MultiTaskModel):
    """Base of the architectures other than ``hps``: one input, vector heads, per-task ``towers``.

    Subclasses build their shared modules and ``self.towers`` in ``__init__`` (after calling
    :meth:`_setup`) and implement ``forward_features`` / ``forward_heads``."""

    #: the paper the architecture follows (docs/architectures.md lists the options)
    paper: ClassVar[str] = ""
    #: True when the architecture cuts the trunk into stages (needs ``Backbone.stages``)
    needs_stages: ClassVar[bool] = False

    def _setup(self, backbone: Backbone, tasks: Sequence[Task], config: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        self._init_common(tasks, config, backbone)
        self.backbone_options: dict[str, Any] = dict(backbone.options)
        self.input_spec: list[tuple[int, int]] = [(backbone.input_size, 3)]
        # only hps hands the trunk's maps to spatial heads: every head here is a vector head
        self.map_tasks: tuple[str, ...] = ()
        self.taps: tuple[int, ...] = ()
        self.map_channels: tuple[int, ...] = ()
        self._map_slots: dict[str, tuple[int, ...]] = {}

    def _check_images(self, images: Sequence[Tensor]) -> Tensor:
        if len(images) != 1:
            raise ConfigError(f"model takes 1 image batch {self.input_spec}, got {len(images)}.")
        return self.preprocess(images[0])

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the heads, the task towers and the criteria."""
        return [p for n, p in self.named_parameters() if not n.startswith(("heads.", "towers.", "criteria."))]

    def describe(self) -> dict[str, Any]:
        """As :meth:`MultiTaskModel.describe`; a task's "head" count includes its tower."""
        d = super().describe()
        heads = {n: count_parameters(self.heads[n]) + count_parameters(self.towers[n]) for n in self.task_names}
        d["parameters"]["heads"] = heads
        d["parameters"]["deployed"] = d["parameters"]["shared"] + sum(heads.values())
        d["architecture"] = self.config.get("architecture", "hps")
        d["architecture_options"] = dict(self.config.get("architecture_options", {}))
        return d


def check_architecture_options(name: str, cls: type, options: dict[str, Any]) -> None:
    """Unknown or misspelt architecture options fail with the list of accepted ones."""
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY and p != "config"]
    bad = [k for k in options if k not in accepted]
    if bad:
        raise ConfigError(
            f"architecture '{name}' has no option {', '.join(repr(b) for b in bad)}; "
            f"its options are: {', '.join(accepted) or 'none'}."
        )


def positive(name: str, option: str, value: Any, minimum: int = 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = minimum - 1
    if v < minimum or v != value:
        raise ConfigError(f"architecture '{name}': {option}={value!r}; it must be an integer >= {minimum}.")
    return v
