"""Published claims tested on a suite: the report's "Published claims" section and ``claims.csv``.

The claims are data, ``bench/suite/claims.toml``; each is tested in every cell that has runs of both its methods.
- **speed-up**: the time for ``method`` to reach ``reference``'s mean final learned reward, against the reference's
  own (``speedup.time_to_targets`` with that reference: crossings read between the evaluations that bracket them, a
  point with a 95 % bootstrap interval, or a bound with its seed counts). Verdict against the claimed factor:
  *holds* (the interval, or a lower bound, at or above it), *consistent* (the interval contains it), *faster, below
  the claim* (the interval above 1 and below the factor), *no difference shown*, *slower*, or *undecided* (a bound
  that decides nothing, a target inside the noise: the reference did not learn, or a method whose own step-0
  evaluation, under another setting, is already past the target).
- **equal-reward**: at the learned reward both reach on average (the lower of their mean final rewards), each run's
  ``metric`` read where its evaluation curve first crosses that level (straight line between the two evaluations
  that bracket it; a run that never reaches it gives its final value and is counted); the difference of means
  (method - reference, in the metric's better direction) with a 95 % percentile bootstrap over each side's seeds.
  Verdict: *holds* (the interval above 0), *reversed* (below 0), *no difference shown*; *undecided* where the lower
  of the two mean finals is no gain over the start (its 95 % bootstrap interval over seeds holds the start: both
  would be read at the base model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import speedup, stats
from bench.analysis.results import reward_higher_is_better
from bench.analysis.suite_scores import is_diversity
from bench.core.errors import UsageError
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "suite" / "claims.toml"
KINDS = ("speed-up", "equal-reward")
COSTS = ("samples", "cpu_s", "wall_s")
METRICS = ("true", "diversity")


@dataclass(frozen=True)
class Claim:
    name: str
    """The table's key in claims.toml."""
    source: str
    """Who claims it and how, as the paper says it."""
    kind: str
    """``speed-up`` or ``equal-reward``."""
    method: str
    """The method the claim is about."""
    reference: str
    """The method it is claimed against."""
    factor: float = float("nan")
    """speed-up: the claimed ratio of costs."""
    costs: tuple[str, ...] = ()
    """speed-up: the cost axes tested (reward queries ``samples``, ``cpu_s``, ``wall_s``)."""
    metric: str = ""
    """equal-reward: ``true`` (the task's true score) or ``diversity`` (every diversity metric recorded)."""


def load_claims(path: str | Path | None = None) -> list[Claim]:
    """The claims of ``path`` (default ``bench/suite/claims.toml``); a bad entry is a one-line ``UsageError``."""
    import tomllib

    path = Path(path) if path is not None else CLAIMS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the claims ({exc}); restore it from git") from None
    claims = []
    for name, entry in (data.get("claims") or {}).items():
        where = f"{path} [claims.{name}]"
        missing = [k for k in ("source", "kind", "method", "reference") if k not in entry]
        if missing:
            raise UsageError(f"{where}: missing {', '.join(missing)}; every claim names them")
        kind = entry["kind"]
        if kind not in KINDS:
            raise UsageError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if kind == "speed-up":
            costs = tuple(entry.get("costs") or ())
            factor = entry.get("factor")
            if not costs or any(c not in COSTS for c in costs):
                raise UsageError(f"{where}: costs {list(costs)} must be a non-empty list of {', '.join(COSTS)}")
            if not isinstance(factor, (int, float)) or factor <= 0:
                raise UsageError(f"{where}: factor {factor!r} must be a positive number (the claimed ratio)")
            claims.append(Claim(name, entry["source"], kind, entry["method"], entry["reference"], float(factor),
                                costs))
        else:
            if entry.get("metric") not in METRICS:
                raise UsageError(f"{where}: metric {entry.get('metric')!r} must be one of {', '.join(METRICS)}")
            claims.append(Claim(name, entry["source"], kind, entry["method"], entry["reference"],
                                metric=entry["metric"]))
    return claims


