"""Declared ranges of numeric config fields, checked by one function.

A config class declares ``RANGES = {"field": Range(...)}`` (merged along its base classes, so a shared field keeps
one rule: DDPO's and GRPO's PPO clips are ``methods.base.PPO_RANGES``); ``check_ranges(config)`` checks every
numeric field (int or float, not bool) against its range and refuses a numeric field that declares none, so a new
field cannot be left unchecked. Cross-field rules (``k <= steps``) stay in the config's own ``__post_init__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric field; ``None`` bounds are open-ended."""

    low: float | None = None
    """Smallest allowed value (or bound, with ``low_open``)."""
    high: float | None = None
    """Largest allowed value (or bound, with ``high_open``)."""
    low_open: bool = False
    """The value must be strictly above ``low``."""
    high_open: bool = False
    """The value must be strictly below ``high``."""
    note: str = ""
    """What a special value means, added to the error (e.g. "0: the batch size")."""

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"lie in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"be {'<' if self.high_open else '<='} {self.high:g}"
        return "be a finite number"

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def at_least(low: float, note: str = "") -> Range:
    return Range(low=low, note=note)


def above(low: float, note: str = "") -> Range:
    return Range(low=low, low_open=True, note=note)


ANY = Range()
"""Any finite number (a target value)."""
FRACTION = Range(0, 1, low_open=True)
"""A fraction in (0, 1]."""


def declared_ranges(cls) -> dict[str, Range]:
    """``RANGES`` merged from the base classes down (a subclass's entry wins)."""
    merged: dict[str, Range] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("RANGES", {}))
    return merged


def numeric_fields(config) -> list[str]:
    """The dataclass fields whose default is an int or float (bools excluded)."""
    return [f.name for f in fields(config) if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)]


def check_ranges(config) -> None:
    """``ValueError`` naming the first field out of its range (or not a number); ``TypeError`` for a numeric field
    the class declares no range for."""
    ranges = declared_ranges(type(config))
    for name in numeric_fields(config):
        if name not in ranges:
            raise TypeError(f"{type(config).__name__}.{name} has no declared range: add it to the class's RANGES")
        value, rule = getattr(config, name), ranges[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        integer = isinstance(type(config).__dataclass_fields__[name].default, int)
        if integer and value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        if not rule.holds(value):
            note = f" ({rule.note})" if rule.note else ""
            raise ValueError(f"{name} must {rule.text()}{note}, got {value:g}")
