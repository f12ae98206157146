"""The training loop: ``train(config)`` builds data, tasks, model and strategy (:func:`build_run`),
trains (:func:`train_one_epoch`, :func:`train_step`), validates (:func:`end_epoch`), checkpoints
(:class:`~facemtl.engine.state.TrainState` + the modules' states) and returns a :class:`TrainResult`.

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

The helpers of one step that evaluation and reports share are in :mod:`facemtl.engine.steps`; the
run folder's files and their order in :mod:`facemtl.engine.run_folder`. Ctrl-C (or SIGTERM) is
deferred to the end of the current step (:mod:`facemtl.engine.interrupt`), so ``last.pt`` never
holds a half-done step; training then raises :class:`~facemtl.errors.TrainingInterrupted` naming
the checkpoint a resume continues from. The library reports progress through :class:`Callbacks` (the CLI draws rich
progress bars) and the ``logging`` module; it never prints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facemtl.data.augment import BatchAugment
from facemtl.data.loader import CacheLoader, to_device
from facemtl.data.mixing import MixedLoader
from facemtl.engine import distributed, run_folder
from facemtl.engine.checkpoint import load_checkpoint, save_checkpoint
from facemtl.engine.config import RunConfig, to_toml
from facemtl.engine.data import RunData
from facemtl.engine.ema import ModelEMA
from facemtl.engine.interrupt import DeferredStop
from facemtl.engine.mining import HardNegatives, synth_config_of
from facemtl.engine.schedules import lr_multiplier
from facemtl.engine.state import EpochSums, TrainState
from facemtl.engine.steps import add_gradients, autocast_for, evaluate_split, input_plan, make_inputs, own_gradients, task_losses
from facemtl.errors import CheckpointError, ConfigError, MissingFileError, TrainingDiverged, TrainingInterrupted
from facemtl.tasks.registry import lower_is_better_metrics
from facemtl.utils.device import pick_device
from facemtl.utils.io import remove_stale_temp_files, write_text_atomic
from facemtl.utils.lock import run_lock
from facemtl.utils.options import auto_or_bool
from facemtl.utils.seed import rng_state, set_rng_state, setup_seed

__all__ = [
    "Callbacks",
    "TrainResult",
    "build_run",
    "end_epoch",
    "evaluate_split",
    "input_plan",
    "make_inputs",
    "task_losses",
    "train",
    "train_one_epoch",
    "train_step",
]

log = logging.getLogger(__name__)


class Callbacks:
    """Hooks the CLI uses to draw progress; every method is optional."""

    def on_train_start(self, *, epochs: int, steps_per_epoch: int, start_epoch: int, tasks: list[str], run_dir: Path) -> None: ...
    def on_step(self, *, epoch: int, step: int, losses: dict[str, float], weights: dict[str, float]) -> None: ...
    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None: ...
    def on_mine(self, *, epoch: int, record: dict[str, Any]) -> None: ...
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
    #: several caches: {dataset: {task: metrics}} of the test split of each (the tasks it labels)
    test_by_dataset: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


@dataclass
class Speed:
    """Images trained, and seconds spent waiting for data and in steps (images/s, data-wait fraction)."""

    images: int = 0
    wait: float = 0.0
    compute: float = 0.0

    def images_per_second(self) -> float:
        return self.images / max(self.wait + self.compute, 1e-9)

    def wait_fraction(self) -> float:
        return self.wait / max(self.wait + self.compute, 1e-9)


@dataclass
class Run:
    """Everything :func:`build_run` assembles for one training run (fixed for its duration)."""

    cfg: RunConfig
    dist: distributed.DistInfo
    device: torch.device
    data: RunData
    info: Any
    tasks: list
    model: torch.nn.Module
    strategy: torch.nn.Module
    grad_mode: str
    optimizer: torch.optim.Optimizer
    autocast: Callable
    scaler: Any
    plan: list[tuple[int, int]]
    channels_last: bool
    train_loader: CacheLoader | MixedLoader
    val_loaders: list[tuple[str, CacheLoader, list[tuple[int, int]]]]  # (dataset, loader, plan); main process only
    augment: BatchAugment | None
    forward_features: Callable
    shared_params: list[torch.nn.Parameter] = field(default_factory=list)
    trainable: list[torch.nn.Parameter] = field(default_factory=list)
    task_params: list[torch.nn.Parameter] = field(default_factory=list)  # the heads' (and criteria's): not shared
    ema: ModelEMA | None = None  # train.ema or train.swa > 0: the averaged weights, which validation, best.pt and export use
    mined: HardNegatives | None = None  # [mine]: hard non-faces added to every training batch (appended or replacing)
    tb: Any = None

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir()

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validated and kept as the checkpoint's ``model``: the moving average when on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return min(len(self.train_loader), self.cfg.train.max_steps_per_epoch or len(self.train_loader))

    def save(self, path: Path, state: TrainState) -> None:
        """Checkpoint: the loop's state, every module's state, the RNGs (main process only)."""
        if not self.dist.is_main:
            return
        cfg, scaler = self.cfg, self.scaler
        # "model" holds the weights to evaluate and export (the moving average when on); with a
        # moving average the optimizer's own weights go under "train_model", for --resume only
        averaged = {"train_model": self.model.state_dict(), "ema": self.ema.state_dict()} if self.ema is not None else {}
        save_checkpoint(path, {
            "config": cfg.to_dict(), "config_digest": cfg.digest(), "data_info": self.info.to_dict(),
            "model": self.eval_model.state_dict(), **averaged, "weighting": self.strategy.state_dict(),
            **({"mined": self.mined.state_dict()} if self.mined is not None else {}),
            "optimizer": self.optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(), **state.state_dict(),
            # the cache as given and where it was then, so evaluate finds it from another folder
            "data_path": str(Path(cfg.data.path).absolute()), "cwd": os.getcwd(),
            "data_paths": [str(Path(p).absolute()) for p in cfg.data.paths()], "data_names": self.data.names,
        })


# -- building blocks ------------------------------------------------------------------------------
def ensure_data(cfg: RunConfig, dist_info: distributed.DistInfo) -> RunData:
    """The run's caches, rendering SynthFaces into a lone missing cache when the recipe allows."""
    paths = cfg.data.paths()
    path = Path(paths[0])
    if len(paths) == 1 and not path.exists():
        if not cfg.data.prepare_if_missing:
            raise MissingFileError(f"cache {path} does not exist; create it with `facemtl prepare` or point --data at a cache.")
        if dist_info.is_main:
            from facemtl.data.synthetic import prepare_synthetic

            settings = synthetic_render_settings(cfg)
            log.info("%s not found: rendering %d SynthFaces images (%s px) into it", path, cfg.data.synthetic_images,
                     ", ".join(map(str, settings["sizes"])))
            prepare_synthetic(path, num_images=cfg.data.synthetic_images, resume=True, **settings)
        distributed.barrier()
    return RunData.open(paths)


