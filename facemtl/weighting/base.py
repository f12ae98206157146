"""The one interface every loss-weighting strategy implements.

The training step (``facemtl.engine``) does, per batch::

    feats = model.forward_features(x)             # list of shared representation tensors
    ctx = StepContext.build(feats, shared_params, mode=strategy.grad_mode(cfg),
                            step=step, epoch=epoch, loss_scale=scaler_scale)
    outputs = model.forward_heads(ctx.head_inputs) # heads see detached copies in "rep"/"params" mode
    losses = {task: task.loss(outputs[task], batch)}  # masked means; absent tasks are left out
    info = strategy.backward(losses, ctx)          # fills .grad of every parameter
    optimizer.step()
    ...
    strategy.on_epoch_end(epoch, train_losses, val_losses)   # after validation, every epoch

A strategy therefore owns the whole backward pass. Three kinds exist:

- loss-based (``needs = "losses"``): weight the losses and call ``backward`` once
  (``ew``, ``fixed``, ``uw``, ``dwa``, ``rlw``, ``famo``, ``dwu``, ``mcfa``, ``tcdcn``);
- gradient-based (``needs = "grads"``): per-task gradients, either on the shared
  *representation* (default, MGDA-UB style: heads are run on detached copies of the
  features, per-task gradients w.r.t. those copies are cheap, then one encoder backward with
  the combined gradient), or on the shared *parameters* (one backward per task);
- ``gradnorm`` uses both.

Strategies with learnable or running state are ``nn.Module`` s: their parameters are handed to
the optimizer by the engine through :meth:`Weighting.extra_parameters` and their whole state
goes into the checkpoint through ``state_dict``. Plain Python state (histories, counters)
is returned by :meth:`Weighting._python_state` and travels as the module's extra state, so it
survives resume.

``backward`` returns ``{task: weight}`` for the tasks present in the step. Keys holding a ``/``
(``"nash/solver_fallbacks"``) are diagnostics of the strategy, not task weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from facemtl._registry import Registry
from facemtl.errors import CheckpointError, ConfigError, UnknownNameError
from facemtl.weighting import _grads

log = logging.getLogger(__name__)

GradMode = Literal["none", "rep", "params"]

#: every strategy registers itself here under its public name
WEIGHTINGS: Registry = Registry("weighting strategy")


@dataclass
class StepContext:
    """What a strategy may use during one training step.

    features:       the shared representation tensors as the encoder produced them (graph attached),
                    each (B, ...); a cascade gives several (one per sub-network).
    head_inputs:    what the heads were run on: in "rep" and "params" mode detached leaf copies of
                    ``features`` (``requires_grad=True``: per-task gradients stop there, and in
                    params mode continue through the encoder as vector-Jacobian products);
                    in "none" mode ``features`` themselves.
    shared_params:  the encoder's parameters (for "params" mode and GradNorm).
    mode:           "none", "rep" or "params".
    step:           global optimisation step (0-based); ``epoch`` likewise.
    loss_scale:     multiply losses by this before backward (AMP on fp16); gradients handed to
                    the strategy's solver are divided by it again. 1.0 without a GradScaler.
                    With one, pass ``scaler.scale(torch.ones((), device=device))``: a 0-d tensor
                    (no host sync), and it initialises the scaler, whose ``step`` refuses to run
                    if ``scale`` was never called (the strategy scales the losses itself).
    """

    features: list[Tensor]
    head_inputs: list[Tensor]
    shared_params: list[nn.Parameter]
    mode: GradMode = "none"
    step: int = 0
    epoch: int = 0
    loss_scale: float | Tensor = 1.0
    extras: dict = field(default_factory=dict)

    @classmethod
    def build(
        cls, features: Sequence[Tensor] | Tensor, shared_params: Sequence[nn.Parameter], mode: GradMode,
        **kw,
    ) -> StepContext:
        feats = [features] if isinstance(features, Tensor) else list(features)
        if mode in ("rep", "params"):
            heads_in = [f.detach().requires_grad_(True) for f in feats]
        else:
            heads_in = feats
        return cls(feats, heads_in, list(shared_params), mode, **kw)

    @property
    def detached(self) -> bool:
        """Whether the heads ran on detached copies (a backward from the losses stops there)."""
        return self.mode in ("rep", "params")


class Weighting(nn.Module):
    """Base class. Subclasses set ``needs`` and implement :meth:`backward`.

    ``tasks`` is the ordered list of task names the strategy was built for; a step's ``losses``
    dict may hold a subset of them (a batch without labels for a task has no loss for it):
    strategies must cope, e.g. by renormalising over the tasks present.
    """

    needs: ClassVar[Literal["losses", "grads", "both"]] = "losses"
    #: grad mode used when the strategy needs gradients and the user gave none
    default_grad_mode: ClassVar[GradMode] = "rep"
    #: grad modes in which the method is undefined, with the reason shown to the user
    refused_modes: ClassVar[dict[str, str]] = {}
    #: bytes the per-task gradients on the shared parameters may take (params mode): the engine
    #: sets it from ``--grad-memory`` / ``weighting.grad_memory``; see docs/weighting.md
    grad_memory: int = _grads.DEFAULT_GRAD_MEMORY
    #: tasks per batched VJP in params mode; None: chosen from ``grad_memory`` (1 on a CPU)
    grad_chunk: int | None = None

    def __init__(self, tasks: Sequence[str], **options: Any):
        super().__init__()
        self.tasks = list(tasks)
        if not self.tasks:
            raise ConfigError(f"{type(self).__name__} needs at least one task; got an empty task list.")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"Duplicate task names given to {type(self).__name__}: {self.tasks}.")
        if options:  # subclasses consume their options; anything left is unknown
            raise ConfigError(f"Unknown option(s) {sorted(options)} for {type(self).__name__}.")
        self._index = {t: i for i, t in enumerate(self.tasks)}

    # -- what the engine asks ------------------------------------------------------------------
    def grad_mode(self, requested: GradMode | None = None) -> GradMode:
        if self.needs == "losses":
            return "none"
        mode = requested or self.default_grad_mode
        if mode not in ("rep", "params"):
            raise ConfigError(
                f"{type(self).__name__} needs per-task gradients: grad mode must be 'rep' or 'params', "
                f"got {mode!r}."
            )
        if mode in self.refused_modes:
            raise ConfigError(f"{type(self).__name__} cannot run in grad mode {mode!r}: {self.refused_modes[mode]}")
        return mode

    def extra_parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the strategy trained by the main optimizer (UW's log-variances).

        Put them in a parameter group without weight decay: decay would bias them toward 0.
        """
        return [p for p in self.parameters() if p.requires_grad]

    def backward(self, losses: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        """Run the backward pass for this step; return the weight used for each present task."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, train_losses: dict[str, float], val_losses: dict[str, float]) -> None:
        """Hook for epoch-level strategies (DWA, TCDCN's early stopping). Default: nothing.

        ``train_losses`` are the mean training losses of the epoch per task, ``val_losses`` the
        validation losses per task (either may be empty).
        """

    def active_tasks(self) -> list[str]:
        """Tasks still trained (TCDCN stops auxiliary tasks). Default: all."""
        return list(self.tasks)

    # -- helpers shared by the strategies --------------------------------------------------------
    def _present(self, losses: dict[str, Tensor]) -> list[str]:
        """Names of the tasks present this step, in ``self.tasks`` order; unknown names are errors."""
        for name in losses:
            if name not in self._index:
                raise UnknownNameError("task", name, self.tasks)
        return [t for t in self.tasks if t in losses]

    def _idx(self, names: Sequence[str], device: torch.device | None = None) -> Tensor:
        return torch.tensor([self._index[n] for n in names], dtype=torch.long, device=device)

    def _sync_device(self, device: torch.device) -> None:
        """Move the strategy to the losses' device if the engine forgot to.

        ``Module.to`` keeps the identity of parameters, so an optimizer already holding them stays
        valid; internal optimizers move their state in :meth:`_move_internal_state`.
        """
        for t in (*self.parameters(), *self.buffers()):
            if t.device != device:
                log.info("moving weighting strategy %s to %s", type(self).__name__, device)
                self.to(device)
                self._move_internal_state(device)
                return

    def _move_internal_state(self, device: torch.device) -> None:
        """Subclasses with an internal optimizer move its state tensors here."""

    def _sync_extra_grads(self) -> None:
        """Under DDP, average the gradients of :meth:`extra_parameters` over ranks.

        They live outside the DDP-wrapped model, and a loss-dependent regulariser (UW, TCDCN)
        would otherwise give each rank its own gradient and the strategies would drift apart.
        """
        if _grads.dist_active():
            for p in self.extra_parameters():
                if p.grad is not None:
                    _grads.all_reduce_mean_(p.grad)

    # -- checkpoint ----------------------------------------------------------------------------
    def _python_state(self) -> dict[str, Any]:
        """Plain Python state (counters, histories) to checkpoint; subclasses extend."""
        return {}

    def _load_python_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_python_state` returned."""

    def get_extra_state(self) -> dict[str, Any]:
        return {"version": 1, "tasks": list(self.tasks), **self._python_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        tasks = state.get("tasks")
        if tasks is not None and list(tasks) != self.tasks:
            raise CheckpointError(
                f"Weighting state was saved for tasks {list(tasks)} but this {type(self).__name__} "
                f"was built for {self.tasks}; build it with the same task list."
            )
        self._load_python_state({k: v for k, v in state.items() if k not in ("version", "tasks")})


@contextlib.contextmanager
def keep_rows(opt: torch.optim.Optimizer, params: Sequence[Tensor], rows: Sequence[int]) -> Iterator[None]:
    """Leave rows ``rows`` (first dimension) of ``params`` and of their optimizer state as they were
    across an ``opt.step()`` run inside the block.

    A strategy's own optimizer holds one tensor for all tasks (FAMO's logits, the dynamic weight
    unit): a task absent from the step has a zero gradient there, but momentum and weight decay
    would still move its row. State the optimizer creates in the block (its first step) gets zero
    rows, as if the task had never been seen.
    """
    if not len(rows):
        yield
        return
    saved = []
    for p in params:
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=p.device)
        st = opt.state.get(p, {})
        old = {k: v[idx].clone() for k, v in st.items() if torch.is_tensor(v) and v.shape == p.shape}
        saved.append((p, idx, p.detach()[idx].clone(), old))
    yield
    with torch.no_grad():
        for p, idx, value, old in saved:
            p[idx] = value
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v[idx] = old[k] if k in old else 0


def weights_info(names: Sequence[str], weights: Tensor, **diagnostics: float) -> dict[str, float]:
    """``{task: weight}`` from a weight vector (one device sync), plus ``strategy/...`` diagnostics."""
    vals = weights.detach().double().cpu().tolist() if len(names) else []
    info = {n: float(v) for n, v in zip(names, vals)}
    info.update({k: float(v) for k, v in diagnostics.items()})
    return info
