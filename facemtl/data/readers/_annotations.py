"""Whitespace-table parsing shared by the readers, with every problem collected (file:line: what).

Annotation files of face datasets (CelebA, LFWA, MTFL) are tables separated by runs of spaces,
sometimes with a count line and a header line, written on Windows (CRLF) or padded with blank
lines. :func:`read_table` accepts all of that and, instead of stopping at the first bad line,
records every problem in a :class:`Problems` list, so a user fixes a file in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemtl.errors import DataFormatError, MissingFileError

log = logging.getLogger(__name__)

#: Problems shown in full in one error message; the rest are counted.
MAX_SHOWN = 20


@dataclass
class Problems:
    """Everything wrong with a dataset, collected before anything is written."""

    errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        self.errors.append(f"{where}: {message}")

    def add_missing(self, what: str) -> None:
        self.missing.append(what)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def __bool__(self) -> bool:
        return bool(self.errors or self.missing)

    def count(self) -> int:
        return len(self.missing) + len(self.errors)

    def shown(self) -> list[str]:
        """The one listing rule of prepare's errors and ``--check``: the first MAX_SHOWN problems, then a count."""
        lines = [f"missing: {m}" for m in self.missing] + self.errors
        more = len(lines) - MAX_SHOWN
        return lines[:MAX_SHOWN] + ([f"... and {more} more problems"] if more > 0 else [])

    def raise_if_any(self, dataset: str, hint: str | None = None) -> None:
        """Raise :class:`MissingFileError` (missing files) or :class:`DataFormatError` listing the problems."""
        if not self:
            return
        body = "\n  ".join(self.shown())
        hint = hint or "fix the files named above"
        msg = f"{dataset}: {self.count()} problem(s) found, nothing was written:\n  {body}\n{hint}."
        cls = MissingFileError if self.missing and not self.errors else DataFormatError
        raise cls(msg)


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as ``(line_number, text)``; tolerates CRLF, a BOM and blank lines."""
    # newline=None turns \r\n and \r into \n; utf-8-sig drops a BOM that Windows editors add.
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as f:
        return [(i, s.strip()) for i, s in enumerate(f, start=1) if s.strip()]


@dataclass
class Table:
    """A parsed annotation table: row ids, a numeric value matrix, the line of each row."""

    path: Path
    ids: list[str]
    values: np.ndarray  # (rows, columns)
    lines: list[int]
    header: list[str] | None = None
    declared_count: int | None = None

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.ids)}


def read_table(
    path: Path,
    problems: Problems,
    *,
    count_line: bool | None,
    header_line: bool,
    num_values: int | None = None,
    dtype: str = "int64",
    allowed: Sequence[float] | None = None,
    header_skip: Sequence[str] = ("image_id",),
    parse: Callable[[str], float] | None = None,
) -> Table:
    """Parse ``[count]\\n[header]\\n<id> <v1> <v2> ...`` separated by runs of whitespace.

    ``count_line=None`` detects an optional count line (a single integer). ``num_values`` is the
    number of values after the id; when ``None`` it comes from the header (minus a leading
    ``image_id`` column name). Bad rows are reported to ``problems`` and left out of the table.
    """
    path = Path(path)
    rows = read_lines(path)
    pos = 0
    declared = None
    if count_line is None:
        count_line = bool(rows) and rows[0][1].isdigit()
    if count_line:
        if not rows:
            problems.add(path, None, "file is empty; expected the image count on line 1")
            return Table(path, [], np.zeros((0, num_values or 0), dtype), [])
        ln, text = rows[0]
        try:
            declared = int(text)
        except ValueError:
            problems.add(path, ln, f"expected the image count on line 1, got '{_clip(text)}'")
        pos = 1
    header = None
    if header_line:
        if pos >= len(rows):
            problems.add(path, None, "missing header line (column names)")
            return Table(path, [], np.zeros((0, num_values or 0), dtype), [], None, declared)
        header = rows[pos][1].split()
        if header and header[0] in header_skip:
            header = header[1:]
        pos += 1
    width = num_values if num_values is not None else (len(header) if header else None)
    ids: list[str] = []
    values: list[list[float]] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    allowed_set = set(allowed) if allowed is not None else None
    convert = parse or (int if np.issubdtype(np.dtype(dtype), np.integer) else float)
    for ln, text in rows[pos:]:
        parts = text.split()
        if width is not None and len(parts) != width + 1:
            problems.add(path, ln, f"expected {width + 1} fields (id + {width} values), found {len(parts)}")
            continue
        try:
            vals = [convert(p) for p in parts[1:]]
        except ValueError:
            problems.add(path, ln, f"non-numeric value in '{_clip(text)}'")
            continue
        if allowed_set is not None and any(v not in allowed_set for v in vals):
            bad = sorted({p for p, v in zip(parts[1:], vals) if v not in allowed_set})
            problems.add(path, ln, f"values must be one of {sorted(allowed_set)}, found {', '.join(bad)}")
            continue
        key = parts[0]
        if key in seen:
            problems.add(path, ln, f"'{key}' already listed on line {seen[key]}")
            continue
        seen[key] = ln
        ids.append(key)
        values.append(vals)
        lines.append(ln)
    n_cols = width if width is not None else (len(values[0]) if values else 0)
    arr = np.asarray(values, dtype=dtype).reshape(len(values), n_cols)
    if declared is not None and declared != len(rows) - pos:
        problems.add(path, 1, f"line 1 says {declared} images but the file lists {len(rows) - pos}")
    return Table(path, ids, arr, lines, header, declared)


def check_same_ids(tables: Sequence[Table], problems: Problems) -> None:
    """Every table must list the same image ids (order may differ); report the differences."""
    tables = [t for t in tables if t is not None]
    if len(tables) < 2:
        return
    ref = tables[0]
    ref_set = set(ref.ids)
    for t in tables[1:]:
        if len(t.ids) != len(ref.ids):
            problems.add(t.path, None, f"lists {len(t.ids)} images but {ref.path.name} lists {len(ref.ids)}")
        other = set(t.ids)
        only_ref = [k for k in ref.ids if k not in other]
        only_t = [k for k in t.ids if k not in ref_set]
        if only_ref:
            problems.add(t.path, None, f"has no row for {_few(only_ref)} (listed in {ref.path.name})")
        if only_t:
            problems.add(t.path, None, f"lists {_few(only_t)} which {ref.path.name} does not")


def align(table: Table, ids: Sequence[str]) -> np.ndarray:
    """Rows of ``table`` in the order of ``ids`` (ids absent from the table must have been reported)."""
    idx = table.index()
    return table.values[[idx[k] for k in ids]]


def _few(items: Sequence[str], k: int = 5) -> str:
    head = ", ".join(items[:k])
    return head + (f" and {len(items) - k} more" if len(items) > k else "")


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
