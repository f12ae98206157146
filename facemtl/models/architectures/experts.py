"""Mixture-of-experts architectures on the backbone's feature vector: ``mmoe``, ``cgc``, ``ple``, ``dselect-k``.

The backbone's trunk is the shared bottom: ``h = trunk(x)`` (B, D). Experts are one-hidden-layer
networks ``Linear(D, expert_dim) + ReLU``; a task's gate reads ``h`` (or, in PLE's upper levels,
the task's own input) and weighs the experts it sees; the weighted sum feeds the task's head.
(LibMTL makes each expert a whole encoder instead; here one trunk is shared, as in the papers'
own recommender models where the experts sit on a shared input embedding.)

- ``mmoe``  (Ma et al., KDD 2018): ``experts`` shared experts, one softmax gate per task.
- ``cgc``   (Tang et al., RecSys 2020, Customized Gate Control): ``shared_experts`` shared plus
  ``task_experts`` per task; task t's gate mixes its own experts and the shared ones.
- ``ple``   (Tang et al. 2020, Progressive Layered Extraction): ``levels`` CGC levels stacked; below
  the last, a shared gate over every expert also feeds the next level's shared experts.
- ``dselect-k`` (Hazimeh et al., NeurIPS 2021): MMoE whose gate selects at most ``k`` of the
  ``experts`` through k differentiable binary selectors (smooth-step of width ``gamma``).

Shared representation (``rep`` mode): ``[h, shared expert outputs (B, E, expert_dim)]`` for MMoE,
DSelect-k and CGC; for PLE the last level's inputs (one per task) and its shared experts' outputs.
Gates and task-specific experts of the last level live in ``towers[task]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone, init_relu_net
from facemtl.models.architectures._base import ARCHITECTURES, ArchitectureModel, TaskTower, positive
from facemtl.models.multitask import make_head
from facemtl.tasks.base import Task


def expert(d_in: int, d_out: int) -> nn.Module:
    e = nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(inplace=True))
    init_relu_net(e)
    return e


def run_experts(experts: nn.ModuleList, x: Tensor) -> Tensor:
    return torch.stack([e(x) for e in experts], 1)  # (B, E, d)


def mix(gate: Tensor, experts: Tensor) -> Tensor:
    """gate (B, E) summing to 1, experts (B, E, d) -> (B, d)."""
    return (gate.unsqueeze(-1) * experts).sum(1)


class _Experts(ArchitectureModel):
    """Common set-up: trunk as shared bottom, heads on ``expert_dim``."""

    def _bottom(self, backbone: Backbone, tasks: Sequence[Task], config: dict[str, Any], expert_dim: int | None) -> int:
        self._setup(backbone, tasks, config)
        self.trunk = backbone.trunk
        self.feature_dims = [backbone.feature_dim]
        d = positive(config["architecture"], "expert_dim", expert_dim) if expert_dim is not None else backbone.feature_dim
        self.expert_dim = d
        self.heads = nn.ModuleDict({t.name: make_head(t, backbone, in_features=d) for t in tasks})
        return d


@ARCHITECTURES.register("mmoe")
class MMoE(_Experts):
    """Multi-gate mixture of experts: ``experts`` shared experts, one softmax gate per task."""

    paper = "Ma et al., Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts, KDD 2018"

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], experts: int = 4,
                 expert_dim: int | None = None):
        d = self._bottom(backbone, tasks, config, expert_dim)
        n = positive(config["architecture"], "experts", experts)
        D = backbone.feature_dim
        self.experts = nn.ModuleList(expert(D, d) for _ in range(n))
        self.towers = nn.ModuleDict({t.name: self._tower(D, n) for t in tasks})
        self.feature_dims = [D, n * d]

    def _tower(self, D: int, n: int) -> TaskTower:
        tower = TaskTower()
        tower.gate = nn.Linear(D, n)
        return tower

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        h = self.trunk(self._check_images(images))  # (B, D)
        return [h, run_experts(self.experts, h)]  # [(B, D), (B, E, d)]

    def gates(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        """{task: (B, E) expert weights}, each row summing to 1."""
        return {n: torch.softmax(self.towers[n].gate(feats[0]), -1) for n in self.task_names}

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        g = self.gates(feats)
        return {n: self.heads[n](mix(g[n], feats[1])) for n in self.task_names}


class DSelectGate(nn.Module):
    """Per-sample DSelect-k gate: k selectors, each a smooth binary code over ``experts`` (a power of 2),
    mixed by a softmax over the k selectors. Output (B, experts) sums to 1; once the smooth-steps
    saturate (|z| >= gamma / 2) each selector is one-hot and at most k experts are nonzero."""

    def __init__(self, d_in: int, experts: int, k: int, gamma: float):
        super().__init__()
        m = int(math.log2(experts))
        self.k, self.m, self.gamma = k, m, float(gamma)
        codes = torch.tensor([[(i >> (m - 1 - b)) & 1 for b in range(m)] for i in range(experts)], dtype=torch.float32)
        self.register_buffer("codes", codes, persistent=False)  # (E, m) binary code of each expert
        self.z = nn.Linear(d_in, k * m)
        self.w = nn.Linear(d_in, k)
        # as the official implementation: z starts in the smooth region, near 0.5 for every bit
        nn.init.uniform_(self.z.weight, -self.gamma / 100, self.gamma / 100)
        nn.init.uniform_(self.z.bias, -self.gamma / 100, self.gamma / 100)

    def smooth_step(self, t: Tensor) -> Tensor:
        g = self.gamma
        s = -2 / g**3 * t**3 + 3 / (2 * g) * t + 0.5
        return torch.where(t <= -g / 2, torch.zeros_like(t), torch.where(t >= g / 2, torch.ones_like(t), s))

    def selectors(self, h: Tensor) -> Tensor:
        """(B, k, E): each selector's distribution over the experts."""
        s = self.smooth_step(self.z(h).view(-1, self.k, 1, self.m))  # (B, k, 1, m)
        bits = self.codes * s + (1 - self.codes) * (1 - s)  # (B, k, E, m)
        return bits.prod(-1)

    def forward(self, h: Tensor) -> Tensor:
        w = torch.softmax(self.w(h), -1)  # (B, k)
        return (w.unsqueeze(-1) * self.selectors(h)).sum(1)  # (B, E)