def synthetic_render_settings(cfg: RunConfig) -> dict[str, Any]:
    """The SynthFaces settings a missing cache is rendered with (``SynthConfig`` / ``prepare_synthetic``
    keywords): the recipe's identities, sizes and framing; without sizes, only those the model reads
    (a 224 px render costs many times a 64 px one)."""
    from facemtl.models import input_sizes

    sizes = tuple(cfg.data.synthetic_sizes) or tuple(sorted(set(
        input_sizes(cfg.model.backbone, cfg.model.input_size, **cfg.model.options))))
    settings: dict[str, Any] = {"identities": cfg.data.synthetic_identities, "sizes": sizes}
    if cfg.data.synthetic_face_scale:  # else SynthFaces' own framing
        settings["face_scale"] = tuple(cfg.data.synthetic_face_scale)
    return settings


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


def resolve_channels_last(value: str | bool, device: torch.device) -> bool:
    v = auto_or_bool(value, "train.channels_last")
    return device.type == "cuda" if v == "auto" else bool(v)


def _build_model(cfg: RunConfig, info, ckpt: dict[str, Any] | None, device: torch.device, data: RunData | None = None):
    from facemtl.models import build_model
    from facemtl.tasks import build_tasks

    task_options = cfg.tasks.options
    if ckpt is not None:  # a 0.1.0 run resumes with the linear landmark head it was trained with
        from facemtl.engine.checkpoint import legacy_task_options

        task_options = legacy_task_options(cfg, ckpt["model"])
    try:
        tasks = build_tasks(list(cfg.tasks.names), info, task_options)
    except ConfigError as e:
        if data is None or not data.multi:
            raise
        raise ConfigError(f"{e} The run's caches: {data.describe_caches()}.") from None
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, weights=cfg.model.weights,
                        architecture=cfg.model.architecture, architecture_options=cfg.model.architecture_options,
                        **cfg.model.options).to(device)
    return tasks, model


