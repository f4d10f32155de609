"""When one seed first reaches a target reward, and the speed-up of one method over another from its seeds.

A seed's time to a target is its *first crossing*: the first evaluation i whose reward reaches the target, and the
evaluation i - 1 before it that did not. Between the two the curve is taken as a straight line, and the crossing
is read on it, in each cost axis at once (reward queries, training seconds, CPU seconds):

    t = (target - r[i-1]) / (r[i] - r[i-1])    (in (0, 1]: r[i-1] missed the target, r[i] reached it)
    cost = c[i-1] + t * (c[i] - c[i-1])        for c = samples, wall_s, cpu_s

Two kinds of seeds only bound their cost, and are never interpolated:

- *censored at the budget*: no evaluation reaches the target; the seed counts its last evaluation's cost, a lower
  bound on its true cost;
- *at the first evaluation*: the first evaluation after training began (or the start itself) reaches it. The only
  evaluation before it is the start, and a straight line from there assumes the curve rose from step 0 on, which a
  fast method's curve does not show: the true crossing lies anywhere in (0, c[i]], a range as wide as the value, so
  the seed counts c[i], an upper bound. (A straight line from the start once made AlignProp's 2.6x speed-up over
  DDPO read 24x.) A denser schedule (``bench.run --eval-at log``: the first evaluation after 8 queries) moves this
  bound down; it cannot make it a point.

The speed-up is the reference's mean cost over its seeds / the method's (the ratio of mean times, the form of the
AlignProp paper's "25x faster than DDPO"; a mean of per-seed ratios would need seeds paired across methods, which
they are not: seed k of two methods shares a number, not a trajectory). Where every seed of both reached the target
between two evaluations it is a point with a percentile-bootstrap 95 % interval that resamples each method's seeds
separately (``stats.bootstrap_indices``, a fixed ``Generator``); a side with one seed gives no interval. Otherwise
it is a bound: ">=" where the reference had seeds censored at the budget or the method seeds at the first
evaluation, "<=" for the converse, "none" both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis import stats

COSTS = {"samples": "reward queries", "wall_s": "training s", "cpu_s": "CPU s"}
"""Cost axes of time to target: the column of the evaluation rows and its name (training s: wall-clock of the
optimizer steps, evaluation excluded; compare CPU s where other jobs shared the machine)."""


@dataclass
class Seeds:
    """The first crossings of one method's seeds for one target, on one cost axis: arrays with one entry per seed."""

    cost: np.ndarray
    """Interpolated crossing; at the first evaluation: that evaluation's cost (upper bound); never reached: the last
    evaluation's cost (lower bound)."""
    lo: np.ndarray
    """The bracketing evaluation before the crossing (the start for one at the first evaluation); = cost when never
    reached."""
    hi: np.ndarray
    """The evaluation that reached the target; inf when never reached."""
    reached: np.ndarray
    at_first: np.ndarray


def first_crossing(rows: pd.DataFrame, target: float, higher: bool, costs=tuple(COSTS)) -> dict:
    """One run's crossing of ``target``: ``reached``, ``at_first`` and per cost axis ``(cost, lo, hi)`` (see
    ``Seeds``). ``rows``: the run's evaluations (``step``, ``value`` and the cost columns); rows without a value are
    left out. A missing cost column gives NaN costs on that axis."""
    rows = rows[rows["value"].notna()].sort_values("step")
    value = rows["value"].to_numpy(float)
    cols = {c: (rows[c].to_numpy(float) if c in rows else np.full(len(rows), np.nan)) for c in costs}
    hit = value >= target if higher else value <= target
    if not hit.any():
        return dict(reached=False, at_first=False, **{c: (x[-1], x[-1], np.inf) for c, x in cols.items()})
    i = int(np.argmax(hit))
    if not (rows["step"].to_numpy()[:i] > 0).any():  # the start, or the first evaluation after training began
        return dict(reached=True, at_first=True, **{c: (x[i], x[max(i - 1, 0)], x[i]) for c, x in cols.items()})
    t = (target - value[i - 1]) / (value[i] - value[i - 1])
    return dict(reached=True, at_first=False,
                **{c: (x[i - 1] + t * (x[i] - x[i - 1]), x[i - 1], x[i]) for c, x in cols.items()})


