"""An exponential moving average of the model's weights (Polyak averaging), for validation and export.

After every optimizer step each floating-point entry of the model's ``state_dict`` (parameters and
BatchNorm running statistics) moves towards the training model's::

    ema <- d_n * ema + (1 - d_n) * model,    d_n = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates made before this one (with ``decay = 0`` the copy follows the
model). The warm-up of ``d_n`` (the schedule of TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``, also timm's) lets the average forget the random initialisation within the first
few dozen steps, which matters for runs of a few hundred steps. Integer buffers (BatchNorm's batch
counter) are copied.

Stochastic weight averaging (``train.swa``; Izmailov et al. 2018, densely per step as SWAD, Cha et
al. 2021): from the epoch it starts, each update is ``uniform``, with ``d_k = k / (k + 1)`` for
the ``k``-th such update, so the copy is the plain mean of the model's weights after every step
since that epoch (the first uniform update copies them; what the exponential average held
before is dropped).

torch's ``swa_utils.AveragedModel`` does the same averaging, but with ``use_buffers`` it also sends
integer buffers through the lerp and has no warm-up of the decay; this class is small enough to
keep both exact.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of ``model`` whose weights follow the model's average (see the module docs)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.uniform_updates = 0  # updates made in the uniform (SWA) phase
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of the update made after ``n`` earlier ones."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, uniform: bool = False) -> None:
        """One step of the average; ``uniform``: a step of the plain mean (stochastic weight averaging)."""
        if uniform:
            d = self.uniform_updates / (self.uniform_updates + 1.0)
            self.uniform_updates += 1
        else:
            d = self.decay_at(self.updates)
        ours, theirs = [], []
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if e.is_floating_point():
                ours.append(e)
                theirs.append(m.detach().to(e.dtype))
            else:
                e.copy_(m)
        if ours:
            torch._foreach_lerp_(ours, theirs, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "uniform_updates": self.uniform_updates}

    def load_state_dict(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the averaged ``weights`` and the update count of ``state`` (:meth:`state_dict`)."""
        self.module.load_state_dict(weights)
        self.updates = int(state.get("updates", 0))
        self.uniform_updates = int(state.get("uniform_updates", 0))
