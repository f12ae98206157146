"""``facemtl evaluate``: every metric of every task a model has and the data labels, as files.

Output folder (default ``<run>/eval-<split>``, or ``<run>/eval-<cache>-<split>`` on other data)::

    metrics.json          everything below in one document (written last: its presence = complete)
    summary.md            headline metrics per task, the per-task tables, links to the figures
    <task>.csv            per-task table (per attribute / per landmark / per class / one row)
    <task>_ced.csv/.png   landmarks: CED curve          <task>_confusion.csv/.png  classes
    <task>_roc.png        detection (face/non-face) and identity (verification) ROC
    detection_scenes.csv  end-to-end detection on the cache's scenes (rate, FPPI)
    curves_*.png          training curves and task weights (when given a run folder)

A run trained on several caches (``--data a.h5,b.h5``) is evaluated on each of them: every task
on every cache that labels it, each cache's report complete in its own subfolder, and one
combined report beside them::

    <run>/eval-<split>/<dataset>/   the report above, for that cache alone (names: the caches' file stems)
    <run>/eval-<split>/metrics.json ``datasets``: {name: {data, samples, tasks, skipped}} (written last)
    <run>/eval-<split>/summary.md   one headline table: a row per task and metric, a column per dataset

``--dataset NAME`` with NAME one of the run's datasets evaluates that cache alone
(``<run>/eval-<name>-<split>``); ``--dataset celeba|...|PATH`` and ``--data`` evaluate any cache,
as for a one-cache run.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facemtl import __version__
from facemtl.data.cache import FaceCache
from facemtl.errors import ConfigError, UnknownNameError
from facemtl.reports._data import DATASET_FILES, LabelAdapter, label_check, labelled_tasks, predict, resolve_dataset, run_cache, shared_synthfaces_people
from facemtl.reports._io import fmt, safe_name, staged_dir, to_markdown, write_csv
from facemtl.reports.scenes import ScanConfig, scan_scenes
from facemtl.reports.task_reports import FAIL_AT, NME_NORM, TaskReport, task_report
from facemtl.tasks.registry import output_kind
from facemtl.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

FORMAT = "facemtl-evaluation"
VERSION = 1

DEFINITIONS = {
    "nme": f"mean over the 5 points of ||pred - target|| / inter-ocular distance ({NME_NORM}: between the two eye landmarks, i.e. eye centres), averaged over faces",
    "failure_rate": f"fraction of faces with NME > {FAIL_AT}",
    "ced_auc": f"area under the CED curve on [0, {FAIL_AT}] divided by {FAIL_AT}",
    "balanced_accuracy": "mean of the recalls of the classes present (TPR + TNR) / 2; 0.5 for the majority-class baseline",
    "baseline": "the same metric of a trivial predictor: the majority class of the evaluated split (attributes, expression, pose, face / non-face) or the mean landmark shape of the training split (landmarks)",
    "f1": "2 TP / (2 TP + FP + FN) at probability >= 0.5, 0 when undefined",
    "detection_accuracy": "face / non-face crops: fraction whose face probability is on the right side of 0.5; face_recall and non_face_recall: the same on faces and on non-faces alone",
    "verification": "cosine similarity of L2-normalised embeddings on balanced genuine / impostor pairs of the split's identities",
    "scene_detection": "sliding windows + NMS on the cache's scenes; a face is found when a box with score >= 0.5 has IoU >= 0.5",
}


#: cache source of the real-face check (:mod:`facemtl.data.readers.lfw_subset`)
LFW_SUBSET = "lfw-subset"
LFW_SUBSET_DEFINITION = (
    "real-face check: scikit-image's LFW subset, 100 real faces (tight 25 px LFW crops, upscaled) and 100 real "
    "non-face patches; accuracy = fraction of the 200 crops whose face probability is on the right side of 0.5 "
    "(fixed, never tuned on these images), face_recall / non_face_recall the same on faces / non-faces alone, "
    "ROC AUC threshold-free; chance is 0.5. It measures transfer to real faces and is never used for training"
)
LFW_SUBSET_NOTE = (
    "LFW-subset: 100 real faces and 100 real non-faces, measuring only; the faces are tight LFW crops (face fills "
    "nearly the whole square), framed like SynthFaces' tightest crops (its heads span 0.6-1.4 of the side)"
)


@dataclass
class EvalResult:
    out_dir: Path
    document: dict[str, Any]
    reports: list[TaskReport]
    skipped: dict[str, str] = field(default_factory=dict)
    #: a run on several caches: each cache's own result, by dataset name (``reports`` is then empty)
    datasets: dict[str, EvalResult] = field(default_factory=dict)

    def task_reports(self) -> list[tuple[str, TaskReport]]:
        """(column prefix, report) of every task measured: ``task``, or ``task@dataset`` per dataset."""
        if self.datasets:
            return [(dataset_key(r.task, name), r) for name, sub in self.datasets.items() for r in sub.reports]
        return [(r.task, r) for r in self.reports]

    def flat(self) -> dict[str, float]:
        """{"<task>/<metric>": value} of every headline number ("<task>@<dataset>/<metric>" per dataset)."""
        return {f"{key}/{k}": v for key, r in self.task_reports() for k, v in r.metrics.items()}


def dataset_key(task: str, dataset: str | None) -> str:
    """How a task measured on one dataset of a multi-cache run is named in tables: ``landmarks@mtfl``."""
    return task if dataset is None else f"{task}@{dataset}"


def run_folder_of(source: Path) -> Path | None:
    """The run folder of a run or checkpoint path (None for a lone .pt)."""
    p = Path(source)
    d = p if p.is_dir() else p.parent
    return d if (d / "config.toml").exists() or (d / "metrics.csv").exists() else None


def evaluate(
    source: str | Path, *, dataset: str | None = None, data: str | Path | None = None, split: str = "test",
    out: str | Path | None = None, device: str = "auto", batch_size: int = 128, max_pairs: int = 6000,
    scenes: bool = True, figures: bool = True, curves: bool = True, scan: ScanConfig = ScanConfig(),
    flip_test: bool = False,
) -> EvalResult:
    """Evaluate a run folder or checkpoint on a cache split and write the report (module docstring).

    Raises (before anything is written): CheckpointError for a missing, damaged or newer
    checkpoint; MissingFileError / UnknownNameError for the data; ConfigError when the split has
    no labels for any of the model's tasks.
    """
    from facemtl.engine.checkpoint import build_from_checkpoint, load_checkpoint, training_caches

    source = Path(source)
    state = load_checkpoint(source)
    model, tasks, cfg, info = build_from_checkpoint(state)
    m = _Loaded(source, state, model, tasks, cfg, info, run_folder_of(source))
    opts = dict(device=device, batch_size=batch_size, max_pairs=max_pairs, scenes=scenes, figures=figures, scan=scan,
                flip_test=flip_test)
    if dataset == LFW_SUBSET and data is None:
        require_detection(tasks, source)  # before preparing the cache it would be refused on
    paths, names = training_caches(state, source if source.is_dir() else source.parent)
    base = m.run_dir if m.run_dir is not None else source.with_suffix("")
    if len(paths) > 1 and data is None:
        if dataset is None:
            return _evaluate_datasets(m, paths, names, split, Path(out) if out is not None else base / f"eval-{split}",
                                      curves=curves, **opts)
        if dataset in names:  # one of the run's own caches, by its short name
            i = names.index(dataset)
            path = run_cache(paths[i], names[i], names)
            return _evaluate_cache(m, path, split, Path(out) if out is not None else base / f"eval-{safe_name(dataset)}-{split}",
                                   curves=curves, **opts)
        if dataset not in DATASET_FILES and not (dataset.endswith(".h5") or os.sep in dataset):
            raise UnknownNameError("dataset", dataset, [*names, *DATASET_FILES, "PATH.h5"])
    path = resolve_dataset(dataset, data, paths[0])
    for train_path in paths:
        if Path(train_path).resolve() == path.resolve():
            continue
        shared = shared_synthfaces_people(train_path, path, split)  # 0 for a cache it cannot read
        if shared:
            log.warning("%d %s of %s's %s split trained the model, in the run's cache %s (SynthFaces draws person k "
                        "from the seed alone, in every cache of one seed): these figures are not held-out. Evaluate on the "
                        "run's own cache (leave out --dataset) or on a cache rendered with another --seed.",
                        shared, "person" if shared == 1 else "people", path, split, train_path)
    if out is None:
        same = [i for i, p in enumerate(paths) if Path(p).resolve() == path.resolve()]
        if len(paths) == 1:
            out = (base / f"eval-{split}") if same else (base / f"eval-{safe_name(path.stem)}-{split}")
        else:  # one cache of a multi-cache run is named as the run names it
            out = base / f"eval-{safe_name(names[same[0]] if same else path.stem)}-{split}"
    return _evaluate_cache(m, path, split, Path(out), curves=curves, **opts)


@dataclass
class _Loaded:
    """A checkpoint, its model and where it came from."""

    source: Path
    state: dict[str, Any]
    model: Any
    tasks: list
    cfg: Any
    info: Any
    run_dir: Path | None


def _evaluate_cache(m: _Loaded, path: Path, split: str, out: Path, *, device: str, batch_size: int, max_pairs: int,
                    scenes: bool, figures: bool, curves: bool, scan: ScanConfig, flip_test: bool) -> EvalResult:
    """The report of one cache (module docstring), written into ``out``."""
    from facemtl.utils.device import pick_device

    model, tasks, run_dir, source = m.model, m.tasks, m.run_dir, m.source
    cache = FaceCache(path)
    real_check = cache.source == LFW_SUBSET
    if real_check:
        require_detection(tasks, source)
    adapter = LabelAdapter.build(m.info.attribute_names, cache)
    keep, skipped = label_check(tasks, cache, split, adapter)
    if real_check:
        skipped = {name: lfw_subset_skip_reason(next(t for t in tasks if t.name == name)) for name in skipped}

    dev = pick_device(device)
    model.to(dev)
    collected = predict(model, keep, cache, split, dev, adapter, batch_size, flip_test=flip_test)
    reports: list[TaskReport] = []
    shape = mean_shape(cache)
    for t in keep:
        r = task_report(t, collected[t.name], safe_name(t.name), max_pairs, mean_shape=shape)
        if isinstance(r, str):
            skipped[t.name] = r
            continue
        reports.append(r)
    by_name = {t.name: t for t in keep}
    _identity_note([r for r in reports if by_name[r.task].label_key == "identity"], cache, split)
    finders = [r for r in reports if _finds_faces(by_name[r.task])]
    if real_check:
        for r in finders:
            r.notes.append(LFW_SUBSET_NOTE)
    if scenes:
        _add_scenes(finders, model, cache, split, dev, scan)
    if not reports:
        raise_no_metrics(skipped, path, split)

    doc = {
        **_header(m),
        "data": str(path), "data_source": cache.source, "split": split, "samples": int(len(cache.indices(split))),
        "flip_test": bool(flip_test),
        "tasks": {}, "skipped": skipped,
        "definitions": {**DEFINITIONS, "lfw_subset": LFW_SUBSET_DEFINITION} if real_check else DEFINITIONS,
    }
    with staged_dir(out, last=("metrics.json",)) as tmp:
        for r in reports:
            files = []
            for stem, table in r.tables.items():
                write_csv(table, tmp / f"{stem}.csv")
                files.append(f"{stem}.csv")
            if figures:
                for name, draw in r.figures.items():
                    draw(tmp / name)
                    files.append(name)
            doc["tasks"][r.task] = {"kind": r.kind, "n": r.n, "metrics": r.metrics, "baseline": r.baselines,
                                    "lower_is_better": list(r.lower_is_better), "info": r.info, "files": files, "notes": r.notes}
        curve_files: list[str] = []
        if figures and curves and run_dir is not None:
            from facemtl.reports.curves import curve_figures

            try:
                curve_files = curve_figures(run_dir, tmp)
            except Exception as e:  # a damaged metrics.csv must not cost the evaluation itself
                log.warning("training curves skipped: %s", e)
        doc["curves"] = curve_files
        write_text_atomic(tmp / "summary.md", summary_markdown(doc, reports))
        write_json_atomic(tmp / "metrics.json", doc)
    log.debug("wrote the evaluation report to %s", out)
    return EvalResult(out, doc, reports, skipped)


def _header(m: _Loaded) -> dict[str, Any]:
    """The fields every evaluation document starts with: what was evaluated, and when."""
    return {
        "format": FORMAT, "version": VERSION, "facemtl_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": m.state["_path"], "run": str(m.run_dir) if m.run_dir else None, "recipe": m.cfg.name,
        "backbone": m.cfg.model.backbone, "epoch": int(m.state.get("epoch", 0)), "weighting": m.cfg.weighting.name,
    }


def _evaluate_datasets(m: _Loaded, paths: list[str], names: list[str], split: str, out: Path, *, curves: bool,
                       figures: bool, **opts: Any) -> EvalResult:
    """Every cache of a multi-cache run: ``out/<name>/`` each, then the combined report (module docstring).

    The whole folder is staged, so either every dataset's report and the combined one appear or
    none does. A cache that labels none of the tasks in ``split`` (or has no samples there) is
    listed with the reason; ConfigError when no cache gives any metric.
    """
    caches = [run_cache(p, n, names) for p, n in zip(paths, names)]  # every cache must exist before any work
    doc: dict[str, Any] = {**_header(m), "model_tasks": [t.name for t in m.tasks], "data": [str(p) for p in caches],
                           "split": split, "flip_test": bool(opts["flip_test"]), "datasets": {}}
    results: dict[str, EvalResult] = {}
    with staged_dir(out, last=("metrics.json",)) as tmp:
        for name, path in zip(names, caches):
            cache = FaceCache(path)
            keep, skipped = labelled_tasks(m.tasks, cache, split, LabelAdapter.build(m.info.attribute_names, cache))
            entry = {"data": str(path), "data_source": cache.source, "samples": int(len(cache.indices(split))),
                     "report": None, "tasks": {}, "skipped": skipped}
            doc["datasets"][name] = entry
            if not keep:
                log.debug("dataset %s: nothing to measure in split '%s'", name, split)
                continue
            try:
                res = _evaluate_cache(m, path, split, tmp / safe_name(name), curves=False, figures=figures, **opts)
            except ConfigError as e:  # every task it labels failed to give a metric (one class only, ...)
                entry["skipped"] = {**skipped, **{t.name: str(e) for t in keep}}
                continue
            results[name] = res
            prefix = f"{safe_name(name)}/"
            entry["report"] = prefix
            entry["skipped"] = res.skipped
            entry["tasks"] = {t: {**v, "files": [prefix + f for f in v["files"]]} for t, v in res.document["tasks"].items()}
        if not results:
            raise ConfigError(
                f"no metric could be computed on split '{split}' of any of the run's caches: "
                + "; ".join(f"{n}: {', '.join(f'{k}: {v}' for k, v in e['skipped'].items())}" for n, e in doc["datasets"].items())
                + ". Choose another --split."
            )
        curve_files: list[str] = []
        if figures and curves and m.run_dir is not None:
            from facemtl.reports.curves import curve_figures

            try:
                curve_files = curve_figures(m.run_dir, tmp)
            except Exception as e:  # a damaged metrics.csv must not cost the evaluation itself
                log.warning("training curves skipped: %s", e)
        doc["curves"] = curve_files
        doc["definitions"] = DEFINITIONS
        write_text_atomic(tmp / "summary.md", datasets_markdown(doc, results))
        write_json_atomic(tmp / "metrics.json", doc)
    log.debug("wrote the evaluation reports of %d datasets to %s", len(results), out)
    return EvalResult(out, doc, [], {}, datasets={n: _moved(r, out / safe_name(n)) for n, r in results.items()})


def _moved(result: EvalResult, out_dir: Path) -> EvalResult:
    """A dataset's result, pointing at where its staged report now lies."""
    result.out_dir = out_dir
    return result


