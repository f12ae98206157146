"""Writing and reading the facemtl HDF5 cache (layout in :mod:`facemtl.data.schema`).

:class:`CacheWriter` never writes HDF5 until every row is there. Rows arrive in blocks; each
block is saved as one small ``.npz`` *shard* in the folder ``<out>.partial/`` (written under a
temporary name, then renamed, so a shard is either complete or absent, whatever kills the
process). When every row is done the shards are assembled into ``<out>.partial/assembling.h5``,
which is renamed onto ``<out>`` and the folder removed. So a crash (Ctrl-C, SIGTERM, SIGKILL,
the OOM killer, a full disk) never leaves a file under the requested name, and an interrupted
prepare resumes from its last complete block (``resume=True``). Layout: docs/data-format.md.

:class:`FaceCache` opens a finished cache read-only, validates its structure once
(:func:`validate_cache`) and keeps every label in memory (labels are small; images stay on disk).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import traceback
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facemtl import __version__
from facemtl.data import schema
from facemtl.errors import ConfigError, DataFormatError, DiskFullError, MissingFileError
from facemtl.utils.io import check_writable_target
from facemtl.utils.lock import cache_lock

log = logging.getLogger(__name__)

#: Rows per HDF5 chunk of every image dataset; the loader reads whole chunks.
DEFAULT_CHUNK_ROWS = 64
#: Version of the ``.partial`` folder layout (``layout.json``); another version starts afresh.
PARTIAL_VERSION = 1
_SHARD = re.compile(r"^(rows|scenes)-(\d{9})-(\d{9})\.npz$")
_ASSEMBLING = "assembling.h5"


def partial_path(path: Path) -> Path:
    """The folder of shards an unfinished prepare of ``path`` keeps (``<path>.partial``)."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def validate_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(s) for s in sizes}))
    if not out or any(s < 8 or s > 1024 for s in out):
        raise ConfigError(f"image sizes must be integers between 8 and 1024, got {list(sizes)}; e.g. --sizes 56,112,224.")
    return out


def is_disk_full(e: BaseException) -> bool:
    """True for "no space left", "quota exceeded" or "file too large", also when h5py says it only in words."""
    if not isinstance(e, OSError):
        return False
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or _says_disk_full(str(e))


def _says_disk_full(text: str) -> bool:
    return any(k in text for k in ("No space left", "errno = 28", "Disk quota exceeded", "File too large", "errno = 27"))


def _full_reason(e: BaseException) -> str:
    text = str(e)
    if getattr(e, "errno", None) == errno.EFBIG or "File too large" in text or "errno = 27" in text:
        return "file too large (a file-size limit: see `ulimit -f`, or the filesystem's)"
    if getattr(e, "errno", None) == errno.EDQUOT or "quota" in text:
        return "disk quota exceeded"
    return "disk full"


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.1f} MB"


def shard_rows(partial: Path) -> int:
    """How many rows the complete shards in ``partial`` hold (0 when there is no such folder)."""
    if not Path(partial).is_dir():
        return 0
    return sum(int(m[3]) - int(m[2]) for p in Path(partial).iterdir() if (m := _SHARD.match(p.name)) and m[1] == "rows")


