"""``ltb``: learning to branch (Guo, Lee and Ulbricht, ICML 2020).

A tree over the trunk's stages. The first stage is one node shared by all tasks; every later
stage has one node per task (a copy of that stage), and each node picks its parent among the
previous stage's nodes with learnable branching logits. Training samples the choice with the
Gumbel-softmax (temperature ``tau``, soft samples, ``hard=true`` for straight-through one-hot
samples), so the tree is learnt jointly with the weights; in eval mode (and in exported models)
each node takes its most likely parent. The last stage's node t, its logits, the tail (pooling,
fc) and the head are task t's own.

Differences from the paper: the temperature is constant (the paper anneals it), and the tree
is not re-trained from scratch after the search: the argmax tree is read from the jointly
trained weights.

Shared representation: the outputs of the second-to-last stage's nodes; every node before the
last stage may serve several tasks, so those are the shared parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone
from facemtl.models.architectures._base import ARCHITECTURES, ArchitectureModel, TaskTower
from facemtl.models.architectures._stages import clone, stages_of
from facemtl.models.multitask import make_head
from facemtl.tasks.base import Task


@ARCHITECTURES.register("ltb")
class LearningToBranch(ArchitectureModel):
    paper = "Guo, Lee and Ulbricht, Learning to Branch for Multi-Task Learning, ICML 2020"
    needs_stages = True

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], tau: float = 1.0,
                 hard: bool = False):
        self._setup(backbone, tasks, config)
        if not float(tau) > 0:
            raise ConfigError(f"architecture 'ltb': tau={tau!r}; the Gumbel-softmax temperature must be > 0 (default 1).")
        self.tau, self.hard = float(tau), bool(hard)
        stages, tail, info = stages_of(backbone, "ltb")
        T, K = len(self.task_names), len(stages)
        self.root = stages[0]
        # stages 1 .. K-2: T nodes each, shared (any task may route through any of them)
        self.nodes = nn.ModuleList(nn.ModuleList(clone(stages[j]) for _ in range(T)) for j in range(1, K - 1))
        # logits of stage j's nodes over stage j-1's nodes (stage 1's only parent is the root)
        self.branch_logits = nn.ParameterList(nn.Parameter(torch.zeros(T, T)) for _ in range(2, K - 1))

        def tower() -> TaskTower:
            tw = TaskTower()
            tw.node = clone(stages[-1])
            tw.logits = nn.Parameter(torch.zeros(T if K > 2 else 1))
            tw.tail = clone(tail)
            return tw

        self.towers = nn.ModuleDict({t.name: tower() for t in tasks})
        self.heads = nn.ModuleDict({t.name: make_head(t, backbone, in_features=backbone.feature_dim) for t in tasks})
        prev = info[-2] if K > 1 else info[-1]
        self.feature_dims = [prev["num_chs"] * prev["size"] ** 2] * (T if K > 2 else 1)

    def choice(self, logits: Tensor) -> Tensor:
        """Weights over the parents: a Gumbel-softmax sample in training, the argmax one-hot in eval."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=self.hard)
        # the argmax one-hot written with max and == (ONNX Runtime cannot infer OneHot's shape); ties share
        top = (logits == logits.max(-1, keepdim=True).values).to(logits.dtype)
        return top / top.sum(-1, keepdim=True)

    @staticmethod
    def _pick(weights: Tensor, parents: Sequence[Tensor]) -> Tensor:
        return (weights.to(parents[0].dtype).view(-1, 1, 1, 1, 1) * torch.stack(list(parents))).sum(0)

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        outs = [self.root(self._check_images(images))]  # the shared root node
        for j, nodes in enumerate(self.nodes):
            if j == 0:
                outs = [node(outs[0]) for node in nodes]
            else:
                w = self.choice(self.branch_logits[j - 1])  # (T children, T parents)
                outs = [node(self._pick(w[c], outs)) for c, node in enumerate(nodes)]
        return outs  # the second-to-last stage's nodes

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        out = {}
        for n in self.task_names:
            tw = self.towers[n]
            x = self._pick(self.choice(tw.logits), feats)
            out[n] = self.heads[n](tw.tail(tw.node(x)))
        return out

    def tree(self) -> list[list[int]]:
        """The argmax tree: for each stage after the first, each node's parent index."""
        rows = [[0] * len(self.task_names)] if len(self.nodes) else []
        rows += [lg.argmax(-1).tolist() for lg in self.branch_logits]
        rows.append([int(self.towers[n].logits.argmax()) for n in self.task_names])
        return rows
