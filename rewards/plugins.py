"""Reward specs: which kind a ``--reward`` string is, and user plug-ins loaded without editing the package.

A spec is one of
- a registered name: ``aesthetic`` (``rewards.reward_names()`` lists them);
- a weighted combination: terms joined by ``+``, each ``[weight*]term`` (``rewards.combine``), e.g.
  ``0.7*aesthetic+0.3*clip-score``; a term may itself be a plug-in;
- a plug-in: ``some.module:Name`` (importable from ``sys.path``) or ``path/to/file.py:Name`` (relative to the
  working directory), where ``Name`` is a ``rewards.base.Reward`` subclass, a factory returning one, or a Reward
  instance. Classes and factories are called with whichever of ``weights``, ``allow_stand_in`` and ``strict`` they
  accept, so a plug-in can honour ``--reward-weights`` and the stand-in policy like the built-in rewards.

Plug-in paths cannot contain ``+`` or ``*`` (they separate terms).
"""

from __future__ import annotations

import inspect

from bench.core.errors import UsageError
from bench.core.registry import load_target
from rewards.base import Reward


def is_combination(spec: str) -> bool:
    return "+" in spec or "*" in spec


def is_plugin(spec: str) -> bool:
    """A single term naming ``module:Name`` or ``file.py:Name``."""
    return ":" in spec and not is_combination(spec)


def accepts(factory, name: str) -> bool | None:
    """Whether ``factory`` takes the keyword ``name`` (None: its signature cannot be read)."""
    if isinstance(factory, Reward):
        return False
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def call_accepting(factory, options: dict, spec: str):
    """``factory(**options)`` restricted to the keyword arguments its signature accepts."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: call it bare
        return factory()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        if options.get("weights") and "weights" not in parameters:
            raise UsageError(f"reward {spec!r} takes no weights file; drop --reward-weights")
        options = {k: v for k, v in options.items() if k in parameters}
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise UsageError(f"plug-in {spec!r} cannot be built from a spec ({exc}); give its arguments defaults or "
                         "export a factory that takes none") from None
    return factory(**options)


def check_plugin(spec: str) -> None:
    """Import the plug-in's module and find ``Name`` (builds nothing)."""
    load_target(spec)


def load_plugin(spec: str, **options) -> Reward:
    """The Reward named by ``module:Name`` / ``file.py:Name`` (instance as is; class or factory called)."""
    obj = load_target(spec)
    if isinstance(obj, Reward) and options.get("weights"):
        raise UsageError(f"plug-in {spec!r} is a ready-made reward and takes no weights file; drop --reward-weights")
    if not isinstance(obj, Reward):
        if not callable(obj):
            raise UsageError(f"plug-in {spec!r} is a {type(obj).__name__}, not a Reward subclass or factory")
        obj = call_accepting(obj, options, spec)
    if not isinstance(obj, Reward):
        raise UsageError(f"reward {spec!r} built a {type(obj).__name__}, not a rewards.base.Reward subclass")
    return obj