class CacheWriter:
    """Create a cache of ``num_samples`` rows; fill it with :meth:`write` in any order.

    Use as a context manager. On normal exit the shards are assembled and the cache renamed onto
    ``path``; if rows are missing or an exception escapes, the ``.partial`` folder is kept when
    ``keep_partial`` (for ``resume``) or deleted otherwise. ``partial`` overrides the folder of
    shards (default ``<path>.partial``).
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
        partial: str | os.PathLike | None = None,
    ):
        if num_samples <= 0:
            raise ConfigError(f"number of images must be positive, got {num_samples}.")
        self.path = Path(path)
        self.tmp = Path(partial) if partial is not None else partial_path(self.path)
        self.num_samples = int(num_samples)
        self.sizes = validate_sizes(sizes)
        self.attribute_names = list(attribute_names)
        self.source = source
        self.provenance = dict(provenance or {})
        self.force, self.resume, self.keep_partial = force, resume, keep_partial
        self.chunk_rows = max(1, min(chunk_rows, self.num_samples))
        self.num_scenes, self.scene_size, self.max_faces = num_scenes, scene_size, max_faces
        self.compression = compression
        self._open = False
        self._done = np.zeros(self.num_samples, bool)
        self._done_scenes = np.zeros(self.num_scenes, bool)
        self._drop = np.zeros(self.num_samples, bool)
        self._signature = json.dumps(
            {"n": self.num_samples, "sizes": self.sizes, "attrs": self.attribute_names, "source": source,
             "scenes": [num_scenes, scene_size, max_faces], "prov": self.provenance},
            sort_keys=True, default=str,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> CacheWriter:
        # one writer per shared <out>.partial: InUseError names the other (a writer given a unique
        # temporary folder, as lfw_subset's, needs no lock)
        self._lock = cache_lock(self.path).acquire() if self.tmp == partial_path(self.path) else None
        try:
            return self._start()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def _start(self) -> CacheWriter:
        check_writable_target(self.path, force=self.force, what="cache")  # again, under the lock
        if not (self.resume and self._reopen()):
            self._clear()
            self._check_space()
            try:
                self.tmp.mkdir(parents=True)
                _write_json(self.tmp / "layout.json", {"version": PARTIAL_VERSION, "signature": self._signature})
            except OSError as e:
                self._clear()
                if is_disk_full(e):
                    raise DiskFullError(f"{_full_reason(e)}: cannot start the cache in {self.tmp}; free some space.") from None
                raise ConfigError(f"cannot write the cache at {self.path} ({e.strerror or e}); choose a writable path.") from None
        else:
            self._check_space()
        self._open = True
        return self

    def _clear(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp)
        elif self.tmp.exists():
            self.tmp.unlink()  # an HDF5 .partial file of facemtl <= 0.x, which a kill could corrupt

    def _reopen(self) -> bool:
        """Take over the complete shards of an interrupted prepare; False when there is nothing to resume."""
        if not self.tmp.exists():
            return False
        if not self.tmp.is_dir():
            log.warning("%s was written by an older facemtl and cannot be resumed; starting afresh", self.tmp)
            return False
        try:
            layout = json.loads((self.tmp / "layout.json").read_text())
        except (OSError, ValueError):
            log.warning("%s has no readable layout.json; starting afresh", self.tmp)
            return False
        if layout.get("version") != PARTIAL_VERSION or layout.get("signature") != self._signature:
            log.warning("%s was started with other options; starting afresh", self.tmp)
            return False
        for p in sorted(self.tmp.iterdir()):
            m = _SHARD.match(p.name)
            if p.name == "layout.json":
                continue
            if m is None:  # a shard being written when the process died, or an unfinished assembly
                p.unlink()
                continue
            a, b = int(m[2]), int(m[3])
            done = self._done if m[1] == "rows" else self._done_scenes
            if b > len(done) or a >= b or done[a:b].any() or not _readable_shard(p):
                log.warning("discarding shard %s (damaged or overlapping); its rows are written again", p.name)
                p.unlink()
                continue
            done[a:b] = True
        log.info("resuming %s: %d of %d rows already written", self.tmp, self._done.sum(), self.num_samples)
        return True

    def _row_bytes(self) -> int:
        a = len(self.attribute_names)
        labels = a + 40 + 16 + 1 + 8 + 1 + 12 + 1 + 1 + 32  # attributes, landmarks, bbox, ..., split, image id
        return sum(3 * s * s for s in self.sizes) + labels

    def _check_space(self, final_only: bool = False) -> None:
        """Refuse to start when the shards still to write plus the assembled cache cannot fit."""
        scene = 3 * self.scene_size**2 + self.max_faces * 56
        todo = int((~self._done).sum()) * self._row_bytes() + int((~self._done_scenes).sum()) * scene
        todo = 0 if final_only else todo
        final = self.num_samples * self._row_bytes() + self.num_scenes * scene
        need = todo + final
        where = self.tmp.parent if str(self.tmp.parent) else Path(".")
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return
        if need > free:
            raise DiskFullError(
                f"not enough free space in {where.resolve()}: this cache needs about {_gb(need)} "
                f"({_gb(todo)} of blocks still to write in {self.tmp.name}, then {_gb(final)} for {self.path.name}), "
                f"{_gb(free)} is free; free some space or choose another --out."
            )

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._finish(exc_type, exc)
        finally:
            self._release()

    def _finish(self, exc_type, exc) -> None:
        if not self._open:
            return
        self._open = False
        if exc_type is None:
            missing = int((~self._done).sum()) + int((~self._done_scenes).sum())
            if missing:
                self.keep_partial = False
                self._discard()
                raise DataFormatError(f"cache {self.path}: {missing} rows were never written (internal error).")
            self._assemble()
            log.info("wrote %s (%d samples)", self.path, self.num_samples - int(self._drop.sum()))
        else:
            self._discard(quiet=isinstance(exc, DiskFullError))

    def _discard(self, quiet: bool = False) -> None:
        if self.keep_partial and self.tmp.is_dir() and self._done.any():
            if not quiet:
                log.warning("kept %s (%d of %d rows); rerun the same command with --resume to continue",
                            self.tmp, self._done.sum(), self.num_samples)
        else:
            self._clear()

    def _assemble(self) -> None:
        """Copy every shard, in row order, into one HDF5 file and rename it onto ``path``.

        The HDF5 file is written by a child process: on a full disk HDF5 fails late (when its
        caches are flushed at close), prints a traceback per buffer and may crash the process
        (exit 139). The child's stderr goes to a log that only decides the one-line error here."""
        tmp, log_path = self.tmp / _ASSEMBLING, self.tmp / ".assembling.log"
        final = self.num_samples * self._row_bytes()
        try:
            self._check_space(final_only=True)
            if mp.current_process().daemon:  # a daemon may not start processes: write in place
                self._assemble_into(tmp)
            else:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                proc = ctx.Process(target=_assemble_child, args=(self, tmp, log_path))
                proc.start()
                try:
                    proc.join()
                finally:
                    if proc.is_alive():
                        proc.terminate()
                        proc.join()
                if proc.exitcode != 0:
                    text = log_path.read_text(errors="replace") if log_path.exists() else ""
                    if _says_disk_full(text):
                        raise OSError(text)
                    raise RuntimeError(f"assembling {self.path} failed (exit code {proc.exitcode}):\n{text[-4000:]}")
            os.replace(tmp, self.path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            log_path.unlink(missing_ok=True)
            full = is_disk_full(e) or isinstance(e, DiskFullError)
            self._discard(quiet=full)
            if isinstance(e, DiskFullError):
                raise
            if full:
                raise DiskFullError(
                    f"{_full_reason(e)} while writing {self.path} (it needs about {_gb(final)}); "
                    f"the finished blocks are kept in {self.tmp}: free some space and rerun the same command with --resume."
                ) from None
            raise
        shutil.rmtree(self.tmp)

    def _assemble_into(self, tmp: Path) -> None:
        keep = np.flatnonzero(~self._drop)
        new_row = np.full(self.num_samples, -1, np.int64)
        new_row[keep] = np.arange(len(keep))
        shards = sorted((m[1], int(m[2]), int(m[3]), p) for p in self.tmp.iterdir() if (m := _SHARD.match(p.name)))
        with h5py.File(tmp, "w") as f:
            self._create_layout(f, len(keep))
            for kind, a, b, p in shards:
                with np.load(p, allow_pickle=False) as z:
                    if kind == "rows":
                        self._copy_rows(f, z, a, b, new_row)
                    else:
                        for key in ("images", "boxes", "landmarks", "split"):
                            f[f"scenes/{key}"][a:b] = z[key]
            self._finalise(f)

    def _copy_rows(self, f: h5py.File, z: Any, a: int, b: int, new_row: np.ndarray) -> None:
        take = np.flatnonzero(new_row[a:b] >= 0)
        if not len(take):
            return
        dst = slice(int(new_row[a + take[0]]), int(new_row[a + take[-1]]) + 1)  # kept rows stay contiguous
        whole = len(take) == b - a
        pick = (lambda arr: arr) if whole else (lambda arr: arr[take])
        for s in self.sizes:
            f[f"images/{s}"][dst] = pick(z[f"images_{s}"])
        for key in schema.LABELS:
            if f"labels_{key}" in z.files:
                f[f"labels/{key}"][dst] = pick(z[f"labels_{key}"])
        if "split" in z.files:
            f["split"][dst] = pick(z["split"])
        if "image_ids" in z.files:
            f["image_ids"][dst] = [str(x) for x in pick(z["image_ids"])]

    def _create_layout(self, f: h5py.File, n: int) -> None:
        a = len(self.attribute_names)
        chunk = max(1, min(self.chunk_rows, n))
        for s in self.sizes:
            f.create_dataset(
                f"images/{s}", shape=(n, s, s, 3), dtype="uint8",
                chunks=(chunk, s, s, 3), compression=self.compression,
            )
        for key, spec in schema.LABELS.items():
            tail = spec.empty(0, a).shape[1:]
            chunks = (min(n, 4096),) + tail if all(tail) else None  # h5py refuses zero-sized chunk dims
            f.create_dataset(f"labels/{key}", shape=(n,) + tail, dtype=spec.dtype, fillvalue=spec.missing, chunks=chunks)
        f.create_dataset("split", shape=(n,), dtype="int8", fillvalue=0)
        f.create_dataset("image_ids", shape=(n,), dtype=h5py.string_dtype())
        if self.num_scenes:
            m, s, k = self.num_scenes, self.scene_size, self.max_faces
            f.create_dataset("scenes/images", shape=(m, s, s, 3), dtype="uint8", chunks=(min(m, 16), s, s, 3))
            f.create_dataset("scenes/boxes", shape=(m, k, 4), dtype="float32", fillvalue=np.nan)
            f.create_dataset("scenes/landmarks", shape=(m, k, 5, 2), dtype="float32", fillvalue=np.nan)
            f.create_dataset("scenes/split", shape=(m,), dtype="int8", fillvalue=2)

    def _finalise(self, f: h5py.File) -> None:
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
        return self._done.copy()

    def done_scenes(self) -> np.ndarray:
        return self._done_scenes.copy()

    def add_provenance(self, **items: Any) -> None:
        self.provenance.update(items)

    def drop_rows(self, rows: Sequence[int] | np.ndarray) -> None:
        """Leave ``rows`` out of the finished cache (images that failed to decode, with ``--skip-bad``)."""
        self._drop[np.asarray(rows, dtype=np.int64)] = True

    def _save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """One shard, atomically: a temporary name in the same folder, then a rename."""
        tmp = self.tmp / f".{name}.tmp"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, self.tmp / name)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise DiskFullError(
                    f"{_full_reason(e)} while writing {self.tmp / name} (a block of about {_gb(sum(a.nbytes for a in arrays.values()))}); "
                    f"the {int(self._done.sum())} rows finished so far are kept in {self.tmp}: free some space and "
                    "rerun the same command with --resume."
                ) from None
            raise

    def write(self, start: int, batch: dict[str, Any]) -> None:
        """Write rows ``start .. start+n``. ``batch['images']`` maps every size to (n, S, S, 3) uint8;
        label keys follow :data:`schema.LABELS` (absent keys stay "missing"); ``split`` (n,) and
        ``image_ids`` (n,) are optional."""
        assert self._open, "use CacheWriter as a context manager"
        images = batch["images"]
        n = len(next(iter(images.values())))
        stop = start + n
        if start < 0 or stop > self.num_samples or n == 0:
            raise ValueError(f"rows {start}:{stop} outside 0:{self.num_samples}")
        arrays: dict[str, np.ndarray] = {}
        for s in self.sizes:
            arr = np.asarray(images[s])
            if arr.shape != (n, s, s, 3) or arr.dtype != np.uint8:
                raise ValueError(f"images[{s}] must be uint8 ({n}, {s}, {s}, 3), got {arr.dtype} {arr.shape}")
            arrays[f"images_{s}"] = arr
        for key, spec in schema.LABELS.items():
            if key in batch and batch[key] is not None:
                arr = np.asarray(batch[key], dtype=spec.dtype)
                want = spec.empty(n, len(self.attribute_names)).shape
                if arr.shape != want:
                    raise ValueError(f"label {key} must have shape {want}, got {arr.shape}")
                arrays[f"labels_{key}"] = arr
        if "split" in batch:
            arrays["split"] = np.asarray(batch["split"], dtype=np.int8).reshape(n)
        if "image_ids" in batch:
            arrays["image_ids"] = np.array([str(x) for x in batch["image_ids"]], dtype=str).reshape(n)
        self._save(f"rows-{start:09d}-{stop:09d}.npz", arrays)
        self._done[start:stop] = True

    def write_scenes(self, start: int, batch: dict[str, Any]) -> None:
        assert self._open and self.num_scenes, "cache was created without scenes"
        n = len(batch["images"])
        arrays = {
            "images": np.asarray(batch["images"], dtype=np.uint8),
            "boxes": np.asarray(batch["boxes"], dtype=np.float32),
            "landmarks": np.asarray(batch["landmarks"], dtype=np.float32),
            "split": np.asarray(batch.get("split", np.full(n, schema.SPLITS["test"])), dtype=np.int8),
        }
        self._save(f"scenes-{start:09d}-{start + n:09d}.npz", arrays)
        self._done_scenes[start:start + n] = True


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _assemble_child(writer: CacheWriter, tmp: Path, log_path: Path) -> None:
    """Child process of :meth:`CacheWriter._assemble`: stderr to ``log_path``, interrupts left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)  # HDF5's own messages
    sys.stderr = os.fdopen(fd, "w", buffering=1)  # Python's, even where sys.stderr was replaced (tests)
    code = 0
    try:
        writer._assemble_into(tmp)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def _readable_shard(path: Path) -> bool:
    """A shard's zip directory (at its end) is intact: cheap, and catches a file cut short."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def validate_cache(f: h5py.File, path: Path) -> None:
    """Check an open cache against the schema, once, before anything reads it.

    Raises :class:`DataFormatError` listing every problem: format tag, schema version, the
    ``/images``, ``/labels`` and ``/split`` structure, and each dataset's dtype and row count."""
    if f.attrs.get("format") != schema.FORMAT_TAG:
        raise DataFormatError(f"{path} is an HDF5 file but not a facemtl cache (no format tag); create one with `facemtl prepare`.")
    raw = f.attrs.get("schema_version")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        version = None
    if version is not None and version > schema.SCHEMA_VERSION:
        raise DataFormatError(f"{path} has cache schema {version}, newer than this facemtl ({schema.SCHEMA_VERSION}); upgrade facemtl.")
    problems: list[str] = []
    if version is None or version < 1:
        shown = "none" if raw is None else repr(raw.item() if hasattr(raw, "item") else raw)
        problems.append(f"schema_version is {shown}; this facemtl reads schema 1 to {schema.SCHEMA_VERSION}")
    try:
        num_attributes = len(json.loads(f.attrs["attribute_names"]))
    except (KeyError, TypeError, ValueError):
        problems.append("the attribute_names attribute is missing or not a JSON list")
        num_attributes = None
    n = None
    split = f.get("split")
    if not isinstance(split, h5py.Dataset):
        problems.append("/split is missing")
    elif split.ndim != 1 or split.dtype.kind not in "iu":
        problems.append(f"/split must be int8 (N,), found {split.dtype} {split.shape}")
    else:
        n = split.shape[0]
        if n and not np.isin(split[:], list(schema.SPLITS.values())).all():
            problems.append("/split holds values other than 0 (train), 1 (val), 2 (test)")
    images = f.get("images")
    if not isinstance(images, h5py.Group) or not len(images):
        problems.append("/images holds no image dataset (expected /images/<size>, e.g. /images/112)")
    else:
        for name, ds in images.items():
            if not name.isdigit() or not isinstance(ds, h5py.Dataset):
                problems.append(f"/images/{name} is not an image size")
                continue
            s = int(name)
            if ds.dtype != np.uint8 or ds.shape[1:] != (s, s, 3) or (n is not None and ds.shape[0] != n):
                problems.append(f"/images/{name} must be uint8 ({n if n is not None else 'N'}, {s}, {s}, 3), found {ds.dtype} {ds.shape}")
    labels = f.get("labels")
    if not isinstance(labels, h5py.Group):
        problems.append("/labels is missing")
    else:
        for key, ds in labels.items():
            if key not in schema.LABELS or not isinstance(ds, h5py.Dataset):
                continue
            if n is not None and ds.shape[:1] != (n,):
                problems.append(f"/labels/{key} has {ds.shape[0] if ds.shape else 0} rows, /split has {n}")
            elif key == "attributes" and num_attributes is not None and ds.shape[1:] != (num_attributes,):
                problems.append(f"/labels/attributes has {ds.shape[1:]} columns, attribute_names lists {num_attributes}")
    if problems:
        raise DataFormatError(f"{path} is a damaged facemtl cache: " + "; ".join(problems) + "; prepare it again with `facemtl prepare`.")