def dataset_table(results: dict[str, EvalResult], tasks: list[str] | None = None) -> pd.DataFrame:
    """Headline metrics of a multi-cache evaluation: index (task, metric), one column per dataset
    (NaN where that dataset does not label the task), and ``better`` (lower / higher)."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    better: dict[tuple[str, str], str] = {}
    for name, res in results.items():
        for r in res.reports:
            for k, v in r.metrics.items():
                values.setdefault((r.task, k), {})[name] = v
                better[(r.task, k)] = "lower" if k in r.lower_is_better else "higher"
    order = {t: i for i, t in enumerate(tasks or [])}
    keys = sorted(values, key=lambda tk: order.get(tk[0], len(order)))  # stable: metrics keep their report order
    df = pd.DataFrame([[values[k].get(n, float("nan")) for n in results] + [better[k]] for k in keys],
                      index=pd.MultiIndex.from_tuples(keys, names=["task", "metric"]), columns=[*results, "better"])
    return df


def datasets_markdown(doc: dict[str, Any], results: dict[str, EvalResult]) -> str:
    """The combined report of a multi-cache evaluation: one headline table, links to each dataset's report."""
    lines = [f"# Evaluation: {doc['recipe']} ({doc['backbone']}, {doc['weighting']}, epoch {doc['epoch']}), "
             f"{len(doc['datasets'])} datasets", "",
             f"- checkpoint: `{doc['checkpoint']}`", f"- split **{doc['split']}**"]
    for name, e in doc["datasets"].items():
        link = f"[{name}]({e['report']}summary.md)" if e["report"] else name
        lines.append(f"- {link}: `{e['data']}` ({e['data_source']}), {e['samples']} samples")
    lines += ["", "## Headline metrics", "",
              "One column per dataset; blank where the dataset does not label the task (see Skipped).", ""]
    df = dataset_table(results, doc["model_tasks"])
    show = pd.DataFrame({"metric": [k for _, k in df.index],
                         **{n: ["" if not np.isfinite(v) else fmt(v) for v in df[n]] for n in results},
                         "better": df["better"].tolist()}, index=pd.Index([t for t, _ in df.index], name="task"))
    lines += [to_markdown(show, right=list(results)), ""]
    skipped = [(n, k, v) for n, e in doc["datasets"].items() for k, v in e["skipped"].items()]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {k} on {n}: {v}" for n, k, v in skipped] + [""]
    if doc.get("curves"):
        lines += ["## Training", ""] + [f"![{c}]({c})" for c in doc["curves"]] + [""]
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in doc["definitions"].items()] + [""]
    return "\n".join(lines)


