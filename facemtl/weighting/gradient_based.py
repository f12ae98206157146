"""Gradient-based strategies: MGDA-UB, PCGrad, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, DB-MTL, GradNorm.

All share :class:`GradientWeighting.backward`:

1. per-task gradients F (T, R) on the heads' input copies (``_grads.task_gradients``), flattened
   over the whole (B, D) batch representation (several tensors for a cascade: concatenated);
   "rep" mode uses them as they are (G = F); "params" mode turns them into gradients on the
   shared parameters G (T, P), one encoder VJP per task, in chunks of tasks sized from
   ``grad_memory`` (``_grads.param_gradient_chunks``);
2. the Gram matrix ``M = G G^T`` (averaged over DDP ranks) and the loss vector. A strategy that
   needs only the gradient norms (``keeps_gradients = False``: GradNorm) gets diag(M) accumulated
   chunk by chunk and never holds more than one chunk of parameter gradients;
3. ``self.solve`` turns them into the coefficients ``c`` of the update ``c^T G`` (or the update
   itself, DB-MTL) and the weights ``h`` the task-specific (head) parameters get:
   ``sum_i h_i L_i`` is backpropagated into the heads;
4. ``_grads.apply_combined`` (encoder cotangent ``c^T F``) or ``_grads.apply_param_update``
   (``c^T G`` written into the shared gradients) fills every ``.grad``.

A step whose gradients are not finite (fp16 overflow) touches no state: it uses plain sums so that
the GradScaler sees the overflow and skips the step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.weighting import _grads, solvers
from facemtl.weighting.base import WEIGHTINGS, StepContext, Weighting, weights_info

log = logging.getLogger(__name__)


@dataclass
class Solution:
    """What a gradient strategy decided this step (tensors on G's device, one entry per present task)."""

    coeffs: Tensor | None  # update = coeffs @ G (None when ``update`` is given)
    head_weights: Tensor  # weights of the (transformed) losses for the task-specific parameters
    report: Tensor  # the weights shown to the user
    update: Tensor | None = None  # explicit (P,) update (DB-MTL)
    diagnostics: dict[str, float] = field(default_factory=dict)


class GradientWeighting(Weighting):
    """Base of the strategies that combine per-task gradients."""

    needs = "grads"
    #: params mode: the solver needs the whole G G^T (or G itself), so G (T x P floats) is kept;
    #: False: only the norms (diag of M) are used and G is never held beyond one chunk
    keeps_gradients: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[str], **options):
        super().__init__(tasks, **options)
        self.register_buffer("nonfinite_steps", torch.zeros((), dtype=torch.long))

    def grad_losses(self, losses: list[Tensor], lvec: Tensor) -> list[Tensor]:
        """The losses whose gradients are combined (DB-MTL takes logs); default: as given."""
        return losses

    def solve(self, names: list[str], G: Tensor, M: Tensor, lvec: Tensor, ctx: StepContext) -> Solution:
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        names = self._present(losses)
        if not names:
            return {}
        if ctx.mode not in ("rep", "params"):
            raise ConfigError(
                f"{type(self).__name__} needs per-task gradients but the step context has mode "
                f"{ctx.mode!r}; build it with mode=strategy.grad_mode(...)."
            )
        self.grad_mode(ctx.mode)  # refuses modes where the method is undefined
        L = [losses[n] for n in names]
        self._sync_device(L[0].device)
        # solvers and Gram products in full precision even if the engine calls us under autocast
        with torch.autocast(L[0].device.type, enabled=False):
            return self._backward(names, L, ctx)

    def _backward(self, names: list[str], L: list[Tensor], ctx: StepContext) -> dict[str, float]:
        lvec = _grads.loss_vector(L)
        GL = self.grad_losses(L, lvec)
        F = _grads.task_gradients(GL, _grads.rep_targets(ctx), scale=ctx.loss_scale, batched=False)
        used: list[bool] = []
        if ctx.mode == "rep":
            G, M = F, _grads.gram(F)
        else:
            G, M, used = self._param_gradients(F, ctx)
        ones = torch.ones(len(names), device=F.device)
        if not bool(torch.isfinite(M).all()):  # AMP overflow: let the GradScaler skip this step
            log.debug("%s: non-finite task gradients at step %d; plain sum, no state update",
                      type(self).__name__, ctx.step)
            _grads.apply_combined(ctx, GL, ones, ones @ F)
            self.nonfinite_steps += 1
            return weights_info(names, ones, **{f"{self.name}/nonfinite_steps": float(self.nonfinite_steps)})
        sol = self._solve_live(names, G, M, lvec, ctx)
        if ctx.mode == "params" and G is not None and (sol.update is not None or not _grads.dist_active()):
            update = sol.update if sol.update is not None else sol.coeffs.to(G) @ G
            _grads.apply_param_update(ctx, GL, sol.head_weights, update, used, F=F, G=G)
        else:  # rep mode, or a combination c^T G handed to the encoder as the cotangent c^T F
            _grads.apply_combined(ctx, GL, sol.head_weights, sol.coeffs.to(F) @ F)
        self._sync_extra_grads()
        return weights_info(names, sol.report, **sol.diagnostics)

    def _solve_live(self, names: list[str], G: Tensor | None, M: Tensor, lvec: Tensor, ctx: StepContext) -> Solution:
        """:meth:`solve` over the present tasks whose gradient is not exactly zero.

        A task with a loss but a zero gradient (every label of the batch masked, a loss without a
        graph) would otherwise be the min-norm point of MGDA, make Nash-MTL's system unsolvable
        and Aligned-MTL's smallest eigenvalue zero. It gets coefficient 0 in the shared update
        (its gradient is zero anyway), weight 1 for its head, and its per-task state is untouched.
        M is rank-averaged, so every DDP rank drops the same tasks.
        """
        live = torch.diagonal(M) > 0
        if bool(live.all()):
            return self.solve(names, G, M, lvec, ctx)
        keep = live.nonzero().flatten()
        log.debug("%s: step %d, zero gradient for %s; solving over the other tasks", type(self).__name__, ctx.step,
                  [n for n, ok in zip(names, live.tolist()) if not ok])
        T = len(names)
        zeros = torch.zeros(T, device=M.device)
        if not keep.numel():  # nothing to combine: the shared parameters get nothing, heads their own gradients
            return Solution(zeros, torch.ones_like(zeros), zeros)
        sub = [names[i] for i in keep.tolist()]
        sol = self.solve(sub, None if G is None else G[keep.to(G.device)], M[keep][:, keep],
                         lvec[keep.to(lvec.device)], ctx)

        def spread(v: Tensor | None, fill: float) -> Tensor | None:
            if v is None:
                return None
            out = torch.full((T,), fill, dtype=v.dtype, device=v.device)
            out[keep.to(v.device)] = v
            return out

        return Solution(spread(sol.coeffs, 0.0), spread(sol.head_weights, 1.0), spread(sol.report, 0.0),
                        update=sol.update, diagnostics=sol.diagnostics)

    def _param_gradients(self, F: Tensor, ctx: StepContext) -> tuple[Tensor | None, Tensor, list[bool]]:
        """G (T, P) or None, M = G G^T (diagonal only when G is not kept), and which parameters are used."""
        params = _grads.grad_targets(ctx)
        T, P = F.shape[0], sum(p.numel() for p in params)
        k = self.grad_chunk or _grads.chunk_size(
            T, P, F.device, self.grad_memory, held_rows=T if self.keeps_gradients else 0,
            act_numel=_grads.largest_saved_tensor([f for f in ctx.features if f.requires_grad]) if F.is_cuda else 0,
        )
        used = [False] * len(params)
        chunks = _grads.param_gradient_chunks(ctx, F, chunk=k, scale=ctx.loss_scale, used=used)
        if not self.keeps_gradients:
            sq = torch.zeros(T, device=F.device, dtype=torch.float64)
            for s, rows in chunks:
                sq[s : s + rows.shape[0]] = rows.double().pow(2).sum(dim=1)
            return None, _grads.all_reduce_mean_(torch.diag(sq)), used
        G = torch.empty(T, P, device=F.device)
        for s, rows in chunks:
            G[s : s + rows.shape[0]] = rows
            del rows
        return G, _grads.gram(G), used

    @property
    def name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__.lower())

    def _t(self, x: np.ndarray, like: Tensor) -> Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=like.device, dtype=torch.float32)


