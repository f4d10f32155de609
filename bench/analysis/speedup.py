"""Time to a target reward as a statistic over seeds, not a reading of mean curves.

For each reward, the targets are absolute reward values: the reference method's mean final eval reward (the
AlignProp paper's "reaches DDPO's reward 25x faster") and ``FRACTIONS`` of the best method's gain over the
reference's own start (its step-0 evaluation, under its own evaluation setting: a method evaluated at another
guidance scale starts elsewhere, and no start pools settings or models). For every run, the cost (reward queries,
CPU seconds of training) at its first evaluation that reaches a target is read at evaluations, never interpolated
between them. Two kinds of seeds only bound their cost:

- *censored at the budget*: it never reaches the target; it counts the cost of its whole budget (its last
  evaluation), a lower bound on its true cost;
- *censored at the first evaluation*: it reaches the target at its first evaluation after training began (or at
  the start): its true cost is anywhere from 0 to that evaluation's, an upper bound.

The speed-up of a method is the reference's mean cost over its seeds / the method's. It is a point estimate with a
percentile-bootstrap 95 % interval (resampling the seeds of both methods independently) only where every seed of
both reached the target and none at its first evaluation. Otherwise it is a bound, printed as one with the seed
counts that make it so and no interval: ">=" where the reference had seeds censored at the budget or the method
seeds censored at the first evaluation, "<=" for the converse, nothing ("—") where both directions mix.

A target can lie inside the noise: its distance from the start is at most half the width of the reference's own
95 % interval of its final reward (the seed-to-seed spread of what it reached). Such targets are marked, as is
the reference's final reward when its interval contains the start (the reference did not measurably improve).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.results import Results, eval_curves, reward_higher_is_better
from bench.core.errors import UsageError
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED

DEFAULT_REFERENCE = "ddpo"
"""The reference when ``--reference`` is not given (results without it get no speed-up ratios)."""


def reference_method(runs: pd.DataFrame, asked: str | None) -> str:
    """The method the speed-up table measures against: ``asked`` (``--reference``), which must have runs in the
    results (else a ``UsageError`` listing the methods there), or ``DEFAULT_REFERENCE``."""
    if asked is None:
        return DEFAULT_REFERENCE
    present = sorted(set(runs["method"].astype(str)))
    if asked not in present:
        raise UsageError(f"--reference {asked!r}: no run of that method in these results; give one of "
                         f"{', '.join(present) or '(none)'}, or leave --reference out")
    return asked


FRACTIONS = (0.25, 0.5, 0.75)
"""Targets as fractions of the best method's mean gain over the start."""
COSTS = {"samples": "reward queries", "cpu_s": "CPU s"}
"""Cost axes of time to target: the column of the evaluation rows and its name."""


def first_reach(rows: pd.DataFrame, target: float, higher: bool, cost: str) -> tuple[float, bool, bool]:
    """(``cost`` at a run's first evaluation whose reward reaches ``target``, True, whether that evaluation is its
    first after training began (or the start): no evaluation after a training step missed the target first), or
    (the cost at its last evaluation, False, False) if none does: censored at the budget it spent."""
    rows = rows.sort_values("step")
    hit = (rows["value"] >= target if higher else rows["value"] <= target).to_numpy()
    if hit.any():
        i = int(np.argmax(hit))
        trained_before = int((rows["step"].to_numpy()[:i] > 0).sum())
        return float(rows[cost].iloc[i]), True, trained_before == 0
    return float(rows[cost].iloc[-1]), False, False


