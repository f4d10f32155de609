"""Numbers and tables as text: the one number formatter and the one markdown table of every tool."""

from __future__ import annotations

import math
import numbers


def fmt(value, digits: int = 3, *, spec: str | None = None, suffix: str = "", missing: str = "—") -> str:
    """``value`` as text: integers as they are; other numbers with ``digits`` decimals (significant digits for values
    under ``10**-digits``), or formatted by ``spec`` (e.g. ``".4g"``) when given, then ``suffix``; None, NaN and inf
    as ``missing``. Numbers of 1000 or more keep their digits (no ``1e+03``)."""
    if value is None:
        return missing
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value)}{suffix}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number) or math.isinf(number):
        return missing
    if spec is not None:
        return format(number, spec) + suffix
    if number != 0 and abs(number) < 10 ** (-digits):
        return f"{number:.{digits}g}{suffix}"
    return f"{number:.{digits}f}{suffix}"


def markdown_table(frame) -> str:
    """A pandas DataFrame (or a list of dicts) as a GitHub markdown table; ``|`` and newlines in cells escaped."""
    if isinstance(frame, list):
        import pandas as pd

        frame = pd.DataFrame(frame)
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines)


def safe_name(text: str, keep: str = "._-") -> str:
    """``text`` as a file or folder name: letters, digits and the characters in ``keep`` stay, the rest become ``_``."""
    return "".join(c if c.isalnum() or c in keep else "_" for c in text)
