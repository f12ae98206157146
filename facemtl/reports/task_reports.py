"""One report per task from the arrays ``Task.collect`` gathered: headline metrics, tables, figures.

Every number comes from :mod:`facemtl.metrics` (definitions in docs/reports.md):

- attributes (``attributes``, ``smile``, ``attr:X``): accuracy, balanced accuracy, F1, precision,
  recall per attribute and their unweighted means, beside the majority-class baseline;
- every task but identity also gets a trivial baseline: the majority class of the evaluated split
  (attributes, classes, face / non-face) or the mean training shape (landmarks);
- landmarks: NME normalised by the inter-ocular distance (between the two eye landmarks, i.e.
  eye centres), failure rate at NME > 0.10, the CED curve and its AUC up to 0.10, per-point error,
  and, where the faces' yaw is labelled, NME per |yaw| bin (0-30, 30-60, 60-90 degrees) and their mean;
- detection (crops): ROC AUC and average precision of face / non-face, accuracy at 0.5 (and the
  recall of faces and of non-faces at 0.5), IoU of
  the regressed boxes of faces (mean, and the fraction with IoU >= 0.5);
- identity: verification on balanced genuine / impostor pairs: ROC, AUC, EER, TAR at FAR 1e-3 and 1e-2;
- expression and pose: accuracy, macro recall, per-class recall, confusion matrix (pose also the
  yaw error in degrees when the head regresses it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facemtl.data import schema
from facemtl.metrics import (
    attribute_table,
    average_precision,
    box_iou_xywh,
    ced_auc,
    ced_curve,
    failure_rate,
    multiclass_metrics,
    nme,
    plots,
    roc_auc,
    verification_from_embeddings,
)
from facemtl.metrics.verification import roc_curve
from facemtl.tasks.registry import SECTIONS

log = logging.getLogger(__name__)

NME_NORM = "inter_ocular"
FAIL_AT = 0.10
#: |yaw| bins (degrees) of the landmarks' breakdown: AFLW2000-3D's protocol (Zhu et al., CVPR 2016)
YAW_BINS = ((0, 30), (30, 60), (60, 90))
FARS = (1e-3, 1e-2)


@dataclass
class TaskReport:
    """What one task contributes to an evaluation report."""

    task: str
    kind: str
    n: int
    metrics: dict[str, float]
    #: file stem -> table written as ``<stem>.csv`` (the first one is shown in the summary)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: file name -> function writing that PNG
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: metrics that are lower-is-better (set by :func:`task_report` from the section's registry entry)
    lower_is_better: tuple[str, ...] = ()
    #: metric -> the same metric of a trivial predictor: the majority class of the evaluated split
    #: (attributes, classes, face / non-face) or the mean training shape (landmarks)
    baselines: dict[str, float] = field(default_factory=dict)
    #: counts and flags that are not metrics (faces, pairs, identities, ...)
    info: dict[str, Any] = field(default_factory=dict)


#: report section name (a task's ``report_section``, :data:`facemtl.tasks.registry.SECTIONS`) ->
#: ``builder(task, collected, stem, *, max_pairs, mean_shape) -> TaskReport | str``
SECTION_BUILDERS: dict[str, Callable[..., TaskReport | str]] = {}


def section_builder(name: str) -> Callable[[Callable[..., TaskReport | str]], Callable[..., TaskReport | str]]:
    """Decorator registering the report builder of section ``name`` (a name registered twice is refused)."""
    def deco(fn):
        if name in SECTION_BUILDERS:
            raise ValueError(f"report section '{name}' has two builders")
        SECTION_BUILDERS[name] = fn
        return fn

    return deco


def task_report(task: Any, c: dict[str, np.ndarray], stem: str, max_pairs: int = 6000,
                mean_shape: np.ndarray | None = None) -> TaskReport | str:
    """The report of ``task`` from its collected arrays, or a string saying why there is none.

    ``mean_shape`` (5, 2): the landmarks' trivial predictor (the mean training shape) whose
    NME, failure rate and CED AUC are reported as the landmarks' baseline."""
    fn = SECTION_BUILDERS.get(task.report_section)
    if fn is None:
        raise ValueError(f"no report for task '{task.name}' of type {type(task).__name__}: its report_section "
                         f"'{task.report_section}' has no builder (known: {', '.join(sorted(SECTION_BUILDERS))}).")
    rep = fn(task, c, stem, max_pairs=max_pairs, mean_shape=mean_shape)
    if not isinstance(rep, str):
        lower = SECTIONS.get(task.report_section).lower_is_better
        rep.lower_is_better = tuple(k for k in rep.metrics if k in lower)
    return rep


