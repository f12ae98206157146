"""The one parser of on/off option values (recipes, ``--set``, weighting and model options)."""

from __future__ import annotations

from typing import Any

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(value: Any) -> bool:
    """``True``/``False`` from a bool, a number or one of 1/true/yes/on and 0/false/no/off (any case);
    ValueError for anything else, which callers turn into their own message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{value!r} is not on/off (use one of {', '.join(TRUE)} or {', '.join(FALSE)})")
