"""Numbers of a report: final rewards with bootstrap intervals and time to a target reward, as tables (speed-ups
with intervals: ``bench.analysis.speedup``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.results import Results, eval_curves, reward_higher_is_better
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED, STATUSES

FAILED = tuple(s for s in STATUSES if s not in COMPLETED)
"""Statuses of runs that did not finish their budget (their numbers, if any, are partial)."""

FRACTION = 0.9
"""Time-to-target: the fraction of the best method's improvement over the starting reward."""


def status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))

def summarize(results: Results, *, rng: np.random.Generator, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (reward, method label): final eval reward with CI, time to target, memory, speed, statuses."""
    runs, curves = results.runs, eval_curves(results)
    rows = []
    for reward, rgroup in runs.groupby("reward", sort=True):
        higher = reward_higher_is_better(reward)
        # Final rewards of runs that finished their budget only: a failed run keeps a partial (often step-0) value.
        done = rgroup[rgroup["status"].isin(COMPLETED)]
        finals = {label: g["final_eval_reward"].dropna() for label, g in done.groupby("label")}
        means = {k: v.mean() for k, v in finals.items() if len(v)}
        best_label = (max if higher else min)(means, key=means.get) if means else None
        rc = curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval")]
        start = rc.sort_values("step").groupby("run_id")["value"].first().mean() if len(rc) else float("nan")
        target = float("nan")
        if best_label is not None and not math.isnan(start):
            gain = means[best_label] - start
            if (gain > 0) == higher and gain != 0:
                target = start + FRACTION * gain
        for label, g in rgroup.groupby("label", sort=True):
            final = finals.get(label, pd.Series(dtype=float))
            point, lo, hi = stats.bootstrap_ci(final.to_numpy(float), "mean", rng=rng, n_boot=n_boot)
            iqm_value = float(stats.iqm(final.to_numpy(float))) if len(final) else float("nan")
            lc = rc[rc["label"] == label]
            time_to = float("nan") if math.isnan(target) else time_to_reach(lc, target, higher)
            stand = sorted({s for s in g["stand_in"] if s})
            rows.append(
                dict(
                    reward=reward,
                    label=label,
                    method=g["method"].iloc[0],
                    model=", ".join(sorted(set(g["model"]))),
                    runs=len(g),
                    finished=len(final),
                    final_mean=point,
                    final_lo=lo,
                    final_hi=hi,
                    final_iqm=iqm_value,
                    best=label == best_label,
                    target=target,
                    time_to_target_s=time_to,
                    reached=not math.isnan(time_to),
                    has_curve=bool(len(lc)),
                    peak_mem_mb=g["peak_mem_mb"].mean(),
                    peak_mem_std=g["peak_mem_mb"].std(),
                    sec_per_step=g["sec_per_step"].mean(),
                    sec_per_step_std=g["sec_per_step"].std(),
                    cpu_per_step=g["cpu_per_step"].mean(),
                    cpu_per_step_std=g["cpu_per_step"].std(),
                    load_max=g["load_avg"].max(),
                    device=", ".join(sorted({str(d) for d in g["device"].dropna() if str(d)})),
                    status=status_counts(g["status"]),
                    all_failed=bool(g["status"].isin(FAILED).all()),
                    stand_in="; ".join(stand),
                )
            )
    return pd.DataFrame(rows)

def time_to_reach(curve_rows: pd.DataFrame, target: float, higher: bool, x: str = "wall_s") -> float:
    """``x`` (training seconds, steps or samples, averaged over seeds) at the first evaluation where the mean over
    seeds reaches ``target``; NaN if none does. Measured at evaluations only, never interpolated between them: with
    evaluations every 10 steps a straight line from the start would put the crossing anywhere in between (it made a
    2.5x speed-up read 24x), so this is an upper bound that finer ``--eval-every`` tightens."""
    if not len(curve_rows):
        return float("nan")
    per_run = [r.sort_values("step") for _, r in curve_rows.groupby("run_id")]
    n = max(len(r) for r in per_run)

    def padded(column: str) -> np.ndarray:  # evaluation k of every seed; a seed that stopped early is not extrapolated
        return np.array([np.pad(r[column].to_numpy(float), (0, n - len(r)), constant_values=np.nan) for r in per_run])

    xs, ys = stats.nanmean(padded(x).T), stats.nanmean(padded("value").T)
    for xi, yi in zip(xs, ys):
        if (yi >= target) if higher else (yi <= target):
            return float(xi)
    return float("nan")


def summary_markdown(summary: pd.DataFrame) -> str:
    rows = []
    for _, s in summary.iterrows():
        if s["finished"]:
            final = f"{fmt(s['final_mean'])} [{fmt(s['final_lo'])}, {fmt(s['final_hi'])}]"
            if s["best"]:
                final = f"**{final}**"
        else:
            final = f"— ({s['status']})"
        if not s["has_curve"]:
            time_to = "—"
        elif math.isnan(s["target"]):
            time_to = "n/a"
        elif s["reached"]:
            time_to = fmt(s["time_to_target_s"], 1)
        else:
            time_to = "not reached"
        rows.append(
            {
                "reward": s["reward"],
                "method": s["label"],
                "runs (with final eval)": f"{s['runs']} ({s['finished']})",
                "final eval reward, mean [95% CI]": final,
                "IQM": fmt(s["final_iqm"]),
                "time to 90% (s)": time_to,
                "peak mem (MB)": fmt(s["peak_mem_mb"], 1),
                "s/step": fmt(s["sec_per_step"]),
                "CPU s/step": fmt(s["cpu_per_step"]),
                "status": s["status"],
                "stand-in": f"**STAND-IN:** {s['stand_in']}" if s["stand_in"] else "",
            }
        )
    return markdown_table(pd.DataFrame(rows))

DEFINITIONS = """\
- **final eval reward**: the run's last evaluation (fixed prompts, fixed noise, true reward), mean over seeds with a
  seeded 95 % percentile-bootstrap interval over seeds; **IQM**: interquartile mean over seeds. Bold: best method.
- **time to 90%**: training seconds (mean over seeds) at the first evaluation where the method's mean over seeds
  reaches start + 0.9 × (best final − start) — read at evaluations, not interpolated between them, so it is an upper
  bound as fine as the evaluation schedule —, where start is the mean first evaluation of
  all runs of that reward and best final the best method's mean final eval reward (a fraction of the best method's
  *improvement*, so it is meaningful for negative rewards too). "n/a": no method improved on the start.
- **peak mem**, **s/step**, **CPU s/step**: means over the method's runs (runs.csv); s/step counts training
  wall-clock only; CPU s/step the process's CPU seconds (all threads) in training, which a busy machine does not
  inflate. Peak memory is CUDA max allocated on a GPU, the whole process's peak RSS on a CPU.
- **status**: run counts per stop reason; diverged/oom/error/skipped runs are listed, not dropped.
- Curves: markers are evaluations; with two or more seeds, top row mean, bottom row IQM, bands seeded 95 %
  bootstrap intervals over seeds (a seed that stopped early is not extrapolated); with one seed, the run itself.
"""
