"""Time to a target reward as a statistic over seeds, not a reading of mean curves.

For each (reward, model), the targets are absolute rewards at levels the reference method reaches (``FRACTIONS``
of its gain): 50 % and 75 % of its mean gain over its start, and its mean final eval reward itself (100 %: the
AlignProp paper's "reaches DDPO's reward 25x faster"). The start is the reference's own step-0 evaluation, under
its own evaluation setting (a method evaluated at another guidance scale starts elsewhere: said under the table;
runs of different models are never pooled). Where the reference did not improve, or did not run, the levels are
the best method's, and there is no ratio to a reference that never moved.

Each seed's cost to a target is its first crossing, interpolated between the two evaluations that bracket it, or a
bound (never reached; reached at the first evaluation); the speed-up is the reference's mean cost / the method's,
a point with a bootstrap interval where every seed of both crossed between evaluations, else a bound with the seed
counts that make it one (``bench.analysis.reach`` has the formulas and why).

A target can lie inside the noise: its distance from the start is at most half the width of the 95 % interval of
the final reward of the method whose levels they are (the seed-to-seed spread of what it reached). Such targets
are marked, as is that method's final reward when its interval contains the start.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis import reach, stats
from bench.analysis.reach import COSTS
from bench.analysis.results import Results, eval_curves, eval_setting, reward_higher_is_better
from bench.core.errors import UsageError
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED

DEFAULT_REFERENCE = "ddpo"
"""The reference when ``--reference`` is not given (results without it get no speed-up ratios)."""
FRACTIONS = (0.5, 0.75, 1.0)
"""Targets as fractions of the reference's mean gain over its start (1.0: its mean final reward)."""


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


def starts_by_label(rc: pd.DataFrame) -> dict[str, float]:
    """Each label's start: the mean over its runs of their first (step-0) evaluation."""
    first = rc.sort_values("step").groupby("run_id").first()
    return {label: float(g["value"].mean()) for label, g in first.groupby("label")}


def targets(rc: pd.DataFrame, finals: dict[str, np.ndarray], reference: str, ref_label: str | None,
            higher: bool, *, rng: np.random.Generator, n_boot: int, fractions=FRACTIONS) -> list[dict]:
    """The targets of one (reward, model): name, value, the start they are measured from (``anchor``: whose start),
    whose levels they are (``level_of``) and whether they lie inside the noise. ``finals``: final rewards by label;
    ``ref_label``: the reference method's label (None when it is absent)."""
    means = {k: float(v.mean()) for k, v in finals.items() if len(v)}
    starts = starts_by_label(rc)
    if not means:
        return []
    best = (max if higher else min)(means, key=means.get)
    anchor = ref_label if ref_label in starts else best
    start = starts.get(anchor, float("nan"))
    if math.isnan(start):
        return []

    def improved(label) -> bool:
        return label in means and means[label] != start and (means[label] > start) == higher

    level = ref_label if improved(ref_label) else best if improved(best) else None
    if level is None:
        return []
    _, lo, hi = stats.bootstrap_ci(finals[level], "mean", rng=rng, n_boot=n_boot)
    half, gain = (hi - lo) / 2, means[level] - start
    who = reference if level == ref_label else level
    found = []
    for f in sorted(fractions):
        value = start + f * gain
        name = f"{who} final" if f == 1 else f"{round(f * 100)}% of {who}'s gain"
        inside = bool(lo <= start <= hi) if f == 1 else bool(abs(value - start) <= half)
        found.append(dict(name=name, value=value, start=start, anchor=anchor, level_of=level, inside=inside))
    return found


