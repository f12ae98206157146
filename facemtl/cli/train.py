"""``facemtl train``: train a recipe (default: a multi-task model on SynthFaces)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from facemtl.cli._common import announce_synthetic_render, check_data_option, console, data_overrides, err_console, handle_errors, parse_name_list
from facemtl.engine.trainer import Callbacks
from facemtl.errors import ConfigError, TrainingInterrupted
from facemtl.utils.options import parse_literal


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. train.warmup_steps=100), got '{item}'.")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_literal(v.strip())
    return out


def build_config(
    recipe: str, *, resume_dir: Path | None = None, overrides: dict[str, Any] | None = None,
):
    """Recipe (or the saved config of a run being resumed) + CLI overrides."""
    from facemtl.engine.config import apply_overrides, load_config_file, load_recipe

    if resume_dir is not None and (resume_dir / "config.toml").exists():
        cfg = load_config_file(resume_dir / "config.toml", "run configuration")
    else:
        cfg = load_recipe(recipe)
    return apply_overrides(cfg, overrides or {})


def check_model(cfg) -> None:
    """Refuse an unknown architecture, or one the backbone cannot take, before any data is read or rendered."""
    from facemtl.models import check_architecture

    check_architecture(cfg.model.architecture, cfg.model.backbone, cfg.model.architecture_options)


class RichCallbacks(Callbacks):
    """Draws an epoch bar and a step bar with per-task losses and current task weights; without a
    terminal (a log file, a pipe) it writes one plain line per epoch instead."""

    def __init__(self) -> None:
        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, min_width=8)), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            # folds onto more lines in a narrow terminal rather than squeezing "epochs" into "ep…"
            TextColumn("{task.fields[info]}", table_column=Column(overflow="fold")), console=err_console,
        )

    def on_train_start(self, *, epochs, steps_per_epoch, start_epoch, tasks, run_dir):
        self.steps, self.epochs = steps_per_epoch, epochs
        if not self.live:
            err_console.print(f"training {escape(str(run_dir))}: epochs {start_epoch + 1}-{epochs}, {steps_per_epoch} steps each",
                              highlight=False, soft_wrap=True)
            return
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=start_epoch, info=escape(str(run_dir)))
        self.step_task = self.progress.add_task("steps", total=steps_per_epoch, info="")

    def on_step(self, *, epoch, step, losses, weights):
        if not self.live or (step % 5 and step != self.steps):
            return
        parts = [f"{k[:10]} {v:.3f}" + (f"·w{weights[k]:.2f}" if k in weights else "") for k, v in list(losses.items())[:6]]
        if len(losses) > 6:
            parts.append(f"+{len(losses) - 6} tasks")
        self.progress.update(self.step_task, completed=step, description=f"epoch {epoch + 1}", info=escape("  ".join(parts)))

    def on_epoch_end(self, *, epoch, row):
        info = f"train {row['train_loss']:.3f}  val {row['val_loss']:.3f}"
        if not self.live:
            err_console.print(f"epoch {epoch + 1}/{self.epochs}: {info}  ({row.get('seconds', 0):.0f} s)", highlight=False, soft_wrap=True)
            return
        self.progress.update(self.epoch_task, completed=epoch + 1, info=info)
        self.progress.reset(self.step_task, total=self.steps)

    def on_mine(self, *, epoch, record):
        line = (f"mined {record['kept']} hard non-faces from {record['scenes']} scenes before epoch {epoch + 1} "
                f"(mean face score {record['mean_score']:.2f}; pool {record['pool']}; {record['seconds']:.0f} s)")
        (self.progress.console if self.live else err_console).print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


def results_table(result, title: str) -> Table:
    t = Table(title=title)
    t.add_column("task")
    t.add_column("metric")
    t.add_column("val", justify="right")
    t.add_column("test", justify="right")
    for task, metrics in result.val_metrics.items():
        for m, v in metrics.items():
            tv = result.test_metrics.get(task, {}).get(m)
            t.add_row(task, m, f"{v:.4f}", "-" if tv is None else f"{tv:.4f}")
    return t


def dataset_table(result) -> Table:
    """Test metrics per dataset of a run over several caches (a task only where a cache labels it)."""
    names = list(result.test_by_dataset)
    t = Table(title="test split of each dataset")
    t.add_column("task")
    t.add_column("metric")
    for n in names:
        t.add_column(n, justify="right")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for n, by_task in result.test_by_dataset.items():
        for task, metrics in by_task.items():
            for m, v in metrics.items():
                rows.setdefault((task, m), {})[n] = v
    for (task, m), vals in rows.items():
        t.add_row(task, m, *("-" if n not in vals else f"{vals[n]:.4f}" for n in names))
    return t


@handle_errors
def train(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Packaged recipe name or a TOML file.")] = "default",
    list_recipes: Annotated[bool, typer.Option("--list-recipes", help="List the packaged recipes and exit.")] = False,
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks, e.g. landmarks,smile (attr:* = every attribute).")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="small, gender-glasses, tcdcn, vgg16, resnet18, resnet50, famo9, mcfa.")] = None,
    architecture: Annotated[Optional[str], typer.Option("--architecture", help="How tasks share the network: hps (default), cross-stitch, mtan, mmoe, cgc, ple, dselect-k, ltb (docs/architectures.md); options with --set model.architecture_options.NAME=VALUE.")] = None,
    weighting: Annotated[Optional[str], typer.Option("--weighting", help="Loss-weighting strategy (ew, fixed, uw, dwu, ...).")] = None,
    weighting_args: Annotated[Optional[str], typer.Option("--weighting-args", help="Strategy options, e.g. 'main=landmarks' or 'weights=landmarks:1;smile:0.5'.")] = None,
    grad_mode: Annotated[Optional[str], typer.Option("--grad-mode", help="rep (shared representation) or params (shared parameters).")] = None,
    grad_memory: Annotated[Optional[str], typer.Option("--grad-memory", help="Memory for the per-task gradients in --grad-mode params, e.g. 4GiB (default) or 512MB; tasks are batched within it on a GPU.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Cache file to train on (default: SynthFaces, prepared when missing), or several separated by commas, trained together (docs/training.md, 'Several datasets').")] = None,
    mix: Annotated[Optional[str], typer.Option("--mix", help="With several caches: how batches draw from them: proportional (default), uniform, temperature:T or NAME=W,NAME=W (NAME = file stem).")] = None,
    mix_by: Annotated[Optional[str], typer.Option("--mix-by", help="With several caches: batch (each batch from one cache, default) or sample (every batch mixes them).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over the training split (default: the recipe's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per optimizer step (default: the recipe's).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate of the schedule (default: the recipe's).")] = None,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adamw or sgd.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="cosine, step, inverse-epoch or constant.")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Early stopping patience in epochs (0 = off).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="Clip the gradient norm (0 = off).")] = None,
    ema: Annotated[Optional[float], typer.Option("--ema", help="Validate, keep and export a moving average of the weights with this decay, e.g. 0.99 (0 = off; docs/training.md).")] = None,
    swa: Annotated[Optional[float], typer.Option("--swa", help="From this many epochs on (or, below 1, from this share of --epochs on: 0.5 = the second half), that average is the plain mean of the weights after every step (stochastic weight averaging; 0 = off; docs/training.md).")] = None,
    select: Annotated[Optional[str], typer.Option("--select", help="What picks best.pt and stops early: val_loss (the sum, default) or TASK/METRIC, e.g. landmarks/nme.")] = None,
    amp: Annotated[Optional[str], typer.Option("--amp", help="auto (bf16 on CUDA), bf16, fp16 or off.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the trunk.")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Model input size in pixels.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Local state dict to initialise the backbone.")] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help="Training augmentation preset: none, light, standard or strong (docs/training.md).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed of weights, data order and augmentation (same seed, same run).")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Cap the steps per epoch (quick runs).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/<recipe>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in a run folder that already has a checkpoint.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any setting as key=value, e.g. train.warmup_steps=100.")] = None,
) -> None:
    """Train a multi-task face model.

    With no options: the [bold]default[/] recipe on SynthFaces (rendered first when missing; 24 epochs, about 25 minutes on one CPU thread).
    A first look in minutes: [cyan]facemtl train --recipe quick[/].
    Examples: [cyan]facemtl train --recipe tcdcn --epochs 3[/], [cyan]facemtl train --tasks landmarks,smile --weighting uw[/].
    Distributed: [cyan]torchrun --nproc_per_node 4 -m facemtl.cli.main train --recipe celeba40[/] (see docs/training.md).
    """
    from facemtl.engine.config import load_recipe, recipe_names
    from facemtl.engine.trainer import train as run_training

    if list_recipes:
        t = Table(title="recipes")
        for c in ("name", "written for", "description"):
            t.add_column(c)
        for name in recipe_names():
            r = load_recipe(name)
            t.add_row(name, r.written_for, r.description)
        console.print(t)
        return
    overrides: dict[str, Any] = {
        "tasks.names": parse_name_list(tasks), "model.backbone": backbone, "weighting.name": weighting,
        "weighting.grad_mode": grad_mode, "weighting.grad_memory": grad_memory, "train.epochs": epochs, "data.mix": mix, "data.mix_by": mix_by,
        "train.batch_size": batch_size, "train.lr": lr, "train.optimizer": optimizer, "train.schedule": schedule,
        "train.patience": patience, "train.grad_clip": grad_clip, "train.ema": ema, "train.swa": swa, "train.select": select, "train.amp": amp, "train.device": device,
        "train.compile": compile, "model.input_size": input_size, "model.weights": weights, "data.num_workers": workers,
        "train.seed": seed, "train.max_steps_per_epoch": max_steps, "out": str(out) if out else None,
        "augment.preset": augment, "model.architecture": architecture,
    }
    overrides.update(data_overrides(data))
    if architecture is not None:  # another architecture: its own defaults, not the recipe's options
        overrides["model.architecture_options"] = {}
    if weighting_args is not None:
        from facemtl.weighting import parse_weighting_args

        overrides["weighting.options"] = parse_weighting_args(weighting_args)
    if weighting is not None and weighting_args is None:
        overrides["weighting.options"] = {}
    overrides.update(_parse_set(set_))
    # another backbone drops the recipe's input size and model options (facemtl/engine/config.py)
    cfg = build_config(recipe, resume_dir=out if resume else None, overrides=overrides).validate()
    if data is not None:  # a mistyped --data must not be rendered into (only the recipe's own cache is)
        check_data_option(data, build_config(recipe, resume_dir=out if resume else None).data.path)
    check_model(cfg)
    announce_synthetic_render(cfg)  # the expected duration before a long render
    cb = RichCallbacks()
    try:
        result = run_training(cfg, resume=resume, force=force, callbacks=cb)
    except TrainingInterrupted as e:
        if e.checkpoint is not None:
            err_console.print(f"to continue: [cyan]facemtl train --resume --out {cfg.run_dir()}[/]", highlight=False)
        raise
    finally:
        cb.close()
    title = f"{cfg.name}: best epoch {result.best_epoch} of {len(result.history)} ({result.seconds:.0f} s, {result.parameters['total']:,} parameters)"
    console.print(results_table(result, title))
    if result.test_by_dataset:
        console.print(dataset_table(result))
    console.print(f"run folder: [bold]{result.run_dir}[/] (config.toml, metrics.csv, weights.csv, best.pt, last.pt)")
    console.print(f"next: [cyan]facemtl evaluate {result.run_dir}[/]")