def require_detection(tasks, source: Path) -> None:
    """The LFW-subset check measures face / non-face classification: refuse a model without a detection head."""
    if not any(_finds_faces(t) for t in tasks):
        from facemtl.errors import ConfigError

        raise ConfigError(
            f"the lfw-subset check measures face / non-face accuracy and needs a `detection` task, but {source} has "
            f"only {', '.join(t.name for t in tasks)}; evaluate a run trained with detection (recipes default and "
            "mcfa have it, or `facemtl train --tasks detection,...`)."
        )


def _finds_faces(task) -> bool:
    kind = output_kind(task.export_output()[0])
    return kind is not None and kind.finds_faces


def lfw_subset_skip_reason(task) -> str:
    return f"LFW-subset has no '{task.label_key}' labels (it labels face / non-face only), so this task is not measured"


def raise_no_metrics(skipped: dict[str, str], path: Path, split: str) -> None:
    from facemtl.errors import ConfigError

    raise ConfigError(f"no metric could be computed on split '{split}' of {path}: "
                      + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ".")


def mean_shape(cache: FaceCache) -> np.ndarray | None:
    """Mean (5, 2) landmarks of the cache's train split (of all samples when it has none there)."""
    lm = cache.labels.get("landmarks")
    if lm is None:
        return None
    for rows in (cache.indices("train"), np.arange(cache.num_samples)):
        sub = lm[rows]
        sub = sub[np.isfinite(sub).all((1, 2))]
        if len(sub):
            return sub.astype(np.float64).mean(0)
    return None


