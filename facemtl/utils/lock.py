"""One writer at a time: a lock file claims a run folder (``RUN/.lock``) or a cache being
prepared (``.<name>.lock`` beside it) for one process.

The lock is an ``flock`` on the lock file, which holds a small JSON record of the owner (pid,
host, start time, command). The kernel drops an ``flock`` when its process dies, however it
dies (SIGKILL included), so a lock file left by a dead process is simply taken over; a live
owner makes :meth:`PathLock.acquire` raise :class:`~facemtl.errors.InUseError` naming it.
Where ``flock`` is missing or refused (Windows, some network filesystems), the lock file is
created with ``O_EXCL`` instead and a record whose pid is dead on this host is taken over; a
record from another host is never taken over (delete the lock file when that host's run is
certainly gone).

The lock file is removed on release, so a finished run folder holds no trace of it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from facemtl.errors import InUseError
from facemtl.utils.io import pid_alive, write_error

try:
    import fcntl
except ImportError:  # Windows: O_EXCL only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: errno values of an flock the filesystem does not support (then O_EXCL is used)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class PathLock:
    """``with PathLock(RUN / ".lock", what="run folder", target=RUN, hint="choose another --out"):``"""

    def __init__(self, path: str | os.PathLike, *, what: str, target: str | os.PathLike, hint: str) -> None:
        self.path = Path(path)
        self.what, self.target, self.hint = what, Path(target), hint
        self._fd: int | None = None

    # -- public ----------------------------------------------------------------------------------
    def acquire(self) -> PathLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fcntl is None or not self._acquire_flock():
                self._acquire_exclusive()
        except OSError as e:
            raise write_error(e, self.path) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _dt.datetime.now().isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        os.ftruncate(self._fd, 0)  # type: ignore[arg-type]
        os.pwrite(self._fd, json.dumps(record).encode(), 0)  # type: ignore[arg-type]
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # still holding the lock: a process that opened it meanwhile retries (see acquire)
        os.close(fd)  # drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- flock ------------------------------------------------------------------------------------
    def _acquire_flock(self) -> bool:
        """True when locked; False when the filesystem has no flock (use O_EXCL)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _owner_record(fd)
                os.close(fd)
                raise self._busy(record) from None
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_FLOCK:
                    return False
                raise
            # the owner we waited on may have removed the file before we locked it: lock the live one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                stale = _read(fd)
                if stale.get("pid"):
                    log.info("taking over %s, left by pid %s on %s (no longer running)", self.path, stale.get("pid"), stale.get("host"))
                self._fd = fd
                return True
            os.close(fd)

    # -- O_EXCL fallback --------------------------------------------------------------------------
    def _acquire_exclusive(self) -> None:
        for _ in range(3):
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                return
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            record = _read(fd)
            os.close(fd)
            pid = record.get("pid")
            if record.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
                log.info("taking over %s, left by pid %d (no longer running)", self.path, pid)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            raise self._busy(record)
        raise self._busy({})

    def _busy(self, record: dict[str, Any]) -> InUseError:
        if record.get("pid"):
            who = f"pid {record['pid']} on host {record.get('host', '?')}, since {record.get('since', '?')}"
            if record.get("command"):
                who += f": {record['command']}"
        else:
            who = "another process (starting up)"
        return InUseError(f"{self.what} {self.target} is in use by {who}. Wait for it to finish, or {self.hint}.")


#: how long a process refused a lock waits for the owner's record (written just after the lock is taken)
_RECORD_WAIT_S = 2.0


def _owner_record(fd: int) -> dict[str, Any]:
    """The record of the live process holding the ``flock`` on ``fd``'s file. The owner writes it
    just after taking the lock, so until then the file is empty or still holds the previous, dead
    owner's record: re-read it for up to :data:`_RECORD_WAIT_S` until it names a live process (or
    one on another host); else ``{}`` (the error then says "starting up")."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        record = _read(fd)
        pid = record.get("pid")
        if isinstance(pid, int) and (record.get("host") != socket.gethostname() or pid_alive(pid)):
            return record
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.02)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def run_lock(run_dir: str | os.PathLike) -> PathLock:
    """The lock of a run folder (``RUN/.lock``)."""
    run_dir = Path(run_dir)
    return PathLock(run_dir / ".lock", what="run folder", target=run_dir,
                    hint="train into another folder with --out")


def cache_lock(cache: str | os.PathLike) -> PathLock:
    """The lock of a cache being prepared (``.<name>.lock`` beside it)."""
    cache = Path(cache)
    return PathLock(cache.with_name(f".{cache.name}.lock"), what="cache", target=cache,
                    hint="prepare into another --out")