def time_to_targets(results: Results, reference: str, *, rng: np.random.Generator, n_boot: int = 2000,
                    fractions=FRACTIONS) -> pd.DataFrame:
    """One row per (reward, model, target, method, cost axis): seeds reaching it, mean cost, speed-up vs
    ``reference`` (``reach.speedup``'s columns). Runs that did not finish their budget are left out (their curves
    stop early)."""
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
        starts = starts_by_label(rc)
        setting = {label: set(eval_setting(g)) for label, g in done.groupby("label")} if "eval_guidance" in done else {}
        for target in targets(rc, finals, reference, ref_label, higher, rng=rng, n_boot=n_boot, fractions=fractions):
            crossings = {label: reach.seed_crossings(lc, target["value"], higher) for label, lc in rc.groupby("label")}
            ref = crossings.get(ref_label)
            for label, axes in sorted(crossings.items()):
                for cost, seeds in axes.items():
                    ratio = (reach.speedup(ref[cost], seeds, rng=rng, n_boot=n_boot) if ref is not None else
                             dict(bound="", **dict.fromkeys(("speedup", "speedup_lo", "speedup_hi", "spacing_lo",
                                                             "spacing_hi"), float("nan"))))
                    rows.append(dict(reward=reward, model=model, target_name=target["name"], target=target["value"],
                                     start=target["start"], start_of=target["anchor"], level_of=target["level_of"],
                                     inside_noise=target["inside"], method=label, is_reference=label == ref_label,
                                     own_start=starts.get(label, float("nan")),
                                     other_setting=setting.get(label) != setting.get(target["anchor"]), cost=cost, seeds=len(seeds.cost),
                                     reached=int(seeds.reached.sum()), at_first=int(seeds.at_first.sum()),
                                     mean_cost=float(np.mean(seeds.cost)),
                                     ref_seeds=len(ref[cost].cost) if ref is not None else 0,
                                     ref_reached=int(ref[cost].reached.sum()) if ref is not None else 0,
                                     ref_at_first=int(ref[cost].at_first.sum()) if ref is not None else 0, **ratio))
    return pd.DataFrame(rows)


def _seeds(n: int, of: int, label: str, what: str) -> str:
    return f"{n} of {of} seed{'s' if of != 1 else ''} of {label} {what}"


def note(r, reference: str) -> str:
    """Why a speed-up is a bound, in seed counts ("2 of 3 seeds of ddpo reached"), or why a point has no interval."""
    if r.bound:  # ">=", "<=" or "none"
        reasons = []
        if r.reached < r.seeds:
            reasons.append(_seeds(r.reached, r.seeds, r.method, "reached"))
        if r.at_first:
            reasons.append(_seeds(r.at_first, r.seeds, r.method, "at the 1st evaluation"))
        if r.ref_reached < r.ref_seeds:
            reasons.append(_seeds(r.ref_reached, r.ref_seeds, reference, "reached"))
        if r.ref_at_first:
            reasons.append(_seeds(r.ref_at_first, r.ref_seeds, reference, "at the 1st evaluation"))
        return "; ".join(reasons)
    if r.ref_seeds and not math.isnan(r.speedup) and (r.seeds < 2 or r.ref_seeds < 2):
        one = [who for who, n in ((reference, r.ref_seeds), (r.method, r.seeds)) if n < 2]
        return f"1 seed of {' and '.join(dict.fromkeys(one))}: no interval"
    return ""


def speedup_text(r) -> str:
    if r.bound == "none" or math.isnan(r.speedup):
        return "—"
    if math.isinf(r.speedup):
        return "— (at the start)"
    if r.bound in (">=", "<="):  # a bound is a bound: no interval around it
        return f"{r.bound} {r.speedup:.2f}x"
    if math.isnan(r.speedup_lo):
        return f"{r.speedup:.2f}x"
    return f"{r.speedup:.2f}x [{r.speedup_lo:.2f}x, {r.speedup_hi:.2f}x]"


def cost_text(r) -> str:
    below, above = r.reached < r.seeds, getattr(r, "at_first", 0) > 0
    if below and above:
        return f"~{fmt(r.mean_cost, 1)} (censored both ways)"
    return f">= {fmt(r.mean_cost, 1)}" if below else f"<= {fmt(r.mean_cost, 1)}" if above else fmt(r.mean_cost, 1)


