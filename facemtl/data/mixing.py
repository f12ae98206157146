"""Training on several caches at once: one label layout over all of them and a loader that mixes them.

A run over ``--data celeba.h5,mtfl.h5,fer2013.h5`` reads each cache as it is; nothing is copied.

**One label layout** (:class:`UnionLayout`). Every cache already uses the schema's label keys with
the same missing markers, so a FER2013 sample simply has no landmarks. What differs between
caches is the attribute columns and the identity numbering: the run's attributes are the union of
the caches' attribute *names* (in order of first appearance; a cache without an attribute has it
unknown), and each cache's identities are shifted past the previous cache's, so two datasets'
person 0 are two people. The label arrays of each cache are rewritten into that layout once, in
memory (labels are small; images are never copied).

**The mix** (:func:`mix_weights`), ``--mix``:

- ``proportional`` (default): each source in proportion to its size; an epoch is one pass over
  every source, exactly as if the caches were one;
- ``uniform``: each source equally often;
- ``temperature:T``: in proportion to ``size ** (1 / T)`` (T = 1 is proportional, a large T
  approaches uniform; the multilingual-training recipe for imbalanced sources);
- ``NAME=W,NAME=W``: explicit weights, normalised (names are the caches' file stems).

An epoch draws ``m_i = p_i * N`` samples from source ``i``, with ``N`` the largest total for which
no source is asked for more than it holds (``N = min_i n_i / p_i``; under ``proportional`` every
``m_i = n_i``). So within one epoch every sample of a source is drawn at most once; a source that
the mix draws only partly continues where it stopped at the next epoch (its shuffled order runs
on across epochs, reshuffled after each full pass), so over several epochs every sample is seen.

**Per batch or per sample** (``--mix-by``): ``batch`` (default) makes each batch from one source
(batches of the sources shuffled), so BatchNorm normalises a batch with one dataset's statistics
and a task is absent from whole steps (the strategies solve over the tasks present); ``sample``
interleaves the sources' samples at random, so a batch holds every source in about its mix
proportion and every task has labels in most batches. On SynthFaces stand-ins of CelebA, MTFL and
FER2013 ``batch`` measured clearly better (docs/reports.md).

**Images.** Each model input is read at the size the cache holds (the smallest stored size at
least as large, as for one cache). A source whose stored size differs from the model's input is
resized in the loader (on the CPU, antialiased, back to uint8) so that the batch is one tensor;
prepare every cache with the run's ``--sizes`` to avoid that cost. Caches are RGB; a grey dataset
(FER2013) is stored with three equal channels, so colour needs nothing more.

**Distributed.** Each rank takes its own contiguous share of every source's epoch segment (padded
by wrapping, as ``DistributedSampler`` does), so ranks draw disjoint samples; the per-batch source
composition is a function of (seed, epoch) only, so the mix and the batch count are identical on
every rank.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.data.loader import CacheLoader, epoch_order
from facemtl.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

MIX_BY = ("sample", "batch")
MIX_NAMES = ("proportional", "uniform", "temperature:T", "NAME=W,...")


def source_names(paths: Sequence[str | Path]) -> list[str]:
    """Short unique names of the sources: the file stems (``celeba`` for ``data/celeba.h5``), with
    ``-2``, ``-3`` added where two stems are equal."""
    names: list[str] = []
    for p in paths:
        stem = Path(p).stem or str(p)
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def split_paths(spec: str | Sequence[str]) -> list[str]:
    """``"a.h5,b.h5"`` or a list -> the list of paths (blanks dropped)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [str(s).strip() for s in items if str(s).strip()]


