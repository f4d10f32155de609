"""Time to a target reward as a statistic over seeds, not a reading of mean curves.

For each reward, the targets are the reference method's mean final eval reward (the AlignProp paper's "reaches
DDPO's reward 25x faster") and ``FRACTIONS`` of the best method's gain over the start. For every run, the cost
(reward queries, CPU seconds of training) at its first evaluation that reaches a target is read at evaluations,
never interpolated between them. A run that never reaches it is *censored*: it counts the cost of its whole budget
(its last evaluation), a lower bound on its true cost. The speed-up of a method is the reference's mean cost over its
seeds / the method's mean cost over its seeds, with a percentile-bootstrap 95 % interval that resamples the seeds of
both methods independently. With censored reference seeds (and none of the method's) the ratio is a lower bound
(``bound`` ">="); with censored seeds of the method only, an upper bound ("<="); with both, no ratio.

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
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED

FRACTIONS = (0.25, 0.5, 0.75)
"""Targets as fractions of the best method's mean gain over the start."""
COSTS = {"samples": "reward queries", "cpu_s": "CPU s"}
"""Cost axes of time to target: the column of the evaluation rows and its name."""


def first_reach(rows: pd.DataFrame, target: float, higher: bool, cost: str) -> tuple[float, bool]:
    """(``cost`` at a run's first evaluation whose reward reaches ``target``, True), or (the cost at its last
    evaluation, False) if none does: censored at the budget it spent."""
    rows = rows.sort_values("step")
    hit = rows["value"] >= target if higher else rows["value"] <= target
    if hit.any():
        return float(rows.loc[hit, cost].iloc[0]), True
    return float(rows[cost].iloc[-1]), False


def seed_costs(rows: pd.DataFrame, target: float, higher: bool, cost: str) -> tuple[np.ndarray, np.ndarray]:
    """``first_reach`` of every run in ``rows``: (costs, reached) arrays, one entry per seed."""
    pairs = [first_reach(r, target, higher, cost) for _, r in rows.groupby("run_id")]
    return np.array([c for c, _ in pairs]), np.array([hit for _, hit in pairs], dtype=bool)


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


def bound(ref_reached: np.ndarray, reached: np.ndarray) -> str:
    """What a ratio of censored mean costs is: exact (""), a lower bound (">="), an upper bound ("<="), or
    nothing ("none": both sides hold censored seeds)."""
    ref_cut, cut = not ref_reached.all(), not reached.all()
    return "none" if ref_cut and cut else ">=" if ref_cut else "<=" if cut else ""


def targets(rc: pd.DataFrame, finals: dict[str, np.ndarray], reference: str, ref_label: str | None,
            higher: bool, *, rng: np.random.Generator, n_boot: int, fractions=FRACTIONS) -> list[dict]:
    """The targets of one reward: name, value, and whether it lies inside the reference's noise around the start.
    ``finals``: final rewards by label; ``ref_label``: the reference method's label (None when it is absent)."""
    start = float(rc.sort_values("step").groupby("run_id")["value"].first().mean())
    means = {k: float(v.mean()) for k, v in finals.items() if len(v)}
    if not means or math.isnan(start):
        return []
    best = (max if higher else min)(means, key=means.get)
    half = float("nan")
    found = []
    if ref_label in means:
        _, lo, hi = stats.bootstrap_ci(finals[ref_label], "mean", rng=rng, n_boot=n_boot)
        half = (hi - lo) / 2
        ref_mean = means[ref_label]
        if (ref_mean > start) == higher and ref_mean != start:
            found.append(dict(name=f"{reference} final", value=ref_mean, start=start,
                              inside=bool(lo <= start <= hi)))
    gain = means[best] - start
    if (gain > 0) == higher and gain != 0:
        for f in fractions:
            value = start + f * gain
            found.append(dict(name=f"{round(f * 100)}% of {best}'s gain", value=value, start=start,
                              inside=bool(abs(value - start) <= half)))
    return found


def time_to_targets(results: Results, reference: str, *, rng: np.random.Generator, n_boot: int = 2000,
                    fractions=FRACTIONS) -> pd.DataFrame:
    """One row per (reward, target, method, cost axis): seeds reaching it, mean cost, speed-up vs ``reference``
    with its 95 % interval. Runs that did not finish their budget are left out (their curves stop early)."""
    runs, curves = results.runs, eval_curves(results)
    done_ids = set(runs.loc[runs["status"].isin(COMPLETED), "run_id"])
    rows = []
    for reward, rgroup in runs.groupby("reward", sort=True):
        higher = reward_higher_is_better(reward)
        rc = curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval") & curves["run_id"].isin(done_ids)]
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
                for cost, (values, reached) in costs.items():
                    point = lo = hi = float("nan")
                    kind = ""  # no reference in these results: no ratio, and nothing censored to say
                    if ref_costs is not None:
                        ref_values, ref_reached = ref_costs[cost]
                        kind = bound(ref_reached, reached)
                        if kind != "none":
                            point, lo, hi = ratio_interval(ref_values, values, rng=rng, n_boot=n_boot)
                    rows.append(dict(reward=reward, target_name=target["name"], target=target["value"],
                                     start=target["start"], inside_noise=target["inside"], method=label, cost=cost,
                                     seeds=len(values), reached=int(reached.sum()), mean_cost=float(values.mean()),
                                     speedup=point, speedup_lo=lo, speedup_hi=hi, bound=kind))
    return pd.DataFrame(rows)


def _speedup_text(r) -> str:
    if r.bound == "none" or math.isnan(r.speedup):
        return "— (both censored)" if r.bound == "none" and r.reached < r.seeds else "—"
    prefix = {">=": ">= ", "<=": "<= "}.get(r.bound, "")
    return f"{prefix}{r.speedup:.2f}x [{r.speedup_lo:.2f}x, {r.speedup_hi:.2f}x]"


def _cost_text(r) -> str:
    return fmt(r.mean_cost, 1) if r.reached == r.seeds else f">= {fmt(r.mean_cost, 1)}"


def markdown(table: pd.DataFrame, reference: str) -> list[str]:
    """The report section: one table per reward, rows target x method, columns per cost axis."""
    if not len(table):
        return []
    lines = [f"## Time to target, speed-up vs {reference} with 95 % intervals", "",
             "Per seed, the cost at its first evaluation that reaches the target (read at evaluations, not "
             "interpolated); `reached` counts seeds. A seed that never reaches it counts its whole budget (censored): "
             "its mean cost reads \">=\". Speed-up = "
             f"{reference}'s mean cost / the method's, percentile bootstrap over both methods' seeds; \">=\": a "
             f"lower bound ({reference} had censored seeds), \"<=\": an upper bound (the method had), \"—\": both "
             "had. The AlignProp paper reports about 25x for AlignProp over DDPO on aesthetics.", ""]
    for reward, g in table.groupby("reward", sort=True):
        shown = []
        for (name, method), tg in g.groupby(["target_name", "method"], sort=False):
            row = {"target": f"{name} ({fmt(tg['target'].iloc[0])})", "method": method,
                   "reached": f"{tg['reached'].iloc[0]}/{tg['seeds'].iloc[0]}"}
            for r in tg.itertuples():
                row[f"{COSTS[r.cost]} to reach"] = _cost_text(r)
                row[f"speed-up ({COSTS[r.cost]})"] = "(reference)" if method == reference else _speedup_text(r)
            shown.append(row)
        lines += [f"### {reward} (start {fmt(g['start'].iloc[0])})", "", markdown_table(pd.DataFrame(shown)), ""]
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