def _np(M: Tensor) -> np.ndarray:
    return M.detach().cpu().numpy()


@WEIGHTINGS.register("mgda")
class MGDA(GradientWeighting):
    """MGDA-UB (Sener & Koltun 2018): the min-norm point of the convex hull of the task gradients.

    Options: ``normalization`` "none" | "l2" | "loss" | "loss+" (scale g_i before solving, as in
    the authors' code; "l2" divides by ||g_i||, "loss" by L_i, "loss+" by L_i ||g_i||).
    Heads get their own unweighted gradients (the task-specific update of the paper).
    """

    registry_name = "mgda"

    def __init__(self, tasks: Sequence[str], *, normalization: str = "none"):
        super().__init__(tasks)
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ConfigError(f"mgda option normalization={normalization!r}; valid: none, l2, loss, loss+.")
        self.normalization = normalization

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        n = torch.sqrt(torch.diagonal(M).clamp_min(1e-300))
        lv = lvec.double().to(M.device).clamp_min(1e-12)
        scale = {"none": torch.ones_like(n), "l2": n, "loss": lv, "loss+": lv * n}[self.normalization]
        Ms = M / (scale[:, None] * scale[None, :])
        a = torch.as_tensor(solvers.min_norm(_np(Ms)), device=M.device) / scale
        c = a.float()
        return Solution(c, torch.ones_like(c), c)


