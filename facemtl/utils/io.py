"""Atomic writes: never leave a half-written cache, checkpoint or report behind.

Write to a temporary file beside the target, then ``os.replace`` it into place (atomic on
POSIX when both are on one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facemtl.errors import ConfigError


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    On any exception the temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


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
