"""``mtan``: Multi-Task Attention Network (Liu, Johns and Davison, CVPR 2019).

The trunk's stages form the shared network; each task owns one soft attention module per stage.
At stage j, task t's mask ``a_j = g_j([p_j ; f_j(â_{j-1})])`` (``g_j``: 1x1 conv, BN, ReLU, 1x1
conv, BN, sigmoid; ``f_j``: 3x3 conv, BN, ReLU with the stride that brings stage j-1's resolution
to stage j's) selects from the shared map ``p_j``: ``â_j = a_j * p_j``; at the first stage the mask
reads ``p_1`` alone. The last attended map goes through the task's own copy of the trunk's tail
(pooling and fc layers) into its head.

The paper's mask reads the output of the block's first layer ``u_j`` and gates the block's output
``p_j``; here both are the stage output ``p_j``, so any backbone that exposes stages works
unchanged (LibMTL's ResNet version cuts each layer before its last block instead).

Shared representation: the shared maps ``[p_1, ..., p_K]``; everything after them is per task.
Options: ``mask_channels`` (width of the mask's hidden 1x1 conv; default: a quarter of the stage's
channels, which keeps the masks cheap on wide backbones such as ResNet-50).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from facemtl.models._backbone import Backbone
from facemtl.models.architectures._base import ARCHITECTURES, ArchitectureModel, TaskTower, positive
from facemtl.models.architectures._stages import clone, resampler, stages_of
from facemtl.models.multitask import make_head
from facemtl.tasks.base import Task


def attention(cin: int, mid: int, cout: int) -> nn.Sequential:
    """MTAN's g: two 1x1 conv + BN layers, ReLU between, sigmoid after: a mask in [0, 1]."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid(),
    )


@ARCHITECTURES.register("mtan")
class MTAN(ArchitectureModel):
    paper = "Liu, Johns and Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019"
    needs_stages = True

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], mask_channels: int | None = None):
        self._setup(backbone, tasks, config)
        stages, tail, info = stages_of(backbone, "mtan")
        self.stages = nn.ModuleList(stages)
        ch = [f["num_chs"] for f in info]
        sizes = [f["size"] for f in info]
        mids = [positive("mtan", "mask_channels", mask_channels)] * len(ch) if mask_channels is not None else [max(1, c // 4) for c in ch]
        self.feature_dims = [c * s * s for c, s in zip(ch, sizes)]

        def tower() -> TaskTower:
            t = TaskTower()
            t.masks = nn.ModuleList(
                attention(ch[j] if j == 0 else 2 * ch[j], mids[j], ch[j]) for j in range(len(ch)))
            t.down = nn.ModuleList(
                resampler(ch[j - 1], ch[j], sizes[j - 1], sizes[j], f"mtan on '{config.get('backbone')}' stage {j}")
                for j in range(1, len(ch)))
            t.tail = clone(tail)
            return t

        self.towers = nn.ModuleDict({t.name: tower() for t in tasks})
        self.heads = nn.ModuleDict({t.name: make_head(t, backbone, in_features=backbone.feature_dim) for t in tasks})

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        x = self._check_images(images)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps  # [(B, C1, H1, W1), ..., (B, CK, HK, WK)]

    def attend(self, task: str, maps: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Task ``task``'s last attended map and its masks (one per stage, values in [0, 1])."""
        tower = self.towers[task]
        masks, att = [], None
        for j, p in enumerate(maps):
            inp = p if att is None else torch.cat([p, tower.down[j - 1](att)], 1)
            a = tower.masks[j](inp)
            masks.append(a)
            att = a * p
        return att, masks

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        return {n: self.heads[n](self.towers[n].tail(self.attend(n, feats)[0])) for n in self.task_names}