def mix_weights(spec: str, names: Sequence[str], sizes: Sequence[int]) -> np.ndarray:
    """Probabilities of drawing from each source for ``--mix`` (module docstring)."""
    sizes_a = np.asarray(sizes, dtype=np.float64)
    spec = (spec or "proportional").strip()
    if spec == "proportional":
        w = sizes_a.copy()
    elif spec == "uniform":
        w = np.ones(len(names))
    elif spec.startswith("temperature:"):
        try:
            t = float(spec.split(":", 1)[1])
        except ValueError:
            t = float("nan")
        if not (math.isfinite(t) and t > 0):
            raise ConfigError(f"--mix {spec}: the temperature must be a positive number, e.g. temperature:2.")
        w = sizes_a ** (1.0 / t)
    elif "=" in spec:
        w = np.zeros(len(names))
        for part in spec.split(","):
            name, _, val = part.partition("=")
            name = name.strip()
            if name not in names:
                raise UnknownNameError("source", name, list(names))
            try:
                w[names.index(name)] = float(val)
            except ValueError:
                raise ConfigError(f"--mix {spec}: weight {val!r} of '{name}' is not a number.") from None
        if (w < 0).any() or not np.isfinite(w).all():
            raise ConfigError(f"--mix {spec}: weights must be finite and 0 or more.")
        missing = [n for n, x in zip(names, w) if x == 0]
        if missing:
            log.info("--mix %s draws nothing from %s", spec, ", ".join(missing))
    else:
        raise UnknownNameError("mix", spec, list(MIX_NAMES))
    if w.sum() <= 0:
        raise ConfigError(f"--mix {spec} gives every source weight 0; give at least one a positive weight.")
    return w / w.sum()