def build_run(cfg: RunConfig, dist_info: distributed.DistInfo, ckpt: dict[str, Any] | None = None) -> Run:
    """Seed, device, cache, tasks, model, strategy, optimizer, loaders and augmentation of ``cfg``
    (``ckpt``: the checkpoint a resume starts from, for the model's legacy options)."""
    from facemtl.weighting import build_weighting
    from facemtl.weighting._grads import parse_memory

    setup_seed(cfg.train.seed + dist_info.rank, cfg.train.deterministic)
    device = pick_device(cfg.train.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    data = ensure_data(cfg, dist_info)
    info = data.info()
    tasks, model = _build_model(cfg, info, ckpt, device, data)
    data.check_tasks(tasks)
    check_select(cfg.train.select, [t.name for t in tasks])
    check_shared_epochs(cfg.train.shared_epochs, [t.name for t in tasks])
    channels_last = resolve_channels_last(cfg.train.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    strategy = build_weighting(cfg.weighting.name, [t.name for t in tasks], **cfg.weighting.options).to(device)
    strategy.grad_memory = parse_memory(cfg.weighting.grad_memory)  # bytes for per-task gradients in params mode
    distributed.broadcast_parameters(model)
    optimizer = build_optimizer(cfg, model, strategy)
    autocast, scaler = autocast_for(device, cfg.train.amp)
    train_loader = data.train_loader(cfg, model, dist_info, device)
    val_loaders = data.eval_loaders(cfg, model, cfg.data.val_split, max(cfg.train.batch_size, 128)) if dist_info.is_main else []
    augment = BatchAugment(cfg.augment, seed=cfg.train.seed + 1_000_003 * dist_info.rank, attribute_names=info.attribute_names)
    plan = data.train_plan(model)
    return Run(
        cfg=cfg, dist=dist_info, device=device, data=data, info=info, tasks=tasks, model=model, strategy=strategy,
        grad_mode=strategy.grad_mode(cfg.weighting.grad_mode), optimizer=optimizer, autocast=autocast, scaler=scaler,
        plan=plan, channels_last=channels_last, train_loader=train_loader, val_loaders=val_loaders,
        augment=augment if augment.enabled else None,
        forward_features=torch.compile(model.forward_features) if cfg.train.compile else model.forward_features,
        shared_params=model.shared_parameters(), trainable=[p for g in optimizer.param_groups for p in g["params"]],
        task_params=task_parameters(model),
        ema=ModelEMA(model, cfg.train.ema) if cfg.train.ema > 0 or cfg.train.swa > 0 else None,
        mined=build_miner(cfg, data, [t.name for t in tasks], plan, dist_info.rank),
    )


def build_miner(cfg: RunConfig, data: RunData, task_names: list[str], plan: list[tuple[int, int]], rank: int) -> HardNegatives | None:
    """The pool of mined non-faces when ``[mine]`` is on and applies (one SynthFaces cache, a
    detection task), else None. Where it does not apply (the default recipe mines, and a run of
    it may train other tasks or another cache) the run goes on without it and says so once."""
    if not cfg.mine.enabled:
        return None
    synth = None if data.multi else synth_config_of(data.caches[0])
    why = None
    if data.multi:
        why = "it works on a run with one SynthFaces cache and this run has several"
    elif "detection" not in task_names:
        why = f"it adds non-faces for the detection task, which this run does not train (its tasks: {', '.join(task_names)})"
    elif synth is None:
        why = (f"it renders SynthFaces scenes with the training cache's settings, and {data.caches[0].path} is not a "
               "SynthFaces cache")
    if why is not None:
        if rank == 0:
            log.warning("[mine] is skipped: %s. Set mine.every = 0 to silence this.", why)
        return None
    return HardNegatives(cfg.mine, synth, [src for src, _ in plan], cfg.train.seed + 7919 * rank)


def restore(run: Run, ckpt: dict[str, Any]) -> TrainState:
    """Load every module's state from ``ckpt`` (refusing another configuration) and return the loop's."""
    cfg = run.cfg
    if ckpt.get("config_digest") != cfg.digest():
        saved = ckpt["config"]
        raise CheckpointError(
            f"{run.last} was trained with backbone '{saved['model']['backbone']}', architecture "
            f"'{saved['model'].get('architecture', 'hps')}' and tasks {saved['tasks']['names']}; this run asks for backbone "
            f"'{cfg.model.backbone}', architecture '{cfg.model.architecture}' and tasks {list(cfg.tasks.names)}. "
            "Resume with the same settings, or start a new run with --out."
        )
    # a run saved with a moving average keeps the optimizer's weights under "train_model"
    run.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
    if run.ema is not None:  # turned on at resume: the average starts from the saved weights
        run.ema.load_state_dict(ckpt["model"], ckpt.get("ema", {}))
    run.strategy.load_state_dict(ckpt["weighting"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    if run.mined is not None:
        run.mined.load_state_dict(ckpt.get("mined"))
    set_rng_state(ckpt["rng"])
    if run.dist.is_main:
        run_folder.repair(run.run_dir, run.last, ckpt)
    state = TrainState.from_checkpoint(ckpt)
    log.info("resumed %s at epoch %d, batch %d", run.last, state.epoch + 1, state.batches_done)
    return state


# -- one step, one epoch --------------------------------------------------------------------------
def train_step(run: Run, state: TrainState, batch: dict, epoch: int, batch_index: int):
    """One optimizer step on ``batch``: (the step's loss per task, the strategy's weights), or None
    when no task has labels in the batch (its forward pass still updated BatchNorm statistics)."""
    from facemtl.weighting.base import StepContext

    t, scaler = run.cfg.train, run.scaler
    mult = lr_multiplier(t.schedule, epoch=epoch, step=state.step, total_steps=run.steps_per_epoch * t.epochs,
                         warmup_steps=t.warmup_steps, step_size=t.step_size, gamma=t.gamma)
    for g in run.optimizer.param_groups:
        g["lr"] = t.lr * mult
    run.optimizer.zero_grad(set_to_none=True)
    # fp16: the strategy scales its losses itself; a 0-d tensor avoids a host sync
    loss_scale = scaler.scale(torch.ones((), device=run.device)) if scaler is not None else 1.0
    active = set(run.strategy.active_tasks())
    if run.mined is not None:  # hard non-faces, drawn from (seed, epoch, batch index) like the augmentation
        batch = run.mined.extend(batch, epoch, batch_index)
    if run.dist.enabled:  # every rank must present the same tasks to the strategy
        batch = {**batch, "present": distributed.all_reduce_present(batch["present"], run.device)}
    inputs = make_inputs(batch, run.plan, run.channels_last)
    if run.augment is not None:  # per-sample draw from (seed, epoch, batch): resumes exactly
        inputs, batch = run.augment(inputs, batch, epoch=epoch, batch_index=batch_index)
        if run.channels_last:
            inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    with run.autocast():
        ctx = StepContext.build(run.forward_features(*inputs), run.shared_params, run.grad_mode, step=state.step,
                                epoch=epoch, loss_scale=loss_scale)
        outputs = run.model.forward_heads(ctx.head_inputs)
        losses = task_losses(run.tasks, outputs, batch, run.model.criteria, active)
    if not losses:
        return None
    values = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).tolist()))  # the step's one host sync
    _check_finite(run, state, values, epoch)
    own = [n for n, k in t.shared_epochs.items() if epoch >= k and n in losses]  # past their shared epochs
    pending = own_gradients({n: losses.pop(n) for n in own}, run.task_params, loss_scale, keep_graph=bool(losses))
    weights = {k: float(v) for k, v in run.strategy.backward(losses, ctx).items()} if losses else {}
    add_gradients(run.task_params, pending)
    weights.update(dict.fromkeys(own, 1.0))
    distributed.all_reduce_gradients(run.trainable)
    if scaler is not None:
        scaler.unscale_(run.optimizer)
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.trainable, t.grad_clip)
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    if run.ema is not None:  # from train.swa epochs on, the plain mean of every step's weights
        run.ema.update(run.model, uniform=0 < t.swa <= epoch)
    return values, weights


