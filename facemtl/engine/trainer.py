"""The training loop: ``train(config)`` builds data, tasks, model and strategy, trains, validates,
checkpoints and returns a :class:`TrainResult`.

One step::

    inputs  = uint8 batch -> float [0,1] on the device (resized there if the cache lacks the size)
    inputs, labels = augment(inputs, labels)                  # training only: facemtl.data.augment
    feats   = model.forward_features(*inputs)                 # under autocast (bf16 on CUDA)
    ctx     = StepContext.build(feats, shared params, grad mode of the strategy)
    outputs = model.forward_heads(ctx.head_inputs)
    losses  = {task: masked loss}  (tasks without labels in the batch are left out; the cascade's
              three stage losses are summed)
    weights = strategy.backward(losses, ctx)                  # the strategy owns the backward pass
    all-reduce of the combined gradient (DDP) -> unscale (fp16) -> clip -> optimizer step

The library reports progress through :class:`Callbacks` (the CLI draws rich progress bars) and
the ``logging`` module; it never prints.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facemtl.data.augment import BatchAugment
from facemtl.data.cache import FaceCache
from facemtl.data.loader import CacheLoader, images_to_float, to_device
from facemtl.engine import distributed
from facemtl.engine.checkpoint import load_checkpoint, save_checkpoint
from facemtl.engine.config import RunConfig, to_toml
from facemtl.engine.schedules import lr_multiplier
from facemtl.errors import CheckpointError, ConfigError, MissingFileError, TrainingDiverged
from facemtl.utils.device import pick_device
from facemtl.utils.io import write_text_atomic
from facemtl.utils.seed import rng_state, set_rng_state, setup_seed

log = logging.getLogger(__name__)


class Callbacks:
    """Hooks the CLI uses to draw progress; every method is optional."""

    def on_train_start(self, *, epochs: int, steps_per_epoch: int, start_epoch: int, tasks: list[str], run_dir: Path) -> None: ...
    def on_step(self, *, epoch: int, step: int, losses: dict[str, float], weights: dict[str, float]) -> None: ...
    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None: ...
    def on_train_end(self, *, model: torch.nn.Module, strategy: torch.nn.Module) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    val_metrics: dict[str, dict[str, float]]
    test_metrics: dict[str, dict[str, float]]
    seconds: float
    parameters: dict[str, int]
    stopped_early: bool = False
    images_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# -- building blocks ------------------------------------------------------------------------------
def ensure_data(cfg: RunConfig, dist_info: distributed.DistInfo) -> FaceCache:
    path = Path(cfg.data.path)
    if not path.exists():
        if not cfg.data.prepare_if_missing:
            raise MissingFileError(f"cache {path} does not exist; create it with `facemtl prepare` or point --data at a cache.")
        if dist_info.is_main:
            from facemtl.data.synthetic import prepare_synthetic
            from facemtl.models import input_sizes

            # only the sizes this model reads (a 224 px render costs many times a 64 px one)
            sizes = tuple(cfg.data.synthetic_sizes) or tuple(sorted(set(
                input_sizes(cfg.model.backbone, cfg.model.input_size, **cfg.model.options))))
            log.info("%s not found: rendering %d SynthFaces images (%s px) into it", path, cfg.data.synthetic_images,
                     ", ".join(map(str, sizes)))
            prepare_synthetic(path, num_images=cfg.data.synthetic_images, identities=cfg.data.synthetic_identities,
                              sizes=sizes, resume=True)
        distributed.barrier()
    return FaceCache(path)


def input_plan(model, cache: FaceCache) -> list[tuple[int, int]]:
    """(stored size to read, size the model wants) for each model input."""
    return [(cache.pick_size(size), size) for size, _ in model.input_spec]


def make_inputs(batch: dict, plan: list[tuple[int, int]], channels_last: bool) -> list[torch.Tensor]:
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


def autocast_for(device: torch.device, amp: str):
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


def build_optimizer(cfg: RunConfig, model, strategy) -> torch.optim.Optimizer:
    t = cfg.train
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": t.weight_decay}]
    extra = strategy.extra_parameters()
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.momentum > 0)
    raise ConfigError(f"Invalid optimizer '{t.optimizer}'. Only adamw and sgd are supported.")


@torch.no_grad()
def evaluate_split(model, tasks, loader, plan, device, autocast, channels_last: bool, max_batches: int = 0):
    """Mean loss per task and each task's quick metrics over a loader."""
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    collected: dict[str, list[dict]] = {t.name: [] for t in tasks}
    for bi, batch in enumerate(loader):
        if max_batches and bi >= max_batches:
            break
        batch = to_device(batch, device)
        with autocast():
            outputs = model.forward_heads(model.forward_features(*make_inputs(batch, plan, channels_last)))
            losses = task_losses(tasks, outputs, batch, model.criteria)
        for name, l in losses.items():
            n = len(batch["index"])
            sums[name] = sums.get(name, 0.0) + float(l) * n
            counts[name] = counts.get(name, 0) + n
        for t in tasks:
            if t.name in losses:
                out = outputs[t.name]
                collected[t.name].append(t.collect(out[-1] if isinstance(out, (list, tuple)) else out, batch))
    model.train()
    mean_losses = {k: sums[k] / counts[k] for k in sums}
    metrics = {}
    for t in tasks:
        parts = collected[t.name]
        if parts:
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            metrics[t.name] = t.metrics(merged)
    return mean_losses, metrics


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# -- the loop -------------------------------------------------------------------------------------
def train(cfg: RunConfig, *, resume: bool = False, force: bool = False, callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``cfg``; with ``resume`` continue from ``<run>/last.pt`` exactly where it stopped."""
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks
    from facemtl.weighting import build_weighting
    from facemtl.weighting.base import StepContext
    from facemtl.weighting._grads import parse_memory

    cb = callbacks or Callbacks()
    t0 = time.perf_counter()
    dist_info = distributed.setup(cfg.train.device)
    try:
        run_dir = cfg.run_dir()
        last = run_dir / "last.pt"
        if dist_info.is_main and last.exists() and not (resume or force):
            raise ConfigError(f"run folder {run_dir} already holds a checkpoint; pass --resume to continue it, --force to start over, or --out for a new run.")
        if resume and not last.exists():
            raise CheckpointError(f"nothing to resume: {last} does not exist.")

        setup_seed(cfg.train.seed + dist_info.rank, cfg.train.deterministic)
        device = pick_device(cfg.train.device)
        if device.type == "cuda" and dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
        cache = ensure_data(cfg, dist_info)
        info = DataInfo.from_cache(cache)
        state = load_checkpoint(last) if resume else None
        task_options = cfg.tasks.options
        if state is not None:  # a 0.1.0 run resumes with the linear landmark head it was trained with
            from facemtl.engine.checkpoint import legacy_task_options

            task_options = legacy_task_options(cfg, state["model"])
        tasks = build_tasks(list(cfg.tasks.names), info, task_options)
        task_names = [t.name for t in tasks]
        model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, weights=cfg.model.weights, **cfg.model.options)
        model.to(device)
        channels_last = resolve_channels_last(cfg.train.channels_last, device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        strategy = build_weighting(cfg.weighting.name, task_names, **cfg.weighting.options).to(device)
        strategy.grad_memory = parse_memory(cfg.weighting.grad_memory)
        grad_mode = strategy.grad_mode(cfg.weighting.grad_mode)
        distributed.broadcast_parameters(model)
        optimizer = build_optimizer(cfg, model, strategy)
        autocast, scaler = autocast_for(device, cfg.train.amp)
        plan = input_plan(model, cache)
        sizes = sorted({src for src, _ in plan})
        tcfg = cfg.train
        train_loader = CacheLoader(
            cache, cfg.data.train_split, sizes, tcfg.batch_size, shuffle=True, drop_last=dist_info.enabled, seed=tcfg.seed,
            num_workers=cfg.data.num_workers, in_memory=_in_memory(cfg), rank=dist_info.rank, world_size=dist_info.world_size,
            pin_memory=device.type == "cuda",
        )
        val_loader = CacheLoader(cache, cfg.data.val_split, sizes, max(tcfg.batch_size, 128), shuffle=False, in_memory=_in_memory(cfg)) if dist_info.is_main else None
        steps_per_epoch = min(len(train_loader), tcfg.max_steps_per_epoch or len(train_loader))
        total_steps = steps_per_epoch * tcfg.epochs
        shared_params = model.shared_parameters()
        trainable = [p for g in optimizer.param_groups for p in g["params"]]
        fwd_features = torch.compile(model.forward_features) if tcfg.compile else model.forward_features
        augment = BatchAugment(cfg.augment, seed=tcfg.seed + 1_000_003 * dist_info.rank)
        augment = augment if augment.enabled else None

        # -- state (fresh or resumed) --
        start_epoch, step, skip_batches = 0, 0, 0
        history: list[dict[str, Any]] = []
        weight_log: list[dict[str, Any]] = []
        best, best_epoch, bad_epochs = math.inf, -1, 0
        partial_epoch: dict[str, Any] = {}  # running sums of an epoch cut short (restored on resume)
        if state is not None:
            if state.get("config_digest") != cfg.digest():
                saved = state["config"]
                raise CheckpointError(
                    f"{last} was trained with backbone '{saved['model']['backbone']}' and tasks {saved['tasks']['names']}; "
                    f"this run asks for backbone '{cfg.model.backbone}' and tasks {list(cfg.tasks.names)}. "
                    "Resume with the same settings, or start a new run with --out."
                )
            model.load_state_dict(state["model"])
            strategy.load_state_dict(state["weighting"])
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, step, skip_batches = state["epoch"], state["step"], state.get("batches_done", 0)
            history, weight_log = state.get("history", []), state.get("weight_log", [])
            best, best_epoch, bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
            set_rng_state(state["rng"])
            partial_epoch = state.get("partial_epoch") or {}  # None after a completed epoch
            log.info("resumed %s at epoch %d, batch %d", last, start_epoch + 1, skip_batches)
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "config.toml", to_toml(cfg))
        tb = _tensorboard(run_dir) if dist_info.is_main else None

        def checkpoint(path: Path, epoch_done: int, batches_done: int, partial: dict[str, Any] | None = None) -> None:
            if not dist_info.is_main:
                return
            save_checkpoint(path, {
                "config": cfg.to_dict(), "config_digest": cfg.digest(), "data_info": info.to_dict(),
                "model": model.state_dict(), "weighting": strategy.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch_done, "step": step,
                "batches_done": batches_done, "rng": rng_state(), "best": best, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history, "weight_log": weight_log, "partial_epoch": partial,
            })

        cb.on_train_start(epochs=tcfg.epochs, steps_per_epoch=steps_per_epoch, start_epoch=start_epoch, tasks=task_names, run_dir=run_dir)
        stopped_early = False
        images_seen, wait_time, step_time = 0, 0.0, 0.0
        model.train()
        for epoch in range(start_epoch, tcfg.epochs):
            train_loader.set_epoch(epoch)
            ep_t0 = time.perf_counter()
            # a resumed epoch continues the means of its first part, so its logs and the strategy see the whole epoch
            sums: dict[str, float] = dict(partial_epoch.get("sums", {}))
            wsums: dict[str, float] = dict(partial_epoch.get("wsums", {}))
            nsteps = int(partial_epoch.get("nsteps", 0))
            partial_epoch = {}
            bi = 0
            done_in_epoch = skip_batches
            try:
                it = iter(train_loader)
                while bi < steps_per_epoch:
                    tw = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    if bi < skip_batches:
                        bi += 1
                        continue
                    ts = time.perf_counter()
                    wait_time += ts - tw
                    mult = lr_multiplier(tcfg.schedule, epoch=epoch, step=step, total_steps=total_steps,
                                         warmup_steps=tcfg.warmup_steps, step_size=tcfg.step_size, gamma=tcfg.gamma)
                    for g in optimizer.param_groups:
                        g["lr"] = tcfg.lr * mult
                    batch = to_device(batch, device)
                    optimizer.zero_grad(set_to_none=True)
                    # fp16: the strategy scales its losses itself; a 0-d tensor avoids a host sync
                    loss_scale = scaler.scale(torch.ones((), device=device)) if scaler is not None else 1.0
                    active = set(strategy.active_tasks())
                    inputs = make_inputs(batch, plan, channels_last)
                    if augment is not None:  # per-sample draw from (seed, epoch, batch): resumes exactly
                        inputs, batch = augment(inputs, batch, epoch=epoch, batch_index=bi)
                        if channels_last:
                            inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
                    with autocast():
                        feats = fwd_features(*inputs)
                        ctx = StepContext.build(feats, shared_params, grad_mode, step=step, epoch=epoch, loss_scale=loss_scale)
                        outputs = model.forward_heads(ctx.head_inputs)
                        losses = task_losses(tasks, outputs, batch, model.criteria, active)
                    if not losses:
                        bi += 1
                        continue
                    values = torch.stack([l.detach() for l in losses.values()]).tolist()  # the step's one host sync
                    for name, v in zip(losses, values):
                        if not math.isfinite(v):
                            raise TrainingDiverged(
                                f"loss of task '{name}' is {v} at epoch {epoch + 1}, step {step}; the last good checkpoint "
                                f"is {last if last.exists() else 'none (first epoch)'}. Lower --lr, set --grad-clip, or try another --weighting."
                            )
                    weights = strategy.backward(losses, ctx)
                    distributed.all_reduce_gradients(trainable)
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    if tcfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(trainable, tcfg.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    step_time += time.perf_counter() - ts
                    images_seen += len(batch["index"])
                    step_losses = dict(zip(losses, values))
                    for k, v in step_losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    for k, v in weights.items():
                        wsums[k] = wsums.get(k, 0.0) + float(v)
                    weight_log.append({"step": step, "epoch": epoch + 1, **{f"loss/{k}": v for k, v in step_losses.items()},
                                       **{f"weight/{k}": float(v) for k, v in weights.items()}})
                    nsteps += 1
                    step += 1
                    bi += 1
                    done_in_epoch = bi
                    cb.on_step(epoch=epoch, step=bi, losses=step_losses, weights={k: float(v) for k, v in weights.items()})
            except KeyboardInterrupt:
                checkpoint(last, epoch, done_in_epoch, {"sums": sums, "wsums": wsums, "nsteps": nsteps})
                if dist_info.is_main:
                    write_text_atomic(run_dir / "weights.csv", _csv(weight_log))
                log.warning("interrupted at epoch %d, batch %d; saved %s. Resume with: facemtl train --resume --out %s",
                            epoch + 1, done_in_epoch, last, run_dir)
                raise
            skip_batches = 0
            # -- end of epoch: validate, adapt strategy, log, checkpoint --
            train_means = {k: v / max(nsteps, 1) for k, v in sums.items()}
            if dist_info.is_main:
                val_losses, val_metrics = evaluate_split(model, tasks, val_loader, plan, device, autocast, channels_last, tcfg.val_batches)
            else:
                val_losses, val_metrics = {}, {}
            val_losses, val_metrics = _broadcast((val_losses, val_metrics))
            strategy.on_epoch_end(epoch, train_means, val_losses)
            val_total = sum(val_losses.values()) if val_losses else math.inf
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - ep_t0, 2)}
            row["train_loss"] = sum(train_means.values())
            row["val_loss"] = val_total
            row.update({f"train_loss/{k}": v for k, v in train_means.items()})
            row.update({f"val_loss/{k}": v for k, v in val_losses.items()})
            row.update({f"weight/{k}": v / max(nsteps, 1) for k, v in wsums.items()})
            for tname, ms in val_metrics.items():
                row.update({f"val/{tname}/{m}": v for m, v in ms.items()})
            history.append(row)
            improved = val_total < best
            if improved:
                best, best_epoch, bad_epochs = val_total, epoch + 1, 0
            else:
                bad_epochs += 1
            checkpoint(last, epoch + 1, 0)
            if improved and dist_info.is_main:
                checkpoint(run_dir / "best.pt", epoch + 1, 0)
            if dist_info.is_main:
                write_text_atomic(run_dir / "metrics.csv", _csv(history))
                write_text_atomic(run_dir / "weights.csv", _csv(weight_log))
                if tb is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "epoch":
                            tb.add_scalar(k, v, epoch + 1)
            cb.on_epoch_end(epoch=epoch, row=row)
            if tcfg.patience and bad_epochs >= tcfg.patience:
                log.info("early stopping after epoch %d: validation loss has not improved for %d epochs", epoch + 1, bad_epochs)
                stopped_early = True
                break

        cb.on_train_end(model=model, strategy=strategy)
        # -- final report: best checkpoint on val and test --
        val_metrics, test_metrics = {}, {}
        if dist_info.is_main:
            best_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else last
            model.load_state_dict(load_checkpoint(best_path)["model"])
            _, val_metrics = evaluate_split(model, tasks, val_loader, plan, device, autocast, channels_last)
            test_idx = cache.indices("test")
            if len(test_idx):
                test_loader = CacheLoader(cache, "test", sizes, max(tcfg.batch_size, 128), shuffle=False, in_memory=_in_memory(cfg))
                _, test_metrics = evaluate_split(model, tasks, test_loader, plan, device, autocast, channels_last)
            if tb is not None:
                tb.close()
        desc = model.describe()
        return TrainResult(
            run_dir=run_dir, history=history, best_epoch=best_epoch, val_metrics=val_metrics, test_metrics=test_metrics,
            seconds=time.perf_counter() - t0, parameters={k: int(desc["parameters"][k]) for k in ("total", "shared", "deployed")},
            stopped_early=stopped_early, images_per_second=images_seen / max(step_time + wait_time, 1e-9),
            data_wait_fraction=wait_time / max(step_time + wait_time, 1e-9),
        )
    finally:
        distributed.teardown()


def resolve_channels_last(value: str | bool, device: torch.device) -> bool:
    v = str(value).lower()
    if v == "auto":
        return device.type == "cuda"
    return v in ("1", "true", "yes", "on")


def _in_memory(cfg: RunConfig) -> bool | str:
    v = str(cfg.data.in_memory).lower()
    return "auto" if v == "auto" else v in ("1", "true", "yes", "on")


def _broadcast(obj: Any) -> Any:
    if torch.distributed.is_initialized():
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: metrics.csv is the record
        return None
    return SummaryWriter(str(run_dir / "tb"))