def cache_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """How a cache was made (its ``provenance`` attribute) without loading its labels; {} when the
    file cannot be read as a cache (opening it as :class:`FaceCache` says why)."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs.get("provenance", "{}"))
    except (OSError, ValueError):
        return {}


class FaceCache:
    """A finished cache, opened read-only. Labels are loaded into memory; images are read on demand.

    Picklable (the h5py handle is reopened lazily in each process), so DataLoader workers can use it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            hint = " (an unfinished prepare left a .partial folder: rerun prepare with --resume)" if partial_path(self.path).exists() else ""
            raise MissingFileError(f"cache {self.path} does not exist{hint}; create it with `facemtl prepare`.")
        if self.path.is_dir():
            raise DataFormatError(f"cache {self.path} is a directory, not a file; give the .h5 file that `facemtl prepare` wrote.")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise DataFormatError(f"{self.path} is not a readable HDF5 file ({e}); prepare it again with `facemtl prepare`.") from None
        with f:
            validate_cache(f, self.path)
            self.attrs = {k: f.attrs[k] for k in f.attrs}
            self.attribute_names: list[str] = json.loads(f.attrs["attribute_names"])
            self.provenance: dict[str, Any] = json.loads(f.attrs.get("provenance", "{}"))
            self.sizes = tuple(sorted(int(s) for s in f["images"]))
            self.num_samples = int(f["split"].shape[0])
            self.split = f["split"][:]
            self.labels = {k: f[f"labels/{k}"][:] for k in schema.LABELS if f"labels/{k}" in f}
            chunks = f[f"images/{self.sizes[0]}"].chunks
            self.chunk_rows = int(chunks[0]) if chunks else DEFAULT_CHUNK_ROWS
            self.num_scenes = int(f["scenes/images"].shape[0]) if "scenes/images" in f else 0
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