def _check_finite(run: Run, state: TrainState, values: dict[str, float], epoch: int) -> None:
    for name, v in values.items():
        if not math.isfinite(v):
            raise TrainingDiverged(
                f"loss of task '{name}' is {v} at epoch {epoch + 1}, step {state.step}; the last good checkpoint is "
                f"{run.last if run.last.exists() else 'none (first epoch)'}. Lower --lr, set --grad-clip, or try another --weighting."
            )


def train_one_epoch(run: Run, state: TrainState, epoch: int, stop: DeferredStop, cb: Callbacks, speed: Speed) -> EpochSums:
    """Train epoch ``epoch`` from batch ``state.batches_done`` on; the returned sums include those of
    the part done before a resume. On Ctrl-C, ``last.pt`` records the last whole step and
    :class:`TrainingInterrupted` is raised."""
    sums = EpochSums.from_dict(state.partial_epoch)
    run.train_loader.set_epoch(epoch)
    skip, bi = state.batches_done, 0
    in_step = False  # True while the model, strategy or optimizer hold half a step
    try:
        it = iter(run.train_loader)
        while bi < run.steps_per_epoch:
            if stop.requested:
                raise KeyboardInterrupt
            tw = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            if bi < skip:  # the batches a resumed epoch already trained
                bi += 1
                continue
            ts = time.perf_counter()
            speed.wait += ts - tw
            in_step = True
            done = train_step(run, state, to_device(batch, run.device), epoch, bi)
            bi, in_step = bi + 1, False
            state.batches_done = bi
            if done is None:
                continue
            speed.compute += time.perf_counter() - ts
            speed.images += len(batch["index"])
            losses, weights = done
            sums.add(losses, weights)
            state.weight_log.append({"step": state.step, "epoch": epoch + 1, **{f"loss/{k}": v for k, v in losses.items()},
                                     **{f"weight/{k}": v for k, v in weights.items()}})
            state.step += 1
            cb.on_step(epoch=epoch, step=bi, losses=losses, weights=weights)
    except KeyboardInterrupt:
        stop.__exit__()
        raise TrainingInterrupted(_save_interrupted(run, state, sums, epoch, in_step)) from None
    return sums


