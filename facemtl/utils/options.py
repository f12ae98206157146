"""One parser for yes/no settings, so every option reads "1/true/yes/on" and "0/false/no/off" alike,
and one for the values of KEY=VALUE options (``--set``, the benchmarks' option lists)."""

from __future__ import annotations

from typing import Any, Literal

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(value: str | bool | int) -> bool:
    """True for 1/true/yes/on, False for 0/false/no/off (any case, surrounding spaces ignored);
    a bool or the ints 0 and 1 pass through. Anything else raises :class:`ValueError` naming the
    accepted words (callers turn it into a :class:`~facemtl.errors.ConfigError` that says where)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a yes/no value; use one of {', '.join(TRUE_WORDS + FALSE_WORDS)}.")


def parse_bool_or_auto(value: str | bool | int) -> bool | Literal["auto"]:
    """``"auto"`` (any case) stays ``"auto"``; anything else as :func:`parse_bool`."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return parse_bool(value)


def auto_or_bool(value: Any, setting: str) -> bool | str:
    """:func:`parse_bool_or_auto` with a :class:`~facemtl.errors.ConfigError` naming ``setting``."""
    from facemtl.errors import ConfigError

    try:
        return parse_bool_or_auto(value)
    except ValueError as e:  # RunConfig.validate refuses these first; a config built by hand may not have run it
        raise ConfigError(f"{setting}: {e}") from None


def parse_literal(text: str) -> Any:
    """A TOML literal (number, boolean, list, quoted string) when it parses as one, else the text."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
