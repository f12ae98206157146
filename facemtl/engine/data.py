"""The data of a run: one cache, or several trained together (``--data a.h5,b.h5``, :mod:`facemtl.data.mixing`).

:class:`RunData` opens the caches, gives the tasks one :class:`~facemtl.tasks.DataInfo` over all of
them, refuses a task that no cache labels (naming the caches), and builds the loaders: the training
loader (a :class:`~facemtl.data.loader.CacheLoader` for one cache, a
:class:`~facemtl.data.mixing.MixedLoader` for several) and one evaluation loader per cache, each
with the input plan of its own cache, so that validation and test are measured on every dataset's
own split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from facemtl.data.cache import FaceCache
from facemtl.data.loader import CacheLoader
from facemtl.data.mixing import MixedLoader, UnionLayout, source_names
from facemtl.engine.steps import input_plan
from facemtl.errors import ConfigError, MissingFileError
from facemtl.utils.options import auto_or_bool

log = logging.getLogger(__name__)


@dataclass
class RunData:
    names: list[str]
    caches: list[FaceCache]
    layout: UnionLayout | None  # None: one cache, read in its own layout

    @staticmethod
    def check_exist(paths: list[str]) -> None:
        """Refuse several caches of which some do not exist (a lone one may be SynthFaces, rendered when missing)."""
        missing = [p for p in paths if not Path(p).exists()]
        if missing and len(paths) > 1:
            raise MissingFileError(
                f"cache(s) {', '.join(missing)} of --data {','.join(paths)} do not exist; prepare each with `facemtl prepare` "
                "(e.g. `facemtl prepare celeba --root ... --out data/celeba.h5`) or drop it from --data."
            )

    @classmethod
    def open(cls, paths: list[str]) -> RunData:
        cls.check_exist(paths)
        caches = [FaceCache(p) for p in paths]
        return cls(source_names(paths), caches, UnionLayout.build(caches) if len(caches) > 1 else None)

    @property
    def multi(self) -> bool:
        return self.layout is not None

    def info(self):
        from facemtl.tasks import DataInfo

        if self.layout is None:
            return DataInfo.from_cache(self.caches[0])
        present = tuple(k for k in self.layout.keys if any(c.has_label(k).any() for c in self.caches))
        return DataInfo(self.layout.attribute_names, self.layout.num_identities, present)

    def describe_caches(self) -> str:
        return ", ".join(f"{n} ({c.path})" for n, c in zip(self.names, self.caches))

    @cached_property
    def labels(self) -> list[dict[str, np.ndarray]]:
        """Every cache's labels in the run's layout (its own labels for a lone cache), built once."""
        if self.layout is None:
            return [self.caches[0].labels]
        return [self.layout.labels_of(i, c) for i, c in enumerate(self.caches)]

    def labelled_by(self, task) -> list[str]:
        """Names of the caches holding labels for ``task`` (an attribute task: its columns)."""
        out = []
        for n, c, labels in zip(self.names, self.caches, self.labels):
            arr = labels.get(task.label_key)
            if arr is None:
                continue
            cols = getattr(task, "columns", None)
            if task.label_key == "attributes" and cols is not None:
                if (arr[:, list(cols)] >= 0).any():
                    out.append(n)
            elif c.has_label(task.label_key).any():
                out.append(n)
        return out

    def check_tasks(self, tasks) -> dict[str, list[str]]:
        """{task: caches labelling it}; a task no cache labels is refused, naming the caches."""
        by_task = {t.name: self.labelled_by(t) for t in tasks}
        if self.multi:
            none = [name for name, srcs in by_task.items() if not srcs]
            if none:
                raise ConfigError(
                    f"task(s) {', '.join(none)} have no labels in any of the run's caches: {self.describe_caches()}; "
                    "add a cache that labels them to --data or drop them from --tasks."
                )
            for name, srcs in by_task.items():
                log.info("task %s: labelled by %s", name, ", ".join(srcs))
        return by_task

    # -- input plans and loaders --------------------------------------------------------------
    def train_plan(self, model) -> list[tuple[int, int]]:
        """(size read, size the model wants) per input for training batches (several caches: the
        mixed loader already delivers each input's size)."""
        if self.layout is None:
            return input_plan(model, self.caches[0])
        return [(size, size) for size, _ in model.input_spec]

    def train_loader(self, cfg, model, dist_info, device) -> CacheLoader | MixedLoader:
        t, d = cfg.train, cfg.data
        kw = dict(drop_last=dist_info.enabled, seed=t.seed, num_workers=d.num_workers, in_memory=_in_memory(cfg),
                  rank=dist_info.rank, world_size=dist_info.world_size, pin_memory=device.type == "cuda")
        if self.layout is None:
            sizes = sorted({src for src, _ in self.train_plan(model)})
            return CacheLoader(self.caches[0], d.train_split, sizes, t.batch_size, shuffle=True, **kw)
        return MixedLoader(self.caches, self.names, [size for size, _ in model.input_spec], t.batch_size, mix=d.mix,
                           mix_by=d.mix_by, split=d.train_split, layout=self.layout, labels=self.labels, **kw)

    def eval_loaders(self, cfg, model, split: str, batch_size: int) -> list[tuple[str, CacheLoader, list[tuple[int, int]]]]:
        """(name, loader, input plan) of ``split`` of every cache that has samples there."""
        out = []
        for i, (name, cache) in enumerate(zip(self.names, self.caches)):
            if not len(cache.indices(split)):
                continue
            plan = input_plan(model, cache)
            loader = CacheLoader(cache, split, sorted({src for src, _ in plan}), batch_size, shuffle=False,
                                 in_memory=_in_memory(cfg), labels=self.labels[i])
            out.append((name, loader, plan))
        if not out and split == cfg.data.val_split:
            raise ConfigError(f"no cache of the run has samples in split '{split}': {self.describe_caches()}.")
        return out


def _in_memory(cfg) -> bool | str:
    return auto_or_bool(cfg.data.in_memory, "data.in_memory")
