"""Building a strategy by name with checked options, and parsing the CLI option string.

Options are the keyword-only parameters of each strategy's ``__init__``; their type hints are
the contract: an unknown name or a value of the wrong type is a :class:`ConfigError` that names
the option and lists the valid ones.

CLI format (``parse_weighting_args``)::

    "main=landmarks,lr=0.01,weights=landmarks:1;smile:0.5"

- items separated by ``,``; each ``key=value``;
- a value whose ``;``-separated parts all look like ``name:number`` is a dict
  ``{name: number}`` (the name is split at its *last* ``:``, so ``attr:Smiling:2`` works);
- otherwise: ``true``/``false`` -> bool, ``none`` -> None, an int, a float, else the string
  (so ``group=attr:`` and ``main=attr:Smiling`` stay strings).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

from facemtl.errors import ConfigError
from facemtl.weighting.base import WEIGHTINGS, Weighting


def strategy_options(name: str) -> dict[str, inspect.Parameter]:
    """The options (keyword-only parameters) of strategy ``name``."""
    cls = WEIGHTINGS.get(name)
    sig = inspect.signature(cls.__init__)
    return {k: p for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        if not isinstance(value, dict):
            return False
        return not args or all(_type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def build_weighting(name: str, tasks: list[str], **options: Any) -> Weighting:
    """Build strategy ``name`` for ``tasks``.

    Unknown name -> :class:`~facemtl.errors.UnknownNameError` listing the valid names;
    unknown or ill-typed option -> :class:`~facemtl.errors.ConfigError` naming it and the valid ones.
    """
    cls = WEIGHTINGS.get(name)
    valid = strategy_options(name)
    hints = typing.get_type_hints(cls.__init__)
    listing = ", ".join(f"{k} ({_fmt(hints.get(k))}, default {p.default!r})" for k, p in valid.items()) or "none"
    for key, value in options.items():
        if key not in valid:
            raise ConfigError(f"Unknown option {key!r} for weighting strategy '{name}'. Valid options: {listing}.")
        hint = hints.get(key, Any)
        if not _type_ok(value, hint):
            raise ConfigError(
                f"Option {key!r} of weighting strategy '{name}' must be {_fmt(hint)}, got {value!r}. "
                f"Valid options: {listing}."
            )
        if typing.get_origin(hint) is None and hint is float and isinstance(value, int):
            options[key] = float(value)
    return cls(list(tasks), **options)


def _fmt(hint: Any) -> str:
    if hint is None:
        return "any"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _scalar(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text.strip())
        except ValueError:
            pass
    return text.strip()


def _as_dict(text: str) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, num = part.strip().rpartition(":")
        if not sep or not key:
            return None
        val = _scalar(num)
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            return None
        out[key] = float(val)
    return out or None


def parse_weighting_args(text: str) -> dict:
    """Parse ``"key=value,key=value"`` (format in the module docstring) into an options dict."""
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"Bad weighting option {item.strip()!r}: expected key=value (e.g. 'lr=0.01').")
        if key in out:
            raise ConfigError(f"Weighting option {key!r} given twice in {text!r}.")
        d = _as_dict(value) if ":" in value else None
        out[key] = d if d is not None else _scalar(value)
    return out


def describe(names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{strategy: {option: default}} for docs and ``--help`` texts."""
    return {n: {k: p.default for k, p in strategy_options(n).items()} for n in (names or WEIGHTINGS.names())}