def _identity_note(reports: list[TaskReport], cache: FaceCache, split: str) -> None:
    """Say whether verification pairs come from identities held out of training (``reports``: the identity tasks')."""
    ids = cache.labels.get("identity")
    if ids is None or split == "train":
        return
    seen = set(np.unique(ids[cache.indices("train")]).tolist()) - {-1}
    for r in reports:
        here = set(np.unique(ids[cache.indices(split)]).tolist()) - {-1}
        overlap = len(here & seen)
        r.info["held_out_identities"] = overlap == 0
        if overlap:
            r.notes.append(f"{overlap} of the {len(here)} identities of split '{split}' also occur in this cache's train split: "
                           "pairs are not all from held-out identities")


def _add_scenes(reports: list[TaskReport], model, cache: FaceCache, split: str, device, scan: ScanConfig) -> None:
    """End-to-end detection on the cache's scenes for ``reports`` (the face / non-face tasks')."""
    for r in reports:
        res = scan_scenes(model, cache, split, device, task=r.task, cfg=scan)
        if res is None:
            r.notes.append(f"no scenes in split '{split}': end-to-end detection not measured")
            continue
        r.metrics["scene_detection_rate"] = res["detection_rate"]
        r.metrics["scene_fppi"] = res["fppi"]
        r.lower_is_better = (*r.lower_is_better, "scene_fppi")
        row = {**res, "window_sizes": " ".join(map(str, scan.window_sizes)), "stride": scan.stride,
               "score_threshold": scan.score_threshold, "nms_iou": scan.nms_iou, "match_iou": scan.match_iou}
        r.info.update({f"scene_{k}": res[k] for k in ("n_images", "n_gt", "n_tp", "n_fp", "cascade")})
        r.tables[f"{r.task}_scenes"] = pd.DataFrame([row], index=pd.Index([r.task], name="task"))