def _save_interrupted(run: Run, state: TrainState, sums: EpochSums, epoch: int, in_step: bool) -> Path | None:
    """Save the last whole step into ``last.pt``; the checkpoint a resume continues from, or None."""
    where = f"epoch {epoch + 1}, batch {state.batches_done + in_step}"
    if in_step:  # a second signal inside a step: its state is half-updated, keep the last checkpoint
        if run.last.exists():
            log.warning("stopped inside a step at %s; %s was left as it was", where, run.last)
            return run.last
        log.warning("stopped inside a step at %s, before the first checkpoint; nothing to resume", where)
        return None
    state.epoch, state.partial_epoch = epoch, dataclasses.asdict(sums)
    run.save(run.last, state)
    if run.dist.is_main:
        run_folder.write_logs(run.run_dir, None, state.weight_log)
    log.warning("interrupted at %s; saved %s", where, run.last)
    return run.last


def check_select(select: str, task_names: list[str]) -> None:
    """Refuse, before training, a ``train.select`` that names a task the run does not train."""
    task = select.split("/")[0]
    if select != "val_loss" and task not in task_names:
        raise ConfigError(f"--select {select}: this run has no task '{task}'; "
                          f"use val_loss or TASK/METRIC with TASK one of {', '.join(task_names)}.")


def task_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The model's trainable parameters that are not shared: heads, towers, loss modules (ArcFace)."""
    shared = {id(p) for p in model.shared_parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in shared]


def check_shared_epochs(shared_epochs: dict, task_names: list[str]) -> None:
    """Refuse, before training, a ``train.shared_epochs`` entry for a task the run does not train."""
    unknown = sorted(set(shared_epochs) - set(task_names))
    if unknown:
        raise ConfigError(f"train.shared_epochs names {', '.join(repr(u) for u in unknown)}, which this run does not "
                          f"train; its tasks are {', '.join(task_names)}.")