def seed_costs(rows: pd.DataFrame, target: float, higher: bool, cost: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``first_reach`` of every run in ``rows``: (costs, reached, at first evaluation) arrays, one entry per run."""
    found = [first_reach(r, target, higher, cost) for _, r in rows.groupby("run_id")]
    return (np.array([c for c, _, _ in found]), np.array([hit for _, hit, _ in found], dtype=bool),
            np.array([first for _, _, first in found], dtype=bool))


def ratio_interval(ref: np.ndarray, mine: np.ndarray, *, rng: np.random.Generator, n_boot: int):
    """(point, lo, hi) of mean(ref) / mean(mine) with the seeds of each resampled independently."""

    def ratio(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return a / b

    point = float(ratio(ref.mean(), mine.mean()))
    if len(ref) < 2 and len(mine) < 2:
        return point, point, point
    boots = ratio(ref[stats.bootstrap_indices(len(ref), n_boot, rng)].mean(axis=1),
                  mine[stats.bootstrap_indices(len(mine), n_boot, rng)].mean(axis=1))
    lo, hi = np.quantile(boots, [0.025, 0.975], method="nearest")
    return point, float(lo), float(hi)


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


def starts_by_label(rc: pd.DataFrame) -> dict[str, float]:
    """Each label's start: the mean over its runs of their first (step-0) evaluation."""
    first = rc.sort_values("step").groupby("run_id").first()
    return {label: float(g["value"].mean()) for label, g in first.groupby("label")}


def targets(rc: pd.DataFrame, finals: dict[str, np.ndarray], reference: str, ref_label: str | None,
            higher: bool, *, rng: np.random.Generator, n_boot: int, fractions=FRACTIONS) -> list[dict]:
    """The targets of one reward: name, value, the start they are measured from, and whether they lie inside the
    reference's noise around it. ``finals``: final rewards by label; ``ref_label``: the reference method's label
    (None when it is absent). The start is the reference's own (the best method's own without a reference)."""
    means = {k: float(v.mean()) for k, v in finals.items() if len(v)}
    starts = starts_by_label(rc)
    if not means:
        return []
    best = (max if higher else min)(means, key=means.get)
    anchor = ref_label if ref_label in starts else best
    start = starts.get(anchor, float("nan"))
    if math.isnan(start):
        return []
    half = float("nan")
    found = []
    if ref_label in means:
        _, lo, hi = stats.bootstrap_ci(finals[ref_label], "mean", rng=rng, n_boot=n_boot)
        half = (hi - lo) / 2
        ref_mean = means[ref_label]
        if (ref_mean > start) == higher and ref_mean != start:
            found.append(dict(name=f"{reference} final", value=ref_mean, start=start, anchor=anchor,
                              inside=bool(lo <= start <= hi)))
    gain = means[best] - start
    if (gain > 0) == higher and gain != 0:
        for f in fractions:
            value = start + f * gain
            found.append(dict(name=f"{round(f * 100)}% of {best}'s gain", value=value, start=start, anchor=anchor,
                              inside=bool(abs(value - start) <= half)))
    return found


def time_to_targets(results: Results, reference: str, *, rng: np.random.Generator, n_boot: int = 2000,
                    fractions=FRACTIONS) -> pd.DataFrame:
    """One row per (reward, target, method, cost axis): seeds reaching it, mean cost, speed-up vs ``reference``
    with its 95 % interval. Runs that did not finish their budget are left out (their curves stop early)."""
    runs, curves = results.runs, eval_curves(results)
    done_ids = set(runs.loc[runs["status"].isin(COMPLETED), "run_id"])
    rows = []
    # Per (reward, model): a start, a target and a time to it mean nothing across models (an sd run's start is no
    # flow run's), so runs of different models are never pooled here.
    for (reward, model), rgroup in runs.groupby(["reward", "model"], sort=True):
        higher = reward_higher_is_better(reward)
        rc = curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval") & curves["run_id"].isin(done_ids)
                    & curves["run_id"].isin(set(rgroup["run_id"]))]
        if not len(rc):
            continue
        done = rgroup[rgroup["run_id"].isin(done_ids)]
        finals = {label: g["final_eval_reward"].dropna().to_numpy(float) for label, g in done.groupby("label")}
        ref_label = next((lab for lab, g in done.groupby("label") if g["method"].iloc[0] == reference), None)
        for target in targets(rc, finals, reference, ref_label, higher, rng=rng, n_boot=n_boot, fractions=fractions):
            cost_of = {label: {c: seed_costs(lc, target["value"], higher, c) for c in COSTS}
                       for label, lc in rc.groupby("label")}
            ref_costs = cost_of.get(ref_label)
            for label, costs in sorted(cost_of.items()):
                for cost, (values, reached, first) in costs.items():
                    point = lo = hi = float("nan")
                    kind = ""  # no reference in these results: no ratio, and nothing censored to say
                    ref_values, ref_reached, ref_first = ref_costs[cost] if ref_costs is not None else ([],) * 3
                    if ref_costs is not None:
                        kind = bound(ref_reached, reached, ref_first, first)
                        if kind == "":
                            point, lo, hi = ratio_interval(ref_values, values, rng=rng, n_boot=n_boot)
                        elif kind != "none":
                            point = float(np.mean(ref_values) / np.mean(values)) if np.mean(values) > 0 else math.inf
                    rows.append(dict(reward=reward, model=model, target_name=target["name"], target=target["value"],
                                     start=target["start"], start_of=target["anchor"], inside_noise=target["inside"],
                                     method=label, cost=cost, seeds=len(values), reached=int(reached.sum()),
                                     at_first=int(first.sum()), mean_cost=float(values.mean()),
                                     ref_seeds=len(ref_values), ref_reached=int(np.sum(ref_reached)),
                                     ref_at_first=int(np.sum(ref_first)),
                                     speedup=point, speedup_lo=lo, speedup_hi=hi, bound=kind))
    return pd.DataFrame(rows)