def epoch_counts(p: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Samples each source gives to one epoch (all ranks together): ``p_i * N`` with the largest
    ``N`` for which none exceeds its source's size."""
    n = np.asarray(sizes, dtype=np.int64)
    live = p > 0
    if not live.any():
        return np.zeros_like(n)
    if np.allclose(p[live], n[live] / n[live].sum()):
        return np.where(live, n, 0)  # proportional: one exact pass over every source
    total = float(np.min(n[live] / p[live]))
    return np.minimum(np.floor(p * total + 1e-9).astype(np.int64), n)


# -- one label layout over the caches ---------------------------------------------------------------
@dataclass
class UnionLayout:
    """Attribute names and identity offsets of a run over several caches (module docstring)."""

    attribute_names: tuple[str, ...]
    identity_offsets: tuple[int, ...]
    num_identities: int
    keys: tuple[str, ...]  # label keys held by at least one cache

    @classmethod
    def build(cls, caches: Sequence[FaceCache]) -> UnionLayout:
        attrs: list[str] = []
        for c in caches:
            attrs += [a for a in c.attribute_names if a not in attrs]
        offsets, total = [], 0
        for c in caches:
            offsets.append(total)
            ids = c.labels.get("identity")
            if ids is not None and ids.size and ids.max() >= 0:
                total += int(ids.max()) + 1
        keys = tuple(k for k in schema.LABELS if any(k in c.labels for c in caches))
        return cls(tuple(attrs), tuple(offsets), total, keys)

    def labels_of(self, i: int, cache: FaceCache) -> dict[str, np.ndarray]:
        """Every label array of cache ``i`` (all its rows) rewritten into this layout."""
        n = cache.num_samples
        out: dict[str, np.ndarray] = {}
        for k in self.keys:
            spec = schema.LABELS[k]
            have = cache.labels.get(k)
            if k == "attributes":
                arr = spec.empty(n, len(self.attribute_names))
                if have is not None:
                    cols = [self.attribute_names.index(a) for a in cache.attribute_names]
                    arr[:, cols] = have
            elif have is None:
                arr = spec.empty(n)
            elif k == "identity":
                arr = np.where(have >= 0, have + self.identity_offsets[i], -1).astype(spec.dtype)
            else:
                arr = have
            out[k] = arr
        return out


# -- the mixed loader ------------------------------------------------------------------------------
def _resize_uint8(t: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> uint8 (B, size, size, 3), antialiased bilinear."""
    x = t.permute(0, 3, 1, 2).float().contiguous()  # float antialiasing on channels-last input is 1.5x slower, same values
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class MixedLoader:
    """Shuffled training batches drawn from several caches by a mix (module docstring).

    ``inputs``: the model's input sizes; batches hold ``images[size]`` for each of them (read at the
    size each cache holds, resized in the loader where it differs), every label in the
    :class:`UnionLayout`, ``index`` (row in its own cache), ``source`` (which cache) and
    ``present``. Call :meth:`set_epoch` before each epoch. ``layout`` and ``labels`` (each cache's
    labels in that layout) are built from the caches when not given.
    """

    def __init__(
        self, caches: Sequence[FaceCache], names: Sequence[str], inputs: Sequence[int], batch_size: int, *,
        mix: str = "proportional", mix_by: str = "batch", split: str = "train", drop_last: bool = False, seed: int = 0,
        num_workers: int = 0, in_memory: bool | str = "auto", memory_limit_mb: float = 4096, rank: int = 0,
        world_size: int = 1, pin_memory: bool = False, layout: UnionLayout | None = None,
        labels: Sequence[dict[str, np.ndarray]] | None = None,
    ):
        if mix_by not in MIX_BY:
            raise UnknownNameError("mix-by", mix_by, list(MIX_BY))
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
        self.caches, self.names, self.inputs = list(caches), list(names), list(inputs)
        self.layout = layout or UnionLayout.build(self.caches)
        self.batch_size, self.mix_by, self.drop_last, self.seed = batch_size, mix_by, drop_last, seed
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.epoch = 0
        # Every source's labels in the layout, end to end in one array per key (sources' rows from
        # ``_label_start[i]``), so that a batch gathers each label once whatever its sources; the
        # sources' loaders get views of their part.
        per = list(labels) if labels is not None else [self.layout.labels_of(i, c) for i, c in enumerate(self.caches)]
        self._label_start = np.cumsum([0] + [c.num_samples for c in self.caches])[:-1]
        self._labels = {k: np.concatenate([d[k] for d in per]) for k in self.layout.keys}
        # (rows, keys): a sample has label k; one reduction per batch gives every key's `present`
        self._known = np.stack([~schema.LABELS[k].is_missing(v) for k, v in self._labels.items()], axis=1) \
            if self._labels else np.zeros((int(sum(c.num_samples for c in self.caches)), 0), bool)
        self.loaders: list[CacheLoader] = []
        self.stored: list[list[int]] = []  # per source, the stored size read for each model input
        for i, c in enumerate(self.caches):
            stored = [c.pick_size(s) for s in self.inputs]
            resized = sorted({(a, b) for a, b in zip(stored, self.inputs) if a != b})
            if resized:
                log.warning("%s has no %s px images: they are resized in the loader from %s px on the CPU (prepare it with "
                            "--sizes %s to avoid the cost)", c.path, ",".join(str(b) for _, b in resized),
                            ",".join(str(a) for a, _ in resized), ",".join(map(str, sorted(set(self.inputs)))))
            self.stored.append(stored)
            try:
                self.loaders.append(CacheLoader(
                    c, split, sorted(set(stored)), batch_size, shuffle=True, seed=seed + 7919 * i, num_workers=num_workers,
                    in_memory=in_memory, memory_limit_mb=memory_limit_mb,
                    labels={k: v[self._label_start[i]:self._label_start[i] + c.num_samples] for k, v in self._labels.items()},
                ))
            except ConfigError as e:
                raise ConfigError(f"source '{names[i]}': {e}") from None
        self.sizes = [len(ld.indices) for ld in self.loaders]
        self.p = mix_weights(mix, self.names, self.sizes)
        self.counts = epoch_counts(self.p, self.sizes)  # per epoch, all ranks together
        self.per_rank = [math.ceil(int(m) / world_size) for m in self.counts]
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # per source, the last pass order derived

    # -- sizing -------------------------------------------------------------------------------
    def _batch_plan(self) -> list[np.ndarray]:
        """The epoch's batches, each as the number of samples it takes from every source."""
        k, b = len(self.caches), self.batch_size
        rng = np.random.default_rng([self.seed, self.epoch, 0x313])
        if self.mix_by == "sample":
            seq = rng.permutation(np.repeat(np.arange(k), self.per_rank))
            n = len(seq) // b if self.drop_last else math.ceil(len(seq) / b)
            return [np.bincount(seq[j * b:(j + 1) * b], minlength=k) for j in range(n)]
        plan = []
        for i, m in enumerate(self.per_rank):
            full, rest = divmod(m, b)
            plan += [np.eye(k, dtype=np.int64)[i] * b] * full
            if rest and not self.drop_last:
                plan.append(np.eye(k, dtype=np.int64)[i] * rest)
        return [plan[j] for j in rng.permutation(len(plan))]

    def __len__(self) -> int:
        """Batches per epoch (the length of :meth:`_batch_plan`, which does not depend on the
        epoch), counted without drawing the plan: the engine asks at every step."""
        b = self.batch_size
        if self.mix_by == "sample":
            total = sum(self.per_rank)
            return total // b if self.drop_last else math.ceil(total / b)
        return sum(m // b if self.drop_last else math.ceil(m / b) for m in self.per_rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pass_order(self, i: int, p: int) -> np.ndarray:
        """Source ``i``'s shuffled order for its ``p``-th pass. The rows that an epoch spanning two
        passes took from the end of pass ``p - 1`` go to the end of pass ``p``, so that no epoch
        draws a sample twice."""
        ld, m = self.loaders[i], int(self.counts[i])
        n = len(ld.indices)
        q, order = self._orders.get(i, (-1, None))
        if q > p:  # an earlier pass than the one remembered: derive it from the start again
            q, order = -1, None
        while q < p:
            q += 1
            base = epoch_order(ld.indices, ld.cache.chunk_rows, ld.seed, q, True)
            crossing = (q * n) // m  # the epoch that holds the boundary between passes q - 1 and q
            if q > 0 and crossing * m < q * n:
                tail = order[crossing * m - (q - 1) * n:]
                moved = np.isin(base, tail)
                base = np.concatenate([base[~moved], base[moved]])
            order = base
        self._orders[i] = (p, order)
        return order

    def epoch_rows(self, i: int) -> np.ndarray:
        """This rank's rows of source ``i`` for the current epoch (grouped by chunk)."""
        ld, m = self.loaders[i], int(self.counts[i])
        n = len(ld.indices)
        if m == 0:
            return ld.indices[:0]
        start = self.epoch * m  # position in the source's endless stream of shuffled passes
        first, last = start // n, (start + m - 1) // n
        stream = np.concatenate([self._pass_order(i, p) for p in range(first, last + 1)])
        seg = stream[start - first * n:start - first * n + m]
        per = self.per_rank[i]
        if per * self.world_size > m:
            seg = np.concatenate([seg, np.resize(seg, per * self.world_size - m)])
        return seg[self.rank * per:(self.rank + 1) * per]

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        sources: list[_InMemory | _Streamed] = []
        for i, ld in enumerate(self.loaders):
            ld.set_epoch(self.epoch)
            rows = self.epoch_rows(i)
            sources.append(_InMemory(ld, rows) if ld.in_memory else _Streamed(ld, rows))
        for take in self._batch_plan():
            yield self._batch([(i, *sources[i].take(int(n))) for i, n in enumerate(take) if n])

    def _images(self, part: tuple, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """A part's images for model input ``j``: uint8 (n, S, S, 3), written into ``out`` if given."""
        i, _rows, got = part
        stored, size = self.stored[i][j], self.inputs[j]
        if isinstance(got, tuple):  # in memory: (the source's arrays, positions in them)
            ram, pos = got
            if stored == size and out is not None:
                np.take(ram[stored], pos, axis=0, out=out.numpy(), mode="clip")  # straight into the batch: one copy
                return out
            t = torch.from_numpy(ram[stored][pos])
        else:  # streamed: the pieces of one or two windows
            t = torch.cat([g[stored] for g in got]) if len(got) > 1 else got[0][stored]
        if stored != size:
            t = _resize_uint8(t, size)
        return out.copy_(t) if out is not None else t

    def _pieces(self, part: tuple, j: int) -> list[torch.Tensor]:
        """A streamed part's images for model input ``j``, one tensor per window piece."""
        i, _rows, got = part
        stored, size = self.stored[i][j], self.inputs[j]
        return [g[stored] if stored == size else _resize_uint8(g[stored], size) for g in got]

    def _batch(self, parts: list[tuple[int, np.ndarray, list[dict[int, torch.Tensor]] | tuple[dict[int, np.ndarray], np.ndarray]]]) -> dict:
        """One batch from ``(source, rows, images)`` parts, in that order (``images``: views of the
        streamed windows the rows lie in, or an in-memory source's arrays and the rows' positions).

        Each image is copied once into the batch and each label gathered once from the concatenated
        layout arrays, so a batch from three sources costs about what a batch from one does (the
        former per-source gather, then ``torch.cat``, took 2.5x a single cache's time in memory)."""
        lens = [len(rows) for _, rows, _ in parts]
        out: dict = {"images": {}}
        for size in dict.fromkeys(self.inputs):
            j = self.inputs.index(size)
            if len(parts) == 1:
                t = self._images(parts[0], j)
            elif not any(isinstance(got, tuple) for _, _, got in parts):  # streamed windows: one C++ call
                t = torch.cat([x for part in parts for x in self._pieces(part, j)])
            else:  # gathered from memory straight into the batch
                t = torch.empty((sum(lens), size, size, 3), dtype=torch.uint8)
                a = 0
                for part, n in zip(parts, lens):
                    self._images(part, j, t[a:a + n])
                    a += n
            out["images"][size] = t.permute(0, 3, 1, 2)
        src = np.array([i for i, _, _ in parts], dtype=np.int64)
        rows = np.concatenate([r for _, r, _ in parts]) if len(parts) > 1 else parts[0][1]
        at = rows + np.repeat(self._label_start[src], lens)  # rows in the concatenated label arrays
        for k, v in self._labels.items():
            out[k] = torch.from_numpy(v[at])
        out["index"] = torch.from_numpy(rows.astype(np.int64))
        out["source"] = torch.from_numpy(np.repeat(src, lens))
        out["present"] = dict(zip(self._labels, self._known[at].sum(axis=0).tolist()))
        if self.pin_memory:
            out["images"] = {s: t.pin_memory() for s, t in out["images"].items()}
        return out


class _InMemory:
    """A source held in memory, served in its loader's shuffled order; its images are gathered
    into the batch only when the batch is made."""

    def __init__(self, ld: CacheLoader, rows: np.ndarray):
        self.ram = ld._load_ram()
        self.rows, self.pos = ld._ram_order(rows)
        self.at = 0

    def take(self, n: int) -> tuple[np.ndarray, tuple[dict[int, np.ndarray], np.ndarray]]:
        a, self.at = self.at, self.at + n
        return self.rows[a:self.at], (self.ram, self.pos[a:self.at])


class _Streamed:
    """A chunk-streamed source: its loader's shuffled windows, cut into the parts a batch takes."""

    def __init__(self, ld: CacheLoader, rows: np.ndarray):
        self.windows = ld._windows(rows)
        self.rows: list[np.ndarray] = []
        self.imgs: list[dict[int, torch.Tensor]] = []

    def take(self, n: int) -> tuple[np.ndarray, list[dict[int, torch.Tensor]]]:
        """The next ``n`` rows and their images as views of the windows they lie in (copied once,
        into the batch)."""
        rows, imgs = [], []
        while n:
            if not self.rows:
                r, im = next(self.windows)
                self.rows.append(r)
                self.imgs.append(im)
            r, im = self.rows[0], self.imgs[0]
            k = min(n, len(r))
            rows.append(r[:k])
            imgs.append({s: t[:k] for s, t in im.items()})
            if k == len(r):
                self.rows.pop(0)
                self.imgs.pop(0)
            else:
                self.rows[0], self.imgs[0] = r[k:], {s: t[k:] for s, t in im.items()}
            n -= k
        return (np.concatenate(rows) if len(rows) > 1 else rows[0]), imgs
