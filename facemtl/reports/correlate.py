"""``facemtl correlate``: how a trained model's tasks relate, three ways.

1. **Head weights** (TCDCN's analysis): Pearson correlation between the weight vectors of the
   tasks' last linear layers (the layer reading the shared features). A head with several
   outputs (landmarks: 10, pose: 5 classes + yaw, attributes: one per attribute) has a matrix
   W (outputs x features); it is reduced to one vector over the shared features by
   ``reduce``:

   - ``norm`` (default): v_j = sqrt(sum_o W[o, j]^2), how strongly the task reads feature j
     (a one-output head becomes |w|). Comparable across any heads.
   - ``mean``: v_j = mean_o W[o, j] (signed; for softmax heads the mean row is arbitrary,
     since adding a vector to every row changes no prediction, so prefer ``norm`` or ``rows`` there).
   - ``rows``: no reduction: every output row is its own vector (``landmarks[left_eye.x]``,
     ``smile``), TCDCN's comparison of single outputs. Identity embeddings are left out here,
     and the strongest pairs listed are between outputs of different tasks.

   Heads whose last linear layer does not read the shared features (a hidden layer, or a
   backbone with per-task branches) are skipped and listed.
2. **Labels**: Pearson correlation between the label columns of the data relevant to the
   model's tasks (each attribute; pose yaw, |yaw|, pitch, roll; one indicator per
   expression; mouth width / inter-ocular distance and eye-line tilt from the landmarks),
   each pair over the samples where both are known (pairwise deletion). Constant columns are dropped.
3. **Gradients**: cosine similarity between the per-task gradients of the loss w.r.t. the
   shared parameters (``space="params"``; or the shared representation, ``"rep"``), one
   matrix per batch, averaged over ``batches`` training batches; ``grad_conflict`` is the
   fraction of batches where the cosine is negative (the tasks pull the trunk apart). The
   model is in eval mode (batch-norm statistics fixed, no dropout), so the gradients are
   those of the trained network itself.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from facemtl import __version__
from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.errors import ConfigError
from facemtl.metrics import cosine_matrix, pearson_matrix, plots, strongest_pairs
from facemtl.reports._data import LabelAdapter, label_check, resolve_dataset, run_cache
from facemtl.reports._io import staged_dir, to_markdown, write_csv
from facemtl.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

REDUCTIONS = ("norm", "mean", "rows")
SPACES = ("params", "rep")


@dataclass
class CorrelateResult:
    out_dir: Path
    matrices: dict[str, pd.DataFrame]
    pairs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


# -- 1. head weights ------------------------------------------------------------------------------
def _row_names(task) -> list[str]:
    """``task[output]`` for each row of the head (a one-output head is named by the task alone)."""
    names = task.output_names()
    return [task.name] if len(names) == 1 else [f"{task.name}[{n}]" for n in names]


def head_vectors(model, tasks, reduce: str = "norm", stage: int = -1) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({name: vector over the shared features}, {task: why skipped}) per ``reduce`` (module docstring)."""
    if reduce not in REDUCTIONS:
        raise ConfigError(f"Invalid --reduce '{reduce}'. Use {', '.join(REDUCTIONS)}.")
    width = model.feature_dims[stage]
    vectors: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for t in tasks:
        try:
            lin = model.last_linear(t.name, stage)
        except ConfigError:
            skipped[t.name] = "its head has no linear layer on the shared features (a heatmap head reads feature maps)"
            continue
        if lin.in_features != width:
            skipped[t.name] = (f"its last linear layer reads {lin.in_features} values, not the {width} shared features "
                               "(a hidden layer or per-task branch sits in between)")
            continue
        w = lin.weight.detach().double().cpu().numpy()  # (outputs, features)
        if reduce == "norm":
            vectors[t.name] = np.sqrt((w**2).sum(0))
        elif reduce == "mean":
            vectors[t.name] = w.mean(0)
        else:
            names = _row_names(t)
            if not names:
                skipped[t.name] = "an embedding, not task outputs: left out of --reduce rows"
                continue
            for name, row in zip(names, w):
                vectors[name] = row
    return vectors, skipped


