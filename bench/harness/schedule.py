"""When a run evaluates, counted in reward queries: ``--eval-at`` (``QuerySchedule``).

Evaluations every 48 or 64 queries leave the steep start of a curve unread: a method that reaches a target at its
first evaluation may have got there at any point before it. ``--eval-at`` puts evaluations where curves move:

- ``log`` (or ``log:FIRST``): FIRST (default 8) and then two counts per doubling, FIRST x 1, 1.5, 2, 3, 4, 6, ...:
  8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, ... (14 evaluations up to 768 queries, as many as
  every 64 gives there, but the first at 8 instead of 64);
- ``N``: at N queries;
- ``A:B:S``: every S queries from A to B (both included); ``A::S``: from A on, every S, to the end of the budget.

Items are comma-separated and combine: ``16:128:16,192::64`` is every 16 queries up to 128, then every 64. A run
evaluates after the optimizer step during which its training reward queries cross a count (steps query several
images at once: counts within one step give one evaluation), and always at step 0 and at the end of its budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench.core.errors import UsageError

LOG_FIRST = 8
"""The first count of ``log`` without ``:FIRST``."""
EXAMPLES = "e.g. --eval-at log, --eval-at log:4 or --eval-at 16:128:16,192::64"
_INT = r"[0-9]+"


@dataclass(frozen=True)
class QuerySchedule:
    """Reward-query counts at which a run evaluates (besides step 0 and its end)."""

    text: str
    """What was given (``--eval-at``), recorded in every run's spec."""
    points: tuple[int, ...] = ()
    ranges: tuple[tuple[int, int | None, int], ...] = ()
    """(start, stop or None for open-ended, every)."""
    log_first: int | None = None

    @classmethod
    def parse(cls, text: str) -> "QuerySchedule":
        """The schedule ``text`` describes; a ``UsageError`` (one line, exit 2) naming the bad item otherwise."""
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"--eval-at is empty; {EXAMPLES}")
        points, ranges, log_first = [], [], None
        for item in (part.strip() for part in text.split(",")):
            bad = f"--eval-at {text!r}" + (f": {item!r}" if item != text.strip() else "")
            if m := re.fullmatch(rf"log(?::({_INT}))?", item):
                if log_first is not None:
                    raise UsageError(f"{bad}: log is given twice; give it once")
                log_first = int(m.group(1)) if m.group(1) else LOG_FIRST
                if log_first < 1:
                    raise UsageError(f"{bad}: the first count must be >= 1; {EXAMPLES}")
            elif re.fullmatch(_INT, item):
                if int(item) < 1:
                    raise UsageError(f"{bad}: a query count must be >= 1; {EXAMPLES}")
                points.append(int(item))
            elif m := re.fullmatch(rf"({_INT}):({_INT})?:({_INT})", item):
                start, stop, every = int(m.group(1)), m.group(2), int(m.group(3))
                stop = int(stop) if stop else None
                if start < 1 or every < 1:
                    raise UsageError(f"{bad}: start and step of A:B:S must be >= 1; {EXAMPLES}")
                if stop is not None and stop < start:
                    raise UsageError(f"{bad}: the range ends ({stop}) before it starts ({start}); {EXAMPLES}")
                ranges.append((start, stop, every))
            else:
                raise UsageError(f"{bad} is not a query count N, a range A:B:S or A::S, or log[:FIRST]; {EXAMPLES}")
        return cls(text=text.strip(), points=tuple(sorted(set(points))), ranges=tuple(ranges), log_first=log_first)

    def next_after(self, samples: int) -> int | None:
        """The smallest scheduled count above ``samples`` (None: none is left)."""
        found = [p for p in self.points if p > samples]
        for start, stop, every in self.ranges:
            nxt = start if samples < start else start + ((samples - start) // every + 1) * every
            if stop is None or nxt <= stop:
                found.append(nxt)
        if self.log_first is not None:
            found.append(next(c for c in log_counts(self.log_first) if c > samples))
        return min(found) if found else None

    def crossed(self, before: int, after: int) -> bool:
        """Whether a step that took the queries from ``before`` to ``after`` crossed a count (one evaluation)."""
        nxt = self.next_after(before)
        return nxt is not None and nxt <= after

    def counts(self, upto: int) -> list[int]:
        """Every scheduled count up to ``upto`` (included), in order."""
        found, at = [], 0
        while (nxt := self.next_after(at)) is not None and nxt <= upto:
            found.append(nxt)
            at = nxt
        return found

    def evaluations(self, budget: int) -> list[int]:
        """The query counts a run with a ``budget`` of reward queries is evaluated at (at most: a step that crosses
        two counts evaluates once, after it): 0, the counts below the budget, and the budget's end."""
        return [0, *[c for c in self.counts(budget) if c < budget], budget]


def log_counts(first: int):
    """first x 1, 1.5, 2, 3, 4, 6, 8, ... (rounded to whole queries, each once), without end."""
    last, k = 0, 0
    while True:
        for value in (first * 2**k, round(first * 1.5 * 2**k)):
            if value > last:
                yield value
                last = value
        k += 1


def check_eval_at(text: str | None, *, every_samples: int | None, max_samples: int | None) -> QuerySchedule | None:
    """``--eval-at`` checked against the other flags, before any run: None when not given. Refused with
    ``--eval-every-samples`` (two query schedules: give one; ``N::N`` is every N), and when no count lies below a
    ``--max-samples`` budget (the run would evaluate only at its start and end)."""
    if text is None:
        return None
    schedule = QuerySchedule.parse(text)
    if every_samples:
        raise UsageError(f"--eval-at and --eval-every-samples are both query schedules; give one (--eval-at "
                         f"{every_samples}::{every_samples} is --eval-every-samples {every_samples})")
    first = schedule.next_after(0)
    if max_samples and (first is None or first >= max_samples):
        raise UsageError(f"--eval-at {text!r}: no count lies below the budget of {int(max_samples)} reward queries "
                         f"(--max-samples); the runs would evaluate only at the start and the end")
    return schedule


def describe(schedule: QuerySchedule, max_samples: float | None, limit: int = 200) -> dict:
    """What the manifest records: the flag's text and the query counts it gives (with a query budget: 0, the counts
    below it and its end), at most ``limit`` counts (``eval_at_queries_truncated`` says when more follow)."""
    budget = int(max_samples) if max_samples and math.isfinite(max_samples) else None
    found, at = [0], 0
    while (nxt := schedule.next_after(at)) is not None and (budget is None or nxt < budget) and len(found) < limit:
        found.append(nxt)
        at = nxt
    more = nxt is not None and (budget is None or nxt < budget)
    return {"eval_at": schedule.text, "eval_at_queries": found + ([budget] if budget and not more else []),
            "eval_at_queries_truncated": more}
