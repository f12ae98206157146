"""``facemtl ablate``: train every task combination / strategy / sweep point and tabulate them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from facemtl.cli._common import check_data_option, console, err_console, handle_errors, parse_name_list


@handle_errors
def ablate(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks, e.g. landmarks,pose,smile,glasses.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Ablation folder (runs/ inside, report files beside).")] = None,
    main: Annotated[Optional[str], typer.Option("--main", help="Main task (for main-plus-one and strategies with a main option).")] = None,
    subsets: Annotated[Optional[str], typer.Option("--subsets", help="all, singles, main-plus-one, a list like A+B,A+C,A, or none (only the --sweep points). Default: singles with --sweep, main-plus-one with --main, else all.")] = None,
    weighting: Annotated[Optional[str], typer.Option("--weighting", help="Strategies for the multi-task subsets, comma-separated (ew, uw, dwu, ...). Default: the recipe's.")] = None,
    architecture: Annotated[Optional[str], typer.Option("--architecture", help="Architectures for the multi-task runs, comma-separated (hps, mtan, mmoe, ...; docs/architectures.md). Default: the recipe's.")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="TASK=START:STOP:STEP: fixed weight w of TASK, the others (1-w)/(n-1).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Train every configuration with seeds 0..N-1.")] = 1,
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe giving backbone and training settings.")] = "default",
    data: Annotated[Optional[str], typer.Option("--data", help="Cache file, or several comma-separated (A.h5,B.h5: every run trains on all of them and is evaluated on each). Default: the recipe's.")] = None,
    mix: Annotated[Optional[list[str]], typer.Option("--mix", metavar="MIX", help="With several --data caches: how batches draw from them (proportional, uniform, temperature:T, NAME=W,NAME=W). Repeat it (--mix proportional --mix uniform) to train every configuration once per mix.")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Backbone of every run (default: the recipe's).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs of every run (default: the recipe's).")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Cap the steps per epoch (quick ablations).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per optimizer step (default: the recipe's).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: the recipe's).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    grad_memory: Annotated[Optional[str], typer.Option("--grad-memory", help="Memory for per-task gradients on the shared parameters (grad mode params), e.g. 4GiB.")] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help="Training augmentation preset (none, light, standard, strong); default: the recipe's.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split the runs are evaluated on.")] = "test",
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Evaluate each run with flip testing (as evaluate --flip-test); finished runs are re-evaluated, not retrained.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any training setting as key=value.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the configurations and exit (nothing is trained or written).")] = False,
) -> None:
    """Train and evaluate every configuration of an ablation; write one table (CSV + markdown) and plots.

    Examples: [cyan]facemtl ablate --tasks landmarks,pose,smile,glasses --main landmarks --subsets main-plus-one --out runs/abl[/],
    [cyan]facemtl ablate --tasks landmarks,pose,smile --subsets landmarks+pose+smile --architecture hps,mtan,mmoe --out runs/arch[/],
    [cyan]facemtl ablate --tasks identity,expression --sweep identity=0:1:0.1 --out runs/sweep[/] (seed 003's Figure 2),
    [cyan]facemtl ablate --tasks landmarks,smile --data data/mtfl.h5,data/celeba.h5 --mix proportional --mix uniform --out runs/mix[/]
    (columns per task and dataset, e.g. landmarks@mtfl/nme).
    Finished runs are skipped on a rerun. Definitions (Delta-m%): docs/reports.md.
    """
    from facemtl.cli.train import _parse_set, build_config
    from facemtl.data.mixing import split_paths
    from facemtl.errors import ConfigError
    from facemtl.reports.ablate import check_tasks, headline_metrics, run_ablation, run_status
    from facemtl.reports.ablation_plan import plan_ablation

    paths = split_paths(data) if data else []
    mixes = [m.strip() for m in mix or [] if m.strip()]  # not split on commas: NAME=W,NAME=W is one mix
    overrides: dict[str, Any] = {
        "data.path": paths[0] if paths else None, "data.sources": (paths if len(paths) > 1 else []) if paths else None,
        "data.mix": mixes[0] if len(mixes) == 1 else None, "model.backbone": backbone, "train.epochs": epochs,
        "train.max_steps_per_epoch": max_steps, "train.batch_size": batch_size, "train.lr": lr, "train.device": device,
        "augment.preset": augment, "weighting.grad_memory": grad_memory,
    }
    overrides.update(_parse_set(set_))
    # another backbone drops the recipe's input size and model options (facemtl/engine/config.py)
    base = build_config(recipe, overrides=overrides).validate()
    if len(paths) == 1:
        check_data_option(paths[0], build_config(recipe).data.path)
    # the multi-task runs use the recipe's own strategy (and its options) unless --weighting says otherwise
    plan = plan_ablation(parse_name_list(tasks) or [], main=main, subsets=subsets,
                         weightings=parse_name_list(weighting) or [base.weighting.name], sweep=sweep, seeds=seeds,
                         strategy_defaults={base.weighting.name: dict(base.weighting.options)},
                         architectures=parse_name_list(architecture) or [base.model.architecture], backbone=base.model.backbone,
                         mixes=mixes, sources=base.data.paths())
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"Invalid split '{split}'. Use train, val, test or all.")
    check_tasks(base, plan.tasks)  # before anything else: every task must have labels in the cache
    status = run_status(out, plan) if out is not None else {}
    if dry_run:
        _print_plan(plan, status)
        return
    if out is None:
        raise ConfigError("--out is required (the ablation folder), e.g. --out runs/ablation; --dry-run needs none.")
    t0 = time.perf_counter()

    def progress(i: int, n: int, name: str, what: str, res: dict[str, Any] | None) -> None:
        if what == "train":
            err_console.print(f"\\[{i + 1}/{n}] training [bold]{escape(name)}[/] ...")
        elif res is not None:
            head = ", ".join(f"{k} {v:.4f}" for k, v in headline_metrics(res).items())
            tag = {"skip": "[dim]done earlier[/]", "evaluated": "[dim]done earlier, evaluated again[/]"}.get(what, f"{res['seconds']:.0f} s")
            err_console.print(f"\\[{i + 1}/{n}] {escape(name)}: {tag}  {escape(head)}")

    from facemtl.utils.lock import PathLock

    try:
        with PathLock(out / ".lock", what="ablation folder", target=out, hint="choose another --out"):  # each run is locked too
            result = run_ablation(plan, base, out, split=split, flip_test=flip_test, progress=progress)
    except KeyboardInterrupt:
        err_console.print("to continue, rerun the same [cyan]facemtl ablate[/] command: finished runs are skipped "
                          "and the interrupted run resumes from its last.pt", highlight=False)
        raise
    _print_table(result.table)
    console.print(f"{result.trained} runs trained, {result.skipped} finished earlier, {time.perf_counter() - t0:.0f} s; "
                  f"report: [bold]{out}[/] (ablation.csv, ablation.md, plots)")


def _print_plan(plan, status: dict[str, str]) -> None:
    t = Table(title=f"{len(plan.configurations)} configurations x {plan.seeds} seed(s) = {len(plan.runs())} runs")
    for col in ("#", "configuration", "options", "done"):
        t.add_column(col, overflow="fold")
    for i, c in enumerate(plan.configurations, 1):
        done = sum(status.get(c.run_name(s)) == "done" for s in range(plan.seeds))
        t.add_row(str(i), escape(c.name), escape(_options(c.options)), f"{done}/{plan.seeds}")
    console.print(t)


def _options(opts: dict) -> str:
    parts = []
    for k, v in opts.items():
        if isinstance(v, dict):
            v = " ".join(f"{a}:{b:.3g}" for a, b in v.items())
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _print_table(df) -> None:
    """The headline metric of each task (mean ± std), Delta-m% and time: narrow enough for a terminal."""
    from facemtl.reports.ablate import markdown_table

    show = markdown_table(df)
    heads, seen = [], set()
    for col in show.columns:
        if "/" in col and col.split("/")[0] not in seen:
            seen.add(col.split("/")[0])
            heads.append(col)
    t = Table(title="ablation (all columns: ablation.csv / ablation.md)")
    t.add_column("configuration", overflow="fold", min_width=12)  # folded, never "landmark…"
    for col in (*heads, "Δm%", "train s"):
        t.add_column(col, justify="right", overflow="fold")
    for name, row in show.iterrows():
        t.add_row(escape(str(name)), *[escape(str(row[c])) for c in (*heads, "Δm%", "train s")])
    console.print(t)
