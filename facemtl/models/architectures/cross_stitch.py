"""``cross-stitch``: cross-stitch networks (Misra, Shrivastava, Gupta and Hebert, CVPR 2016).

Every task has its own column, a copy of the whole trunk. After each stage a cross-stitch unit
mixes the columns linearly: ``x'_t = sum_s alpha[t, s] * x_s`` (one learnable T x T matrix per
unit, the paper's form; ``channelwise=true`` gives every channel its own matrix, as LibMTL does).
A unit follows every stage, the last one included, then each column's own tail (pooling, fc
layers) and head. The paper initialises ``alpha`` with ``alpha_self`` = 0.9 on the diagonal and
splits the rest evenly off the diagonal (0.1 with two tasks); with ``alpha_self=1`` the network
starts as independent single-task networks.

Shared representation: the columns' outputs entering the last unit (T maps); the last unit's row
t (in ``towers[t]``), column t's tail and head are task t's own. Every earlier stage and unit
feeds all tasks: they are the shared parameters. Cost: T times the trunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone
from facemtl.models.architectures._base import ARCHITECTURES, ArchitectureModel, TaskTower
from facemtl.models.architectures._stages import clone, stages_of
from facemtl.models.multitask import make_head
from facemtl.tasks.base import Task


@ARCHITECTURES.register("cross-stitch")
class CrossStitch(ArchitectureModel):
    paper = "Misra, Shrivastava, Gupta and Hebert, Cross-stitch Networks for Multi-task Learning, CVPR 2016"
    needs_stages = True

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], alpha_self: float = 0.9,
                 channelwise: bool = False):
        self._setup(backbone, tasks, config)
        a = float(alpha_self)
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"architecture 'cross-stitch': alpha_self={alpha_self!r}; it must be in [0, 1] (paper: 0.9).")
        stages, tail, info = stages_of(backbone, "cross-stitch")
        T, K = len(self.task_names), len(stages)
        self.columns = nn.ModuleList(nn.ModuleList(clone(s) for s in stages) for _ in range(T))
        off = (1.0 - a) / (T - 1) if T > 1 else 0.0
        init = torch.full((T, T), off)
        init.fill_diagonal_(a if T > 1 else 1.0)

        def unit(channels: int) -> Tensor:  # (T, T) or (T, T, C)
            return init.clone() if not channelwise else init[..., None].repeat(1, 1, channels)

        ch = [f["num_chs"] for f in info]
        self.stitches = nn.ParameterList(nn.Parameter(unit(ch[j])) for j in range(K - 1))

        def tower(t: int) -> TaskTower:
            tw = TaskTower()
            tw.alpha = nn.Parameter(unit(ch[-1])[t])  # row t of the last unit: (T,) or (T, C)
            tw.tail = clone(tail)
            return tw

        self.towers = nn.ModuleDict({t.name: tower(i) for i, t in enumerate(tasks)})
        self.heads = nn.ModuleDict({t.name: make_head(t, backbone, in_features=backbone.feature_dim) for t in tasks})
        self.feature_dims = [ch[-1] * info[-1]["size"] ** 2] * T

    @staticmethod
    def _mix(row: Tensor, xs: Sequence[Tensor]) -> Tensor:
        """sum_s row[s] * xs[s]; ``row`` (T,) or (T, C)."""
        w = row.view(row.shape[0], 1, -1, 1, 1) if row.dim() == 2 else row.view(-1, 1, 1, 1, 1)
        return (w.to(xs[0].dtype) * torch.stack(list(xs))).sum(0)

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        x = self._check_images(images)
        xs = [x] * len(self.columns)
        K = len(self.columns[0])
        for j in range(K):
            ys = [col[j](xi) for col, xi in zip(self.columns, xs)]
            if j < K - 1:
                xs = [self._mix(self.stitches[j][t], ys) for t in range(len(ys))]
        return ys  # T x (B, C, H, W), in task order

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        out = {}
        for n in self.task_names:
            tw = self.towers[n]
            out[n] = self.heads[n](tw.tail(self._mix(tw.alpha, feats)))
        return out
