"""The pieces of one step that training, evaluation, correlation and the benchmarks share: the
input plan, batch to model inputs, masked per-task losses, mixed precision, and a pass over a
loader that returns mean losses and quick metrics."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from facemtl.data.cache import FaceCache
from facemtl.data.loader import images_to_float, to_device
from facemtl.errors import ConfigError


def input_plan(model, cache: FaceCache) -> list[tuple[int, int]]:
    """(stored size to read, size the model wants) for each model input."""
    return [(cache.pick_size(size), size) for size, _ in model.input_spec]


def make_inputs(batch: dict, plan: list[tuple[int, int]], channels_last: bool) -> list[torch.Tensor]:
    """uint8 images of the batch -> float [0, 1] model inputs, resized on the device where the cache
    lacks a size."""
    out = []
    for src, size in plan:
        x = images_to_float(batch["images"][src])
        if src != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous())
    return out


def task_losses(tasks, outputs: dict, batch: dict, criteria, active: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Masked loss of every task that has labels in the batch (the cascade's stage losses summed)."""
    losses = {}
    present = batch.get("present", {})
    for t in tasks:
        if active is not None and t.name not in active:
            continue
        if present.get(t.label_key, 1) == 0:
            continue
        out = outputs[t.name]
        crit = criteria[t.name] if t.name in criteria else None
        if isinstance(out, (list, tuple)):
            losses[t.name] = sum(t.loss(o, batch, crit) for o in out).float()
        else:
            losses[t.name] = t.loss(out, batch, crit).float()
    return losses


def own_gradients(losses: dict[str, torch.Tensor], params: list[torch.nn.Parameter], loss_scale,
                  keep_graph: bool) -> list[torch.Tensor | None]:
    """Gradients of the summed ``losses`` on ``params`` only (a task's own head), none on the shared layers.

    For ``train.shared_epochs``: past its epochs a task still trains its head, at weight 1, while the
    strategy weights the other tasks' losses; ``keep_graph`` when the strategy's backward follows.
    """
    if not losses:
        return []
    total = sum(losses.values()) * loss_scale
    return list(torch.autograd.grad(total, params, retain_graph=keep_graph, allow_unused=True))


def add_gradients(params: list[torch.nn.Parameter], grads: list[torch.Tensor | None]) -> None:
    """Add ``grads`` (from :func:`own_gradients`) into ``params``' ``.grad``; None adds nothing."""
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def autocast_for(device: torch.device, amp: str):
    """(a context factory for the forward pass, a GradScaler for fp16 or None) for ``--amp``."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return contextlib.nullcontext, None
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"Invalid amp '{amp}'. Use auto, bf16, fp16 or off.")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs CUDA; use --amp bf16 on the CPU.")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


@torch.no_grad()
def evaluate_split(model, tasks, loader, plan, device, autocast, channels_last: bool, max_batches: int = 0, *, per_part: bool = False):
    """Mean loss per task and each task's quick metrics over a loader (the model is left in train mode).

    ``plan=None``: ``loader`` is a list of ``(loader, plan)`` (one per cache of a multi-cache run),
    pooled: each task's loss and metrics over every sample of every loader that labels it
    (``max_batches`` applies to each loader). ``per_part``: also return the metrics of each loader
    on its own (a list in loader order), from the same pass."""
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    by_name = {t.name: t for t in tasks}
    parts = loader if plan is None else [(loader, plan)]
    collected: list[dict[str, list[dict]]] = [{t.name: [] for t in tasks} for _ in parts]
    for (part, part_plan), got in zip(parts, collected):
        for bi, batch in enumerate(part):
            if max_batches and bi >= max_batches:
                break
            batch = to_device(batch, device)
            with autocast():
                outputs = model.forward_heads(model.forward_features(*make_inputs(batch, part_plan, channels_last)))
                losses = task_losses(tasks, outputs, batch, model.criteria)
            for name, loss in losses.items():
                n = batch["present"].get(by_name[name].label_key, len(batch["index"]))
                sums[name] = sums.get(name, 0.0) + float(loss) * n
                counts[name] = counts.get(name, 0) + n
                out = outputs[name]
                got[name].append(by_name[name].collect(out[-1] if isinstance(out, (list, tuple)) else out, batch))
    model.train()
    pooled = _metrics(tasks, {t.name: [c for got in collected for c in got[t.name]] for t in tasks})
    losses = {k: sums[k] / counts[k] for k in sums}
    if per_part:
        return losses, pooled, [_metrics(tasks, got) for got in collected]
    return losses, pooled


def _metrics(tasks, collected: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Each task's quick metrics over its collected batches (tasks without any are left out)."""
    metrics = {}
    for t in tasks:
        parts = collected[t.name]
        if parts:
            metrics[t.name] = t.metrics({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return metrics