def cross_task(matrix: pd.DataFrame) -> pd.DataFrame:
    """``matrix`` of per-output rows (``task[output]``) with the pairs inside one task blanked (NaN),
    so that the strongest pairs are between tasks (TCDCN's question), not between a head's own outputs."""
    task = [str(n).split("[")[0] for n in matrix.index]
    same = np.equal.outer(task, task)
    return matrix.mask(same & ~np.eye(len(task), dtype=bool))


# -- 2. labels ------------------------------------------------------------------------------------
def label_frame(cache: FaceCache, split: str, tasks, all_labels: bool = False) -> pd.DataFrame:
    """One column per label quantity of the split (NaN = unknown), for the tasks' labels."""
    rows = cache.indices(split)
    lab = {k: v[rows] for k, v in cache.labels.items()}
    cols: dict[str, np.ndarray] = {}

    def attr(name: str, label: str) -> None:
        if "attributes" in lab and name in cache.attribute_names:
            a = lab["attributes"][:, cache.attribute_names.index(name)].astype(float)
            cols[label] = np.where(a >= 0, a, np.nan)

    want = {t.label_key for t in tasks}
    # one column per attribute: a single-attribute task (smile) names it, else the attribute does
    seen: set[str] = set()
    attr_tasks = [t for t in tasks if t.label_key == "attributes"]
    for t in sorted(attr_tasks, key=lambda t: len(t.names)):
        for a in t.names:
            if a not in seen:
                seen.add(a)
                attr(a, t.name if len(t.names) == 1 else a)
    if all_labels:
        for a in cache.attribute_names:
            if a not in seen:
                attr(a, a)
    # no "face" column: the other labels exist only for faces, so it is constant wherever they are known
    if (all_labels or "pose_class" in want) and "pose" in lab:
        p = lab["pose"].astype(float)
        cols.update({"pose:yaw": p[:, 0], "pose:|yaw|": np.abs(p[:, 0]), "pose:pitch": p[:, 1], "pose:roll": p[:, 2]})
    if (all_labels or "expression" in want) and "expression" in lab:
        e = lab["expression"]
        for k, n in enumerate(schema.EXPRESSION_NAMES):
            cols[f"expression:{n}"] = np.where(e >= 0, (e == k).astype(float), np.nan)
    if (all_labels or "landmarks" in want) and "landmarks" in lab:
        lm = lab["landmarks"].astype(float)
        iod = np.linalg.norm(lm[:, 0] - lm[:, 1], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["landmarks:mouth_width/iod"] = np.where(iod > 0, np.linalg.norm(lm[:, 3] - lm[:, 4], axis=1) / iod, np.nan)
            cols["landmarks:eye_tilt"] = np.degrees(np.arctan2(lm[:, 1, 1] - lm[:, 0, 1], lm[:, 1, 0] - lm[:, 0, 0]))
    return pd.DataFrame(cols)


def label_correlation(frame: pd.DataFrame, min_periods: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """Pairwise-complete Pearson matrix of the non-constant columns, and the dropped columns."""
    std = frame.std(skipna=True)
    keep = [c for c in frame.columns if frame[c].notna().sum() >= min_periods and std[c] > 0]
    dropped = [c for c in frame.columns if c not in keep]
    return frame[keep].corr(method="pearson", min_periods=min_periods), dropped


# -- 3. gradients ---------------------------------------------------------------------------------
def gradient_cosines(model, tasks, cache: FaceCache, split: str, device, adapter: LabelAdapter, *, batches: int = 20,
                     batch_size: int = 64, space: str = "params", seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], int]:
    """(mean cosine, fraction of batches with cosine < 0, mean gradient norm per task, batches used)."""
    import torch

    from facemtl.data.loader import CacheLoader, to_device
    from facemtl.engine.steps import input_plan, make_inputs, task_losses
    from facemtl.weighting import StepContext
    from facemtl.weighting._grads import per_task_gradients

    if space not in SPACES:
        raise ConfigError(f"Invalid --grad-space '{space}'. Use {', '.join(SPACES)}.")
    if batches < 1:
        raise ConfigError(f"--batches must be at least 1; got {batches}.")
    names = [t.name for t in tasks]
    plan = input_plan(model, cache)
    loader = CacheLoader(cache, split, sorted({s for s, _ in plan}), batch_size, shuffle=True, seed=seed)
    model.eval()
    T = len(names)
    total, count, neg = np.zeros((T, T)), np.zeros((T, T)), np.zeros((T, T))
    norms: dict[str, list[float]] = {n: [] for n in names}
    used = 0
    for batch in loader:
        if used >= batches:
            break
        batch = to_device(adapter(batch), device)
        feats = model.forward_features(*make_inputs(batch, plan, channels_last=False))
        ctx = StepContext.build(feats, model.shared_parameters(), space)
        losses = task_losses(tasks, model.forward_heads(ctx.head_inputs), batch, model.criteria)
        present = [n for n in names if n in losses]
        if len(present) < 2:
            continue
        G = per_task_gradients([losses[n] for n in present], ctx)
        g = G.double().cpu().numpy()
        for n, row in zip(present, g):
            norms[n].append(float(np.linalg.norm(row)))
        cos = cosine_matrix(dict(zip(present, g))).to_numpy()
        idx = [names.index(n) for n in present]
        sub = np.ix_(idx, idx)
        ok = np.isfinite(cos)
        total[sub] += np.where(ok, cos, 0.0)
        count[sub] += ok
        neg[sub] += ok & (cos < 0)
        used += 1
        del G, ctx, feats, losses
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if used == 0:
        raise ConfigError(f"no batch of split '{split}' has labels for two of the tasks {names}; the gradient cosine needs two.")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = pd.DataFrame(total / count, index=names, columns=names)
        conflict = pd.DataFrame(neg / count, index=names, columns=names)
    return mean, conflict, {n: float(np.mean(v)) if v else float("nan") for n, v in norms.items()}, used


# -- the report -----------------------------------------------------------------------------------
def correlate(
    source: str | Path, *, data: str | Path | None = None, dataset: str | None = None, split: str = "train",
    out: str | Path | None = None, reduce: str = "norm", stage: int = -1, batches: int = 20, batch_size: int = 64,
    space: str = "params", device: str = "auto", top: int = 10, all_labels: bool = False,
) -> CorrelateResult:
    """Write head-weight, label and gradient correlation matrices, heatmaps and the strongest pairs."""
    from facemtl.engine.checkpoint import build_from_checkpoint, load_checkpoint, training_caches
    from facemtl.reports.evaluate import run_folder_of
    from facemtl.utils.device import pick_device

    if reduce not in REDUCTIONS:
        raise ConfigError(f"Invalid --reduce '{reduce}'. Use {', '.join(REDUCTIONS)}.")
    if space not in SPACES:
        raise ConfigError(f"Invalid --grad-space '{space}'. Use {', '.join(SPACES)}.")
    if top < 1:
        raise ConfigError(f"--top must be at least 1; got {top}.")
    source = Path(source)
    state = load_checkpoint(source)
    model, tasks, cfg, info = build_from_checkpoint(state)
    if len(tasks) < 2:
        raise ConfigError(f"{source} has one task ({tasks[0].name}); correlations need a multi-task model.")
    paths, names = training_caches(state, source if source.is_dir() else source.parent)
    if len(paths) > 1 and data is None and dataset in names:  # one of a multi-cache run's own caches, by name
        path = run_cache(paths[names.index(dataset)], dataset, names)
    else:
        path = resolve_dataset(dataset, data, paths[0])
        if len(paths) > 1 and data is None and dataset is None:
            log.info("run trained on %s: reading %s (its first cache); --dataset NAME reads another", ", ".join(names), names[0])
    cache = FaceCache(path)
    adapter = LabelAdapter.build(info.attribute_names, cache)
    labelled, no_labels = label_check(tasks, cache, split, adapter)
    run_dir = run_folder_of(source)
    out = Path(out) if out is not None else (run_dir or source.with_suffix("")) / "correlate"
    notes = [f"{k}: not in the label and gradient matrices ({v})" for k, v in no_labels.items()]

    vectors, skipped = head_vectors(model, tasks, reduce, stage)
    notes += [f"{k}: not in the head matrix ({v})" for k, v in skipped.items()]
    matrices: dict[str, pd.DataFrame] = {}
    if len(vectors) >= 2:
        matrices["head_pearson"] = pearson_matrix(vectors)
    frame = label_frame(cache, split, labelled, all_labels)
    lab, dropped = label_correlation(frame)
    if dropped:
        notes.append(f"constant or nearly unlabelled label columns dropped: {', '.join(dropped)}")
    if lab.shape[0] >= 2:
        matrices["label_correlation"] = lab
    if len(labelled) >= 2:
        dev = pick_device(device)
        model.to(dev)
        cos, conflict, norms, used = gradient_cosines(model, labelled, cache, split, dev, adapter, batches=batches,
                                                      batch_size=batch_size, space=space)
        matrices["grad_cosine"] = cos
        matrices["grad_conflict"] = conflict
        notes.append(f"gradient cosines averaged over {used} batches of {batch_size} ({space} space)")
    else:
        norms, used = {}, 0
        notes.append("fewer than two labelled tasks: no gradient cosines")
    if not matrices:
        raise ConfigError(f"nothing to correlate for {source}: {'; '.join(notes)}.")

    ranked = dict(matrices)
    ranked.pop("grad_conflict", None)
    if reduce == "rows" and "head_pearson" in ranked:
        ranked["head_pearson"] = cross_task(ranked["head_pearson"])
    pairs = pd.concat([strongest_pairs(m, top).assign(matrix=name) for name, m in ranked.items()],
                      ignore_index=True)[["matrix", "a", "b", "value", "abs"]]
    titles = {"head_pearson": f"Pearson r of head weights (reduce={reduce})", "label_correlation": f"label correlation ({split})",
              "grad_cosine": f"gradient cosine on shared {'parameters' if space == 'params' else 'representation'}",
              "grad_conflict": "fraction of batches with negative gradient cosine"}
    with staged_dir(out, last=("correlate.json",)) as tmp:
        for name, m in matrices.items():
            write_csv(m, tmp / f"{name}.csv")
            lo = 0.0 if name == "grad_conflict" else -1.0
            plots.plot_heatmap(m, tmp / f"{name}.png", title=titles[name], vmin=lo, vmax=1.0,
                               cmap="Reds" if name == "grad_conflict" else "RdBu_r")
        write_csv(pairs, tmp / "strongest_pairs.csv", index=False)
        md = [f"# Task correlations: {cfg.name} ({cfg.model.backbone})", "", f"- checkpoint `{state['_path']}`, data `{path}` split **{split}**",
              f"- head vectors: last linear layer, reduce = `{reduce}`" + (f", cascade stage {stage}" if len(model.feature_dims) > 1 else ""), ""]
        md += ["## Strongest pairs", "", to_markdown(pairs, index=False), ""]
        for name, m in matrices.items():
            md += [f"## {titles[name]}", "", f"![{name}]({name}.png)", "", to_markdown(m, digits=3) if m.shape[0] <= 16 else f"`{name}.csv`", ""]
        md += [f"- note: {n}" for n in notes]
        write_text_atomic(tmp / "summary.md", "\n".join(md) + "\n")
        write_json_atomic(tmp / "correlate.json", {
            "facemtl_version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": state["_path"], "data": str(path), "split": split, "reduce": reduce, "grad_space": space,
            "batches": used, "grad_norms": norms, "matrices": {k: m.round(6).to_dict() for k, m in matrices.items()},
            "strongest_pairs": pairs.to_dict(orient="records"), "notes": notes,
        })
    return CorrelateResult(out, matrices, pairs, notes)
