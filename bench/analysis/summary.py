"""Numbers of a report's summary: per (reward, method) the final evaluation with its start, the true score and the
fidelity metrics beside the learned reward, seeds counted as seeds, and a winner only where the seeds separate it
(speed-ups with intervals: ``bench.analysis.speedup``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis import reach, stats
from bench.analysis.results import (Results, eval_curves, eval_setting, fmt_setting, guidance_text,
                                    reward_higher_is_better, true_cfg)
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED, STATUSES
from rewards.fidelity import FIDELITY  # the fidelity metrics shown beside the learned reward, where recorded

FAILED = tuple(s for s in STATUSES if s not in COMPLETED)
"""Statuses of runs that did not finish their budget (their numbers, if any, are partial)."""

FRACTION = 0.9
"""Time-to-target: the fraction of the best method's improvement over the starting reward."""

DIVERSITY = "diversity"
"""An evaluation metric of sample diversity, shown beside them where recorded: ``diversity[<feature space>]``
(``rewards.diversity``; the space stays in the column's name) or a bare ``diversity``."""
IQM_MIN_SEEDS = 5
"""The IQM column appears only when every method has this many seeds (below 4 it trims nothing: it is the mean)."""
TIE_OVERLAP = 0.5
"""Tie rule: the best two methods' 95 % intervals overlap by at least this fraction of the narrower interval."""
START = "start (base model, step 0)"
"""The label of a summary's start rows."""


def status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def true_metric(reward: str, names) -> str | None:
    """The true score a learned reward stands for, among the recorded evaluation metric ``names``: ``true_<last
    word of the reward>`` (shape-aesthetic: ``true_aesthetic``), else the only ``true_*`` metric; None otherwise
    (several parts and no whole: none is guessed)."""
    names = set(names)
    own = "true_" + str(reward).split("-")[-1].replace("-", "_")
    if own in names:
        return own
    found = sorted(n for n in names if str(n).startswith("true_"))
    return found[0] if len(found) == 1 else None


def extra_columns(results: Results, reward: str) -> list[str]:
    """The evaluation metrics shown beside ``reward``'s learned reward: its true score, fidelity, diversity."""
    m = results.metrics
    names = set(m.loc[(m["reward"] == reward) & (m["split"] == "eval"), "metric"])
    true = true_metric(reward, names)
    diversity = sorted(n for n in names if n == DIVERSITY or str(n).startswith(DIVERSITY + "["))
    return ([true] if true else []) + [f for f in FIDELITY if f in names] + diversity


def per_run_evals(results: Results, metric_names) -> pd.DataFrame:
    """One row per (run, metric): the run's first (step-0) and last evaluation values of each metric."""
    m = results.metrics
    ev = m[(m["split"] == "eval") & m["metric"].isin(list(metric_names))].sort_values("step", kind="stable")
    if not len(ev):
        return pd.DataFrame(columns=["run_id", "metric", "first", "first_step", "last"])
    g = ev.groupby(["run_id", "metric"])
    out = pd.DataFrame({"first": g["value"].first(), "first_step": g["step"].first(), "last": g["value"].last()})
    return out.reset_index()


def seed_values(runs: pd.DataFrame, values: pd.Series) -> np.ndarray:
    """``values`` (indexed like ``runs``) averaged over replicates of one seed: runs of equal (method, seed), as
    pooled folders of the same command give, are one seed, not several. NaN values are dropped first."""
    frame = pd.DataFrame({"seed": runs["seed"].fillna(-1).to_numpy(), "value": np.asarray(values, dtype=float)})
    frame = frame.dropna(subset=["value"])
    return frame.groupby("seed")["value"].mean().to_numpy(float) if len(frame) else np.zeros(0)


def tie_with(a: dict, b: dict) -> bool:
    """Whether ``b`` ties the best ``a`` (rows with mean, lo, hi): their means differ by no more than the larger
    half-width of their 95 % intervals, or the intervals overlap by ``TIE_OVERLAP`` of the narrower one or more."""
    half = max(a["hi"] - a["lo"], b["hi"] - b["lo"]) / 2
    if abs(a["mean"] - b["mean"]) <= half:
        return True
    overlap = min(a["hi"], b["hi"]) - max(a["lo"], b["lo"])
    narrower = min(a["hi"] - a["lo"], b["hi"] - b["lo"])
    return overlap > 0 and overlap >= TIE_OVERLAP * narrower