def selection_score(select: str, row: dict[str, Any]) -> float:
    """What ``train.select`` makes of an epoch's row, lower = better: the summed validation loss,
    a task's validation loss (``TASK/loss``) or a validation metric (``TASK/METRIC``), negated when
    higher is better (:func:`~facemtl.tasks.registry.lower_is_better_metrics`). A metric the
    epoch did not measure is an error that lists the ones it did."""
    if select == "val_loss":
        return float(row["val_loss"])
    task, metric = select.split("/")
    key = f"val_loss/{task}" if metric == "loss" else f"val/{select}"
    if key not in row:
        have = sorted(k[4:] for k in row if k.startswith("val/")) + sorted(f"{k[9:]}/loss" for k in row if k.startswith("val_loss/"))
        raise ConfigError(f"--select {select}: validation measured no '{metric}' for task '{task}'; it measured: "
                          f"{', '.join(have) or 'nothing (no validation split?)'}.")
    value = float(row[key])
    lower = metric == "loss" or metric in lower_is_better_metrics()
    return value if lower else -value


def end_epoch(run: Run, state: TrainState, epoch: int, sums: EpochSums, seconds: float) -> dict[str, Any]:
    """Validate, let the strategy adapt, log the epoch's row, write last.pt, best.pt and the CSVs
    (in that order: see :mod:`facemtl.engine.run_folder`)."""
    train_means = sums.loss_means()
    val_losses, val_metrics = {}, {}
    if run.dist.is_main:
        val_losses, val_metrics = evaluate_split(run.eval_model, run.tasks, [(ld, plan) for _, ld, plan in run.val_loaders], None,
                                                 run.device, run.autocast, run.channels_last, run.cfg.train.val_batches)
    val_losses, val_metrics = _broadcast((val_losses, val_metrics))
    run.strategy.on_epoch_end(epoch, train_means, val_losses)
    val_total = sum(val_losses.values()) if val_losses else math.inf
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                           "train_loss": sum(train_means.values()), "val_loss": val_total}
    row.update({f"train_loss/{k}": v for k, v in train_means.items()})
    row.update({f"val_loss/{k}": v for k, v in val_losses.items()})
    row.update({f"weight/{k}": v for k, v in sums.weight_means().items()})
    for tname, ms in val_metrics.items():
        row.update({f"val/{tname}/{m}": v for m, v in ms.items()})
    improved = state.record_epoch(row, selection_score(run.cfg.train.select, row))
    run.save(run.last, state)  # first: the record the other files are rebuilt from on resume
    if run.dist.is_main:
        if improved:
            run_folder.copy_atomic(run.last, run.run_dir / "best.pt")
        run_folder.write_logs(run.run_dir, state.history, state.weight_log)
        if run.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    run.tb.add_scalar(k, v, epoch + 1)
    return row


def final_metrics(run: Run) -> tuple[dict, dict, dict]:
    """Validation and test metrics of the best checkpoint (main process; empty elsewhere): val and
    test over every cache together, and test per cache when the run has several."""
    if not run.dist.is_main:
        return {}, {}, {}
    best_path = run.run_dir / "best.pt" if (run.run_dir / "best.pt").exists() else run.last
    run.model.load_state_dict(load_checkpoint(best_path)["model"])
    args = (run.device, run.autocast, run.channels_last)
    _, val_metrics = evaluate_split(run.model, run.tasks, [(ld, plan) for _, ld, plan in run.val_loaders], None, *args)
    tests = run.data.eval_loaders(run.cfg, run.model, "test", max(run.cfg.train.batch_size, 128))
    test_metrics, by_dataset = {}, {}
    if tests:  # one pass: every cache together, and each on its own when the run has several
        _, test_metrics, each = evaluate_split(run.model, run.tasks, [(ld, plan) for _, ld, plan in tests], None, *args,
                                               per_part=True)
        if run.data.multi:
            by_dataset = {name: m for (name, _, _), m in zip(tests, each)}
    return val_metrics, test_metrics, by_dataset


