"""The hard-parameter-sharing multi-task model: one shared trunk, one head per task.

``forward_features`` and ``forward_heads`` are the two halves the training engine calls (it may
run the heads on detached copies of the features, see :mod:`facemtl.weighting.base`);
``forward`` chains them and is what export traces. Models never compute losses: ``criteria``
only holds the learnable parts of some losses (identity centres and classifier), kept here so
that they move with the model and land in its state dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone, Preprocess, count_parameters
from facemtl.tasks.base import Task


class MultiTaskModel(nn.Module):
    """Shared trunk + per-task heads.

    Attributes: ``input_spec`` [(size, channels)] of the images ``forward`` takes (float RGB in
    [0, 1]; channels is always 3, grey backbones convert inside), ``task_names``, ``heads``
    (task -> head; for backbones with per-task branches, ``Sequential(branch, out)``),
    ``criteria`` (task -> criterion module, only for tasks that have one), ``feature_dims`` (the
    width of each tensor ``forward_features`` returns) and ``config`` (what :func:`build_model`
    needs to rebuild the architecture: store it in checkpoints).
    """

    shared_prefixes: tuple[str, ...] = ("trunk.",)

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any]):
        super().__init__()
        self._init_common(tasks, config, backbone)
        self.backbone_options: dict[str, Any] = dict(backbone.options)
        self.input_spec: list[tuple[int, int]] = [(backbone.input_size, 3)]
        self.feature_dims: list[int] = [backbone.feature_dim]
        self.trunk = backbone.trunk
        self.heads = nn.ModuleDict({t.name: make_head(t, backbone) for t in tasks})
        #: tasks whose head reads the trunk's feature maps (``forward_features`` returns them after
        #: the vector only when such a head exists, so other models keep a single representation)
        self.map_tasks: tuple[str, ...] = tuple(n for n, h in self.heads.items() if getattr(h, "reads_maps", False))
        # only the maps some head reads are returned (an unread map would carry no gradient)
        needed = sorted({i for n in self.map_tasks for i in self.heads[n].used})
        self.taps: tuple[int, ...] = tuple(backbone.taps[i] for i in needed)
        self.map_channels: tuple[int, ...] = tuple(backbone.tap_channels[i] for i in needed)
        self._map_slots = {n: tuple(needed.index(i) for i in self.heads[n].used) for n in self.map_tasks}

    def _init_common(self, tasks: Sequence[Task], config: dict[str, Any], backbone: Backbone) -> None:
        names = [t.name for t in tasks]
        if not names:
            raise ConfigError("a model needs at least one task.")
        if len(set(names)) != len(names):
            raise ConfigError(f"task list {names} names a task twice.")
        self.task_names: list[str] = names
        self.config = dict(config)
        self.preprocess = Preprocess(backbone.in_channels, backbone.mean, backbone.std)
        self.weight_ignore_keys: tuple[str, ...] = backbone.ignore_keys
        criteria = {t.name: c for t in tasks if (c := t.build_criterion()) is not None}
        self.criteria = nn.ModuleDict(criteria)

    # -- the engine's two halves -----------------------------------------------------------------
    def forward_features(self, *images: Tensor) -> list[Tensor]:
        """images: one (B, 3, S, S) float RGB batch in [0, 1] at ``input_spec`` size -> [(B, D)]."""
        if len(images) != len(self.input_spec):
            raise ConfigError(f"model takes {len(self.input_spec)} image batch(es) {self.input_spec}, got {len(images)}.")
        x = self.preprocess(images[0])
        if not self.taps:
            return [self.trunk(x)]  # [(B, D)]
        maps = []
        for i, layer in enumerate(self.trunk):  # static indices: traces and exports like the plain call
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        return [x, *maps]  # [(B, D), (B, C1, H1, W1), ...] in ``taps`` order

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor | list[Tensor]]:
        """Shared features -> {task: (B, out_dim)}; map heads get the feature maps, the others the vector."""
        out = {}
        for name, head in self.heads.items():
            if name in self._map_slots:
                out[name] = head([feats[1 + k] for k in self._map_slots[name]])
            else:
                out[name] = head(feats[0])
        return out

    def forward(self, *images: Tensor) -> dict[str, Tensor]:
        """Inference: {task: (B, out_dim)} (what export traces)."""
        return self.forward_heads(self.forward_features(*images))  # type: ignore[return-value]

    # -- parameters and introspection ------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter but those of the heads and criteria (the trunk's)."""
        return [p for n, p in self.named_parameters() if not n.startswith(("heads.", "criteria."))]

    def criterion(self, task: str) -> nn.Module | None:
        return self.criteria[task] if task in self.criteria else None

    def last_linear(self, task: str, stage: int = -1) -> nn.Linear:
        """The last ``nn.Linear`` of a task's head (TCDCN's head-correlation report reads its weights)."""
        head = self.heads[task]
        if isinstance(head, nn.ModuleList):  # cascade: one head per stage
            head = head[stage]
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"the head of task '{task}' has no linear layer.")
        return linears[-1]

    def describe(self) -> dict[str, Any]:
        """Parameter counts (shared, per head, per criterion, total), input spec and feature widths."""
        heads = {n: count_parameters(h) for n, h in self.heads.items()}
        crit = {n: count_parameters(c) for n, c in self.criteria.items()}
        shared = count_parameters(self.shared_parameters())
        return {
            "backbone": self.config.get("backbone"),
            "input_spec": [list(s) for s in self.input_spec],
            "feature_dims": list(self.feature_dims),
            "parameters": {
                "shared": shared, "heads": heads, "criteria": crit,
                "deployed": shared + sum(heads.values()), "total": count_parameters(self),
            },
            "options": dict(self.backbone_options),
        }


def make_head(task: Task, backbone: Backbone, in_features: int | None = None) -> nn.Module:
    """The task's head, behind the backbone's per-task branch when it has one; a spatial head on
    the backbone's feature maps when the task asks for one and the backbone exposes them."""
    if backbone.tap_channels and backbone.branch is None and in_features is None:
        head = task.build_map_head(backbone.tap_channels)
        if head is not None:
            return head
    if backbone.branch is None:
        return task.build_head(in_features or backbone.feature_dim)
    return nn.Sequential(OrderedDict(branch=backbone.branch(), out=task.build_head(backbone.branch_dim)))