def _majority(target: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class of ``target``."""
    _, counts = np.unique(target, return_counts=True)
    return float(counts.max() / counts.sum())


# -- attributes -----------------------------------------------------------------------------------
@section_builder("attributes")
def _attributes(task, c, stem: str, **_: Any) -> TaskReport | str:
    prob, target = c["prob"], c["target"]
    if not (target >= 0).any():
        return "no known attribute label"
    table = attribute_table(task.names, prob, target)
    mean = table.loc["mean"]
    metrics = {k: float(mean[k]) for k in ("accuracy", "balanced_accuracy", "f1", "precision", "recall")}
    baselines = {"accuracy": float(mean["majority_accuracy"]), "balanced_accuracy": float(mean["majority_balanced_accuracy"])}
    info = {"attributes_scored": int((table.drop(index="mean")["support"] > 0).sum()), "attributes": len(task.names)}
    rep = TaskReport(task.name, "attributes", int((target >= 0).any(1).sum()), metrics, {stem: table},
                     baselines=baselines, info=info)
    per = table.drop(index="mean")
    per = per[per["support"] > 0]
    if len(per) > 1:
        rep.figures[f"{stem}_balanced_accuracy.png"] = lambda p: plots.plot_bars(
            per, "balanced_accuracy", None, p, title=f"{task.name}: balanced accuracy per attribute (0.5 = majority class)")
    return rep


# -- landmarks ------------------------------------------------------------------------------------
@section_builder("landmarks")
def _landmarks(task, c, stem: str, mean_shape: np.ndarray | None = None, **_: Any) -> TaskReport | str:
    pred = np.asarray(c["pred"], np.float64).reshape(-1, 5, 2)
    target = np.asarray(c["target"], np.float64).reshape(-1, 5, 2)
    iod = np.linalg.norm(target[:, 0] - target[:, 1], axis=1)
    ok = np.isfinite(target).all((1, 2)) & (iod > 0)
    if not ok.any():
        return "no landmark label with distinct eye points"
    notes = [] if ok.all() else [f"{int((~ok).sum())} faces with coincident eye landmarks left out (inter-ocular distance 0)"]
    pred, target, iod = pred[ok], target[ok], iod[ok]
    errors = nme(pred, target, NME_NORM)
    thr, frac = ced_curve(errors, FAIL_AT, steps=101)
    metrics = {
        "nme": float(errors.mean()), "nme_median": float(np.median(errors)),
        "failure_rate": failure_rate(errors, FAIL_AT), "ced_auc": ced_auc(errors, FAIL_AT),
    }
    tables = {}
    yaw = np.abs(np.asarray(c.get("yaw", np.full(len(ok), np.nan)), np.float64)[ok])
    if np.isfinite(yaw).any():
        by_yaw = nme_by_yaw(errors, yaw)
        tables[f"{stem}_by_yaw"] = by_yaw
        metrics.update({f"nme_yaw_{lo}_{hi}": float(by_yaw.loc[f"{lo}-{hi}", "nme"]) for lo, hi in YAW_BINS
                        if by_yaw.loc[f"{lo}-{hi}", "n"] > 0})
        if (by_yaw["n"] > 0).all():
            metrics["nme_yaw_balanced"] = float(by_yaw["nme"].mean())
    per_point = np.linalg.norm(pred - target, axis=2) / iod[:, None]  # (N, 5)
    table = pd.DataFrame(
        {"nme": per_point.mean(0), "median": np.median(per_point, 0), "failure_rate": (per_point > FAIL_AT).mean(0)},
        index=pd.Index(schema.LANDMARK_NAMES, name="landmark"),
    )
    table.loc["all (NME)"] = [errors.mean(), np.median(errors), (errors > FAIL_AT).mean()]
    ced = pd.DataFrame({"nme_threshold": thr, "fraction": frac})
    baselines = {}
    if mean_shape is not None:
        base = nme(np.broadcast_to(mean_shape, target.shape), target, NME_NORM)
        baselines = {"nme": float(base.mean()), "nme_median": float(np.median(base)),
                     "failure_rate": failure_rate(base, FAIL_AT), "ced_auc": ced_auc(base, FAIL_AT)}
    rep = TaskReport(task.name, "landmarks", len(errors), metrics, {stem: table, f"{stem}_ced": ced, **tables},
                     notes=notes, baselines=baselines)
    rep.figures[f"{stem}_ced.png"] = lambda p: plots.plot_ced(
        {task.name: (thr, frac)}, p, title=f"CED of {task.name} (NME / inter-ocular distance)")
    return rep


def nme_by_yaw(errors: np.ndarray, abs_yaw: np.ndarray) -> pd.DataFrame:
    """NME and failure rate per |yaw| bin (:data:`YAW_BINS`, AFLW2000-3D's protocol), faces whose
    yaw is unknown (NaN) left out. Rows ``"0-30"``, ``"30-60"``, ``"60-90"`` (beyond 90 counts in
    the last), columns ``n``, ``nme``, ``failure_rate`` (NaN for an empty bin)."""
    rows = {}
    known = np.isfinite(abs_yaw)
    for i, (lo, hi) in enumerate(YAW_BINS):
        top = np.inf if i == len(YAW_BINS) - 1 else hi
        m = known & (abs_yaw >= lo) & (abs_yaw < top)
        e = errors[m]
        rows[f"{lo}-{hi}"] = [int(m.sum()), float(e.mean()) if len(e) else np.nan,
                              float((e > FAIL_AT).mean()) if len(e) else np.nan]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["n", "nme", "failure_rate"]).rename_axis("abs_yaw_deg")


# -- detection ------------------------------------------------------------------------------------
@section_builder("detection")
def _detection(task, c, stem: str, **_: Any) -> TaskReport | str:
    known = c["face"] >= 0
    if not known.any():
        return "no face / non-face label"
    score, face = c["score"][known], c["face"][known] == 1
    metrics: dict[str, float] = {"accuracy": float(((score >= 0.5) == face).mean())}
    baselines = {"accuracy": _majority(face), "roc_auc": 0.5}
    notes = []
    figures: dict[str, Callable[[Path], None]] = {}
    if face.any() and (~face).any():
        metrics["face_recall"] = float((score[face] >= 0.5).mean())  # faces called faces (TPR at 0.5)
        metrics["non_face_recall"] = float((score[~face] < 0.5).mean())  # non-faces called non-faces (TNR at 0.5)
        metrics["roc_auc"] = roc_auc(score, face)
        metrics["average_precision"] = average_precision(score, face)
        fpr, tpr, _ = roc_curve(score, face)
        figures[f"{stem}_roc.png"] = lambda p: plots.plot_roc({"face vs non-face": (fpr, tpr)}, p, title=f"{task.name}: face / non-face ROC")
    else:
        notes.append("ROC AUC and AP need faces and non-faces; this split has only " + ("faces" if face.any() else "non-faces"))
    has_box = (c["face"] == 1) & np.isfinite(c["box"]).all(1)
    if has_box.any():
        iou = box_iou_xywh(c["box_pred"][has_box], c["box"][has_box])
        metrics["box_iou"] = float(iou.mean())
        metrics["box_iou_at_0.5"] = float((iou >= 0.5).mean())
    info = {"faces": int(face.sum()), "non_faces": int((~face).sum())}
    table = pd.DataFrame([{**metrics, **info}], index=pd.Index([task.name], name="task"))
    return TaskReport(task.name, "detection", int(known.sum()), metrics, {stem: table}, figures, notes, info=info,
                      baselines=baselines)


# -- identity -------------------------------------------------------------------------------------
@section_builder("identity")
def _identity(task, c, stem: str, max_pairs: int = 6000, **_: Any) -> TaskReport | str:
    emb, ids = c["embedding"], c["target"]
    if len(np.unique(ids)) < 2:
        return "fewer than 2 identities in the split"
    try:
        v = verification_from_embeddings(emb, ids, max_pairs=max_pairs, seed=0)
    except ValueError as e:  # every identity seen once: no genuine pair
        return f"no verification pairs ({e})"
    fpr, tpr, _ = v["roc"]
    n_pairs = 2 * min(max_pairs // 2, _pair_counts(ids))
    metrics = {"verification_auc": v["auc"], "eer": v["eer"]}
    for far in FARS:
        metrics[f"tar_at_far_{far:g}"] = v["tar_at_far"][far]
    info = {"pairs": n_pairs, "identities": int(len(np.unique(ids)))}
    notes = []
    if n_pairs // 2 < 1000:
        notes.append(f"only {n_pairs // 2} impostor pairs: TAR at FAR 1e-3 rests on fewer than one false accept")
    table = pd.DataFrame([{**metrics, **info}], index=pd.Index([task.name], name="task"))
    rep = TaskReport(task.name, "identity", len(ids), metrics, {stem: table}, notes=notes, info=info)
    rep.figures[f"{stem}_roc.png"] = lambda p: plots.plot_roc({"verification": (fpr, tpr)}, p, title=f"{task.name}: verification ROC", log_fpr=True)
    return rep


def _pair_counts(ids: np.ndarray) -> int:
    _, counts = np.unique(ids, return_counts=True)
    gen = int((counts * (counts - 1) // 2).sum())
    imp = len(ids) * (len(ids) - 1) // 2 - gen
    return min(gen, imp)


# -- expression and pose classes ------------------------------------------------------------------
@section_builder("classes")
def _classes(task, c, stem: str, **_: Any) -> TaskReport | str:
    if not len(c["target"]):
        return "no class label"
    names = task.class_names()
    m = multiclass_metrics(c["pred"], c["target"], task.out_dim)
    metrics = {"accuracy": m["accuracy"], "macro_recall": m["macro_recall"]}
    if "yaw" in c and len(c["yaw"]):
        metrics["yaw_mae_deg"] = float(np.abs(c["yaw_pred"] - c["yaw"]).mean())
    table = pd.DataFrame({"recall": m["per_class_recall"], "support": m["support"]}, index=pd.Index(names, name="class"))
    confusion = pd.DataFrame(m["confusion"], index=pd.Index(names, name="true"), columns=list(names))
    baselines = {"accuracy": _majority(c["target"]), "macro_recall": 1.0 / int((m["support"] > 0).sum())}
    rep = TaskReport(task.name, "classes", int(m["support"].sum()), metrics, {stem: table, f"{stem}_confusion": confusion},
                     baselines=baselines)
    rep.figures[f"{stem}_confusion.png"] = lambda p: plots.plot_confusion(m["confusion"], names, p, title=f"{task.name}: confusion matrix")
    return rep
