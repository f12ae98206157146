"""Finding the data a report runs on, matching it to a model's tasks, and running the model over it.

Dataset locations: ``--data PATH.h5`` wins; else ``--dataset NAME`` is looked up as
``$FACEMTL_DATA/<file>`` (default folder ``data/``) with the file names of ``facemtl prepare``'s
examples (:data:`DATASET_FILES`); else the cache the run was trained on (its ``config.toml``).
``--dataset lfw-subset`` (:mod:`facemtl.data.readers.lfw_subset`, the real-face check) is prepared
there automatically on first use, from the copy bundled with scikit-image.

A model trained on one cache can be evaluated on another: attribute columns are matched *by
name* (a model trained on SynthFaces' 29 attributes reads those 29 columns of CelebA's 40), and
a task whose labels the data lacks is skipped with the reason recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemtl.data.cache import FaceCache, cache_provenance
from facemtl.errors import ConfigError, MissingFileError, UnknownNameError

log = logging.getLogger(__name__)

#: --dataset NAME -> cache file name under $FACEMTL_DATA (default ./data)
DATASET_FILES = {"celeba": "celeba.h5", "lfwa": "lfwa.h5", "mtfl": "mtfl.h5", "synthetic": "synthfaces.h5",
                 "lfw-subset": "lfw-subset.h5"}
#: --dataset names whose cache is written on first use when missing (no download, nothing to give)
AUTO_PREPARED = ("lfw-subset",)


def data_root() -> Path:
    return Path(os.environ.get("FACEMTL_DATA") or "data")


def resolve_dataset(dataset: str | None, data: str | os.PathLike | None, default: str | None) -> Path:
    """The cache file to read (module docstring); raises when it does not exist."""
    if data is not None:
        path, why = Path(data), "--data"
    elif dataset is not None and (dataset.endswith(".h5") or os.sep in dataset):
        path, why = Path(dataset), "--dataset"
    elif dataset is not None:
        if dataset not in DATASET_FILES:
            raise UnknownNameError("dataset", dataset, [*DATASET_FILES, "PATH.h5"])
        path, why = data_root() / DATASET_FILES[dataset], f"--dataset {dataset}"
    elif default:
        path, why = Path(default), "the run's training cache"
    else:
        raise ConfigError("no data given: pass --dataset celeba|lfwa|mtfl|synthetic|lfw-subset|PATH.h5 or --data PATH.h5.")
    if not path.exists() and dataset in AUTO_PREPARED and data is None:
        from facemtl.data.readers.lfw_subset import prepare_lfw_subset

        log.info("%s not found: preparing it from scikit-image's bundled LFW subset (200 real crops, a few seconds)", path)
        prepare_lfw_subset(path, force=True)  # force: a concurrent first use may have just written it
    if not path.exists():
        hint = ""
        if dataset in DATASET_FILES and data is None:
            prep = "synthetic" if dataset == "synthetic" else f"{dataset} --root <folder>"
            hint = (f" Prepare it with `facemtl prepare {prep} --out {path}`, set FACEMTL_DATA to the folder "
                    "holding it, or pass --data PATH.h5.")
        elif data is None and dataset is None:
            hint = " Pass --data PATH.h5 to name the cache (it may have moved), or --dataset NAME."
        raise MissingFileError(f"cache {path} ({why}) does not exist.{hint}")
    return path


def shared_synthfaces_people(train: str | os.PathLike, other: str | os.PathLike, split: str) -> int:
    """How many people of ``other``'s ``split`` are training people of the SynthFaces cache
    ``train`` (0 when either is not SynthFaces, or they were rendered with different seeds).

    SynthFaces draws person k from (seed, k) alone, whatever the cache's size, and holds out the
    last tenth of a cache's people for its test split (``facemtl.data.synthetic``): the test people
    of an 8,000-image cache of 500 (450-499) are training people of a 24,000-image cache of 1,500
    (0-1,349) rendered with the same seed."""
    provs = [cache_provenance(train), cache_provenance(other)]
    cfgs = [p.get("config") if p.get("generator") == "SynthFaces" else None for p in provs]
    if not all(isinstance(c, dict) and "seed" in c and "identities" in c for c in cfgs) or cfgs[0]["seed"] != cfgs[1]["seed"]:
        return 0
    from facemtl.data.synthetic import first_test_person

    n_train, n_other = int(cfgs[0]["identities"]), int(cfgs[1]["identities"])
    held_out = first_test_person(n_other)
    people = range(held_out, n_other) if split == "test" else range(0, held_out)
    train_people = range(0, first_test_person(n_train))
    return max(0, min(people.stop, train_people.stop) - max(people.start, train_people.start))


def run_cache(path: str, name: str, names: list[str]) -> Path:
    """One cache of a multi-cache run, which must still be where the run recorded it."""
    if not Path(path).exists():
        raise MissingFileError(
            f"cache {path} (the run's training cache '{name}') does not exist. Pass --data PATH.h5 to name the cache "
            f"(it may have moved) and evaluate it alone, or --dataset NAME for another of the run's caches ({', '.join(names)})."
        )
    return Path(path)


@dataclass
class LabelAdapter:
    """Rewrites a batch of another cache into the label layout the model was trained with."""

    attr_index: np.ndarray | None  # (A_model,) column of the cache for each model attribute, -1 absent

    @classmethod
    def build(cls, model_attrs: tuple[str, ...] | list[str], cache: FaceCache) -> LabelAdapter:
        if list(model_attrs) == list(cache.attribute_names):
            return cls(None)
        idx = np.array([cache.attribute_names.index(a) if a in cache.attribute_names else -1 for a in model_attrs], np.int64)
        return cls(idx)

    def attributes(self, attrs: np.ndarray) -> np.ndarray:
        """(N, A_cache) -> (N, A_model); absent columns are unknown (-1)."""
        if self.attr_index is None:
            return attrs
        out = np.full((len(attrs), len(self.attr_index)), -1, dtype=attrs.dtype)
        ok = self.attr_index >= 0
        out[:, ok] = attrs[:, self.attr_index[ok]]
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.attr_index is None or "attributes" not in batch:
            return batch
        batch = dict(batch)
        batch["attributes"] = torch.from_numpy(self.attributes(batch["attributes"].numpy()))
        return batch


def label_check(tasks, cache: FaceCache, split: str, adapter: LabelAdapter) -> tuple[list, dict[str, str]]:
    """(tasks the split has labels for, {task: why skipped}) for a model's tasks on a cache;
    ConfigError when the split is empty or labels none of them."""
    rows = cache.indices(split)
    if len(rows) == 0:
        raise ConfigError(f"cache {cache.path} has no samples in split '{split}'; choose another --split.")
    keep, skipped = labelled_tasks(tasks, cache, split, adapter)
    if not keep:
        labelled = [k for k in cache.labels if cache.has_label(k)[rows].any()]
        raise ConfigError(
            f"{cache.path} has no labels for any of the model's tasks ({', '.join(t.name for t in tasks)}) in split "
            f"'{split}': {'; '.join(f'{k}: {v}' for k, v in skipped.items())}. It labels: {', '.join(labelled) or 'nothing'}."
        )
    return keep, skipped


def labelled_tasks(tasks, cache: FaceCache, split: str, adapter: LabelAdapter) -> tuple[list, dict[str, str]]:
    """:func:`label_check` without the errors: an empty split or a cache labelling none of the
    tasks gives no task to keep (one cache of a multi-cache run may label only some tasks)."""
    rows = cache.indices(split)
    if len(rows) == 0:
        return [], {t.name: f"no samples in split '{split}' of {cache.path.name}" for t in tasks}
    keep, skipped = [], {}
    for t in tasks:
        if t.label_key not in cache.labels or not cache.has_label(t.label_key)[rows].any():
            skipped[t.name] = f"no '{t.label_key}' labels in split '{split}' of {cache.path.name}"
            continue
        labels = cache.labels[t.label_key][rows]
        why = t.unlabelled_reason(adapter.attributes(labels) if t.label_key == "attributes" else labels)
        if why is not None:
            skipped[t.name] = f"{why} in {cache.path.name}"
            continue
        keep.append(t)
    return keep, skipped


@torch.no_grad()
def predict(model, tasks, cache: FaceCache, split: str, device: torch.device, adapter: LabelAdapter,
            batch_size: int = 128, flip_test: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Run ``model`` over a split and return each task's collected arrays (``Task.collect`` merged).

    The cascade's crop metrics use L_Net's output for every crop (as validation during training);
    its gated, end-to-end behaviour is measured on whole scenes (:mod:`facemtl.reports.scenes`).
    ``flip_test`` also runs every batch mirrored left to right and averages each task's output
    with its mirrored pass mapped back (``Task.unflip``: landmarks swapped and mirrored, the box
    mirrored, the yaw negated); a task without that mapping keeps the plain pass.
    """
    from facemtl.data.loader import CacheLoader, to_device
    from facemtl.engine.steps import input_plan, make_inputs

    plan = input_plan(model, cache)
    sizes = sorted({src for src, _ in plan})
    loader = CacheLoader(cache, split, sizes, batch_size, shuffle=False, in_memory="auto")
    model.eval()
    parts: dict[str, list[dict[str, np.ndarray]]] = {t.name: [] for t in tasks}
    for batch in loader:
        batch = to_device(adapter(batch), device)
        inputs = make_inputs(batch, plan, channels_last=False)
        outputs = model.forward_heads(model.forward_features(*inputs))
        if flip_test:
            outputs = _flip_averaged(model, tasks, inputs, outputs)
        for t in tasks:
            out = outputs[t.name]
            parts[t.name].append(t.collect(out[-1] if isinstance(out, (list, tuple)) else out, batch))
    return {name: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for name, ps in parts.items() if ps}


def _flip_averaged(model, tasks, inputs: list[torch.Tensor], outputs: dict[str, Any]) -> dict[str, Any]:
    """``outputs`` averaged with the model's outputs on the mirrored ``inputs`` (``predict``)."""
    mirrored = model.forward_heads(model.forward_features(*[x.flip(-1) for x in inputs]))
    averaged = dict(outputs)
    for t in tasks:
        out, back = outputs[t.name], mirrored[t.name]
        if not isinstance(out, torch.Tensor):
            continue  # a cascade's list of stage outputs: plain pass
        back = t.unflip(back)
        if back is not None:
            averaged[t.name] = (out + back) / 2
    return averaged
