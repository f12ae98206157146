"""The weighting schemes of the face papers facemtl reproduces: dynamic weight unit (dwu), MCFA, TCDCN.

- ``dwu`` (seed 003, arXiv 1911.03281): a linear layer (no ReLU) + softmax over the flattened
  shared features Z gives per-sample weights, averaged over the batch: w (sum 1). The network is
  trained by sum_i w_i L_i (w constant); the unit alone by L3 = sum_i w_i / (L_i + eps) (L_i
  constant), so the task with the larger loss gets the larger weight:
  dL3/dz_k = w_k (1/(L_k + eps) - L3), z the unit's logits.
- ``mcfa`` (seeds 000/001): MCFA gives every facial attribute its own dynamic weight from a unit
  on the shared features so that harder attributes weigh more; its update rule is not in the
  material we have, so we apply the dwu rule above to the attribute tasks (or, ``unit=
  "loss_softmax"``, a softmax over running attribute losses). See docs/weighting.md.
- ``tcdcn`` (seed 002, ECCV 2014): main task weight 1, auxiliary weights lambda_a, and task-wise
  early stopping of auxiliary tasks from the trend of their training error and their
  validation gap, checked in :meth:`TCDCN.on_epoch_end`.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.weighting import _grads
from facemtl.weighting.base import WEIGHTINGS, StepContext, keep_rows
from facemtl.weighting.loss_based import EpochLosses, LossWeighting

log = logging.getLogger(__name__)


class _UnitMixin:
    """The dynamic weight unit: lazily built ``nn.Linear(D, len(unit_tasks))`` + its own optimizer.

    The layer is created on the first step (D = flattened feature size) or at construction with
    ``feature_dim``; once created its parameters appear in ``state_dict`` as ``unit.weight`` /
    ``unit.bias`` and a fresh strategy rebuilds it from those keys when loading.
    """

    unit: nn.Linear | None
    unit_tasks: list[str]

    def _init_unit(self, *, eps: float, lr: float, optimizer: str, normalize: bool, feature_dim: int | None) -> None:
        if optimizer not in ("adam", "sgd"):
            raise ConfigError(f"{self.registry_name} option optimizer={optimizer!r}; valid: adam, sgd.")
        if eps < 0 or lr <= 0:
            raise ConfigError(f"{self.registry_name} options need eps >= 0 and lr > 0, got eps={eps}, lr={lr}.")
        self.eps, self.lr, self.optimizer_name, self.normalize = float(eps), float(lr), optimizer, normalize
        self.unit = None
        self.opt: torch.optim.Optimizer | None = None
        self._unit_index = {t: i for i, t in enumerate(self.unit_tasks)}
        if feature_dim is not None:
            self._build_unit(int(feature_dim), torch.device("cpu"))

    def _build_unit(self, dim: int, device: torch.device) -> None:
        unit = nn.Linear(dim, len(self.unit_tasks)).to(device)
        nn.init.zeros_(unit.weight)  # start from equal weights
        nn.init.zeros_(unit.bias)
        self.unit = unit
        cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.SGD
        self.opt = cls(self.unit.parameters(), lr=self.lr)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        w = state_dict.get(prefix + "unit.weight")
        if self.unit is None and w is not None:
            self._build_unit(w.shape[1], w.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _unit_weights(self, names: list[str], lvec: Tensor, ctx: StepContext) -> Tensor:
        """Weights (sum 1 over ``names``) from the unit, then one update of the unit by L3."""
        if not ctx.features:
            raise ConfigError(f"{self.registry_name} needs the shared features in the step context.")
        Z = torch.cat([f.detach().flatten(1).float() for f in ctx.features], dim=1)  # (B, D)
        if self.normalize:
            Z = F.normalize(Z, dim=1)
        if self.unit is None:
            self._build_unit(Z.shape[1], Z.device)
        if self.unit.in_features != Z.shape[1]:
            raise ConfigError(f"{self.registry_name}: feature size {Z.shape[1]} != unit size {self.unit.in_features}.")
        idx = torch.tensor([self._unit_index[n] for n in names], device=Z.device)
        with torch.enable_grad():
            w = F.softmax(self.unit(Z)[:, idx], dim=1).mean(0)  # (T,) batch mean of per-sample softmax
            l3 = (w / (lvec.to(w) + self.eps)).sum()
            grads = torch.autograd.grad(l3, list(self.unit.parameters()))
        w_used = _grads.all_reduce_mean_(w.detach().clone())  # global-batch mean, same on all ranks
        self.opt.zero_grad(set_to_none=True)
        for p, g in zip(self.unit.parameters(), grads):
            p.grad = _grads.all_reduce_mean_(g.clone())
        # an absent task's row of the unit has no gradient; keep momentum from moving it
        absent = [i for i, t in enumerate(self.unit_tasks) if t not in names]
        with keep_rows(self.opt, list(self.unit.parameters()), absent):
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return w_used

    def extra_parameters(self) -> list[nn.Parameter]:
        return []  # the unit has its own optimizer, stepped inside backward

    def _move_internal_state(self, device: torch.device) -> None:
        if self.opt is not None:
            for st in self.opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and k != "step":
                        st[k] = v.to(device)

    def _unit_state(self) -> dict[str, Any]:
        return {"opt": copy.deepcopy(self.opt.state_dict()) if self.opt is not None else None}

    def _load_unit_state(self, state: dict[str, Any]) -> None:
        if state.get("opt") is not None and self.opt is not None:
            self.opt.load_state_dict(copy.deepcopy(state["opt"]))


@WEIGHTINGS.register("dwu")
class DynamicWeightUnit(_UnitMixin, LossWeighting):
    """Seed 003's dynamic weight unit. Options: ``eps`` (added to L_i in L3; authors 0.01),
    ``lr`` and ``optimizer`` ("adam" | "sgd") of the unit's own optimizer, ``normalize``
    (L2-normalise Z, as the authors' code), ``feature_dim`` (build the unit eagerly)."""

    registry_name = "dwu"

    def __init__(self, tasks: Sequence[str], *, eps: float = 0.01, lr: float = 1e-3, optimizer: str = "adam",
                 normalize: bool = True, feature_dim: int | None = None):
        super().__init__(tasks)
        self.unit_tasks = list(self.tasks)
        self._init_unit(eps=eps, lr=lr, optimizer=optimizer, normalize=normalize, feature_dim=feature_dim)

    def weights(self, names, losses, lvec, ctx):
        return self._unit_weights(names, lvec, ctx)

    def _python_state(self):
        return self._unit_state()

    def _load_python_state(self, state):
        self._load_unit_state(state)


@WEIGHTINGS.register("mcfa")
class MCFA(_UnitMixin, LossWeighting):
    """MCFA's per-attribute dynamic weighting, on the tasks whose name starts with ``group``
    (default "attr:"); other tasks get weight 1. Attribute weights are scaled to sum to the number
    of attribute tasks present (mean 1, the scale of equal weights).

    ``unit="learned"`` (default): a dynamic weight unit on the shared features trained by seed
    003's L3 rule (options as ``dwu``). ``unit="loss_softmax"``: w = M softmax(EMA(L_j) / temperature)
    over the attributes, EMA with ``momentum`` - no parameters, harder (higher-loss) attributes
    weigh more.
    """

    registry_name = "mcfa"

    def __init__(self, tasks: Sequence[str], *, group: str = "attr:", unit: str = "learned", eps: float = 0.01,
                 lr: float = 1e-3, optimizer: str = "adam", normalize: bool = True, feature_dim: int | None = None,
                 temperature: float = 1.0, momentum: float = 0.9):
        super().__init__(tasks)
        if unit not in ("learned", "loss_softmax"):
            raise ConfigError(f"mcfa option unit={unit!r}; valid: learned, loss_softmax.")
        if temperature <= 0 or not 0 <= momentum < 1:
            raise ConfigError(f"mcfa needs temperature > 0 and 0 <= momentum < 1, got {temperature}, {momentum}.")
        self.group, self.mode, self.temperature, self.momentum = group, unit, float(temperature), float(momentum)
        self.unit_tasks = [t for t in self.tasks if t.startswith(group)]
        if not self.unit_tasks:
            log.warning("mcfa: no task name starts with %r; every task gets weight 1", group)
        self._init_unit(eps=eps, lr=lr, optimizer=optimizer, normalize=normalize,
                        feature_dim=feature_dim if unit == "learned" and self.unit_tasks else None)
        self.register_buffer("ema", torch.full((len(self.tasks),), float("nan")))

    def weights(self, names, losses, lvec, ctx):
        w = torch.ones(len(names), device=lvec.device)
        pos = [i for i, n in enumerate(names) if n in self._unit_index]
        if not pos:
            return w
        sub = [names[i] for i in pos]
        lsub = lvec[pos]
        if self.mode == "learned":
            wa = self._unit_weights(sub, lsub, ctx)
        else:
            idx = self._idx(sub, self.ema.device)
            old = self.ema[idx]
            lv = lsub.to(old)
            self.ema[idx] = torch.where(torch.isnan(old), lv, self.momentum * old + (1 - self.momentum) * lv)
            wa = F.softmax(self.ema[idx] / self.temperature, dim=0)
        w[pos] = len(pos) * wa.to(w)
        return w

    def _python_state(self):
        return self._unit_state()

    def _load_python_state(self, state):
        self._load_unit_state(state)


@WEIGHTINGS.register("tcdcn")
class TCDCN(LossWeighting):
    """TCDCN (Zhang et al. ECCV 2014): L = L_main + sum_a lambda_a L_a with task-wise early stopping.

    At every ``on_epoch_end`` an active auxiliary task a is stopped when

        k med(E_tr[t-k..t]) / (sum(E_tr[t-k..t]) - k med(E_tr[t-k..t]))
          * (E_val[t] - min E_tr[1..t]) / (lambda_a min E_tr[1..t])  >  threshold

    (E_tr: the task's mean training loss per epoch, E_val: its validation loss). The first factor
    is small while the training error still falls fast, the second is the generalisation gap.
    E_tr holds only the epochs in which the task had a training loss (the window is its own last
    k + 1), and no decision is taken for a task in an epoch without a validation loss for it.
    Stopped tasks get weight 0 and leave :meth:`active_tasks`. lambda_a: with ``learn_weights``
    (default) lambda_a = exp(-s_a), s_a trained by the main optimizer with the regulariser + s_a
    (the uncertainty form: the paper gives no update rule, this one has a well-defined optimum
    lambda_a = 1/L_a); otherwise fixed ``init_weight``. ``main`` defaults to the first task.

    ``max_weight`` (not in the paper; default none) caps every learnt lambda_a: lambda_a = 1/L_a
    lets an auxiliary whose cross-entropy falls below the main loss outweigh the main task (on
    SynthFaces they reached 2-4 against the landmarks' 1 and made the landmarks worse; see
    docs/reports.md). At the cap s_a gets no gradient, so it stays there until the cap is lifted.
    """

    registry_name = "tcdcn"

    def __init__(self, tasks: Sequence[str], *, main: str | None = None, k: int = 5, threshold: float = 1.0,
                 learn_weights: bool = True, init_weight: float = 1.0, max_weight: float | None = None):
        super().__init__(tasks)
        if main is None:
            main = self.tasks[0]
            log.info("tcdcn: no main task given; using the first task %r", main)
        if main not in self._index:
            raise ConfigError(f"tcdcn option main={main!r} is not a task; valid tasks: {self.tasks}.")
        if k < 1 or threshold <= 0 or init_weight <= 0 or (max_weight is not None and max_weight <= 0):
            raise ConfigError(
                f"tcdcn needs k >= 1, threshold > 0, init_weight > 0, max_weight > 0 (or none); "
                f"got {k}, {threshold}, {init_weight}, {max_weight}."
            )
        self.min_log_var = -math.log(max_weight) if max_weight is not None else -math.inf
        self.main, self.k, self.threshold, self.learn_weights = main, int(k), float(threshold), learn_weights
        s0 = torch.full((len(self.tasks),), -math.log(init_weight))
        if learn_weights:
            self.log_var = nn.Parameter(s0)
        else:
            self.register_buffer("log_var", s0)
        self.acc = EpochLosses(self.tasks)
        self.stopped: dict[str, int] = {}  # task -> epoch it was stopped at
        self.train_hist: dict[str, list[float]] = {t: [] for t in self.tasks}
        self.val_hist: dict[str, list[float]] = {t: [] for t in self.tasks}
        self._aux_on: list[str] = []

    def active_tasks(self) -> list[str]:
        return [t for t in self.tasks if t not in self.stopped]

    def weights(self, names, losses, lvec, ctx):
        self.acc.add(self._idx(names, self.acc.total.device), lvec)
        lam = torch.exp(-self._s(names, self.log_var.device)).to(lvec.device)
        on = torch.tensor([n not in self.stopped for n in names], device=lvec.device)
        is_main = torch.tensor([n == self.main for n in names], device=lvec.device)
        self._aux_on = [n for n in names if n != self.main and n not in self.stopped]
        return torch.where(is_main, torch.ones_like(lam), torch.where(on, lam, torch.zeros_like(lam)))

    def extra_loss(self, names):
        if not self.learn_weights or not self._aux_on:
            return None
        return self._s(self._aux_on, self.log_var.device).sum()

    def _s(self, names, device) -> Tensor:
        """s_a of ``names``, held at -log(max_weight) when a cap is set (no gradient beyond it)."""
        return self.log_var[self._idx(names, device)].clamp(min=self.min_log_var)

    def criterion(self, task: str) -> float | None:
        """The stopping criterion of ``task`` now, or None without enough history."""
        tr, val = self.train_hist[task], self.val_hist[task]
        if len(tr) < self.k + 1 or not val or not math.isfinite(val[-1]):
            return None
        strip = tr[-(self.k + 1):]
        med = statistics.median(strip)
        denom = sum(strip) - self.k * med
        trend = self.k * med / denom if denom > 1e-12 * max(abs(med), 1e-12) else math.inf
        best = min(tr)
        lam = math.exp(-max(float(self.log_var.detach()[self._index[task]]), self.min_log_var))
        gap = (val[-1] - best) / (lam * best) if best > 0 else math.inf
        return trend * gap if gap > 0 else gap

    def on_epoch_end(self, epoch, train_losses, val_losses):
        own = self.acc.roll()  # built from rank-averaged losses already
        train = {**own, **_grads.mean_over_ranks(train_losses or {}, self.tasks, self.acc.total.device)}
        val_losses = _grads.mean_over_ranks(val_losses or {}, self.tasks, self.acc.total.device)
        fresh_val = set()
        for t in self.tasks:  # a task without a (finite) loss this epoch keeps its history as it was
            if t in train and math.isfinite(train[t]):
                self.train_hist[t].append(float(train[t]))
            if t in val_losses and math.isfinite(val_losses[t]):
                self.val_hist[t].append(float(val_losses[t]))
                fresh_val.add(t)
        for t in self.tasks:
            if t == self.main or t in self.stopped or t not in fresh_val:  # no validation loss: no decision
                continue
            crit = self.criterion(t)
            if crit is not None and crit > self.threshold:
                self.stopped[t] = epoch
                log.info("tcdcn: stopping auxiliary task %r at epoch %d (criterion %.3g > %.3g)", t, epoch, crit,
                         self.threshold)

    def _python_state(self):
        return {"stopped": dict(self.stopped), "train_hist": copy.deepcopy(self.train_hist),
                "val_hist": copy.deepcopy(self.val_hist)}

    def _load_python_state(self, state):
        self.stopped = dict(state.get("stopped", {}))
        self.train_hist = copy.deepcopy(state.get("train_hist", self.train_hist))
        self.val_hist = copy.deepcopy(state.get("val_hist", self.val_hist))