def seed_crossings(rows: pd.DataFrame, target: float, higher: bool, costs=tuple(COSTS)) -> dict[str, Seeds]:
    """``first_crossing`` of every run in ``rows`` (grouped by ``run_id``), as ``Seeds`` per cost axis."""
    found = [first_crossing(r, target, higher, costs) for _, r in rows.groupby("run_id")]
    reached = np.array([f["reached"] for f in found], dtype=bool)
    first = np.array([f["at_first"] for f in found], dtype=bool)
    return {c: Seeds(*(np.array([f[c][k] for f in found], dtype=float) for k in range(3)), reached, first)
            for c in costs}


def bound(ref_reached: np.ndarray, reached: np.ndarray, ref_first: np.ndarray | None = None,
          first: np.ndarray | None = None) -> str:
    """What a ratio of mean costs (reference / method) is: exact (""), a lower bound (">="), an upper bound
    ("<="), or nothing ("none": censoring in both directions). A seed censored at the budget makes its side's mean
    cost a lower bound, one that reached at its first evaluation (``*_first``) an upper bound."""
    ref_first = np.zeros(len(ref_reached), bool) if ref_first is None else ref_first
    first = np.zeros(len(reached), bool) if first is None else first
    at_least = (not ref_reached.all()) or bool(first.any())
    at_most = (not reached.all()) or bool(ref_first.any())
    return "none" if at_least and at_most else ">=" if at_least else "<=" if at_most else ""


def _ratio(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(a, float) / np.asarray(b, float)


def ratio_interval(ref: np.ndarray, mine: np.ndarray, *, rng: np.random.Generator, n_boot: int,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """(point, lo, hi): mean(ref) / mean(mine) and its percentile-bootstrap interval, each side's seeds resampled
    on their own (reference first, one ``bootstrap_indices`` draw per side). A side with one seed gives no interval
    (lo, hi NaN): one seed says nothing of the spread between seeds."""
    point = float(_ratio(ref.mean(), mine.mean()))
    if len(ref) < 2 or len(mine) < 2:
        return point, float("nan"), float("nan")
    boots = _ratio(ref[stats.bootstrap_indices(len(ref), n_boot, rng)].mean(axis=1),
                   mine[stats.bootstrap_indices(len(mine), n_boot, rng)].mean(axis=1))
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail], method="nearest")
    return point, float(lo), float(hi)


def speedup(ref: Seeds, mine: Seeds, *, rng: np.random.Generator, n_boot: int) -> dict:
    """The speed-up of ``mine`` over ``ref`` on one cost axis: ``bound`` ("" for a point), ``speedup`` (the ratio of
    mean costs; for a bound, the ratio of the bounding means; inf where the method's mean is 0), ``speedup_lo`` /
    ``speedup_hi`` (the bootstrap interval: a point over >= 2 seeds a side only), and ``spacing_lo`` /
    ``spacing_hi``: the ratio were every crossing at the near or far end of its bracket instead of on the straight
    line (how much the evaluation spacing, not the seeds, leaves open; a point only)."""
    kind = bound(ref.reached, mine.reached, ref.at_first, mine.at_first)
    out = dict(bound=kind, speedup=float("nan"), speedup_lo=float("nan"), speedup_hi=float("nan"),
               spacing_lo=float("nan"), spacing_hi=float("nan"))
    if not len(ref.cost) or not len(mine.cost) or np.isnan(ref.cost).any() or np.isnan(mine.cost).any():
        return out
    if kind == "":
        point, lo, hi = ratio_interval(ref.cost, mine.cost, rng=rng, n_boot=n_boot)
        out.update(speedup=point, speedup_lo=lo, speedup_hi=hi,
                   spacing_lo=float(_ratio(ref.lo.mean(), mine.hi.mean())),
                   spacing_hi=float(_ratio(ref.hi.mean(), mine.lo.mean())))
    elif kind != "none":
        out["speedup"] = float(_ratio(ref.cost.mean(), mine.cost.mean())) if mine.cost.mean() > 0 else float("inf")
    return out