# -- the loop -------------------------------------------------------------------------------------
def _claim_run_folder(cfg: RunConfig, dist_info, lock, *, resume: bool, force: bool) -> Path:
    run_dir = cfg.run_dir()
    if lock is not None:
        lock.acquire()  # InUseError naming the other process
        stale = remove_stale_temp_files(run_dir, run_folder.RUN_FILES)
        if stale:
            log.info("removed %d temporary file(s) left in %s by an interrupted run", len(stale), run_dir)
    last = run_dir / "last.pt"
    if dist_info.is_main and last.exists() and not (resume or force):
        raise ConfigError(f"run folder {run_dir} already holds a checkpoint; pass --resume to continue it, --force to start over, or --out for a new run.")
    if resume and not last.exists():
        raise CheckpointError(f"nothing to resume: {last} does not exist.")
    return last


def _loop(run: Run, state: TrainState, cb: Callbacks, speed: Speed) -> bool:
    """Epochs from ``state.epoch`` to the configured number; True when stopped early."""
    t = run.cfg.train
    # SIGTERM too (a scheduler's preemption), but not under torchrun, which ends its ranks with it
    with DeferredStop((signal.SIGINT,) if run.dist.enabled else (signal.SIGINT, signal.SIGTERM)) as stop:
        for epoch in range(state.epoch, t.epochs):
            t0 = time.perf_counter()
            if run.mined is not None and run.cfg.mine.round_due(epoch) and all(r["epoch"] != epoch for r in run.mined.rounds):
                cb.on_mine(epoch=epoch, record=run.mined.mine(run.eval_model, epoch, run.device))
            sums = train_one_epoch(run, state, epoch, stop, cb, speed)
            row = end_epoch(run, state, epoch, sums, time.perf_counter() - t0)
            cb.on_epoch_end(epoch=epoch, row=row)
            if t.patience and state.bad_epochs >= t.patience:
                log.info("early stopping after epoch %d: %s has not improved for %d epochs", epoch + 1,
                         "validation loss" if t.select == "val_loss" else f"validation {t.select}", state.bad_epochs)
                return True
    return False


def train(cfg: RunConfig, *, resume: bool = False, force: bool = False, callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``cfg``; with ``resume`` continue from ``<run>/last.pt`` exactly where it stopped."""
    cfg = cfg.validate().resolved()  # option ranges, before anything is written; shares of the epochs made whole
    RunData.check_exist(cfg.data.paths())  # several caches: all of them, before a run folder is made
    cb, t0 = callbacks or Callbacks(), time.perf_counter()
    dist_info = distributed.setup(cfg.train.device)
    run_dir = cfg.run_dir()
    created = not run_dir.exists()
    lock = run_lock(run_dir) if dist_info.is_main else None
    try:
        last = _claim_run_folder(cfg, dist_info, lock, resume=resume, force=force)
        ckpt = load_checkpoint(last) if resume else None
        run = build_run(cfg, dist_info, ckpt)
        state = restore(run, ckpt) if ckpt is not None else TrainState()
        del ckpt
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "config.toml", to_toml(cfg))
            run.tb = run_folder.tensorboard_writer(run_dir)
        cb.on_train_start(epochs=cfg.train.epochs, steps_per_epoch=run.steps_per_epoch, start_epoch=state.epoch,
                          tasks=[t.name for t in run.tasks], run_dir=run_dir)
        speed = Speed()
        run.model.train()
        stopped_early = _loop(run, state, cb, speed)
        cb.on_train_end(model=run.model, strategy=run.strategy)
        val_metrics, test_metrics, test_by_dataset = final_metrics(run)
        if run.tb is not None:
            run.tb.close()
        desc = run.model.describe()
        return TrainResult(
            run_dir=run_dir, history=state.history, best_epoch=state.best_epoch, val_metrics=val_metrics,
            test_metrics=test_metrics, seconds=time.perf_counter() - t0,
            parameters={k: int(desc["parameters"][k]) for k in ("total", "shared", "deployed")}, stopped_early=stopped_early,
            images_per_second=speed.images_per_second(), data_wait_fraction=speed.wait_fraction(),
            test_by_dataset=test_by_dataset,
        )
    finally:
        if lock is not None and lock.held:
            lock.release()
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # a run that failed before writing anything leaves no empty folder
        distributed.teardown()


def _broadcast(obj: Any) -> Any:
    if torch.distributed.is_initialized():
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return obj
