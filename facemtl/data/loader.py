"""Fast shuffled batches from the HDF5 cache.

Random single-image reads from HDF5 are slow (one chunk decode per image), so the loader never
does them. Two modes, chosen by ``in_memory="auto"``:

- **in memory** (the split's images fit under ``memory_limit_mb``): the split is read once with
  contiguous chunk-sized reads, then every epoch is a true uniform shuffle by fancy indexing in
  RAM.
- **chunk streaming**: each epoch the chunks holding the split are shuffled; consecutive groups
  of ``window_chunks`` chunks (a "window") are read whole (one contiguous read per chunk) and
  shuffled inside the window. DataLoader workers each read whole windows; batching happens in
  the main process, so the batch count per epoch is exact (``len(loader)``) whatever the number
  of workers — which DistributedDataParallel needs.

Under DDP each rank takes its own contiguous share of the epoch's chunk order (padded by
wrapping, like ``DistributedSampler``), so every rank reads different chunks and all ranks see
the same number of batches.

Batches are dicts of CPU tensors: ``images`` maps each requested size to uint8 ``(B, 3, S, S)``
in channels-last memory (a permuted view of the stored NHWC rows: decode to float happens on the
device), each label of :data:`schema.LABELS` as stored, ``index`` the cache rows, and ``present``
the number of labelled samples per label key (computed on the CPU so the training step never
syncs with the device to ask whether a task has labels).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facemtl.data import schema
from facemtl.data.cache import FaceCache
from facemtl.errors import ConfigError

log = logging.getLogger(__name__)

RAM_WINDOW_BYTES = 16 * 2**20  # in memory: the most image bytes gathered in one block


def epoch_order(
    indices: np.ndarray, chunk_rows: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1,
) -> np.ndarray:
    """This rank's rows for one epoch, grouped by chunk (chunk order shuffled when ``shuffle``).

    The concatenated orders of all ranks cover every index exactly once, plus at most
    ``world_size - 1`` wrapped-around repeats so that every rank gets the same count.
    """
    chunks = indices // chunk_rows
    uniq, starts = np.unique(chunks, return_index=True)
    groups = np.split(indices, starts[1:])
    order = np.random.default_rng([seed, epoch]).permutation(len(uniq)) if shuffle else np.arange(len(uniq))
    flat = np.concatenate([groups[i] for i in order]) if len(order) else indices[:0]
    per_rank = math.ceil(len(flat) / world_size) if len(flat) else 0
    if per_rank * world_size > len(flat):
        flat = np.concatenate([flat, flat[: per_rank * world_size - len(flat)]])
    return flat[rank * per_rank:(rank + 1) * per_rank]


def _read_rows(cache: FaceCache, size: int, rows: np.ndarray) -> np.ndarray:
    """Read ``rows`` (sorted, all within a few chunks) with one contiguous read per run of chunks."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    block = cache.read_images(size, lo, hi)
    return block[rows - lo]