def speedup_verdict(row, factor: float) -> str:
    """The verdict of one ``time_to_targets`` row against the claimed ``factor``."""
    if bool(row["inside_noise"]):
        return "undecided: the reference did not learn (its target lies inside the noise)"
    value, lo, hi, bound = row["speedup"], row["speedup_lo"], row["speedup_hi"], row["bound"]
    if bound == "none" or value is None or math.isnan(value):
        return "undecided: bounded both ways"
    if math.isinf(value):  # its own step-0 evaluation is already past the target: a setting, not learning
        return "undecided: it starts at or past the target (its step-0 evaluation, under its own setting)"
    if bound == ">=":
        return ("holds (a lower bound at or above the claim)" if value >= factor else
                "faster, the claim neither shown nor ruled out (a lower bound below it)" if value > 1 else
                "undecided (a lower bound at or below 1)")
    if bound == "<=":
        return ("slower (an upper bound below 1)" if value < 1 else
                "below the claim (an upper bound under it)" if value < factor else "undecided (an upper bound above it)")
    if math.isnan(lo):
        lo = hi = value  # one seed: the point alone
    if lo >= factor:
        return "holds (the interval at or above the claim)"
    if lo <= factor <= hi:
        return "consistent (the interval contains the claim)"
    if lo > 1:
        return "faster, below the claim"
    return "slower" if hi < 1 else "no difference shown"


def crossing_value(steps_reward: np.ndarray, metric: np.ndarray, level: float, higher: bool) -> tuple[float, bool]:
    """``metric`` where the reward curve first reaches ``level`` (linear between the bracketing evaluations), and
    whether it does; a curve that never reaches it gives its last value."""
    r = np.asarray(steps_reward, float) * (1 if higher else -1)
    level = level * (1 if higher else -1)
    above = np.flatnonzero(r >= level)
    if not len(above):
        return float(metric[-1]), False
    i = int(above[0])
    if i == 0:
        return float(metric[0]), True
    f = (level - r[i - 1]) / (r[i] - r[i - 1])
    return float(metric[i - 1] + f * (metric[i] - metric[i - 1])), True


def equal_reward(results, method: str, reference: str, metric: str, metric_higher: bool, *, rng, n_boot: int):
    """The rows of one equal-reward comparison in one cell (one per metric name), or [] without runs of both."""
    runs = results.runs[results.runs["status"].isin(COMPLETED)]
    ev = results.metrics[results.metrics["split"] == "eval"]
    higher = reward_higher_is_better(str(runs["reward"].iloc[0])) if len(runs) else True
    curves = {}
    for label in (method, reference):
        ids = list(runs.loc[runs["label"] == label, "run_id"])
        table = ev[ev["run_id"].isin(ids)].pivot_table(index=["run_id", "step"], columns="metric", values="value")
        curves[label] = {rid: g.droplevel(0).sort_index() for rid, g in table.groupby(level=0)}
    if not all(curves.values()):
        return []
    finals = {lab: np.mean([c["reward_mean"].iloc[-1] for c in runs_.values()]) for lab, runs_ in curves.items()}
    level = (min if higher else max)(finals.values())
    start = float(np.mean([c["reward_mean"].iloc[0] for runs_ in curves.values() for c in runs_.values()]))
    lower = min(finals, key=lambda lab: finals[lab] * (1 if higher else -1))
    lower_finals = np.array([c["reward_mean"].iloc[-1] for c in curves[lower].values()])
    # the level must be a gain beyond the noise: the lower method's final rewards' interval must not hold the start
    _, gain_lo, gain_hi = stats.bootstrap_ci(lower_finals, "mean", rng=rng, n_boot=n_boot)
    no_gain = (level - start) * (1 if higher else -1) <= 0 or (len(lower_finals) > 1 and gain_lo <= start <= gain_hi)
    names = [c for c in next(iter(curves[method].values())).columns if is_diversity(c)] if metric == "diversity" \
        else [metric]
    rows = []
    for name in names:
        values, reached = {}, {}
        for lab, runs_ in curves.items():
            got = [crossing_value(c["reward_mean"].to_numpy(), c[name].to_numpy(), level, higher)
                   for c in runs_.values() if name in c]
            values[lab] = np.array([v for v, _ in got])
            reached[lab] = f"{sum(r for _, r in got)}/{len(got)}"
        sign = 1 if metric_higher else -1
        diff = sign * (values[method].mean() - values[reference].mean())
        lo = hi = float("nan")
        if min(len(values[method]), len(values[reference])) >= 2:
            boots = [sign * (rng.choice(values[method], len(values[method])).mean()
                             - rng.choice(values[reference], len(values[reference])).mean()) for _ in range(n_boot)]
            lo, hi = np.percentile(boots, [2.5, 97.5])
        verdict = ("holds" if lo > 0 else "reversed" if hi < 0 else "no difference shown") if not math.isnan(lo) \
            else "one seed: no verdict"
        if no_gain:  # the lower of the two never left the start: both would be read at the base model
            verdict = f"undecided: {lower} did not raise its learned reward beyond the noise around the start"
        rows.append(dict(metric=name, start=start, level=level, method_value=values[method].mean(),
                         reference_value=values[reference].mean(), difference=diff, lo=lo, hi=hi,
                         method_reached=reached[method], reference_reached=reached[reference], verdict=verdict))
    return rows