@ARCHITECTURES.register("dselect-k")
class DSelectK(MMoE):
    """MMoE with DSelect-k gates: each task uses at most ``k`` of the ``experts`` (a power of 2)."""

    paper = ("Hazimeh et al., DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to "
             "Multi-Task Learning, NeurIPS 2021")

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], experts: int = 4,
                 k: int = 2, gamma: float = 1.0, expert_dim: int | None = None):
        n = positive("dselect-k", "experts", experts, 2)
        if n & (n - 1):
            raise ConfigError(f"architecture 'dselect-k': experts={n}; it must be a power of 2 (2, 4, 8, ...) so that "
                              "the binary selectors address every expert.")
        self._k = positive("dselect-k", "k", k)
        if not float(gamma) > 0:
            raise ConfigError(f"architecture 'dselect-k': gamma={gamma!r}; it must be > 0 (default 1).")
        self._gamma = float(gamma)
        super().__init__(backbone, tasks, config=config, experts=n, expert_dim=expert_dim)

    def _tower(self, D: int, n: int) -> TaskTower:
        tower = TaskTower()
        tower.gate = DSelectGate(D, n, self._k, self._gamma)
        return tower

    def gates(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        return {n: self.towers[n].gate(feats[0]) for n in self.task_names}


@ARCHITECTURES.register("cgc")
class CGC(_Experts):
    """Customized gate control: shared experts plus each task's own; a task's gate mixes both."""

    paper = ("Tang et al., Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for "
             "Personalized Recommendations, RecSys 2020 (its single-level CGC)")

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], shared_experts: int = 2,
                 task_experts: int = 1, expert_dim: int | None = None):
        d = self._bottom(backbone, tasks, config, expert_dim)
        ns = positive(config["architecture"], "shared_experts", shared_experts)
        nt = positive(config["architecture"], "task_experts", task_experts)
        D = backbone.feature_dim
        self.shared_experts = nn.ModuleList(expert(D, d) for _ in range(ns))
        self.towers = nn.ModuleDict({t.name: _cgc_tower(D, d, nt, ns) for t in tasks})
        self.feature_dims = [D, ns * d]

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        h = self.trunk(self._check_images(images))  # (B, D)
        return [h, run_experts(self.shared_experts, h)]  # [(B, D), (B, Es, d)]

    def gates(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        return {n: torch.softmax(self.towers[n].gate(feats[0]), -1) for n in self.task_names}

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        h, shared = feats
        out = {}
        for n in self.task_names:
            tower = self.towers[n]
            experts = torch.cat([run_experts(tower.experts, h), shared], 1)  # (B, Et + Es, d)
            out[n] = self.heads[n](mix(torch.softmax(tower.gate(h), -1), experts))
        return out


def _cgc_tower(d_in: int, d: int, n_task: int, n_shared: int) -> TaskTower:
    tower = TaskTower()
    tower.experts = nn.ModuleList(expert(d_in, d) for _ in range(n_task))
    tower.gate = nn.Linear(d_in, n_task + n_shared)
    return tower


@ARCHITECTURES.register("ple")
class PLE(_Experts):
    """Progressive layered extraction: ``levels`` (>= 2) extraction networks; every level but the last has
    a shared gate over all its experts feeding the next level's shared experts."""

    paper = ("Tang et al., Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for "
             "Personalized Recommendations, RecSys 2020")

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], *, config: dict[str, Any], levels: int = 2,
                 shared_experts: int = 2, task_experts: int = 1, expert_dim: int | None = None):
        d = self._bottom(backbone, tasks, config, expert_dim)
        L = positive("ple", "levels", levels, 2)
        ns = positive("ple", "shared_experts", shared_experts)
        nt = positive("ple", "task_experts", task_experts)
        D = backbone.feature_dim
        T = len(self.task_names)
        self.levels = L
        # levels 0 .. L-2: every expert here reaches every task through the shared gate -> shared
        self.lower = nn.ModuleList()
        for level in range(L - 1):
            din = D if level == 0 else d
            block = nn.Module()
            block.shared = nn.ModuleList(expert(din, d) for _ in range(ns))
            block.task = nn.ModuleList(nn.ModuleList(expert(din, d) for _ in range(nt)) for _ in range(T))
            block.task_gates = nn.ModuleList(nn.Linear(din, nt + ns) for _ in range(T))
            block.shared_gate = nn.Linear(din, T * nt + ns)
            self.lower.append(block)
        self.last_shared = nn.ModuleList(expert(d, d) for _ in range(ns))
        self.towers = nn.ModuleDict({t.name: _cgc_tower(d, d, nt, ns) for t in tasks})
        self.feature_dims = [d] * T + [ns * d]

    def _lower_levels(self, h: Tensor) -> tuple[list[Tensor], Tensor, list[dict[str, Tensor]]]:
        """-> (one input per task for the last level, the shared input, the gates of each lower level)."""
        task_in = [h] * len(self.task_names)
        shared_in = h
        gates = []
        for block in self.lower:
            shared = run_experts(block.shared, shared_in)  # (B, Es, d)
            own = [run_experts(experts, x) for experts, x in zip(block.task, task_in)]  # T x (B, Et, d)
            g = {n: torch.softmax(gate(x), -1) for n, gate, x in zip(self.task_names, block.task_gates, task_in)}
            g["shared"] = torch.softmax(block.shared_gate(shared_in), -1)
            task_in = [mix(g[n], torch.cat([o, shared], 1)) for n, o in zip(self.task_names, own)]
            shared_in = mix(g["shared"], torch.cat([*own, shared], 1))
            gates.append(g)
        return task_in, shared_in, gates

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        task_in, shared_in, _ = self._lower_levels(self.trunk(self._check_images(images)))
        return [*task_in, run_experts(self.last_shared, shared_in)]  # T x (B, d), (B, Es, d)

    def gates(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        """The last level's task gates {task: (B, Et + Es)}."""
        return {n: torch.softmax(self.towers[n].gate(x), -1) for n, x in zip(self.task_names, feats)}

    def all_gates(self, *images: Tensor) -> list[dict[str, Tensor]]:
        """Every gate of every level (the lower levels' include ``"shared"``), for inspection."""
        task_in, shared_in, gates = self._lower_levels(self.trunk(self._check_images(images)))
        return [*gates, self.gates([*task_in, run_experts(self.last_shared, shared_in)])]

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor]:
        shared = feats[-1]
        g = self.gates(feats)
        out = {}
        for n, x in zip(self.task_names, feats):
            experts = torch.cat([run_experts(self.towers[n].experts, x), shared], 1)
            out[n] = self.heads[n](mix(g[n], experts))
        return out
