"""Writing and reading the facemtl HDF5 cache (layout in :mod:`facemtl.data.schema`).

:class:`CacheWriter` writes into a ``<out>.partial`` file and renames it onto ``<out>`` only
when every row has been written, so a crash never leaves a half-written cache under the
requested name. A ``.partial`` file records which rows are done (``/_done``), so an
interrupted prepare resumes where it stopped (``resume=True``) instead of restarting from 0.

:class:`FaceCache` opens a finished cache read-only, validates it (format tag, schema
version) and keeps every label in memory (labels are small; images stay on disk).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facemtl import __version__
from facemtl.data import schema
from facemtl.errors import ConfigError, DataFormatError, MissingFileError
from facemtl.utils.io import check_writable_target
from facemtl.utils.lock import cache_lock

log = logging.getLogger(__name__)

#: Rows per HDF5 chunk of every image dataset; the loader reads whole chunks.
DEFAULT_CHUNK_ROWS = 64


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def validate_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(s) for s in sizes}))
    if not out or any(s < 8 or s > 1024 for s in out):
        raise ConfigError(f"image sizes must be integers between 8 and 1024, got {list(sizes)}; e.g. --sizes 56,112,224.")
    return out


class CacheWriter:
    """Create a cache of ``num_samples`` rows; fill it with :meth:`write` in any order.

    Use as a context manager. On normal exit the file is finalised and renamed onto ``path``;
    if rows are missing or an exception escapes, the ``.partial`` file is kept when
    ``keep_partial`` (for ``resume``) or deleted otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_samples: int,
        sizes: Sequence[int],
        attribute_names: Sequence[str],
        source: str,
        provenance: dict[str, Any] | None = None,
        force: bool = False,
        resume: bool = False,
        keep_partial: bool = False,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        num_scenes: int = 0,
        scene_size: int = 256,
        max_faces: int = 3,
        compression: str | None = None,
    ):
        if num_samples <= 0:
            raise ConfigError(f"number of images must be positive, got {num_samples}.")
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.num_samples = int(num_samples)
        self.sizes = validate_sizes(sizes)
        self.attribute_names = list(attribute_names)
        self.source = source
        self.provenance = dict(provenance or {})
        self.force, self.resume, self.keep_partial = force, resume, keep_partial
        self.chunk_rows = max(1, min(chunk_rows, self.num_samples))
        self.num_scenes, self.scene_size, self.max_faces = num_scenes, scene_size, max_faces
        self.compression = compression
        self._f: h5py.File | None = None
        self._signature = json.dumps(
            {"n": self.num_samples, "sizes": self.sizes, "attrs": self.attribute_names, "source": source,
             "scenes": [num_scenes, scene_size, max_faces], "prov": self.provenance},
            sort_keys=True, default=str,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "CacheWriter":
        check_writable_target(self.path, force=self.force, what="cache")
        # one writer per shared <out>.partial: InUseError names the other (a writer given a unique
        # temporary file, as lfw_subset's, needs no lock)
        self._lock = cache_lock(self.path).acquire() if self.tmp == partial_path(self.path) else None
        try:
            return self._open()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _open(self) -> "CacheWriter":
        check_writable_target(self.path, force=self.force, what="cache")  # again, under the lock
        if self.tmp.exists() and self.resume:
            f = self._try_reopen()
            if f is not None:
                self._f = f
                log.info("resuming %s: %d of %d rows already written", self.tmp, self.done_rows().sum(), self.num_samples)
                return self
        try:
            if self.tmp.exists():
                self.tmp.unlink()
            self._f = h5py.File(self.tmp, "w")
        except OSError as e:
            raise ConfigError(f"cannot write the cache at {self.path} ({e.strerror or e}); choose a writable path.") from None
        self._create_layout(self._f)
        return self

    def _try_reopen(self) -> h5py.File | None:
        try:
            f = h5py.File(self.tmp, "a")
        except OSError:
            log.warning("cannot reopen %s for resume; starting afresh", self.tmp)
            return None
        if f.attrs.get("_signature") != self._signature:
            log.warning("%s was started with other options; starting afresh", self.tmp)
            f.close()
            return None
        return f

    def _create_layout(self, f: h5py.File) -> None:
        n, a = self.num_samples, len(self.attribute_names)
        f.attrs["_signature"] = self._signature
        for s in self.sizes:
            f.create_dataset(
                f"images/{s}", shape=(n, s, s, 3), dtype="uint8",
                chunks=(self.chunk_rows, s, s, 3), compression=self.compression,
            )
        for key, spec in schema.LABELS.items():
            tail = spec.empty(0, a).shape[1:]
            chunks = (min(n, 4096),) + tail if all(tail) else None  # h5py refuses zero-sized chunk dims
            f.create_dataset(f"labels/{key}", shape=(n,) + tail, dtype=spec.dtype, fillvalue=spec.missing, chunks=chunks)
        f.create_dataset("split", shape=(n,), dtype="int8", fillvalue=0)
        f.create_dataset("image_ids", shape=(n,), dtype=h5py.string_dtype())
        f.create_dataset("_done", shape=(n,), dtype="bool", fillvalue=False)
        if self.num_scenes:
            m, s, k = self.num_scenes, self.scene_size, self.max_faces
            f.create_dataset("scenes/images", shape=(m, s, s, 3), dtype="uint8", chunks=(min(m, 16), s, s, 3))
            f.create_dataset("scenes/boxes", shape=(m, k, 4), dtype="float32", fillvalue=np.nan)
            f.create_dataset("scenes/landmarks", shape=(m, k, 5, 2), dtype="float32", fillvalue=np.nan)
            f.create_dataset("scenes/split", shape=(m,), dtype="int8", fillvalue=2)
            f.create_dataset("scenes/_done", shape=(m,), dtype="bool", fillvalue=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._close(exc_type)
        finally:
            if self._lock is not None:
                self._lock.release()

    def _close(self, exc_type) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        if exc_type is None:
            missing = int((~f["_done"][:]).sum())
            if self.num_scenes:
                missing += int((~f["scenes/_done"][:]).sum())
            if missing:
                f.close()
                self._discard()
                raise DataFormatError(f"cache {self.path}: {missing} rows were never written (internal error).")
            self._finalise(f)
            f.close()
            os.replace(self.tmp, self.path)
            log.info("wrote %s (%d samples)", self.path, self.num_samples)
        else:
            f.close()
            self._discard()

    def _discard(self) -> None:
        if self.keep_partial and self.tmp.exists():
            log.warning("kept %s; rerun the same command with --resume to continue", self.tmp)
        elif self.tmp.exists():
            self.tmp.unlink()

    def _finalise(self, f: h5py.File) -> None:
        del f["_done"]
        if "scenes/_done" in f:
            del f["scenes/_done"]
        del f.attrs["_signature"]
        f.attrs["format"] = schema.FORMAT_TAG
        f.attrs["schema_version"] = schema.SCHEMA_VERSION
        f.attrs["facemtl_version"] = __version__
        f.attrs["source"] = self.source
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        f.attrs["attribute_names"] = json.dumps(self.attribute_names)
        f.attrs["expression_names"] = json.dumps(list(schema.EXPRESSION_NAMES))
        f.attrs["landmark_names"] = json.dumps(list(schema.LANDMARK_NAMES))
        f.attrs["provenance"] = json.dumps(self.provenance, default=str)

    # -- filling ----------------------------------------------------------------------------
    def done_rows(self) -> np.ndarray:
        assert self._f is not None
        return self._f["_done"][:]

    def done_scenes(self) -> np.ndarray:
        assert self._f is not None
        return self._f["scenes/_done"][:] if self.num_scenes else np.zeros(0, bool)

    def add_provenance(self, **items: Any) -> None:
        self.provenance.update(items)

    def write(self, start: int, batch: dict[str, Any]) -> None:
        """Write rows ``start .. start+n``. ``batch['images']`` maps every size to (n, S, S, 3) uint8;
        label keys follow :data:`schema.LABELS` (absent keys stay "missing"); ``split`` (n,) and
        ``image_ids`` (n,) are optional."""
        f = self._f
        assert f is not None, "use CacheWriter as a context manager"
        images = batch["images"]
        n = len(next(iter(images.values())))
        stop = start + n
        if start < 0 or stop > self.num_samples:
            raise ValueError(f"rows {start}:{stop} outside 0:{self.num_samples}")
        for s in self.sizes:
            arr = np.asarray(images[s])
            if arr.shape != (n, s, s, 3) or arr.dtype != np.uint8:
                raise ValueError(f"images[{s}] must be uint8 ({n}, {s}, {s}, 3), got {arr.dtype} {arr.shape}")
            f[f"images/{s}"][start:stop] = arr
        for key, spec in schema.LABELS.items():
            if key in batch and batch[key] is not None:
                f[f"labels/{key}"][start:stop] = np.asarray(batch[key], dtype=spec.dtype)
        if "split" in batch:
            f["split"][start:stop] = np.asarray(batch["split"], dtype=np.int8)
        if "image_ids" in batch:
            f["image_ids"][start:stop] = [str(x) for x in batch["image_ids"]]
        f["_done"][start:stop] = True

    def write_scenes(self, start: int, batch: dict[str, Any]) -> None:
        f = self._f
        assert f is not None and self.num_scenes, "cache was created without scenes"
        n = len(batch["images"])
        f["scenes/images"][start:start + n] = np.asarray(batch["images"], dtype=np.uint8)
        f["scenes/boxes"][start:start + n] = np.asarray(batch["boxes"], dtype=np.float32)
        f["scenes/landmarks"][start:start + n] = np.asarray(batch["landmarks"], dtype=np.float32)
        if "split" in batch:
            f["scenes/split"][start:start + n] = np.asarray(batch["split"], dtype=np.int8)
        f["scenes/_done"][start:start + n] = True


class FaceCache:
    """A finished cache, opened read-only. Labels are loaded into memory; images are read on demand.

    Picklable (the h5py handle is reopened lazily in each process), so DataLoader workers can use it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            hint = " (an unfinished prepare left a .partial file: rerun prepare with --resume)" if partial_path(self.path).exists() else ""
            raise MissingFileError(f"cache {self.path} does not exist{hint}; create it with `facemtl prepare`.")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise DataFormatError(f"{self.path} is not a readable HDF5 file ({e}); prepare it again with `facemtl prepare`.") from None
        with f:
            if f.attrs.get("format") != schema.FORMAT_TAG:
                raise DataFormatError(f"{self.path} is an HDF5 file but not a facemtl cache (no format tag); create one with `facemtl prepare`.")
            version = int(f.attrs.get("schema_version", -1))
            if version > schema.SCHEMA_VERSION:
                raise DataFormatError(
                    f"{self.path} has cache schema {version}, newer than this facemtl ({schema.SCHEMA_VERSION}); upgrade facemtl."
                )
            try:
                self.attrs = {k: f.attrs[k] for k in f.attrs}
                self.attribute_names: list[str] = json.loads(f.attrs["attribute_names"])
                self.provenance: dict[str, Any] = json.loads(f.attrs.get("provenance", "{}"))
                self.sizes = tuple(sorted(int(s) for s in f["images"]))
                self.num_samples = int(f["split"].shape[0])
                self.split = f["split"][:]
                self.labels = {k: f[f"labels/{k}"][:] for k in schema.LABELS if f"labels/{k}" in f}
                self.chunk_rows = int(f[f"images/{self.sizes[0]}"].chunks[0]) if self.sizes else 1
                self.num_scenes = int(f["scenes/images"].shape[0]) if "scenes/images" in f else 0
            except (KeyError, ValueError) as e:
                raise DataFormatError(f"{self.path} is a damaged facemtl cache ({e}); prepare it again.") from None
        self.source = str(self.attrs.get("source", "unknown"))
        self._f: h5py.File | None = None

    # -- pickling for DataLoader workers -----------------------------------------------------
    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_f"] = None
        return d

    @property
    def h5(self) -> h5py.File:
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    # -- queries ----------------------------------------------------------------------------
    def indices(self, split: str | None) -> np.ndarray:
        if split in (None, "all"):
            return np.arange(self.num_samples)
        if split not in schema.SPLITS:
            raise ConfigError(f"Invalid split '{split}'. Use train, val, test or all.")
        return np.flatnonzero(self.split == schema.SPLITS[split])

    def has_label(self, key: str) -> np.ndarray:
        """Boolean (N,): which samples carry label ``key``."""
        if key not in self.labels:
            return np.zeros(self.num_samples, bool)
        return ~schema.LABELS[key].is_missing(self.labels[key])

    def attribute_coverage(self) -> np.ndarray:
        """(A,) fraction of samples with a known value for each attribute."""
        a = self.labels.get("attributes")
        if a is None or a.shape[1] == 0:
            return np.zeros(0)
        return (a >= 0).mean(axis=0)

    def pick_size(self, wanted: int) -> int:
        """The stored size to read for a model input of ``wanted`` pixels: the smallest >= wanted, else the largest."""
        bigger = [s for s in self.sizes if s >= wanted]
        return min(bigger) if bigger else max(self.sizes)

    def read_images(self, size: int, start: int, stop: int) -> np.ndarray:
        if size not in self.sizes:
            raise ConfigError(f"cache {self.path} holds sizes {list(self.sizes)}, not {size}.")
        return self.h5[f"images/{size}"][start:stop]

    def summary(self) -> dict[str, Any]:
        """Everything ``facemtl info`` shows, as plain JSON-able data."""
        counts = {name: int((self.split == code).sum()) for name, code in schema.SPLITS.items()}
        coverage = {k: round(float(self.has_label(k).mean()), 4) for k in self.labels}
        attr_cov = self.attribute_coverage()
        a = self.labels.get("attributes")
        prevalence = {}
        if a is not None and a.size:
            known = a >= 0
            pos = np.where(known, a == 1, False).sum(0)
            prevalence = {n: round(float(p / max(k, 1)), 4) for n, p, k in zip(self.attribute_names, pos, known.sum(0))}
        return {
            "path": str(self.path),
            "source": self.source,
            "schema_version": int(self.attrs.get("schema_version", 0)),
            "facemtl_version": str(self.attrs.get("facemtl_version", "")),
            "created": str(self.attrs.get("created", "")),
            "num_samples": self.num_samples,
            "splits": counts,
            "sizes": list(self.sizes),
            "file_mb": round(self.path.stat().st_size / 2**20, 1),
            "label_coverage": coverage,
            "num_attributes": len(self.attribute_names),
            "attribute_coverage": round(float(attr_cov.mean()), 4) if attr_cov.size else 0.0,
            "attribute_prevalence": prevalence,
            "identities": int(len(np.unique(self.labels["identity"][self.labels["identity"] >= 0]))) if "identity" in self.labels else 0,
            "scenes": self.num_scenes,
            "provenance": self.provenance,
        }