def verdict(rows: list[dict], higher: bool) -> tuple[str | None, list[str], str]:
    """(winner, tied labels, one line) of one reward's method rows (label, seeds, mean, lo, hi): a winner only when
    the best two both have 2+ seeds and do not tie (``tie_with``); otherwise the line says why there is none."""
    ranked = sorted((r for r in rows if not math.isnan(r["mean"])), key=lambda r: r["mean"], reverse=higher)
    if len(ranked) < 2:
        return None, [], ""
    if all(r["seeds"] < 2 for r in ranked):
        return None, [], "1 seed: no intervals, no winner"
    best, second = ranked[0], ranked[1]
    if best["seeds"] < 2 or second["seeds"] < 2:
        few = best if best["seeds"] < 2 else second
        return None, [], (f"no winner: {few['label']} has 1 seed, so its interval (and the gap between the best two) "
                          "is unknown")
    tied = [r["label"] for r in ranked[1:] if r["seeds"] >= 2 and tie_with(best, r)]
    if tied:
        names = ", ".join([best["label"]] + tied)
        return None, [best["label"]] + tied, (f"tie: {names} — no winner: each mean lies within the noise of the "
                                              f"best's ({best['label']}: means apart by no more than the larger 95 % "
                                              "half-width, or intervals overlapping by half or more)")
    return best["label"], [], f"best: {best['label']} (bold), its interval clear of {second['label']}'s"


