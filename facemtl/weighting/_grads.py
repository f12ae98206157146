"""Per-task gradient machinery shared by the strategies (and the DDP plumbing they need).

Two gradient spaces (``StepContext.mode``):

- ``"rep"``: gradients w.r.t. the heads' detached input copies ``ctx.head_inputs``. Each task's
  gradient is one ``torch.autograd.grad`` through that task's head only (autograd visits only the
  nodes between the loss and the inputs), so T tasks cost T *head* backwards. The combined
  gradient then goes through the encoder once: ``torch.autograd.backward(ctx.features, g)``.
- ``"params"``: gradients w.r.t. ``ctx.shared_params``, one backward through the encoder per task.
  Here the T backwards are batched into one vmapped call (``is_grads_batched=True``).

Measured on a 40-task toy on 2 CPU cores (B=64, D=512; table in docs/weighting.md): rep mode,
separate heads: loop 18 ms, batched 140 ms (vmap makes every row traverse every head: T^2 work);
one shared Linear head: loop 16 ms, batched 17 ms. Params mode: loop 123 ms, batched 83 ms. So:
loop in rep mode, batched (falling back to the loop, loudly, if a layer has no batching rule) in
params mode.

Nothing here runs a ``.grad``-accumulating backward more than once per step: the per-task
passes use ``torch.autograd.grad`` (no AccumulateGrad, hence no DDP reducer hooks), and the final
pass is a single ``torch.autograd.backward`` call, as DistributedDataParallel requires.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:  # base imports this module
    from facemtl.weighting.base import StepContext

log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


# -- distributed ---------------------------------------------------------------------------------
def dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean_(t: Tensor) -> Tensor:
    """Average ``t`` in place over ranks (no-op without torch.distributed); returns ``t``."""
    if dist_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def loss_vector(losses: Sequence[Tensor]) -> Tensor:
    """Detached float32 vector of the losses, averaged over ranks so every rank sees the same."""
    vec = torch.stack([l.detach().float().reshape(()) for l in losses])
    return all_reduce_mean_(vec)


def mean_over_ranks(values: dict[str, float], tasks: Sequence[str], device: torch.device) -> dict[str, float]:
    """Average a {task: float} dict over ranks (tasks missing on a rank do not count there).

    Collective under DDP: every rank must call it (the strategies do so in ``on_epoch_end``).
    """
    if not dist_active():
        return {t: float(v) for t, v in values.items() if t in tasks}
    rows = [[0.0] * len(tasks), [0.0] * len(tasks)]
    for i, t in enumerate(tasks):
        v = values.get(t)
        if v is not None and v == v:  # skip NaN
            rows[0][i], rows[1][i] = float(v), 1.0
    vec = torch.tensor(rows, dtype=torch.float64, device=device)  # the strategy's device (NCCL needs CUDA)
    dist.all_reduce(vec, op=dist.ReduceOp.SUM)
    tot, cnt = vec.cpu().tolist()
    return {t: tot[i] / cnt[i] for i, t in enumerate(tasks) if cnt[i] > 0}


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step): every rank and every resumed run draws the same."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


# -- per-task gradients --------------------------------------------------------------------------
def grad_targets(ctx: StepContext) -> list[Tensor]:
    """The tensors per-task gradients are taken w.r.t. in ``ctx.mode``."""
    if ctx.mode == "rep":
        return [h for h in ctx.head_inputs if h.requires_grad]
    return [p for p in ctx.shared_params if p.requires_grad]


def _flat(grads: Sequence[Tensor | None], targets: Sequence[Tensor], lead: tuple[int, ...] = ()) -> Tensor:
    parts = []
    for g, t in zip(grads, targets):
        if g is None:
            parts.append(torch.zeros(*lead, t.numel(), device=t.device, dtype=torch.float32))
        else:
            parts.append(g.reshape(*lead, -1).float())
    return torch.cat(parts, dim=-1)


def task_gradients(
    losses: Sequence[Tensor], targets: Sequence[Tensor], *, scale: float | Tensor, batched: bool
) -> Tensor:
    """(T, P) float32 gradients of each loss w.r.t. ``targets`` (flattened, concatenated), unscaled.

    Losses are multiplied by ``scale`` (AMP loss scale) before differentiation and the result
    divided again, so solvers see true gradients. The graph is retained for the final backward.
    A loss without a graph (a task with nothing to learn this step) gets a zero row.
    """
    T = len(losses)
    P = sum(t.numel() for t in targets)
    device = targets[0].device if targets else losses[0].device
    live = [i for i, l in enumerate(losses) if l.requires_grad]
    G = torch.zeros(T, P, device=device, dtype=torch.float32)
    if not live or not targets:
        return G
    if batched and len(live) > 1:
        try:
            vec = torch.stack([losses[i].reshape(()) for i in live]) * scale
            eye = torch.eye(len(live), device=vec.device, dtype=vec.dtype)
            gs = torch.autograd.grad(
                vec, list(targets), grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
            G[live] = _flat(gs, targets, (len(live),))
            return G / scale
        except RuntimeError as err:  # a layer without a vmap rule, or out of memory
            warn_once("batched", "batched per-task gradients failed (%s); falling back to one pass per task", err)
    for i in live:
        gs = torch.autograd.grad(losses[i].reshape(()) * scale, list(targets), retain_graph=True, allow_unused=True)
        G[i] = _flat(gs, targets)
    return G / scale


def gram(G: Tensor) -> Tensor:
    """G G^T in float64, averaged over ranks (identical solver input everywhere)."""
    M = (G @ G.T).double()
    return all_reduce_mean_(M)


# -- applying a result ---------------------------------------------------------------------------
def _weighted_sum(weights: Tensor, losses: Sequence[Tensor]) -> Tensor | None:
    terms = [w * l for w, l in zip(weights.to(losses[0].device).unbind(), losses) if l.requires_grad]
    return torch.stack([t.float().reshape(()) for t in terms]).sum() if terms else None


def backward_total(total: Tensor | None, ctx: StepContext) -> None:
    """Backward of a scalar objective in any mode, reaching heads AND encoder.

    In "rep" mode the heads saw detached copies, so a plain ``total.backward()`` would stop there
    (the trap LibMTL fell into for its loss-only strategies): the gradient reaching the copies is
    taken first and handed to the encoder in the same single backward call.
    """
    if total is None or not total.requires_grad:
        return
    total = total * ctx.loss_scale
    if ctx.mode != "rep":
        total.backward()
        return
    pairs = [(f, h) for f, h in zip(ctx.features, ctx.head_inputs) if f.requires_grad and h.requires_grad]
    if not pairs:
        total.backward()
        return
    gh = torch.autograd.grad(total, [h for _, h in pairs], retain_graph=True, allow_unused=True)
    feats, grads = [], []
    for (f, _), g in zip(pairs, gh):
        if g is not None:
            feats.append(f)
            grads.append(g)
    torch.autograd.backward([total, *feats], [None, *grads])


def apply_combined(
    ctx: StepContext, losses: Sequence[Tensor], head_weights: Tensor, combined: Tensor, G: Tensor
) -> None:
    """Fill ``.grad``: heads from ``sum_i head_weights_i * loss_i``, shared part from ``combined``.

    ``combined`` is the (P,) unscaled update direction in the gradient space of ``ctx.mode``.
    rep: one backward call over [weighted head loss, *features] with the combined gradient
    (rescaled by the loss scale, cast to the features' dtype).
    params: one backward of the weighted head loss (which also gives the shared parameters
    ``h^T G``), then ``combined - h^T G`` is added to the shared gradients (averaged over ranks
    under DDP, where the backward itself was averaged by the reducer).
    """
    s = ctx.loss_scale
    head_total = _weighted_sum(head_weights, losses)
    if ctx.mode == "rep":
        tensors, grads, off = [], [], 0
        for f, h in zip(ctx.features, ctx.head_inputs):
            if not h.requires_grad:
                continue
            n = h.numel()
            if f.requires_grad:
                tensors.append(f)
                grads.append((combined[off : off + n] * s).reshape(f.shape).to(f.dtype))
            off += n
        if head_total is not None:
            tensors.insert(0, head_total * s)
            grads.insert(0, None)
        if tensors:
            torch.autograd.backward(tensors, grads)
        return
    if head_total is not None:
        (head_total * s).backward()
    params = grad_targets(ctx)
    correction = combined - head_weights.to(G.device, G.dtype) @ G
    all_reduce_mean_(correction)
    off = 0
    for p in params:
        n = p.numel()
        delta = (correction[off : off + n] * s).reshape(p.shape).to(p.dtype)
        if p.grad is None:
            p.grad = delta
        else:  # in place: DDP may hold .grad as a view into its buckets
            p.grad.add_(delta)
        off += n