def check_claims(suite, claims: list[Claim], *, seed: int, n_boot: int) -> pd.DataFrame:
    """One row per (claim, cell[, cost axis or metric]) where the cell has finished runs of both of a claim's
    methods."""
    rows, reach = [], {}
    for claim in claims:
        for cell in suite.present():
            runs = cell.results.runs
            labels = set(runs.loc[runs["status"].isin(COMPLETED), "label"])  # finished runs: a cell in progress waits
            if not {claim.method, claim.reference} <= labels:
                continue
            base = dict(claim=claim.name, kind=claim.kind, method=claim.method, reference=claim.reference,
                        task=cell.task, family=cell.family)
            if claim.kind == "speed-up":
                key = (cell.task, cell.family, claim.reference)
                if key not in reach:
                    reach[key] = speedup.time_to_targets(cell.results, claim.reference,
                                                         rng=np.random.default_rng(seed), n_boot=n_boot)
                table = reach[key]
                final = table[(table["method"] == claim.method) & table["target_name"].str.endswith(" final")
                              & table["target_name"].str.startswith(f"{claim.reference} ")] if len(table) else table
                for cost in claim.costs:
                    hit = final[final["cost"] == cost] if len(final) else final
                    if not len(hit):
                        rows.append(dict(base, cost=cost, factor=claim.factor,
                                         verdict=f"undecided: {claim.reference} did not improve (no target)"))
                        continue
                    r = hit.iloc[0]
                    rows.append(dict(base, cost=cost, factor=claim.factor, target=r["target"],
                                     speedup=r["speedup"], lo=r["speedup_lo"], hi=r["speedup_hi"], bound=r["bound"],
                                     text=speedup.speedup_text(r), why=speedup.note(r, claim.reference),
                                     verdict=speedup_verdict(r, claim.factor)))
            else:
                task = suite.tasks[cell.task]
                metric = task.true_score if claim.metric == "true" else "diversity"
                if not metric:
                    continue
                higher = task.true_higher_is_better if claim.metric == "true" else True
                for r in equal_reward(cell.results, claim.method, claim.reference, metric, higher,
                                      rng=np.random.default_rng(seed), n_boot=n_boot):
                    rows.append(dict(base, **r))
    return pd.DataFrame(rows)


def interval(point, lo, hi, digits: int = 3) -> str:
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return "—"
    return fmt(point, digits) if math.isnan(lo) else f"{fmt(point, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def claim_lines(table: pd.DataFrame, claims: list[Claim]) -> list[str]:
    """The report section: per claim, its source and one row per cell (and cost axis or metric) with the verdict."""
    lines = ["## Published claims", "",
             "Each claim of `bench/suite/claims.toml`, tested in every cell with runs of both its methods. "
             "**speed-up**: the time to the reference's mean final *learned* reward (as in Speed-ups, with the "
             "claim's reference), against the claimed factor. **equal-reward**: each run's metric where its learned "
             "reward first reaches the lower of the two methods' mean finals (a run that never does gives its final "
             "value; `reached` counts them), the difference of means (method - reference, positive = the claim's "
             "direction) with a 95 % bootstrap interval over seeds. A verdict from one task on a tiny model is "
             "evidence about that task only.", ""]
    for claim in claims:
        rows = table[table["claim"] == claim.name] if len(table) else table
        lines += [f"### `{claim.method}` vs `{claim.reference}`: {claim.source}", ""]
        if not len(rows):
            lines += ["_No cell has runs of both methods._", ""]
            continue
        shown = []
        for r in rows.itertuples():
            cell = f"{r.task} / {r.family}"
            if claim.kind == "speed-up":
                shown.append({"cell": cell, "cost": COST_NAMES[r.cost],
                              "speed-up": interval(r.speedup, r.lo, r.hi, 3) if not getattr(r, "bound", "")
                              else getattr(r, "text", "—"),
                              "claimed": f"{claim.factor:g}x", "verdict": r.verdict,
                              "why a bound": getattr(r, "why", "") or ""})
            else:
                shown.append({"cell": cell, "metric": r.metric,
                              "at learned reward (from start)": f"{fmt(r.level, 3)} (from {fmt(r.start, 3)})",
                              claim.method: fmt(r.method_value, 3), claim.reference: fmt(r.reference_value, 3),
                              "difference": interval(r.difference, r.lo, r.hi, 3),
                              "reached": f"{r.method_reached}, {r.reference_reached}", "verdict": r.verdict})
        lines += [markdown_table(pd.DataFrame(shown).fillna("")), ""]
    return lines


COST_NAMES = {"samples": "reward queries", "cpu_s": "CPU s", "wall_s": "training s"}
