"""Loss-based strategies: EW, fixed weights, UW, DWA, RLW, FAMO.

Each computes a weight per present task from losses alone and backpropagates
``sum_i w_i L_i`` once through ``_grads.backward_total``, which reaches the encoder in every grad
mode (the engine should still use ``grad_mode() == "none"`` for them: no detached copies needed).
Weights that depend on losses are computed from the rank-averaged loss vector, so they are the
same on every DDP rank.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.weighting import _grads
from facemtl.weighting.base import WEIGHTINGS, StepContext, Weighting, keep_rows, weights_info

log = logging.getLogger(__name__)


class LossWeighting(Weighting):
    """Base: ``weights(names, losses, lvec, ctx)`` -> (T_present,) tensor; the rest is shared."""

    needs = "losses"

    def weights(self, names: list[str], losses: list[Tensor], lvec: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def extra_loss(self, names: list[str]) -> Tensor | None:
        """A term added to the objective (UW's regulariser); default none."""
        return None

    def backward(self, losses: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        names = self._present(losses)
        if not names:
            return {}
        L = [losses[n] for n in names]
        self._sync_device(L[0].device)
        with torch.autocast(L[0].device.type, enabled=False):  # weights in full precision
            return self._backward(names, L, ctx)

    def _backward(self, names: list[str], L: list[Tensor], ctx: StepContext) -> dict[str, float]:
        lvec = _grads.loss_vector(L)
        w = self.weights(names, L, lvec, ctx)
        total = weighted_total(w, L)
        extra = self.extra_loss(names)
        if extra is not None:
            total = extra if total is None else total + extra
        _grads.backward_total(total, ctx)
        self._sync_extra_grads()
        return weights_info(names, w)


def weighted_total(w: Tensor, losses: Sequence[Tensor]) -> Tensor | None:
    """sum_i w_i L_i over the losses that have a graph (float32)."""
    terms = [wi * l.float().reshape(()) for wi, l in zip(w.unbind(), losses) if l.requires_grad]
    return torch.stack(terms).sum() if terms else None


class EpochLosses(nn.Module):
    """Per-task running sums of the training losses of the current epoch (device tensors, no sync).

    ``roll()`` (once per epoch) returns the epoch means ``{task: float}`` and resets.
    """

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.register_buffer("total", torch.zeros(len(self.tasks), dtype=torch.float64))
        self.register_buffer("count", torch.zeros(len(self.tasks), dtype=torch.float64))

    def add(self, idx: Tensor, lvec: Tensor) -> None:
        self.total.index_add_(0, idx.to(self.total.device), lvec.to(self.total))
        self.count.index_add_(0, idx.to(self.total.device), torch.ones_like(lvec, dtype=torch.float64))

    def roll(self) -> dict[str, float]:
        tot, cnt = self.total.cpu().tolist(), self.count.cpu().tolist()
        self.total.zero_()
        self.count.zero_()
        return {t: s / c for t, s, c in zip(self.tasks, tot, cnt) if c > 0}


@WEIGHTINGS.register("ew")
class EqualWeighting(LossWeighting):
    """Equal weights: the plain sum of the task losses."""

    def weights(self, names, losses, lvec, ctx):
        return torch.ones(len(names), device=lvec.device)


@WEIGHTINGS.register("fixed")
class FixedWeighting(LossWeighting):
    """Fixed per-task weights from ``weights`` ({task: float}); tasks not named get 1.0."""

    def __init__(self, tasks: Sequence[str], *, weights: dict[str, float] | None = None):
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ConfigError(f"fixed option weights names unknown task(s) {unknown}; valid tasks: {self.tasks}.")
        for k, v in weights.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"fixed option weights[{k!r}] must be a finite number, got {v!r}.")
        self.register_buffer("w", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))

    def weights(self, names, losses, lvec, ctx):
        return self.w[self._idx(names, self.w.device)].to(lvec.device)