@WEIGHTINGS.register("pcgrad")
class PCGrad(GradientWeighting):
    """PCGrad (Yu et al. 2020): project each task gradient onto the normal plane of every
    conflicting other task gradient, in random order, and sum. Options: ``seed`` (the order is
    drawn from a generator seeded by (seed, step): identical on every DDP rank and on resume)."""

    registry_name = "pcgrad"

    def __init__(self, tasks: Sequence[str], *, seed: int = 0):
        super().__init__(tasks)
        self.seed = seed

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        T = len(names)
        gen = _grads.step_generator(self.seed, ctx.step)
        orders = [torch.randperm(T, generator=gen).numpy() for _ in range(T)]
        C = solvers.pcgrad_coefficients(_np(M), orders)
        c = self._t(C.sum(axis=0), G)
        return Solution(c, torch.ones_like(c), c)


@WEIGHTINGS.register("cagrad")
class CAGrad(GradientWeighting):
    """CAGrad (Liu et al. 2021): g0 + (c ||g0|| / ||g_w||) g_w with w the dual solution,
    rescaled by 1/(1+c^2) (``rescale`` 1, the paper's default), 1/(1+c) (2) or not (0)."""

    registry_name = "cagrad"

    def __init__(self, tasks: Sequence[str], *, c: float = 0.4, rescale: int = 1):
        super().__init__(tasks)
        if c < 0:
            raise ConfigError(f"cagrad option c must be >= 0, got {c}.")
        if rescale not in (0, 1, 2):
            raise ConfigError(f"cagrad option rescale must be 0, 1 or 2, got {rescale}.")
        self.c, self.rescale = float(c), rescale
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.long))

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        T = len(names)
        Mn = _np(M)
        w, ok = solvers.cagrad_dual(Mn, self.c)
        if not ok:
            self.solver_failures += 1
            log.warning("cagrad: SLSQP did not converge at step %d; using the best candidate point", ctx.step)
        g0_norm = np.sqrt(max(Mn.sum() / T**2, 0.0) + 1e-12)
        gw_norm = np.sqrt(max(w @ Mn @ w, 0.0) + 1e-12)
        coef = np.full(T, 1.0 / T) + (self.c * g0_norm / gw_norm) * w
        coef /= {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        c = self._t(coef, G)
        return Solution(c, torch.ones_like(c), c, diagnostics={"cagrad/solver_failures": float(self.solver_failures)})


@WEIGHTINGS.register("imtl")
class IMTL(GradientWeighting):
    """IMTL-G (Liu et al. 2021): the combination whose projections on every unit task gradient
    are equal, in closed form. Heads get their own unweighted gradients."""

    registry_name = "imtl"

    def __init__(self, tasks: Sequence[str]):
        super().__init__(tasks)
        self.register_buffer("singular_steps", torch.zeros((), dtype=torch.long))

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        a, exact = solvers.imtl_g(_np(M))
        if not exact:
            self.singular_steps += 1
            log.warning("imtl: singular system at step %d (parallel gradients); least-squares solution", ctx.step)
        c = self._t(a, G)
        return Solution(c, torch.ones_like(c), c, diagnostics={"imtl/singular_steps": float(self.singular_steps)})


@WEIGHTINGS.register("nash")
class NashMTL(GradientWeighting):
    """Nash-MTL (Navon et al. 2022): update sum_i alpha_i g_i with G^T G alpha = 1/alpha.

    Solved exactly by damped Newton (``solvers.nash_weights``). Options: ``normalize`` (True, as
    the authors: solve with G^T G / ||G^T G||_F, then divide alpha by sqrt(||G^T G||_F), which
    solves the raw system: the update does not depend on it, only the solver's conditioning does;
    alpha_i = 1/||g_i|| for orthogonal gradients),
    ``update_every`` (re-solve every k steps, reuse alpha in between: the authors' speed knob;
    a step with another set of tasks present re-solves),
    ``on_failure`` "ridge" (default: warn, count, solve with G^T G + eps I) or "raise".
    The weights are never silently kept from an earlier step. Heads get alpha-weighted gradients
    (the authors backpropagate sum_i alpha_i L_i).
    """

    registry_name = "nash"

    def __init__(self, tasks: Sequence[str], *, normalize: bool = True, update_every: int = 1,
                 on_failure: str = "ridge", ridge: float = 1e-3):
        super().__init__(tasks)
        if on_failure not in ("ridge", "raise"):
            raise ConfigError(f"nash option on_failure={on_failure!r}; valid: ridge, raise.")
        if update_every < 1:
            raise ConfigError(f"nash option update_every must be >= 1, got {update_every}.")
        self.normalize, self.update_every, self.on_failure, self.ridge = normalize, update_every, on_failure, ridge
        self.register_buffer("solver_fallbacks", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha", torch.ones(len(self.tasks)))  # last solution, by task index
        self.register_buffer("solved_at", torch.full((), -1, dtype=torch.long))
        self.solved_tasks: tuple[str, ...] = ()  # the tasks of the last solve

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        idx = self._idx(names, self.alpha.device)
        last = int(self.solved_at)
        # alpha solves the system of the tasks it was solved with: another task set re-solves
        reuse = (self.update_every > 1 and last >= 0 and ctx.step - last < self.update_every
                 and tuple(names) == self.solved_tasks)
        if not reuse:
            Mn = _np(M)
            # M a = 1/a and (M / n) b = 1/b give a = b / sqrt(n): solve the better-conditioned
            # normalised system, then put the factor back (the authors' code solves M a = 1/a)
            n = max(float(np.linalg.norm(Mn)), 1e-300) if self.normalize else 1.0
            Mn = Mn / n
            try:
                a = solvers.nash_weights(Mn)
            except solvers.SolverError as err:
                if self.on_failure == "raise":
                    raise
                self.solver_fallbacks += 1
                log.warning("nash: %s at step %d; solving with a ridge (fallback #%d)", err, ctx.step,
                            int(self.solver_fallbacks))
                T = Mn.shape[0]
                a = solvers.nash_weights(Mn + self.ridge * max(np.trace(Mn) / T, 1e-12) * np.eye(T))
            a = a / np.sqrt(n)
            self.alpha[idx] = torch.as_tensor(a, dtype=self.alpha.dtype, device=self.alpha.device)
            self.solved_at.fill_(ctx.step)
            self.solved_tasks = tuple(names)
        c = self.alpha[idx].to(M.device, torch.float32)
        return Solution(c, c, c, diagnostics={"nash/solver_fallbacks": float(self.solver_fallbacks)})

    def _python_state(self):
        return {"solved_tasks": list(self.solved_tasks)}

    def _load_python_state(self, state):
        # checkpoints from before the task set was recorded: their solves had every task
        self.solved_tasks = tuple(state.get("solved_tasks", self.tasks))


@WEIGHTINGS.register("aligned")
class AlignedMTL(GradientWeighting):
    """Aligned-MTL (Senushkin et al. 2023): make the task gradients orthogonal with equal norms
    (sqrt of the smallest eigenvalue of G G^T, ``torch.linalg.eigh``-equivalent on T x T) and sum them."""

    registry_name = "aligned"

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        B = solvers.aligned_matrix(_np(M))
        c = self._t(B.sum(axis=0), G)
        return Solution(c, torch.ones_like(c), c)


@WEIGHTINGS.register("dbmtl")
class DBMTL(GradientWeighting):
    """DB-MTL (Lin et al. 2023): gradients of log(L_i + eps), an EMA buffer per task
    (buf = g + beta/t^sigma (buf - g)), scaled to the largest buffer norm and summed.

    Parameter mode only: the EMA averages gradients over steps, which is meaningful for
    parameters but not for representation gradients, whose rows are different samples every batch.
    Heads get the gradients of log(L_i). The buffer is T x P floats (kept in the checkpoint).
    Under DDP the per-task gradients are averaged over ranks so every rank keeps the same buffer.
    """

    registry_name = "dbmtl"
    default_grad_mode = "params"
    refused_modes = {
        "rep": "DB-MTL averages each task's gradient over steps (EMA); representation gradients "
               "belong to the samples of one batch, so the average is meaningless. Use grad mode 'params'."
    }

    def __init__(self, tasks: Sequence[str], *, beta: float = 0.9, beta_sigma: float = 0.5, eps: float = 1e-8):
        super().__init__(tasks)
        if not 0 <= beta < 1:
            raise ConfigError(f"dbmtl option beta must be in [0, 1), got {beta}.")
        self.beta, self.beta_sigma, self.eps = beta, beta_sigma, eps
        self.register_buffer("grad_buffer", torch.zeros(len(self.tasks), 0))
        self.register_buffer("steps", torch.zeros(len(self.tasks), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        buf = state_dict.get(prefix + "grad_buffer")
        if buf is not None and buf.shape != self.grad_buffer.shape:  # lazily sized: adopt the saved size
            self.grad_buffer = torch.zeros_like(buf, device=self.grad_buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def grad_losses(self, losses, lvec):
        return [torch.log(l + self.eps) for l in losses]

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        if self.grad_buffer.shape[1] != G.shape[1]:
            if self.grad_buffer.numel():
                raise ConfigError(f"dbmtl: gradient size changed from {self.grad_buffer.shape[1]} to {G.shape[1]}.")
            self.grad_buffer = torch.zeros(len(self.tasks), G.shape[1], device=G.device)
        G = _grads.all_reduce_mean_(G.clone())
        idx = self._idx(names, G.device)
        self.steps[idx] += 1
        beta_t = (self.beta / self.steps[idx].double() ** self.beta_sigma).float()[:, None]
        buf = G + beta_t * (self.grad_buffer[idx] - G)
        self.grad_buffer[idx] = buf
        norms = buf.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        return Solution(None, torch.ones_like(alpha), alpha, update=alpha @ buf)


@WEIGHTINGS.register("gradnorm")
class GradNorm(GradientWeighting):
    """GradNorm (Chen et al. 2018): learnable weights w (sum T) trained so that the gradient norms
    ||w_i g_i|| move toward mean_j ||w_j g_j|| * r_i^alpha, r_i the relative inverse training rate
    (L_i(t)/L_i(0) over its mean). The network gets sum_i w_i g_i (heads: w_i-weighted).

    The norms are taken on the shared representation by default (the paper uses the last shared
    layer; rep mode is the batch representation, params mode all shared parameters). ``w`` is a
    parameter of the main optimizer (``extra_parameters``): backward sets its gradient
    sum_i |G_i - target_i| / dw; at the start of every step the present tasks' weights are
    renormalised to sum to their number (T when all are present), an absent task's weight is left
    as it was. L_i(0) is each task's first own loss (a task absent at step 0 records it later).
    """

    registry_name = "gradnorm"
    needs = "both"
    keeps_gradients = False  # only the norms ||g_i||: params mode holds one chunk of gradients at a time

    def __init__(self, tasks: Sequence[str], *, alpha: float = 1.5):
        super().__init__(tasks)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.full((len(self.tasks),), float("nan")))

    def solve(self, names, G, M, lvec, ctx) -> Solution:
        idx = self._idx(names, self.w.device)
        with torch.no_grad():  # the paper's renormalisation after each update of w, over the present tasks
            wp = self.w[idx].clamp(min=1e-4)
            self.w[idx] = wp * (len(names) / wp.sum())
        lv = lvec.to(self.w.device)
        l0 = self.initial_losses[idx]
        self.initial_losses[idx] = torch.where(torch.isnan(l0), lv, l0)
        ratio = lv / self.initial_losses[idx].clamp_min(1e-12)
        r = ratio / ratio.mean()
        n = torch.sqrt(torch.diagonal(M).clamp_min(0)).float().to(self.w.device)
        w = self.w.detach()[idx]
        gn = w * n
        target = gn.mean() * r**self.alpha
        gw = torch.zeros_like(self.w)
        gw[idx] = n * torch.sign(gn - target)  # d/dw_i sum_j |w_j n_j - target_j|, target constant
        self.w.grad = gw if self.w.grad is None else self.w.grad + gw
        return Solution(w.to(lvec.device), w.to(lvec.device), w)