class _WindowStream(IterableDataset):
    """Yields shuffled windows ``(rows, {size: uint8 (n,S,S,3)})`` of this rank's epoch order."""

    def __init__(self, cache: FaceCache, order: np.ndarray, sizes: Sequence[int], window_rows: int, seed: int, epoch: int, shuffle: bool):
        self.cache, self.order, self.sizes = cache, order, list(sizes)
        self.window_rows, self.seed, self.epoch, self.shuffle = window_rows, seed, epoch, shuffle

    def windows(self) -> list[np.ndarray]:
        return [self.order[i:i + self.window_rows] for i in range(0, len(self.order), self.window_rows)]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for k, rows in enumerate(self.windows()):
            if k % nw != wid:
                continue
            # Read each chunk-run in sorted order (contiguous), then shuffle within the window.
            sort = np.argsort(rows, kind="stable")
            srows = rows[sort]
            breaks = np.flatnonzero(np.diff(srows // self.cache.chunk_rows) != 0) + 1
            images = {}
            for s in self.sizes:
                parts = [_read_rows(self.cache, s, r) for r in np.split(srows, breaks)]
                images[s] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if self.shuffle:
                perm = np.random.default_rng([self.seed, self.epoch, k]).permutation(len(srows))
            else:
                perm = np.argsort(sort, kind="stable")  # back to the epoch order
            yield srows[perm], {s: torch.from_numpy(np.ascontiguousarray(a[perm])) for s, a in images.items()}


class CacheLoader:
    """Iterate shuffled batches of one split of a cache. Call :meth:`set_epoch` before each epoch."""

    def __init__(
        self,
        cache: FaceCache | str,
        split: str | None = "train",
        sizes: Sequence[int] | None = None,
        batch_size: int = 64,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        in_memory: bool | str = "auto",
        memory_limit_mb: float = 4096,
        window_chunks: int = 8,
        rank: int = 0,
        world_size: int = 1,
        indices: np.ndarray | None = None,
        pin_memory: bool = False,
        labels: dict[str, np.ndarray] | None = None,
    ):
        self.cache = cache if isinstance(cache, FaceCache) else FaceCache(cache)
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
        self.sizes = list(sizes or self.cache.sizes)
        missing = [s for s in self.sizes if s not in self.cache.sizes]
        if missing:
            raise ConfigError(f"cache {self.cache.path} holds sizes {list(self.cache.sizes)}, not {missing}; prepare it with --sizes including them.")
        self.indices = np.sort(np.asarray(indices if indices is not None else self.cache.indices(split)))
        if len(self.indices) == 0:
            raise ConfigError(f"cache {self.cache.path} has no samples in split '{split}'.")
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.num_workers, self.window_chunks, self.pin_memory = num_workers, window_chunks, pin_memory
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        need_mb = len(self.indices) * sum(s * s * 3 for s in self.sizes) / 2**20
        self.in_memory = bool(need_mb <= memory_limit_mb) if in_memory == "auto" else bool(in_memory)
        self._ram: dict[int, np.ndarray] | None = None
        # the cache's labels, or the same rows rewritten into a multi-cache layout (facemtl.data.mixing)
        self._labels = dict(labels if labels is not None else self.cache.labels)
        self._known = {k: ~schema.LABELS[k].is_missing(v) for k, v in self._labels.items()}

    # -- sizing -------------------------------------------------------------------------------
    def samples_per_rank(self) -> int:
        return math.ceil(len(self.indices) / self.world_size)

    def __len__(self) -> int:
        n = self.samples_per_rank()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -- iteration ----------------------------------------------------------------------------
    def _load_ram(self) -> dict[int, np.ndarray]:
        if self._ram is None:
            idx = self.indices
            self._ram = {}
            for s in self.sizes:
                # Contiguous reads of the whole span, chunk-aligned, then keep the split's rows.
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                step = max(self.cache.chunk_rows * 16, 1)
                parts = []
                for a in range(lo, hi, step):
                    b = min(a + step, hi)
                    sel = idx[(idx >= a) & (idx < b)]
                    if len(sel):
                        parts.append(self.cache.read_images(s, a, b)[sel - a])
                self._ram[s] = np.concatenate(parts)
            log.debug("loaded %d images of sizes %s into memory", len(idx), self.sizes)
        return self._ram

    def _batch(self, rows: np.ndarray, images: dict[int, torch.Tensor]) -> dict:
        out: dict = {"images": {s: t.permute(0, 3, 1, 2) for s, t in images.items()}, "index": torch.from_numpy(rows.astype(np.int64))}
        present = {}
        for k, v in self._labels.items():
            out[k] = torch.from_numpy(v[rows])
            present[k] = int(self._known[k][rows].sum())
        out["present"] = present
        if self.pin_memory:
            out["images"] = {s: t.pin_memory() for s, t in out["images"].items()}
        return out

    def _ram_order(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In memory: the epoch's rows in the order they are served (a uniform shuffle of ``order``
        when shuffling) and their positions in the arrays of :meth:`_load_ram`."""
        pos = np.searchsorted(self.indices, order)
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(order))
            order, pos = order[perm], pos[perm]
        return order, pos

    def _windows(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, dict[int, torch.Tensor]]]:
        if self.in_memory:
            ram = self._load_ram()
            order, pos = self._ram_order(order)
            # up to 16 batches per gather, but at most RAM_WINDOW_BYTES: a larger block is a fresh
            # mmap every time (glibc maps blocks over 32 MiB anew), and its page faults made batch
            # 256 at 64 px 2.5-3.5x slower per image than batch 64 (benchmarks/bench_mixed_loader.py)
            row_bytes = sum(s * s * 3 for s in ram)
            step = self.batch_size * max(1, min(16, RAM_WINDOW_BYTES // (self.batch_size * row_bytes)))
            for i in range(0, len(order), step):
                p = pos[i:i + step]
                yield order[i:i + step], {s: torch.from_numpy(a[p]) for s, a in ram.items()}
            return
        stream = _WindowStream(
            self.cache, order, self.sizes, self.window_chunks * self.cache.chunk_rows, self.seed, self.epoch, self.shuffle,
        )
        if self.num_workers > 0:
            dl = DataLoader(stream, batch_size=None, num_workers=self.num_workers, prefetch_factor=2, persistent_workers=False)
            for rows, imgs in dl:  # the DataLoader turned the numpy rows into a tensor
                yield np.asarray(rows), imgs
        else:
            yield from stream

    def __iter__(self) -> Iterator[dict]:
        order = epoch_order(self.indices, self.cache.chunk_rows, self.seed, self.epoch, self.shuffle, self.rank, self.world_size)
        limit = len(self) * self.batch_size
        emitted = 0
        buf_rows: list[np.ndarray] = []
        buf_imgs: list[dict[int, torch.Tensor]] = []
        buffered = 0
        for rows, imgs in self._windows(order):
            buf_rows.append(rows)
            buf_imgs.append(imgs)
            buffered += len(rows)
            while buffered >= self.batch_size and emitted < limit:
                rows_b, imgs_b = self._take(buf_rows, buf_imgs, self.batch_size)
                buffered -= self.batch_size
                emitted += self.batch_size
                yield self._batch(rows_b, imgs_b)
        if buffered and not self.drop_last and emitted < limit:
            rows_b, imgs_b = self._take(buf_rows, buf_imgs, buffered)
            yield self._batch(rows_b, imgs_b)

    @staticmethod
    def _take(buf_rows: list, buf_imgs: list, n: int) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        """Pop the first ``n`` samples from the window buffer (views when they lie in one window)."""
        rows_out, imgs_out, need = [], [], n
        while need:
            r, im = buf_rows[0], buf_imgs[0]
            k = min(need, len(r))
            rows_out.append(r[:k])
            imgs_out.append({s: t[:k] for s, t in im.items()})
            if k == len(r):
                buf_rows.pop(0)
                buf_imgs.pop(0)
            else:
                buf_rows[0] = r[k:]
                buf_imgs[0] = {s: t[k:] for s, t in im.items()}
            need -= k
        if len(rows_out) == 1:
            return rows_out[0], imgs_out[0]
        return np.concatenate(rows_out), {s: torch.cat([d[s] for d in imgs_out]) for s in imgs_out[0]}


def to_device(batch: dict, device: torch.device, non_blocking: bool = True) -> dict:
    """Move a batch to ``device``; images stay uint8 (decode with :func:`images_to_float`)."""
    out = {}
    for k, v in batch.items():
        if k == "images":
            out[k] = {s: t.to(device, non_blocking=non_blocking) for s, t in v.items()}
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=non_blocking)
        else:
            out[k] = v
    return out


def images_to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float in [0, 1] on the images' device (strides kept: the loader's
    batches are channels-last views of NHWC rows; callers pick the memory format they want)."""
    return images.to(dtype).div_(255.0)
