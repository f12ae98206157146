"""Tiny multi-task problems shared by the weighting tests (CPU, a few milliseconds a step)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemtl.weighting import StepContext, Weighting

torch.set_num_threads(1)

TASKS = ["a", "b", "attr:c"]


class Toy(nn.Module):
    """Shared encoder (one feature tensor, or two for a cascade) + one linear head per task."""

    def __init__(self, tasks: list[str] = TASKS, d_in: int = 8, d: int = 16, cascade: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(d_in, d), nn.Tanh())
        self.enc2 = nn.Sequential(nn.Linear(d, 6), nn.Tanh()) if cascade else None
        width = d + (6 if cascade else 0)
        self.heads = nn.ModuleDict({t.replace(":", "_"): nn.Linear(width, 1) for t in tasks})
        self.tasks = list(tasks)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_features(x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        f = self.enc(x)
        return [f, self.enc2(f)] if self.enc2 is not None else [f]

    def forward_heads(self, feats: list[Tensor]) -> dict[str, Tensor]:
        z = torch.cat([f.flatten(1) for f in feats], dim=1)
        return {t: self.heads[t.replace(":", "_")](z).squeeze(1) for t in self.tasks}

    def shared_params(self) -> list[nn.Parameter]:
        mods = [self.enc] + ([self.enc2] if self.enc2 is not None else [])
        return [p for m in mods for p in m.parameters()]

    def head_params(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())


def make_data(tasks: list[str] = TASKS, n: int = 32, d_in: int = 8, seed: int = 1) -> tuple[Tensor, dict[str, Tensor]]:
    """Random inputs; each task a different random nonlinear target with a different scale."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    ys = {}
    for i, t in enumerate(tasks):
        w = torch.randn(d_in, generator=g)
        ys[t] = torch.tanh(x @ w) * (1.0 + 2.0 * i)
    return x, ys


def train_step(model: Toy, strategy: Weighting, opt: torch.optim.Optimizer | None, x: Tensor, ys: dict[str, Tensor],
               mode: str, step: int = 0, epoch: int = 0, present: list[str] | None = None,
               loss_scale: float = 1.0, features_fn=None) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One engine-style step; ``features_fn`` replaces ``model.forward_features`` (a DDP wrapper)."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    feats = (features_fn or model.forward_features)(x)
    ctx = StepContext.build(feats, model.shared_params(), mode=mode, step=step, epoch=epoch, loss_scale=loss_scale)
    out = model.forward_heads(ctx.head_inputs)
    names = present if present is not None else list(ys)
    losses = {t: F.mse_loss(out[t], ys[t]) for t in names}
    info = strategy.backward(losses, ctx)
    if opt is not None:
        opt.step()
    return losses, info


def modes_for(strategy: Weighting) -> list[str]:
    """The step-context modes a strategy is exercised in: its own, plus the rep-mode safety net."""
    if strategy.needs == "losses":
        return ["none", "rep"]
    return [m for m in ("rep", "params") if m not in strategy.refused_modes]


#: options that make a strategy meaningful on the toy problem
TEST_OPTIONS = {"fixed": {"weights": {"a": 2.0, "b": 0.5}}, "tcdcn": {"main": "a", "k": 2}}
