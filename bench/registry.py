"""Name -> "module:attr" registries, imported lazily so heavy dependencies load only when chosen."""

from __future__ import annotations

import importlib
from typing import Any

from bench.errors import UsageError


class Registry:
    """Maps names (and aliases) to lazily imported ``"module:attr"`` targets.

    >>> r = Registry("reward", {"mean-brightness": "rewards.toy:MeanBrightness"})
    >>> r.names()
    ['mean-brightness']
    """

    def __init__(self, kind: str, entries: dict[str, str], aliases: dict[str, str] | None = None):
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def target(self, name: str) -> str:
        """The ``"module:attr"`` string for ``name``; unknown names list the valid ones."""
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Import and return the object registered under ``name``."""
        return load_target(self.target(name))


def load_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return ``attr``."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise UsageError(f"{target!r} is not of the form 'module:Name'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
