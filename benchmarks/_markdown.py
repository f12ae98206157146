"""Writing a benchmark's table into its marked section of a markdown page (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, start: str, end: str, text: str, *, new_page: str = "", new_heading: str = "") -> None:
    """Put ``text`` between the ``start`` and ``end`` markers of ``path``, replacing what stood
    there; without the markers, append them (under ``new_heading``) to the page (``new_page`` when
    the file does not exist). Written to a temporary file and renamed."""
    block = f"{start}\n{text}{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else new_page
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + new_heading + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
