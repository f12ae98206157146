"""Exception classes for user errors.

Every message says what was wrong, where, and what to do. The CLI maps any
:class:`FacemtlError` to a one-line message and exit code 1 (no traceback).
"""

from __future__ import annotations

import difflib
from collections import Counter

#: a list of valid names longer than this is summarised (prefixed names grouped)
LIST_MAX = 20


class FacemtlError(Exception):
    """Base class of every error a user can fix (bad input, bad option, missing file)."""


class UnknownNameError(FacemtlError, KeyError):
    """An unknown task, backbone, strategy, recipe or dataset name."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]):
        self.kind, self.name, self.valid = kind, name, list(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=3, cutoff=0.6)
        guess = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"Unknown {kind} '{name}'.{guess} Valid {kind} names: {_summary(self.valid)}.")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


def _summary(valid: list[str]) -> str:
    """All names when there are few; else the plain names and one entry per ``prefix:`` family
    (a task list holds an ``attr:NAME`` for each of 40 attributes)."""
    if len(valid) <= LIST_MAX:
        return ", ".join(sorted(valid))
    plain = sorted(v for v in valid if ":" not in v)
    families = Counter(v.split(":", 1)[0] for v in valid if ":" in v)
    parts = plain + [f"{p}:NAME ({n} names: {', '.join(sorted(v for v in valid if v.startswith(p + ':'))[:3])}, ...)"
                     for p, n in sorted(families.items())]
    if len(parts) > LIST_MAX:
        parts = [*parts[:LIST_MAX], f"and {len(parts) - LIST_MAX} more"]
    return ", ".join(parts)


class DataFormatError(FacemtlError):
    """A file whose content does not follow its documented format (annotation line, HDF5 cache...)."""


class MissingFileError(FacemtlError, FileNotFoundError):
    """A required file or folder is absent."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "missing file"


class MissingDependencyError(FacemtlError, ImportError):
    """An optional package a feature needs is not installed; the message says how to install it."""


class ConfigError(FacemtlError, ValueError):
    """An option or configuration value that cannot work (nonsense size, bad range, mismatch)."""


class CheckpointError(FacemtlError):
    """A checkpoint that is missing, corrupt, from a newer schema or of another configuration."""


class TrainingDiverged(FacemtlError):
    """A loss became NaN or infinite; the message names the step and the task."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; ``checkpoint`` is the ``last.pt`` a resume continues
    from, or None when there is none. The library states what it saved; each command says how to
    continue (``train --resume``, or rerunning ``ablate``)."""

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint


class WriteError(FacemtlError):
    """A file that could not be written (disk full, quota, read-only or unwritable folder); nothing
    half-written is left behind."""


class InUseError(FacemtlError):
    """A run folder or a cache that another live process is writing (see :mod:`facemtl.utils.lock`)."""


class DiskFullError(WriteError, OSError):
    """No space left where a file was being written; the message names the path and the space needed."""
