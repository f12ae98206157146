"""Atomic writes: never leave a half-written cache, checkpoint or report behind.

Write to a temporary file beside the target (``.<name>.<pid>.<random>.tmp``), then ``os.replace``
it into place (atomic on POSIX when both are on one filesystem). The file gets the permissions a
plain ``open()`` would give it (``0666`` less the umask), not ``mkstemp``'s ``0600``, so run
folders shared on a cluster stay readable by the group when the umask says so. A full disk (or
another write failure) ends in one :class:`~facemtl.errors.WriteError` naming the file and the
space needed and free, and the temporary file is removed. The pid in the temporary name lets
:func:`remove_stale_temp_files` tell files of a killed process from those of a live one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facemtl.errors import ConfigError, FacemtlError, WriteError


def check_writable_target(path: Path, *, force: bool, what: str = "output") -> None:
    """Refuse an existing target without ``force`` and a parent folder that cannot be written."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{what} {path} already exists; pass --force to overwrite it or choose another path.")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file path.")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create folder {parent} for {what}: {e.strerror}; choose a writable path.") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"folder {parent} is not writable; choose a writable path for {what}.")


#: errno values that mean "no room": the message then gives the space needed and free
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", *, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    On any exception the temporary file is removed and the target is left untouched; an
    ``OSError`` meaning a full disk or quota becomes a :class:`WriteError` (``size_hint``: bytes
    the file needs, for its message).
    """
    path = Path(path)
    tmp_path: Path | None = None
    in_body = False  # an OSError of the caller's own code passes unchanged unless it means "no room"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix + ".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        in_body = True
        yield tmp_path
        in_body = False
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp made it 0600
        os.replace(tmp_path, path)
    except BaseException as e:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        if isinstance(e, OSError) and not isinstance(e, FacemtlError) and (not in_body or e.errno in _NO_SPACE):
            raise write_error(e, path, size_hint) from None
        raise


def write_error(e: OSError, path: str | os.PathLike, size_hint: int | None = None) -> WriteError:
    """One-line :class:`WriteError` for ``e`` raised while writing ``path``."""
    path = Path(path)
    if e.errno in _NO_SPACE:
        try:
            free = f"{_size(shutil.disk_usage(_existing_parent(path)).free)} free there"
        except OSError:
            free = "free space unknown"
        need = f"about {_size(size_hint)} needed, " if size_hint else ""
        return WriteError(f"no space left on the device while writing {path} ({need}{free}); nothing was written. "
                          "Free some space or write to another folder.")
    return WriteError(f"cannot write {path}: {e.strerror or e}; choose a writable folder.")


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` sets it
    process-wide, racing with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike, names: list[str]) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files of ``folder`` left by killed processes; returns those removed.

    A temporary file whose name carries the pid of a live process other than this one is kept
    (``os.kill(pid, 0)``); call it while holding the folder's lock (:mod:`facemtl.utils.lock`),
    so no other facemtl process can be writing there."""
    folder = Path(folder)
    removed = []
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            pid = tmp.name[len(name) + 2:].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _existing_parent(path: Path) -> Path:
    p = path.parent if str(path.parent) else Path(".")
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
