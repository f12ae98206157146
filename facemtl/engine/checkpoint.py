"""Checkpoints: one plain dict per file, written atomically; loading rebuilds model and tasks.

Keys: ``format`` ("facemtl-checkpoint"), ``version``, ``facemtl_version``, ``config`` (the
resolved :class:`RunConfig` as a dict), ``config_digest``, ``data_info``, ``model``
(state dict, identity centres included), ``weighting``, ``optimizer``, ``scheduler_step``,
``scaler``, ``epoch`` (epochs finished), ``step``, ``batches_done`` (inside an interrupted
epoch), ``rng``, ``best``, ``bad_epochs``, ``history``, ``data_path`` (the training cache,
absolute) and ``cwd`` (the folder training ran in; both absent before 0.2), ``data_paths`` and
``data_names`` (every cache of the run, absolute, and their short names; absent before several
caches could be trained together).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from facemtl import __version__
from facemtl.errors import CheckpointError
from facemtl.utils.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = "facemtl-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "version": VERSION, "facemtl_version": __version__, **state}
    with atomic_path(path, size_hint=_tensor_bytes(state)) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a Python file: a full disk raises OSError(ENOSPC), not a C++ RuntimeError


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def training_cache(state: dict[str, Any], run_dir: str | Path | None = None) -> str:
    """The cache a checkpoint was trained on, found from any working folder.

    Tried in order: the absolute path recorded at training time, the path as given (relative to
    the current folder), and, for checkpoints that predate the record, the path relative to the
    folder training ran in, worked out from the run folder and its ``out`` setting. When none
    exists the recorded (or given) path is returned, for the caller's "does not exist" message.
    """
    return _find_cache(state["config"]["data"]["path"], state.get("data_path"), state, run_dir)


def training_caches(state: dict[str, Any], run_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """``(paths, names)`` of every cache a checkpoint was trained on (``--data a.h5,b.h5``), each
    found as :func:`training_cache` finds the one cache; names are the run's short dataset names
    (:func:`facemtl.data.mixing.source_names`). A one-cache run, or a checkpoint written before
    several caches could be trained together, gives ``[training_cache(...)]``."""
    from facemtl.data.mixing import source_names

    given = list(state["config"]["data"].get("sources") or ())
    if len(given) < 2:
        paths = [training_cache(state, run_dir)]
        return paths, source_names(paths)
    recorded = list(state.get("data_paths") or ())
    if len(recorded) != len(given):
        recorded = [None] * len(given)
    paths = [_find_cache(g, r, state, run_dir) for g, r in zip(given, recorded)]
    names = list(state.get("data_names") or ())
    return paths, names if len(names) == len(paths) else source_names(given)


def _find_cache(given_path: str, recorded: str | None, state: dict[str, Any], run_dir: str | Path | None) -> str:
    given = Path(given_path)
    candidates = [Path(recorded)] if recorded else []
    candidates.append(given)
    if not given.is_absolute():
        if state.get("cwd"):
            candidates.append(Path(state["cwd"]) / given)
        out = state["config"].get("out") or f"runs/{state['config'].get('name', 'default')}"
        if run_dir is not None and not Path(out).is_absolute():
            run_abs = Path(os.path.abspath(run_dir)).parts
            depth = len(Path(out).parts)
            if len(run_abs) > depth and Path(*run_abs[-depth:]) == Path(out):
                candidates.append(Path(*run_abs[:-depth]) / given)
    for p in candidates:
        if p.exists():
            return str(p)
    return str(candidates[0])


def resolve_checkpoint(path: str | Path, prefer: str = "best.pt") -> Path:
    """A checkpoint file, or a run folder (its ``best.pt``, else ``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in (prefer, "last.pt", "best.pt"):
            if (p / name).exists():
                return p / name
        raise CheckpointError(f"run folder {p} holds no checkpoint (best.pt / last.pt); train it first with `facemtl train --out {p}`.")
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; give a run folder or a .pt file.")
    return p


def load_checkpoint(path: str | Path, prefer: str = "best.pt") -> dict[str, Any]:
    p = resolve_checkpoint(path, prefer)
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds (pickle, zip, EOF) for a damaged file
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e}); it is damaged or not a checkpoint.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a facemtl checkpoint.")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{p} was written by a newer facemtl (checkpoint version {state['version']} > {VERSION}); upgrade facemtl.")
    state["_path"] = str(p)
    return state


def legacy_task_options(cfg, model_state: dict[str, Any]) -> dict[str, Any]:
    """``cfg.tasks.options``, with ``head = "linear"`` pinned for a landmark task whose weights are
    a linear head: checkpoints of facemtl 0.1.0 predate the heatmap head (now the default on
    backbones with feature maps) and would not load into it otherwise."""
    options = {k: dict(v) for k, v in cfg.tasks.options.items()}
    if "landmarks" in cfg.tasks.names and "head" not in options.get("landmarks", {}) \
            and "heads.landmarks.0.weight" in model_state:
        options.setdefault("landmarks", {})["head"] = "linear"
    return options


def build_from_checkpoint(state: dict[str, Any]):
    """Rebuild ``(model, tasks, config, data_info)`` from a loaded checkpoint, weights loaded, in eval mode."""
    from facemtl.engine.config import RunConfig
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    cfg = RunConfig.from_dict(state["config"], f"checkpoint {state.get('_path', '')}")
    info = DataInfo.from_dict(state["data_info"])
    tasks = build_tasks(list(cfg.tasks.names), info, legacy_task_options(cfg, state["model"]))
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, architecture=cfg.model.architecture,
                        architecture_options=cfg.model.architecture_options, **cfg.model.options)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {state.get('_path', '')} does not match its own configuration "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})."
        )
    model.eval()
    return model, tasks, cfg, info


def load_model(path: str | Path, prefer: str = "best.pt"):
    """``(model, tasks, config, data_info)`` from a run folder or checkpoint file."""
    return build_from_checkpoint(load_checkpoint(path, prefer))
