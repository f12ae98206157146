"""``facemtl ablate``: train every configuration of a :class:`~facemtl.reports.ablation_plan.Plan`,
evaluate each run, and write one table.

Layout of ``--out DIR``::

    runs/<configuration>__s<seed>/   one training run each (config.toml, best.pt, ..., eval/),
                                     finished when its result.json exists (written last)
    ablation.csv, ablation.md        one row per configuration (metrics: mean and std over seeds)
    ablation.json                    the plan and every run's result
    plot_<task>_<metric>.png         metric per configuration; plot_delta_m.png
    sweep_<task>_<metric>.png        the sweep curve (with --sweep)

A rerun skips finished runs and resumes an interrupted one from its ``last.pt``; a finished run
trained with other settings is an error (use another ``--out``), one measured on another
``--split`` or with(out) ``--flip-test`` is evaluated again without retraining. The report files are written
only after every run has finished.

Delta-m% (Maninis et al. 2019; :func:`facemtl.metrics.delta_m`) of a configuration compares the
headline metric of each of its tasks (its report section's, :data:`facemtl.tasks.registry.SECTIONS`: balanced
accuracy for attributes, NME for landmarks, accuracy for classes and detection, verification
AUC for identity) with that task's single-task run in the same ablation, averaged over seeds:
``100/T * sum_i (-1)^[higher is better] (M_i - S_i) / |S_i|``. Lower is better; negative = the
multi-task model beats the single-task models. Tasks without a single-task run are left out of
the average (``delta_m_over`` lists the tasks used).

On several caches (``--data a.h5,b.h5``) every run is evaluated on each cache
(:mod:`facemtl.reports.evaluate`), so the table has one column per task *and dataset* that labels
it (``landmarks@mtfl/nme``), and Delta-m% averages over those (task, dataset) headlines, each
against the same column of the task's single-task run (of the same ``--mix``, when the mix is an
axis). ``delta_m_over`` then lists ``task@dataset`` entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facemtl.engine.config import DataConfig, RunConfig, apply_overrides
from facemtl.errors import ConfigError, DataFormatError
from facemtl.metrics import delta_m, plots
from facemtl.reports._io import safe_name, staged_dir, to_markdown, write_csv
from facemtl.reports.ablation_plan import Configuration, Plan
from facemtl.reports.evaluate import dataset_key
from facemtl.tasks.registry import lower_is_better_metrics, section
from facemtl.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

RESULT = "result.json"
# settings that may differ between a finished run and a rerun without changing what it learned
_IGNORED = {"out", "name", "description", "train.device", "train.compile", "data.num_workers", "data.in_memory",
            "data.prepare_if_missing"}

Progress = Callable[[int, int, str, str, dict[str, Any] | None], None]


@dataclass
class AblationResult:
    out_dir: Path
    table: pd.DataFrame
    results: list[dict[str, Any]]
    trained: int
    skipped: int


def run_config(base: RunConfig, c: Configuration, seed: int, run_dir: Path) -> RunConfig:
    """The resolved configuration of one run of the ablation."""
    cfg = apply_overrides(base, {"tasks.names": list(c.tasks), "train.seed": seed, "out": str(run_dir), "name": c.name})
    # replace, not override: the recipe's strategy options and grad mode belong to its own strategy
    cfg = dataclasses.replace(cfg, weighting=dataclasses.replace(cfg.weighting, name=c.weighting, options=dict(c.options), grad_mode=None))
    if c.architecture != cfg.model.architecture:  # likewise the recipe's architecture options belong to its architecture
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, architecture=c.architecture, architecture_options={}))
    if c.mix is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mix=c.mix))
    return cfg


def run_status(out: Path, plan: Plan) -> dict[str, str]:
    """{run name: "done" | "partial" | "todo"} of every run of the plan."""
    status = {}
    for c, s in plan.runs():
        d = out / "runs" / c.run_name(s)
        status[c.run_name(s)] = "done" if (d / RESULT).exists() else ("partial" if (d / "last.pt").exists() else "todo")
    return status


def check_tasks(base: RunConfig, tasks: tuple[str, ...]) -> None:
    """Fail before training when the cache cannot supply a task (when the cache exists already)."""
    from facemtl.data.cache import FaceCache
    from facemtl.tasks import DataInfo, build_tasks

    if len(base.data.paths()) > 1:  # every task labelled by at least one of the caches (names them otherwise)
        from facemtl.engine.data import RunData

        data = RunData.open(base.data.paths())
        data.check_tasks(build_tasks(list(tasks), data.info(), base.tasks.options))
        return
    path = Path(base.data.path)
    if not path.exists():
        if not base.data.prepare_if_missing:
            from facemtl.errors import MissingFileError

            raise MissingFileError(f"cache {path} does not exist; create it with `facemtl prepare` or pass --data.")
        return  # SynthFaces is rendered by the first training run; it has every label
    info = DataInfo.from_cache(FaceCache(path))
    build_tasks(list(tasks), info, base.tasks.options)  # ConfigError naming the missing labels


def _comparable(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {k: _comparable(v, f"{prefix}{k}.") if isinstance(v, dict) and not prefix else v
            for k, v in d.items() if f"{prefix}{k}" not in _IGNORED}


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not (isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)) and list(va) == list(vb)):
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _load_result(path: Path, cfg: RunConfig) -> dict[str, Any]:
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{path} is damaged ({e}); delete it to retrain that run.") from None
    saved = res.get("config", {})
    if isinstance(saved.get("model"), dict):  # results written before the architecture setting: hard sharing
        saved["model"].setdefault("architecture", "hps")
        saved["model"].setdefault("architecture_options", {})
    diff = _diff(_comparable(saved), _comparable(cfg.to_dict()))
    if diff:
        raise ConfigError(
            f"{path.parent} was trained with other settings ({'; '.join(diff[:4])}); "
            "rerun with the same options, or choose another --out."
        )
    return res


def evaluate_run(cfg: RunConfig, split: str, flip_test: bool) -> dict[str, Any]:
    """The evaluation part of a run's result.json: its trained model measured on ``split``."""
    from facemtl.reports.evaluate import evaluate

    run_dir = cfg.run_dir()
    # one cache: evaluated on it; several: on each (columns task@dataset), their paths as the run recorded them
    data = {"data": cfg.data.path} if len(cfg.data.paths()) == 1 else {}
    ev = evaluate(run_dir, **data, split=split, out=run_dir / "eval", scenes=False, figures=False, curves=False,
                  flip_test=flip_test)
    metrics = {k: float(v) for k, v in ev.flat().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    measured = ev.task_reports()
    return {"kinds": {r.task: r.kind for _, r in measured}, "metrics": metrics, "split": split, "flip_test": flip_test,
            "datasets": list(ev.datasets), "baselines": {f"{key}/{k}": v for key, r in measured for k, v in r.baselines.items()}}


def train_and_evaluate(cfg: RunConfig, c: Configuration, seed: int, split: str, flip_test: bool = False) -> dict[str, Any]:
    """Train (or resume) one run, evaluate it, write its result.json last; returns the result."""
    from facemtl.engine.trainer import train

    run_dir = cfg.run_dir()
    resume = (run_dir / "last.pt").exists()
    tr = train(cfg, resume=resume, force=not resume)
    result = {
        "configuration": {"name": c.name, "kind": c.kind, "tasks": list(c.tasks), "weighting": c.weighting, "architecture": c.architecture,
                          "options": c.options, "sweep_task": c.sweep_task, "sweep_weight": c.sweep_weight, "mix": c.mix, "seed": seed},
        **evaluate_run(cfg, split, flip_test),
        "seconds": tr.seconds, "parameters": tr.parameters, "best_epoch": tr.best_epoch, "epochs_run": len(tr.history),
        "stopped_early": tr.stopped_early, "config": cfg.to_dict(),
    }
    write_json_atomic(run_dir / RESULT, result)
    return result


def run_ablation(plan: Plan, base: RunConfig, out: str | Path, *, split: str = "test", flip_test: bool = False,
                 progress: Progress | None = None) -> AblationResult:
    """Train what is not finished, then write the table and plots (module docstring). A finished
    run measured on another split, or with(out) ``flip_test``, is evaluated again (not retrained)."""
    out = Path(out)
    check_tasks(base, plan.tasks)
    runs = plan.runs()
    results: list[dict[str, Any]] = []
    trained = skipped = 0
    for i, (c, seed) in enumerate(runs):
        name = c.run_name(seed)
        cfg = run_config(base, c, seed, out / "runs" / name)
        path = cfg.run_dir() / RESULT
        if path.exists():
            res = _load_result(path, cfg)
            skipped += 1
            what = "skip"
            if res.get("split", "test") != split or bool(res.get("flip_test", False)) != flip_test:
                res = {**res, **evaluate_run(cfg, split, flip_test)}
                write_json_atomic(path, res)
                what = "evaluated"
            if progress:
                progress(i, len(runs), name, what, res)
        else:
            if progress:
                progress(i, len(runs), name, "train", None)
            res = train_and_evaluate(cfg, c, seed, split, flip_test)
            trained += 1
            if progress:
                progress(i, len(runs), name, "done", res)
        results.append(res)
    table = ablation_table(plan, results)
    write_report(out, plan, table, results)
    return AblationResult(out, table, results, trained, skipped)


# -- the table ------------------------------------------------------------------------------------
def _columns(plan: Plan, results: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(column prefix, metric, higher is better) of every column: prefix ``task``, or ``task@dataset``
    for each dataset of a multi-cache ablation that the task was measured on."""
    kinds: dict[str, str] = {}
    datasets: list[str] = []
    for r in results:
        kinds.update(r["kinds"])
        datasets += [d for d in r.get("datasets", ()) if d not in datasets]
    cols = []
    for t in plan.tasks:
        sec = section(kinds.get(t, ""))  # the metrics each task's report section tabulates, headline first
        keys = [t] if not datasets else [k for d in datasets if _measured(results, k := dataset_key(t, d))]
        for key in keys:
            for m in sec.table if sec is not None else ():
                cols.append((key, m, sec.higher_is_better(m)))
    return cols


def _measured(results: list[dict[str, Any]], key: str) -> bool:
    return any(k.startswith(f"{key}/") for r in results for k in r["metrics"])


def headline_metrics(result: dict[str, Any]) -> dict[str, float]:
    """{"<task>/<metric>" or "<task>@<dataset>/<metric>": value} of the headline metric of every task
    (and dataset) of one run's result."""
    heads = {t: s.headline for t, k in result["kinds"].items() if (s := section(k)) is not None}
    out = {}
    for t, m in heads.items():
        for key in [dataset_key(t, d) for d in result.get("datasets") or ()] or [t]:
            if f"{key}/{m}" in result["metrics"]:
                out[f"{key}/{m}"] = result["metrics"][f"{key}/{m}"]
    return out


def ablation_table(plan: Plan, results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per configuration: metric means and stds over seeds, parameters, time, Delta-m%."""
    cols = _columns(plan, results)
    mixes = any(c.mix is not None for c in plan.configurations)
    # the single-task configuration of each (task, mix): Delta-m's reference
    single = {(c.tasks[0], c.mix): c.name for c in plan.configurations if c.kind == "single"}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["configuration"]["name"], []).append(r)
    rows = []
    for c in plan.configurations:
        rs = by_name.get(c.name, [])
        row: dict[str, Any] = {"configuration": c.name, "tasks": "+".join(c.tasks), "n_tasks": len(c.tasks),
                               "weighting": c.weighting if c.kind != "single" else "-", "architecture": c.architecture,
                               "kind": c.kind}
        if mixes:
            row["mix"] = c.mix
        if plan.sweep is not None:
            row["sweep_weight"] = c.sweep_weight if c.sweep_weight is not None else np.nan
        row["seeds"] = len(rs)
        for t, m, _ in cols:
            vals = np.array([r["metrics"].get(f"{t}/{m}", np.nan) for r in rs], float)
            vals = vals[np.isfinite(vals)]
            row[f"{t}/{m}"] = float(vals.mean()) if len(vals) else np.nan
            row[f"{t}/{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        row["parameters"] = int(np.mean([r["parameters"]["deployed"] for r in rs])) if rs else 0
        row["train_s"] = float(np.mean([r["seconds"] for r in rs])) if rs else np.nan
        rows.append(row)
    df = pd.DataFrame(rows).set_index("configuration")
    heads = {key: (m, hib) for key, m, hib in reversed(cols)}  # first metric of each task (and dataset) = headline
    dm, over = [], []
    for c in plan.configurations:
        row = df.loc[c.name]
        ref = {t: single.get((t, c.mix)) for t in c.tasks}
        mtl, base_of, hib = {}, {}, {}
        for key, (m, h) in heads.items():
            t = key.split("@")[0]
            if t not in c.tasks or ref[t] not in df.index:
                continue
            base, value = df.at[ref[t], f"{key}/{m}"], row[f"{key}/{m}"]
            if np.isfinite(base) and np.isfinite(value) and base != 0:
                mtl[key], base_of[key], hib[key] = value, base, h
        keys = [key for key in heads if key in mtl]  # in column order (heads is built reversed)
        dm.append(delta_m(mtl, base_of, hib) if mtl else np.nan)
        over.append(",".join(reversed(keys)) if mtl else "-")
    df["delta_m_%"] = dm
    df["delta_m_over"] = over
    return df


def markdown_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table as shown in ablation.md: "mean ± std" cells, fewer columns."""
    show = pd.DataFrame(index=df.index)
    show["weighting"] = df["weighting"]
    if "mix" in df:
        show["mix"] = df["mix"]
    if "architecture" in df and (df["architecture"] != "hps").any():
        show["architecture"] = df["architecture"]
    if "sweep_weight" in df:
        show["sweep w"] = df["sweep_weight"].map(lambda v: "-" if not np.isfinite(v) else f"{v:g}")
    for col in df.columns:
        if "/" in col and not col.endswith(" std"):
            std = df.get(f"{col} std")
            show[col] = [("-" if not np.isfinite(v) else f"{v:.4f}" + (f" ± {s:.4f}" if s is not None and np.isfinite(s) else ""))
                         for v, s in zip(df[col], std if std is not None else [None] * len(df))]
    show["params"] = df["parameters"].map(lambda v: f"{v:,}")
    show["train s"] = df["train_s"].map(lambda v: f"{v:.0f}" if np.isfinite(v) else "-")
    show["Δm%"] = df["delta_m_%"].map(lambda v: "-" if not np.isfinite(v) else f"{v:+.2f}")
    show.index.name = "configuration"
    return show


def write_report(out: Path, plan: Plan, df: pd.DataFrame, results: list[dict[str, Any]]) -> None:
    """ablation.csv / .md / .json and the plots, all moved into ``out`` together."""
    cols = [c for c in df.columns if "/" in c and not c.endswith(" std")]
    lower = lower_is_better_metrics()
    figures = []
    with staged_dir(out, last=("ablation.json",)) as tmp:
        write_csv(df, tmp / "ablation.csv")
        for col in cols:
            sub = df[np.isfinite(df[col])]
            if len(sub) < 1:
                continue
            name = f"plot_{safe_name(col.replace('/', '_'))}.png"
            arrow = "lower is better" if col.split("/")[1] in lower else "higher is better"
            plots.plot_bars(sub.reset_index(), col, f"{col} std" if sub[f"{col} std"].notna().any() else None, tmp / name,
                            title=f"{col}, {arrow}", label_col="configuration")
            figures.append(name)
        multi = df[np.isfinite(df["delta_m_%"]) & (df["n_tasks"] > 1)]
        if len(multi):
            plots.plot_bars(multi.reset_index(), "delta_m_%", None, tmp / "plot_delta_m.png", value_label="Δm (%)",
                            title="Δm against the single-task runs (lower is better)", label_col="configuration")
            figures.append("plot_delta_m.png")
        if plan.sweep is not None:
            sw = df[df["kind"] == "sweep"].sort_values("sweep_weight")
            for col in cols:
                if not np.isfinite(sw[col]).any():
                    continue
                name = f"sweep_{safe_name(col.replace('/', '_'))}.png"
                std = sw[f"{col} std"].to_numpy(float)
                plots.plot_sweep(sw["sweep_weight"].to_numpy(float), sw[col].to_numpy(float),
                                 std if np.isfinite(std).any() else None, tmp / name,
                                 xlabel=f"weight of {plan.sweep.task} (others share 1 - w)", ylabel=col,
                                 title=f"{col} against w")
                figures.append(name)
        write_text_atomic(tmp / "ablation.md", _markdown(plan, df, figures, results))
        write_json_atomic(tmp / "ablation.json", {
            "tasks": list(plan.tasks), "main": plan.main, "seeds": plan.seeds,
            "sweep": dataclasses.asdict(plan.sweep) if plan.sweep else None,
            "configurations": [c.name for c in plan.configurations], "figures": figures,
            "runs": [{k: v for k, v in r.items() if k != "config"} for r in results],
        })


def _baselines(df: pd.DataFrame, results: list[dict[str, Any]]) -> dict[str, float]:
    """The trivial baseline of every metric column (they depend on the data only, not the run)."""
    out: dict[str, float] = {}
    for col in df.columns:
        if "/" in col and not col.endswith(" std"):
            vals = [r.get("baselines", {}).get(col) for r in results]
            vals = [v for v in vals if v is not None and np.isfinite(v)]
            if vals:
                out[col] = float(np.mean(vals))
    return out


def _data_text(data: dict[str, Any], plan: Plan) -> str:
    sources = data.get("sources") or []
    if len(sources) > 1:
        mix = "mix: the mix column" if any(c.mix is not None for c in plan.configurations) else f"mix {data.get('mix', 'proportional')}"
        return " + ".join(f"`{p}`" for p in sources) + f" ({mix}, by {data.get('mix_by', DataConfig.mix_by)}; " \
            "columns task@dataset, each measured on its cache's own split)"
    return f"`{data.get('path', '?')}`"


def _md_table(df: pd.DataFrame) -> str:
    show = markdown_table(df)
    return to_markdown(show, right=[c for c in show.columns if c not in ("weighting", "architecture", "mix")])


def _markdown(plan: Plan, df: pd.DataFrame, figures: list[str], results: list[dict[str, Any]]) -> str:
    r0 = results[0]["config"] if results else {}
    train = r0.get("train", {})
    split = results[0].get("split", "test") if results else "test"
    flip = " with flip testing (each image also run mirrored, outputs averaged)" if results and results[0].get("flip_test") else ""
    lines = [
        f"# Ablation: {', '.join(plan.tasks)}" + (f" (main task: {plan.main})" if plan.main else ""), "",
        f"- {len(plan.configurations)} configurations x {plan.seeds} seed(s); backbone `{r0.get('model', {}).get('backbone', '?')}`, "
        f"{train.get('epochs', '?')} epoch(s)" + (f" of at most {train['max_steps_per_epoch']} steps" if train.get("max_steps_per_epoch") else "")
        + f", batch {train.get('batch_size', '?')}, data {_data_text(r0.get('data', {}), plan)}; metrics on split **{split}**{flip}",
        "- cells: mean ± standard deviation over seeds; params: deployed network (shared trunk + heads); train s: wall time per run",
        "- Δm%: mean relative change of each task's headline metric against its single-task run, signed so that "
        "**lower is better** (negative: multi-task beats single-task)", "",
        _md_table(df), "",
    ]
    base = _baselines(df, results)
    if base:
        lines += ["Trivial baselines on the same split (majority class; mean training shape for landmarks): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in base.items()), ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
