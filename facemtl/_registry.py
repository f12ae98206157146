"""A tiny generic name -> factory registry (backbones, tasks, weighting strategies, ...).

``Registry("backbone")`` gives ``register(name)`` (a decorator refusing duplicates),
``get(name)`` (raising :class:`~facemtl.errors.UnknownNameError` listing the valid names)
and ``names()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from facemtl.errors import UnknownNameError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}  # former names, still accepted (runs and recipes that use them)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def alias(self, old: str, name: str) -> None:
        """Accept ``old`` (a former name) for ``name``; it is not listed by :meth:`names`."""
        self._aliases[old] = name

    def resolve(self, name: str) -> str:
        """The registered name of ``name`` (itself, or what a former name now reads)."""
        return self._aliases.get(name, name)

    def get(self, name: str) -> T:
        try:
            return self._items[self.resolve(name)]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """The names in registration order (built-ins first, as their module lists them)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