def intro(reference: str) -> str:
    return (
        "Per seed, the cost at which its evaluation reward first reaches the target, read on the straight line "
        "between the two evaluations that bracket the crossing (in reward queries, training seconds and CPU seconds "
        f"alike); `reached` counts seeds. Targets are levels {reference} reaches: 50 % and 75 % of its mean gain over "
        f"its start ({reference}'s step-0 evaluation) and its mean final reward. A seed that never reaches a target "
        "counts its whole budget (its mean cost reads \">=\"); one that reaches it at its first evaluation after "
        "training began may have got there any time after the start and counts that evaluation (\"<=\"; no line is "
        f"drawn from the start). Speed-up = {reference}'s mean cost / the method's: where every seed of both crossed "
        "between two evaluations, a point with a 95 % percentile-bootstrap interval (each method's seeds resampled "
        "on their own; none with one seed); otherwise a bound, \">=\" or \"<=\", with the seed counts that make it "
        "one under `why a bound`, or \"—\" where it is bounded both ways. `time_to_target.csv` adds, for a point, "
        "the ratio were every crossing at either end of its bracket (`spacing_lo`, `spacing_hi`): what the "
        "evaluation spacing leaves open. The AlignProp paper reports about 25x for AlignProp over DDPO on "
        "aesthetics.")


def markdown(table: pd.DataFrame, reference: str) -> list[str]:
    """The report section: one table per (reward, model), rows target x method, columns per cost axis."""
    if not len(table):
        return []
    lines = [f"## Time to target, speed-up vs {reference}", "", intro(reference), ""]
    several = "model" in table and table["model"].nunique() > 1
    for (reward, model), g in table.groupby(["reward", "model"] if "model" in table else ["reward", "reward"],
                                            sort=True):
        shown = []
        for (name, method), tg in g.groupby(["target_name", "method"], sort=False):
            first = next(tg.itertuples())
            is_ref = bool(getattr(first, "is_reference", method == reference))
            row = {"target": f"{name} ({fmt(first.target)})", "method": method,
                   "reached": f"{first.reached}/{first.seeds}"}
            for r in tg.itertuples():
                row[f"{COSTS[r.cost]} to reach"] = cost_text(r)
                row[f"speed-up ({COSTS[r.cost]})"] = "(reference)" if is_ref else speedup_text(r)
            row["why a bound"] = "" if is_ref else note(first, reference)
            shown.append(row)
        anchor = g["start_of"].iloc[0] if "start_of" in g else reference
        start = g["start"].iloc[0]
        on = f" on {model}" if several else ""
        lines += [f"### {reward}{on} (start {fmt(start)}: {anchor}'s step-0 evaluation)", "",
                  markdown_table(pd.DataFrame(shown)), ""]
        if reference in set(g["method"]) and f"{reference} final" not in set(g["target_name"]):
            lines.append(f"- **No `{reference} final` target:** {reference}'s mean final reward is not beyond the start "
                         f"({fmt(start)}): it did not improve at this budget, so no speed-up to its levels exists; the "
                         f"targets are {g['level_of'].iloc[0] if 'level_of' in g else 'the best method'}'s levels.")
        for name, tg in g[g["inside_noise"].astype(bool)].groupby("target_name", sort=False):
            whose = tg["level_of"].iloc[0] if "level_of" in tg else reference
            why = (f"{whose}'s own 95 % interval of its final reward contains the start" if name.endswith(" final")
                   else f"it is no farther from the start than half the width of {whose}'s final-reward interval")
            lines.append(f"- **Target inside the noise:** {name} ({fmt(tg['target'].iloc[0])}): {why}; a speed-up "
                         "to it measures noise, not learning.")
        if "other_setting" in g:
            for r in g[g["other_setting"].astype(bool)].drop_duplicates("method").itertuples():
                lines.append(f"- **Another start:** `{r.method}` is evaluated under another setting: its step-0 "
                             f"evaluation is {fmt(r.own_start)}, not {fmt(start)}; its costs to these absolute "
                             "targets include that difference.")
        lines.append("")
    return lines
