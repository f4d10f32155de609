"""Name -> "module:attr" registries, imported lazily so heavy dependencies load only when chosen."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError


class Registry:
    """Maps names (and aliases) to lazily imported ``"module:attr"`` targets.

    >>> r = Registry("reward", {"mean-brightness": "rewards.toy:MeanBrightness"})
    >>> r.names()
    ['mean-brightness']
    """

    def __init__(self, kind: str, entries: dict[str, str], aliases: dict[str, str] | None = None,
                 plugins: bool = False):
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})
        self.plugins = plugins
        """Whether ``module:Name`` and ``path/file.py:Name`` specs load user code not in the registry."""

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases or (self.plugins and ":" in name)

    def target(self, name: str) -> str:
        """The ``"module:attr"`` string for ``name``; unknown names list the valid ones."""
        name = self._aliases.get(name, name)
        if self.plugins and ":" in name and name not in self._entries:
            return name
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Import and return the object registered under ``name``."""
        return load_target(self.target(name))


def load_target(target: str) -> Any:
    """Import ``"package.module:attr"`` or ``"path/to/file.py:attr"`` and return ``attr``."""
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise UsageError(f"{target!r} is not of the form 'module:Name' or 'path/file.py:Name'")
    if module_name.endswith(".py"):
        module = _import_file(Path(module_name))
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UsageError(f"cannot import {module_name!r} ({exc}); check the module name or PYTHONPATH") from None
        except Exception as exc:  # the plug-in's own code failed (syntax error, exception at import)
            raise UsageError(f"plug-in module {module_name!r} fails on import ({describe(exc)}); fix it") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None


def _import_file(path: Path):
    if not path.is_file():
        raise UsageError(f"plug-in file {str(path)!r} does not exist")
    name = "bench_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the plug-in's own code failed (syntax error, exception at import)
        del sys.modules[name]
        raise UsageError(f"plug-in file {str(path)!r} fails on import ({describe(exc)}); fix it") from None
    return module


def describe(exc: Exception) -> str:
    """One line for an exception raised by user code: its type, message and, for syntax errors, the line."""
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__} at line {exc.lineno}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
