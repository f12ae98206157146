"""Per-task gradient machinery shared by the strategies (and the DDP plumbing they need).

Two gradient spaces (``StepContext.mode``); in both the heads run on detached copies
``ctx.head_inputs`` of the shared features ``ctx.features``:

- ``"rep"``: gradients w.r.t. those copies. Each task's gradient is one ``torch.autograd.grad``
  through that task's head only, so T tasks cost T *head* backwards (a loop: batching them with
  vmap makes every row traverse every head, T^2 work). The combined gradient then goes through
  the encoder once: ``torch.autograd.backward(ctx.features, g)``.
- ``"params"``: gradients w.r.t. ``ctx.shared_params``. The encoder is linear in its cotangent,
  so task i's parameter gradient is the encoder's vector-Jacobian product with task i's
  representation gradient F_i (computed first, as in "rep"): T encoder backwards and no head
  traversal among them. They run in chunks of tasks (:func:`param_gradient_chunks`): one batched
  VJP per chunk (``is_grads_batched=True``) on a GPU, the chunk size chosen from a memory budget
  (:func:`chunk_size`, ``--grad-memory``); one task at a time on a CPU, where the VJPs are bound
  by arithmetic and batching only costs memory (measured in docs/weighting.md).

Nothing here runs a ``.grad``-accumulating backward more than once per step: the per-task
passes use ``torch.autograd.grad`` (no AccumulateGrad, hence no DDP reducer hooks), and the final
pass is a single ``torch.autograd.backward`` call, as DistributedDataParallel requires.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
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


# -- memory budget ------------------------------------------------------------------------------
#: default budget of the per-task parameter gradients (params mode): fits a 16 GB GPU next to the
#: model, its activations and the optimizer state of the networks facemtl ships
DEFAULT_GRAD_MEMORY = 4 * 2**30

_UNITS = {"": 2**20, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_memory(value: str | int | float, where: str = "--grad-memory") -> int:
    """Bytes from ``"4GiB"``, ``"512MB"``, ``"2g"`` or a number (a bare number is MiB)."""
    from facemtl.errors import ConfigError

    m = None if isinstance(value, bool) else re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)", str(value).strip())
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigError(
            f"{where} must be a positive size such as 4GiB, 512MB or 2048 (MiB), got {value!r}."
        )
    return int(float(m.group(1)) * _UNITS[unit])


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def largest_saved_tensor(outputs: Sequence[Tensor]) -> int:
    """Elements of the largest tensor the autograd graph below ``outputs`` saved for backward.

    A batched VJP holds a few gradients of that size per task of the chunk at once; walking the
    graph once per step costs well under a millisecond.
    """
    seen, stack, best = set(), [t.grad_fn for t in outputs if t.grad_fn is not None], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if attr.startswith("_saved_"):
                try:
                    v = getattr(node, attr)
                except Exception:  # a freed or hooked saved tensor: nothing to count
                    continue
                if isinstance(v, Tensor):
                    best = max(best, v.numel())
        stack.extend(nf for nf, _ in node.next_functions)
    return best


def chunk_size(T: int, P: int, device: torch.device, budget: int, *, held_rows: int, act_numel: int) -> int:
    """Tasks per batched VJP in params mode.

    CPU: 1. The VJPs are bound by arithmetic there; batching them saved nothing on the 40-task
    CelebA network and cost memory (docs/weighting.md). GPU: as many as fit in ``budget`` bytes
    after the ``held_rows`` full gradients the strategy keeps (T x P floats for the Gram matrix),
    counting per task of a chunk its gradient twice (autograd's output and the flat copy) and four
    gradients of the largest saved activation in flight.
    """
    if device.type != "cuda" or T <= 1:
        return 1
    held = 4 * held_rows * P
    per_row = 4 * (2 * P + 4 * act_numel)
    k = int((budget - held) // max(per_row, 1))
    if k < 1:
        warn_once(
            "grad-memory",
            "per-task gradients on the shared parameters need %s for the %d x %d gradients kept plus %s per task "
            "in flight, more than the grad-memory budget of %s; computing them one task at a time "
            "(raise --grad-memory if the device has room)",
            _fmt_bytes(held), held_rows, P, _fmt_bytes(per_row), _fmt_bytes(budget),
        )
        return 1
    return min(k, T)


# -- per-task gradients --------------------------------------------------------------------------
def rep_targets(ctx: StepContext) -> list[Tensor]:
    """The heads' inputs that take a gradient (detached copies in both gradient modes)."""
    return [h for h in ctx.head_inputs if h.requires_grad]


def grad_targets(ctx: StepContext) -> list[Tensor]:
    """The tensors per-task gradients are taken w.r.t. in ``ctx.mode``."""
    if ctx.mode == "rep":
        return rep_targets(ctx)
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


def _cotangent_layout(ctx: StepContext) -> list[tuple[Tensor, int, int]]:
    """(feature, offset, size) of each feature whose copy is a column block of the rep gradients."""
    out, off = [], 0
    for f, h in zip(ctx.features, ctx.head_inputs):
        if not h.requires_grad:
            continue
        n = h.numel()
        if f.requires_grad:
            out.append((f, off, n))
        off += n
    return out


def param_gradient_chunks(
    ctx: StepContext, F: Tensor, *, chunk: int, scale: float | Tensor, used: list[bool] | None = None
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, G[start:start+k])``: the tasks' gradients on the shared parameters, k at a time.

    ``F`` (T, R) are the tasks' gradients on the head inputs (:func:`rep_targets`); row i of the
    result is the encoder's VJP with cotangent F_i, scaled by the AMP loss scale on the way in and
    unscaled on the way out. ``used[j]`` is set when parameter j receives a gradient (unused
    parameters keep ``.grad = None``, as after a plain backward). A chunk whose batched VJP fails
    (a layer without a batching rule, out of memory) is redone one task at a time, with a warning.
    """
    params = grad_targets(ctx)
    layout = _cotangent_layout(ctx)
    P = sum(p.numel() for p in params)
    T = F.shape[0]
    outs = [f for f, _, _ in layout]
    for s in range(0, T, max(1, chunk)):
        Fc = F[s : s + chunk]
        k = Fc.shape[0]
        if not layout or not params:
            yield s, torch.zeros(k, P, device=F.device)
            continue
        rows = None
        if k > 1:
            try:
                cot = [(Fc[:, o : o + n] * scale).reshape(k, *f.shape).to(f.dtype) for f, o, n in layout]
                gs = torch.autograd.grad(outs, params, cot, retain_graph=True, allow_unused=True, is_grads_batched=True)
                rows = _flat(gs, params, (k,))
            except RuntimeError as err:
                warn_once("batched-params", "batched per-task gradients failed (%s); one task at a time", err)
                gs, rows = None, None
        if rows is None:
            rows = torch.empty(k, P, device=F.device)
            for r in range(k):
                cot = [(Fc[r, o : o + n] * scale).reshape(f.shape).to(f.dtype) for f, o, n in layout]
                gs = torch.autograd.grad(outs, params, cot, retain_graph=True, allow_unused=True)
                rows[r] = _flat(gs, params)
        if used is not None:
            for j, g in enumerate(gs):
                used[j] = used[j] or g is not None
        yield s, rows / scale


def per_task_gradients(losses: Sequence[Tensor], ctx: StepContext, *, scale: float | Tensor = 1.0, chunk: int = 1) -> Tensor:
    """(T, P) float32 per-task gradients in ``ctx.mode``'s space (what the strategies combine).

    For reports and tests; the strategies stream the params-mode rows instead of holding them.
    """
    F = task_gradients(losses, rep_targets(ctx), scale=scale, batched=False)
    if ctx.mode == "rep":
        return F
    return torch.cat([rows for _, rows in param_gradient_chunks(ctx, F, chunk=chunk, scale=scale)])


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

    In "rep" and "params" mode the heads saw detached copies, so a plain ``total.backward()``
    would stop there (the trap LibMTL fell into for its loss-only strategies): the gradient
    reaching the copies is taken first and handed to the encoder in the same single backward call.
    """
    if total is None or not total.requires_grad:
        return
    total = total * ctx.loss_scale
    if not ctx.detached:
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


def apply_combined(ctx: StepContext, losses: Sequence[Tensor], head_weights: Tensor, combined: Tensor) -> None:
    """Fill ``.grad``: heads from ``sum_i head_weights_i * loss_i``, encoder from ``combined``.

    ``combined`` is the (R,) unscaled gradient on the head inputs (``rep_targets``) that the
    encoder receives: one backward call over [weighted head loss, *features] with it (rescaled by
    the loss scale, cast to the features' dtype). In params mode the coefficients of a
    combination ``c^T G`` give ``combined = c^T F``: the encoder is linear in its cotangent.
    """
    s = ctx.loss_scale
    head_total = _weighted_sum(head_weights, losses)
    tensors, grads = [], []
    for f, o, n in _cotangent_layout(ctx):
        tensors.append(f)
        grads.append((combined[o : o + n] * s).reshape(f.shape).to(f.dtype))
    if head_total is not None:
        tensors.insert(0, head_total * s)
        grads.insert(0, None)
    if tensors:
        torch.autograd.backward(tensors, grads)


def apply_param_update(
    ctx: StepContext, losses: Sequence[Tensor], head_weights: Tensor, update: Tensor, used: Sequence[bool],
    *, F: Tensor, G: Tensor,
) -> None:
    """Params mode: heads from ``sum_i h_i L_i``, shared parameters get the (P,) ``update`` exactly.

    One process: a backward of the weighted head loss (it stops at the detached copies, so it
    only visits the heads) and ``update`` written into the shared ``.grad``: the step costs the T
    per-task VJPs and no extra encoder pass. Under torch.distributed a DDP-wrapped model needs
    one backward reaching every parameter, so the encoder also gets the cotangent ``h^T F`` and
    ``update - h^T G`` is added afterwards, averaged over ranks (the backward itself is averaged by
    the reducer, or by facemtl's engine after ``backward``).
    """
    s = ctx.loss_scale
    params = grad_targets(ctx)
    if dist_active():
        h = head_weights.to(F.device, F.dtype)
        apply_combined(ctx, losses, head_weights, h @ F)
        delta = all_reduce_mean_(update - h @ G)
    else:
        head_total = _weighted_sum(head_weights, losses)
        if head_total is not None:
            (head_total * s).backward()
        delta = update
    off = 0
    for p, u in zip(params, used):
        n = p.numel()
        if u or dist_active():
            d = (delta[off : off + n] * s).reshape(p.shape).to(p.dtype)
            if p.grad is None:
                p.grad = d
            else:  # in place: DDP may hold .grad as a view into its buckets
                p.grad.add_(d)
        off += n