def summary_markdown(doc: dict[str, Any], reports: list[TaskReport]) -> str:
    """The human-readable report: headline table, then one section per task."""
    lines = [f"# Evaluation: {doc['recipe']} ({doc['backbone']}, {doc['weighting']}, epoch {doc['epoch']})", "",
             f"- checkpoint: `{doc['checkpoint']}`",
             f"- data: `{doc['data']}` ({doc['data_source']}), split **{doc['split']}**, {doc['samples']} samples"]
    if doc.get("flip_test"):
        lines.append("- flip test: each task's output averaged with its output on the mirrored image (`--flip-test`)")
    lines.append("")
    head = headline_table(reports)
    lines += ["## Headline metrics", "", to_markdown(head), ""]
    for r in reports:
        lines += [f"## {r.task} ({r.kind}, {r.n} samples)", ""]
        for stem, table in r.tables.items():
            if stem.endswith("_ced"):
                continue  # 101 rows: the CSV and the figure show it
            lines += [f"`{stem}.csv`", "", to_markdown(table), ""]
        lines += [f"![{name}]({name})" for name in doc["tasks"][r.task]["files"] if name.endswith(".png")]
        if r.info:
            lines.append("- " + ", ".join(f"{k}: {fmt(v)}" for k, v in r.info.items()))
        lines += [f"- note: {n}" for n in r.notes]
        lines.append("")
    if doc["skipped"]:
        lines += ["## Skipped tasks", ""] + [f"- {k}: {v}" for k, v in doc["skipped"].items()] + [""]
    if doc.get("curves"):
        lines += ["## Training", ""] + [f"![{c}]({c})" for c in doc["curves"]] + [""]
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in doc["definitions"].items()] + [""]
    return "\n".join(lines)


def headline_table(reports: list[TaskReport]) -> pd.DataFrame:
    """One row per (task, metric): value, the trivial baseline where one exists, direction."""
    rows = [(r.task, k, v, r.baselines.get(k, float("nan")), "lower" if k in r.lower_is_better else "higher")
            for r in reports for k, v in r.metrics.items()]
    return pd.DataFrame(rows, columns=["task", "metric", "value", "baseline", "better"]).set_index("task")