def summarize(results: Results, *, rng: np.random.Generator, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (reward, method label) (``kind`` "method") and per (reward, model, evaluation setting) a start
    row (``kind`` "start": the base model's step-0 evaluation, mean over runs): final eval reward with its
    interval over seeds, the row's own start, true score and fidelity (final and start), time to target, memory,
    speed per step and per reward query, statuses. Sorted per reward by final value, best first."""
    runs = results.runs.copy()
    runs["setting"] = eval_setting(runs)
    curves = eval_curves(results)
    rows = []
    for reward, rgroup in runs.groupby("reward", sort=True):
        higher = reward_higher_is_better(reward)
        extras = extra_columns(results, reward)
        evals = per_run_evals(results, ["reward_mean", *extras])
        first = {k: g.set_index("run_id")["first"] for k, g in evals.groupby("metric")}
        last = {k: g.set_index("run_id")["last"] for k, g in evals.groupby("metric")}
        # The start of each evaluation setting: the step-0 evaluation of every run evaluated so (all statuses: a
        # failed run's step 0 is still the base model), mean over runs; other models and settings never pool in.
        starts = {}
        for setting, sg in rgroup.groupby("setting", sort=True):
            ids = sg["run_id"]
            starts[setting] = {k: float(np.nanmean(v.reindex(ids).to_numpy(float))) if v.reindex(ids).notna().any()
                               else float("nan") for k, v in first.items()}
        done = rgroup[rgroup["status"].isin(COMPLETED)]
        method_rows = []
        for label, g in rgroup.groupby("label", sort=True):
            gd = done[done["label"] == label]
            final = seed_values(gd, gd["final_eval_reward"])
            point, lo, hi = (stats.bootstrap_ci(final, "mean", rng=rng, n_boot=n_boot) if len(final) > 1 else
                             (float(final.mean()) if len(final) else float("nan"),) * 3)
            setting = g["setting"].mode().iloc[0]
            start = starts.get(setting, {})
            row = dict(
                kind="method", reward=reward, label=label, method=g["method"].iloc[0],
                model=", ".join(sorted(set(g["model"]))),
                eval_guidance=g["eval_guidance"].iloc[0], eval_steps=g["eval_steps"].iloc[0], setting=setting,
                eval_true_cfg=true_cfg(g).iloc[0],
                runs=len(g), finished=len(gd), seeds=len(final),
                final_mean=point, final_lo=lo, final_hi=hi,
                final_iqm=float(stats.iqm(final)) if len(final) else float("nan"),
                start=start.get("reward_mean", float("nan")),
                peak_mem_mb=g["peak_mem_mb"].mean(), peak_mem_std=g["peak_mem_mb"].std(),
                sec_per_step=g["sec_per_step"].mean(), sec_per_step_std=g["sec_per_step"].std(),
                cpu_per_step=g["cpu_per_step"].mean(), cpu_per_step_std=g["cpu_per_step"].std(),
                **per_query(g),
                load_max=g["load_avg"].max(),
                device=", ".join(sorted({str(d) for d in g["device"].dropna() if str(d)})),
                status=status_counts(g["status"]), all_failed=bool(g["status"].isin(FAILED).all()),
                stand_in="; ".join(sorted({s for s in g["stand_in"] if s})),
            )
            for metric in extras:
                values = last.get(metric, pd.Series(dtype=float)).reindex(gd["run_id"])
                per_seed = seed_values(gd, values.to_numpy(float))
                row[f"final_{metric}"] = float(per_seed.mean()) if len(per_seed) else float("nan")
                row[f"start_{metric}"] = start.get(metric, float("nan"))
            method_rows.append(row)
        winner, tied, line = verdict([dict(label=r["label"], seeds=r["seeds"], mean=r["final_mean"],
                                           lo=r["final_lo"], hi=r["final_hi"]) for r in method_rows], higher)
        time_to_targets(method_rows, curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval")],
                        starts, higher)
        for row in method_rows:
            row.update(best=row["label"] == winner, tie=row["label"] in tied, verdict=line)
        start_rows = []
        for setting, sg in rgroup.groupby("setting", sort=True):
            start = starts[setting]
            if math.isnan(start.get("reward_mean", float("nan"))):
                continue
            several = rgroup["setting"].nunique() > 1
            model = sg["model"].iloc[0]
            label = START + (f" [{model}]" if runs["model"].nunique() > 1 else "")
            label += f" @{guidance_text(sg['eval_guidance'].iloc[0], true_cfg(sg).iloc[0])}" if several else ""
            start_rows.append(dict(kind="start", reward=reward, label=label, method="", model=model,
                                   eval_guidance=sg["eval_guidance"].iloc[0], eval_steps=sg["eval_steps"].iloc[0],
                                   eval_true_cfg=true_cfg(sg).iloc[0],
                                   setting=setting, runs=len(sg), finished=len(sg), seeds=sg["seed"].nunique(),
                                   final_mean=start["reward_mean"], start=start["reward_mean"], best=False,
                                   tie=False, verdict=line, status="", stand_in="",
                                   **{f"final_{k}": start.get(k, float("nan")) for k in extras},
                                   **{f"start_{k}": start.get(k, float("nan")) for k in extras}))
        rows += ranked(method_rows + start_rows, higher)
    return pd.DataFrame(rows)


def per_query(g: pd.DataFrame) -> dict:
    """Wall-clock and CPU seconds of training per reward query (runs.csv totals / samples), mean over runs:
    methods differ by 8x in queries per optimizer step, so per step alone misleads."""
    samples = pd.to_numeric(g["samples"], errors="coerce").where(lambda s: s > 0)
    wall, cpu = g["wall_s"] / samples, g["cpu_s"] / samples
    return dict(sec_per_query=wall.mean(), sec_per_query_std=wall.std(), cpu_per_query=cpu.mean(),
                cpu_per_query_std=cpu.std())


def ranked(rows: list[dict], higher: bool) -> list[dict]:
    """Rows with a value sorted by it, best first (start rows among them, so a method below its start reads as
    such); rows without one (failed methods) after, by label."""
    valued = [r for r in rows if not math.isnan(r["final_mean"])]
    valued.sort(key=lambda r: (-r["final_mean"] if higher else r["final_mean"], r["kind"] != "start", r["label"]))
    return valued + sorted((r for r in rows if math.isnan(r["final_mean"])), key=lambda r: r["label"])


def time_to_targets(rows: list[dict], rc: pd.DataFrame, starts: dict, higher: bool) -> None:
    """Adds ``target``, ``time_to_target_s`` and ``reached`` to the method ``rows``: the training seconds at
    which its seeds reach start + FRACTION x (best final - start) (``time_to_reach``: mean of the seeds' first
    crossings, NaN unless all reached), with start the best method's own evaluation setting's start."""
    means = {r["label"]: r["final_mean"] for r in rows if not math.isnan(r["final_mean"])}
    target = float("nan")
    if means:
        best = (max if higher else min)(means, key=means.get)
        setting = next(r["setting"] for r in rows if r["label"] == best)
        start = starts.get(setting, {}).get("reward_mean", float("nan"))
        gain = means[best] - start
        if not math.isnan(start) and (gain > 0) == higher and gain != 0:
            target = start + FRACTION * gain
    for r in rows:
        lc = rc[rc["label"] == r["label"]]
        time_to = float("nan") if math.isnan(target) else time_to_reach(lc, target, higher)
        r.update(target=target, time_to_target_s=time_to, reached=not math.isnan(time_to), has_curve=bool(len(lc)))


def time_to_reach(curve_rows: pd.DataFrame, target: float, higher: bool, x: str = "wall_s") -> float:
    """``x`` (training seconds, steps or samples) at which the seeds reach ``target``: the mean over seeds of each
    seed's first crossing (``reach.first_crossing``, the one definition the time-to-target section uses: read
    between the two evaluations that bracket it, at the evaluation itself for a seed that reached it at its first
    one); NaN unless every seed reached it."""
    if not len(curve_rows):
        return float("nan")
    seeds = reach.seed_crossings(curve_rows, target, higher, costs=(x,))[x]
    return float(seeds.cost.mean()) if seeds.reached.all() else float("nan")


METRIC_NAMES = {"color_accuracy": "colour acc.", "shape_accuracy": "shape acc.", "exact_count": "exact count",
                "diversity": "diversity"}


def metric_header(metric: str) -> str:
    return f"true score ({metric})" if metric.startswith("true_") else METRIC_NAMES.get(metric, metric)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary table (per reward, rows sorted by final value, best first, start rows among them) and one line
    per reward below it: why there is no winner (1 seed, a tie) or which one is."""
    if not len(summary):
        return "_no runs found_"
    methods = summary[summary["kind"] == "method"]
    seeds = methods.loc[methods["finished"] > 0, "seeds"]
    with_iqm = bool(len(seeds)) and int(seeds.min()) >= IQM_MIN_SEEDS
    extras = [c[len("final_"):] for c in summary.columns if c.startswith("final_")
              and c not in ("final_mean", "final_lo", "final_hi", "final_iqm")]
    steps_vary = summary["eval_steps"].map(fmt_setting).nunique() > 1
    stand_ins = bool(methods["stand_in"].astype(bool).any())
    shown = []
    for _, s in summary.iterrows():
        start_row = s["kind"] == "start"
        cfg = guidance_text(s["eval_guidance"], s.get("eval_true_cfg", 1.0))[len("guidance "):] + (
            f", {fmt_setting(s['eval_steps'])} steps" if steps_vary else "")
        if start_row:
            final = f"*{fmt(s['final_mean'])}*"
        elif s["finished"]:
            final = fmt(s["final_mean"])
            if s["seeds"] > 1:
                final += f" [{fmt(s['final_lo'])}, {fmt(s['final_hi'])}]"
            if s["best"]:
                final = f"**{final}**"
            elif s["tie"]:
                final += " (tie)"
        else:
            final = f"— ({s['status']})"
        row = {"reward": s["reward"], "method": f"*{s['label']}*" if start_row else s["label"], "eval guidance": cfg,
               "seeds": "" if start_row else str(int(s["seeds"])),
               "runs (finished)": f"{s['runs']} (step 0)" if start_row else f"{s['runs']} ({s['finished']})",
               "final eval reward, mean [95% CI]": final}
        if with_iqm:
            row["IQM"] = "" if start_row else fmt(s["final_iqm"])
        row["start"] = "" if start_row else fmt(s["start"])
        for metric in extras:
            value = s.get(f"final_{metric}", float("nan"))
            cell = fmt(value) if _has(summary, s, metric) else ""  # another reward's metric: empty, not "—"
            row[metric_header(metric)] = f"*{cell}*" if start_row and cell else cell
        row["CPU s/query"] = "" if start_row else fmt(s["cpu_per_query"])
        row["status"] = s["status"]
        if stand_ins:
            row["stand-in"] = f"**STAND-IN:** {s['stand_in']}" if s["stand_in"] else ""
        shown.append(row)
    lines = [markdown_table(pd.DataFrame(shown)), ""]
    for reward, g in summary.groupby("reward", sort=True):
        line = g["verdict"].dropna().iloc[0] if g["verdict"].dropna().any() else ""
        if line:
            lines.append(f"- **{reward}:** {line}.")
    if not with_iqm:
        lines.append(f"- No IQM column: fewer than {IQM_MIN_SEEDS} seeds per method (below 4 the interquartile mean "
                     "trims nothing and equals the mean).")
    return "\n".join(lines)


def _has(summary: pd.DataFrame, row, metric: str) -> bool:
    """Whether ``row``'s reward records ``metric`` at all (else its cell stays empty, not "—")."""
    g = summary[summary["reward"] == row["reward"]]
    return bool(g[f"final_{metric}"].notna().any()) if f"final_{metric}" in g else False


DEFINITIONS = """\
- **final eval reward**: the run's last evaluation (fixed prompts, fixed noise, true reward). Runs of equal
  (method, seed) — repeats, as pooled folders of one command give — are averaged into one seed first; the mean is
  over seeds, with a seeded 95 % percentile-bootstrap interval over seeds where a method has 2 or more (with 1 seed
  no interval is printed: a single run has no spread to bootstrap). **IQM** (interquartile mean over seeds) is shown
  only when every method has 5 or more seeds. Rows are sorted per reward by this value, best first.
- **start (base model, step 0)**: the step-0 evaluation (the base model, before any update), mean over the runs
  evaluated with the same model, reward and evaluation setting (guidance scale, sampling steps, true CFG); a
  method's **start** column is its own setting's start, and rows of different models or settings never share one.
  **eval guidance**: the `guidance_scale` the row was evaluated at (runs.csv `eval_guidance`; for older folders the
  manifest's evaluation config), plus ", true CFG c" where `eval_true_cfg` > 1. On `sd`/`sd3` it is the
  classifier-free guidance weight — a CFG-free method (DiffusionNFT) is evaluated at 1.0 and starts from its own
  base; on `flux` it is the guidance embedding's value (true CFG only from `true_cfg_scale` > 1).
- **true score** and **fidelity** columns: the same final (method rows) or step-0 (start rows) evaluation of the
  reward's hand-defined true score (`true_*`, e.g. `true_aesthetic`) and of prompt fidelity (colour and shape
  accuracy, exact count: fractions of evaluation images), mean over seeds; `diversity` where recorded.
- **Winner and tie**: bold marks the best method only when the best two both have 2 or more seeds and do not tie.
  A method *ties* the best when their means differ by no more than the larger half-width of their two 95 %
  intervals (one mean inside the other's interval: a difference smaller than the noise), or when the two
  intervals overlap by half the narrower one or more. The line under the table names the winner, the tie, or why
  there is none ("1 seed: no intervals, no winner").
- **CPU s/query**: training CPU seconds (all threads) per reward query (runs.csv `cpu_s` / `samples`), mean over
  the method's runs: methods spend 1 to 8 reward queries per optimizer step, so per-step costs alone mislead.
- **peak mem**, **s/step**, **CPU s/step**, **s/query**: means over the method's runs (runs.csv); wall-clock counts
  training only; CPU seconds are the process's (all threads) in training, which a busy machine does not inflate.
  Peak memory is CUDA max allocated on a GPU, the whole process's peak RSS on a CPU. *Machine busy*: load above the
  cores and at least 1 beyond the job's own load (its workers at once x their torch threads).
- **time to target**: its own section (reward queries, training and CPU seconds, per seed, each crossing read
  between the two evaluations that bracket it); summary.csv also keeps `time_to_target_s`, the training seconds
  at which the seeds reach start + 0.9 × (best final − start), start that of the best method's setting: the mean
  over seeds of the same per-seed crossing, empty unless every seed reached it.
- **status**: run counts per stop reason; diverged/oom/error/skipped runs are listed, not dropped.
- Curves: markers are evaluations; with two or more seeds the mean over seeds with a seeded 95 % bootstrap band
  (a seed that stopped early is not extrapolated), and an IQM row below it when every method has 5 or more seeds;
  with one seed, the run itself. Time-to-target targets are grey lines named in the legend beside the axes.
"""