def _bound_reasons(r, reference: str) -> str:
    """The seed counts that make a speed-up a bound: "3/3 at 1st eval; flow-grpo 1/3 reached"."""
    reasons = []
    if r.reached < r.seeds:
        reasons.append(f"{r.reached}/{r.seeds} reached")
    if r.at_first:
        reasons.append(f"{r.at_first}/{r.seeds} at 1st eval")
    if r.ref_reached < r.ref_seeds:
        reasons.append(f"{reference} {r.ref_reached}/{r.ref_seeds} reached")
    if r.ref_at_first:
        reasons.append(f"{reference} {r.ref_at_first}/{r.ref_seeds} at 1st eval")
    return "; ".join(reasons)


def _speedup_text(r, reference: str = "the reference") -> str:
    if r.bound == "none":
        return f"— ({_bound_reasons(r, reference)})"
    if math.isnan(r.speedup):
        return "—"
    if math.isinf(r.speedup):
        return f"— (at the start: {_bound_reasons(r, reference)})"
    if r.bound in (">=", "<="):  # a bound is a bound: no interval around it
        return f"{r.bound} {r.speedup:.2f}x ({_bound_reasons(r, reference)})"
    return f"{r.speedup:.2f}x [{r.speedup_lo:.2f}x, {r.speedup_hi:.2f}x]"


def _cost_text(r) -> str:
    below, above = r.reached < r.seeds, getattr(r, "at_first", 0) > 0
    if below and above:
        return f"~{fmt(r.mean_cost, 1)} (censored both ways)"
    return f">= {fmt(r.mean_cost, 1)}" if below else f"<= {fmt(r.mean_cost, 1)}" if above else fmt(r.mean_cost, 1)


def markdown(table: pd.DataFrame, reference: str) -> list[str]:
    """The report section: one table per reward, rows target x method, columns per cost axis."""
    if not len(table):
        return []
    lines = [f"## Time to target, speed-up vs {reference}", "",
             "Per seed, the cost at its first evaluation that reaches the target (read at evaluations, not "
             "interpolated); `reached` counts seeds. Targets are absolute rewards, fractions of the best gain "
             f"measured from {reference}'s own start. A seed that never reaches a target counts its whole budget "
             "(its mean cost reads \">=\"); one that reaches it at its first evaluation after training began (\"at 1st "
             "eval\") may have got there any time before (\"<=\"). Speed-up = "
             f"{reference}'s mean cost / the method's: with a 95 % percentile-bootstrap interval over both methods' "
             "seeds only where every seed of both reached the target, none at its first evaluation; otherwise a bound "
             f"without interval, \">=\" ({reference} had seeds that never reached it, or the method reached it at its "
             "first evaluation) or \"<=\" (the converse), with the seed counts that make it one; \"—\": bounds both "
             "ways (the counts in brackets). The AlignProp paper reports about 25x for AlignProp over DDPO on "
             "aesthetics.", ""]
    several = "model" in table and table["model"].nunique() > 1
    for (reward, model), g in table.groupby(["reward", "model"] if "model" in table else ["reward", "reward"],
                                            sort=True):
        shown = []
        for (name, method), tg in g.groupby(["target_name", "method"], sort=False):
            row = {"target": f"{name} ({fmt(tg['target'].iloc[0])})", "method": method,
                   "reached": f"{tg['reached'].iloc[0]}/{tg['seeds'].iloc[0]}"}
            for r in tg.itertuples():
                row[f"{COSTS[r.cost]} to reach"] = _cost_text(r)
                row[f"speed-up ({COSTS[r.cost]})"] = ("(reference)" if method == reference else
                                                       _speedup_text(r, reference))
            shown.append(row)
        anchor = g["start_of"].iloc[0] if "start_of" in g else reference
        on = f" on {model}" if several else ""
        lines += [f"### {reward}{on} (start {fmt(g['start'].iloc[0])}: {anchor}'s step-0 evaluation)", "",
                  markdown_table(pd.DataFrame(shown)), ""]
        if reference in set(g["method"]) and f"{reference} final" not in set(g["target_name"]):
            lines.append(f"- **No `{reference} final` target:** {reference}'s mean final reward is not beyond the start "
                         f"({fmt(g['start'].iloc[0])}): it did not improve at this budget, so no speed-up to it exists.")
        for name, tg in g[g["inside_noise"].astype(bool)].groupby("target_name", sort=False):
            why = (f"{reference}'s own 95 % interval of its final reward contains the start"
                   if name == f"{reference} final" else
                   f"it is no farther from the start than half the width of {reference}'s final-reward interval")
            lines.append(f"- **Target inside the noise:** {name} ({fmt(tg['target'].iloc[0])}): {why}; a speed-up "
                         "to it measures noise, not learning.")
        lines.append("")
    return lines
