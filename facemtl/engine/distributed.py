"""Distributed data parallel training through ``torchrun``.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; :func:`setup`
initialises the process group (NCCL on CUDA, gloo on CPU) only then, never at import time.

facemtl does not wrap the model in ``torch.nn.parallel.DistributedDataParallel``: DDP's hooks
all-reduce whatever each backward pass produces, but a weighting strategy may run several
backward passes (per-task gradients) and combine them itself. Instead, after the strategy has
produced the *combined* gradient, :func:`all_reduce_gradients` averages it across ranks in one
flat all-reduce, so each step costs exactly one collective, as with DDP, and strategies that
all-reduce their small solver inputs keep identical state on every rank. Parameters are
broadcast from rank 0 at the start, so all replicas stay identical.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_request: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (torch.cuda.is_available() and device_request in ("auto", "cuda")) or device_request.startswith("cuda")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=10))
    log.info("distributed: rank %d of %d (%s)", rank, world, dist.get_backend())
    return DistInfo(rank, world, local)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: nn.Module) -> None:
    if dist.is_initialized():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks with one flat all-reduce.

    A parameter without a gradient on every rank keeps ``grad=None`` (the optimizer then skips
    it, as in a single process); the has-gradient flags travel in the same buffer.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    ref = params[0]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flags = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [flags])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    has = (flat[-len(params):] > 0).tolist()  # one host sync
    for i, (p, g) in enumerate(zip(params, grads)):
        n = g.numel()
        if has[i]:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_present(present: dict[str, int], device: torch.device) -> dict[str, int]:
    """The largest labelled count of each label key over the ranks, so that every rank computes a
    loss for the same tasks (a task labelled on one rank only gets a zero loss, with its graph, on
    the others). The strategies all-reduce their per-task solver inputs over the tasks present,
    so ranks that disagreed on the task set would deadlock. One small collective per step."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not present:
        return present
    keys = sorted(present)
    t = torch.tensor([int(present[k]) for k in keys], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