@WEIGHTINGS.register("uw")
class UncertaintyWeighting(LossWeighting):
    """Kendall et al. 2018: L = sum_i exp(-s_i) L_i + s_i, s_i = log sigma_i^2 learnable
    (``extra_parameters``, init ``init_log_var``); for fixed L_i the optimum is s_i = log L_i."""

    def __init__(self, tasks: Sequence[str], *, init_log_var: float = 0.0):
        super().__init__(tasks)
        self.log_var = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))

    def weights(self, names, losses, lvec, ctx):
        return torch.exp(-self.log_var[self._idx(names, self.log_var.device)])

    def extra_loss(self, names):
        return self.log_var[self._idx(names, self.log_var.device)].sum()


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    """DWA (Liu et al. 2019): w_i = K softmax_i(r_i / T), r_i = L_i(e-1) / L_i(e-2) from the
    average training losses of the two previous epochs; w = 1 during the first two epochs.

    Epoch losses come from ``on_epoch_end(epoch, train_losses, ...)`` when the engine gives them,
    else from the strategy's own running means (it notices a new ``ctx.epoch``). K = number of
    tasks present; a task without two epochs of history gets r = 1. The history is per task: an
    epoch without a loss for a task (absent from every batch, or NaN) leaves its last two epoch
    losses in place, so its ratio still compares two epochs in which it was trained.
    """

    def __init__(self, tasks: Sequence[str], *, temperature: float = 2.0):
        super().__init__(tasks)
        if temperature <= 0:
            raise ConfigError(f"dwa option temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.acc = EpochLosses(self.tasks)
        self.register_buffer("history", torch.full((2, len(self.tasks)), float("nan")))  # [e-2, e-1]
        self.epoch_seen = 0  # epoch the running sums belong to

    def _push(self, means: dict[str, float]) -> None:
        """Shift each task's own history: a task without a (finite) loss this epoch keeps its last two."""
        hist = self.history.clone()
        for t, v in means.items():
            if t in self._index and math.isfinite(v):
                i = self._index[t]
                hist[0, i], hist[1, i] = hist[1, i], float(v)
        self.history = hist

    def on_epoch_end(self, epoch, train_losses, val_losses):
        own = self.acc.roll()  # built from rank-averaged losses already
        given = _grads.mean_over_ranks(train_losses or {}, self.tasks, self.acc.total.device)
        self._push({**own, **given})
        self.epoch_seen = epoch + 1

    def weights(self, names, losses, lvec, ctx):
        if ctx.epoch > self.epoch_seen:  # the engine did not call on_epoch_end: roll ourselves
            self._push(self.acc.roll())
            self.epoch_seen = ctx.epoch
        idx = self._idx(names, self.history.device)
        self.acc.add(idx, lvec)
        prev, last = self.history[0, idx], self.history[1, idx]
        r = torch.where(torch.isfinite(prev) & torch.isfinite(last) & (prev > 0), last / prev, torch.ones_like(last))
        return (len(names) * F.softmax(r / self.temperature, dim=0)).to(lvec.device)

    def _python_state(self):
        return {"epoch_seen": self.epoch_seen}

    def _load_python_state(self, state):
        self.epoch_seen = int(state.get("epoch_seen", 0))


@WEIGHTINGS.register("rlw")
class RandomLossWeighting(LossWeighting):
    """RLW (Lin et al. 2022): w = softmax(z), z ~ N(0, I) drawn every step (weights sum to 1).

    The draw comes from a generator seeded by (``seed``, step): identical on every rank and after
    resume."""

    def __init__(self, tasks: Sequence[str], *, seed: int = 0):
        super().__init__(tasks)
        self.seed = seed

    def weights(self, names, losses, lvec, ctx):
        z = torch.randn(len(self.tasks), generator=_grads.step_generator(self.seed, ctx.step))
        return F.softmax(z[self._idx(names)], dim=0).to(lvec.device)


@WEIGHTINGS.register("famo")
class FAMO(LossWeighting):
    """FAMO (Liu et al. 2023): logits xi, z = softmax(xi); the network descends
    sum_i z_i log(L_i - min_i) / c, i.e. weights z_i / (c (L_i - min_i)), c = sum_j z_j / (L_j - min_j).

    The logits have their own Adam (``lr``, weight decay ``gamma``) and are updated from the
    decrease of the log losses: grad = J_softmax^T (log L(prev) - log L(now)). The strategy keeps
    the previous step's losses and makes that update at the start of the next ``backward`` with
    the new batch's losses; a task absent from some steps is compared with its own last loss, and
    its logit (and Adam state) stays as it was while it is absent. An engine that re-evaluates the
    losses of the same batch after ``optimizer.step()`` (the authors' protocol) calls
    :meth:`update` with them instead; the next backward then skips its own update.
    """

    def __init__(self, tasks: Sequence[str], *, lr: float = 0.025, gamma: float = 1e-3, min_loss: float = 0.0):
        super().__init__(tasks)
        T = len(self.tasks)
        self.logits = nn.Parameter(torch.zeros(T))
        self.opt = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)
        self.register_buffer("min_losses", torch.full((T,), float(min_loss)))
        self.register_buffer("prev_losses", torch.full((T,), float("nan")))
        self.updated = False  # update() already consumed prev_losses
        self.has_prev = False  # no previous losses before the first step

    def extra_parameters(self):
        return []  # trained by the strategy's own optimizer

    def _log_d(self, lv: Tensor, idx: Tensor) -> Tensor:
        return torch.log(lv - self.min_losses[idx] + 1e-8)

    def update(self, new_losses: dict[str, Tensor]) -> None:
        """Update the logits from the losses after the step (same batch, authors' protocol)."""
        names = [t for t in self.tasks if t in new_losses]
        if names:
            self._update(names, _grads.loss_vector([new_losses[n] for n in names]))
            self.updated = True

    def _update(self, names: list[str], lv: Tensor) -> None:
        idx = self._idx(names, self.logits.device)
        lv = lv.to(self.logits.device)
        prev = self.prev_losses[idx]  # each task's own last loss, however many steps ago
        delta = torch.where(torch.isnan(prev), torch.zeros_like(lv), self._log_d(prev, idx) - self._log_d(lv, idx))
        # the softmax over the present tasks (the one the weights use): an absent task's logit gets
        # no gradient, and its row of the logits and of Adam's state is kept across the step
        with torch.enable_grad():
            z = F.softmax(self.logits[idx], dim=0)
            (g,) = torch.autograd.grad(z, self.logits, grad_outputs=delta)
        absent = [i for i, t in enumerate(self.tasks) if t not in names]
        self.opt.zero_grad(set_to_none=True)
        self.logits.grad = g
        with keep_rows(self.opt, [self.logits], absent):
            self.opt.step()
        self.logits.grad = None

    def weights(self, names, losses, lvec, ctx):
        idx = self._idx(names, self.logits.device)
        lv = lvec.to(self.logits.device)
        if self.has_prev and not self.updated:
            self._update(names, lv)
        self.updated, self.has_prev = False, True
        self.prev_losses[idx] = lv
        z = F.softmax(self.logits.detach()[idx], dim=0)
        D = (lv - self.min_losses[idx]).clamp_min(0) + 1e-8
        c = (z / D).sum()
        return (z / (c * D)).to(lvec.device)

    def _move_internal_state(self, device):
        for st in self.opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(device)

    def _python_state(self) -> dict[str, Any]:
        return {"opt": copy.deepcopy(self.opt.state_dict()), "updated": self.updated, "has_prev": self.has_prev}

    def _load_python_state(self, state):
        if "opt" in state:
            self.opt.load_state_dict(copy.deepcopy(state["opt"]))
        self.updated = bool(state.get("updated", False))
        self.has_prev = bool(state.get("has_prev", False))
