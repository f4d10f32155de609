"""The suite report's text: report.md's sections in order (scoreboard, aggregate, curves, diversity and fidelity,
image grids, speed-ups, published claims, definitions), from the numbers ``bench.analysis.suite`` computed."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from bench.analysis import speedup
from bench.analysis.summary import METRIC_NAMES
from bench.analysis.suite_figures import QUICK
from bench.analysis.suite_scores import is_diversity
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED
from rewards.fidelity import FIDELITY

SECTIONS = ("Scoreboard", "Aggregate", "Per-task curves", "Final score against diversity and fidelity",
            "Image grids", "Speed-ups", "Published claims", "Definitions")
"""report.md's second-level headings, in order."""


def interval_text(point, lo, hi, seeds: int | None = None) -> str:
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return "—"
    if lo is None or math.isnan(lo) or math.isnan(hi):
        return fmt(point, 2) + (" (1 seed)" if seeds == 1 else "")
    return f"{fmt(point, 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


UNFINISHED = {"unknown", "interrupted"}
"""Statuses of a run that has not ended (no result yet, or stopped to be resumed): not a failure."""


def cell_name(task: str, family: str) -> str:
    return f"{task} / {family}"


def board_cell(row, note: str) -> str:
    """One scoreboard entry: the normalised score with its interval; *absent* (no run), *not finished* (no run
    finished, none failed: still to run or interrupted, a suite in progress), *failed* (no run finished, one failed)
    or "—" (the cell has no normalisation) otherwise."""
    if row is None or row.get("status") == "absent":
        return "*absent*"
    if not row.get("finished", False):
        statuses = {part.split(":")[0] for part in str(row["status"]).split(", ")}
        return f"*{'not finished' if statuses <= UNFINISHED else 'failed'}* ({row['status']})"
    if note:
        return "—"
    text = interval_text(row.get("normalised"), row.get("normalised_lo"), row.get("normalised_hi"), row.get("seeds"))
    return text + (" †" if row.get("other_setting") else "")


def scoreboard_lines(suite, board: pd.DataFrame, cells: pd.DataFrame, what: str) -> list[str]:
    keyed = {(r["task"], r["family"], r["method"]): r for r in board.to_dict("records")}
    notes = {(r["task"], r["family"]): r.get("note", "") or "" for r in cells.to_dict("records")}
    columns = [(c.task, c.family) for c in suite.cells]
    matrix = [{"method": m, **{cell_name(*k): board_cell(keyed.get((*k, m)), notes[k]) for k in columns}}
              for m in suite.methods]
    lines = ["## Scoreboard", "", f"{what.capitalize()} of each method's final evaluation, mean over seeds with a 95 % "
             "percentile-bootstrap interval over seeds: 0 = the base model (the cell's step-0 evaluation), 1 = the "
             "best method's mean final in that cell.", "", markdown_table(pd.DataFrame(matrix)), ""]
    bullets = []
    for (task, family), note in notes.items():
        if note:
            bullets.append(f"- **{cell_name(task, family)}:** {note}.")
    for (task, family) in columns:
        absent = [m for m in suite.methods if (keyed.get((task, family, m)) or {}).get("status") == "absent"]
        if absent and not any(c.task == task and c.family == family and c.results is None for c in suite.cells):
            bullets.append(f"- **{cell_name(task, family)}:** {', '.join(f'`{m}`' for m in absent)} absent (no run "
                           "there; not a 0, and not counted in that cell or in an aggregate over it).")
    finished = board[board.get("finished", pd.Series(False, index=board.index)).fillna(False).astype(bool)]
    if len(finished) and int(finished["seeds"].max()) < 2:
        bullets.append("- **1 seed** per method: no interval anywhere (one run has no spread to bootstrap).")
    if "other_setting" in board and board["other_setting"].fillna(False).astype(bool).any():
        bullets.append("- †: evaluated under another setting (guidance or steps) than the cell's base model; its "
                       "score is normalised against that base all the same.")
    lines += bullets + ([""] if bullets else [])
    lines += ["### Per cell: true score, learned reward, fidelity and diversity", "",
              "Final evaluation, mean over finished seeds; *base model* rows: the cell's step-0 evaluation.", "",
              markdown_table(detail_rows(suite, board, cells)), ""]
    read_back = [cell_name(c["task"], c["family"]) for c in cells.to_dict("records")
                 if c.get("present") and c.get("fidelity_from") == "saved images"]
    if read_back:
        lines += [f"- Fidelity of {', '.join(read_back)}: not recorded by these runs' evaluations (their reward "
                  "measures none); read afterwards by the same classifiers from each run's saved first and final "
                  "evaluation images (`eval_first.png`, `eval_last.png`; `bench/analysis/saved_fidelity.py`). On "
                  "the cells that record it the two readings are equal.", ""]
    return lines


def italic(text: str) -> str:
    return text if text == "—" else f"*{text}*"


def detail_rows(suite, board: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    found = [c[len("final_"):] for c in board.columns if c.startswith("final_")]
    extras = [m for m in FIDELITY if m in found] + sorted((m for m in found if is_diversity(m)),
                                                           key=lambda m: (not m.startswith("diversity"), m))
    rows = []
    for cell in cells.to_dict("records"):
        if not cell.get("present"):
            continue
        info = suite.tasks[cell["task"]]
        direction = "" if not info.true_score else f" ({'↑' if info.true_higher_is_better else '↓'})"
        base = {"task / family": cell_name(cell["task"], cell["family"]), "method": "*base model*", "seeds": "",
                "normalised": "*0*" if not cell.get("note") else "—",
                "true score": italic(fmt(cell.get("base_true"))) + direction if info.true_score else "—",
                "learned reward": italic(fmt(cell.get("base_reward")))}
        base.update({METRIC_NAMES.get(m, m): italic(fmt(cell.get(f"base_{m}"))) for m in extras})
        rows.append(base)
        g = board[(board["task"] == cell["task"]) & (board["family"] == cell["family"])]
        for r in g.to_dict("records"):
            if r.get("status") == "absent":
                continue
            row = {"task / family": cell_name(cell["task"], cell["family"]), "method": r["method"],
                   "seeds": str(int(r.get("seeds", 0))), "normalised": board_cell(r, cell.get("note", "")),
                   "true score": fmt(r.get("final_true")) if info.true_score else "—",
                   "learned reward": fmt(r.get("final_reward"))}
            row.update({METRIC_NAMES.get(m, m): fmt(r.get(f"final_{m}")) for m in extras})
            rows.append(row)
    return pd.DataFrame(rows)


def aggregate_lines(agg: dict, what: str, figures: dict, seed: int, n_boot: int) -> list[str]:
    lines = ["## Aggregate", ""]
    keys, est = agg["cells"], agg["estimates"]
    if not len(est):
        return lines + ["_No cell has a normalised score: nothing to aggregate._", ""]
    names = ", ".join(cell_name(t, f) for t, f in keys)
    lines += [f"Over runs x cells of the {what} (rliable's definitions): the interquartile mean (IQM) and the mean "
              f"with 95 % stratified-bootstrap intervals (strata = cells, {n_boot} resamples, seed {seed}). "
              f"**Computed over {len(keys)} cell{'s' * (len(keys) != 1)}: {names}.**", ""]
    rows = []
    for r in est.sort_values(["together", "iqm"], ascending=[False, False]).to_dict("records"):
        rows.append({"method": r["method"], "cells": r["cells"], "runs": r["runs"],
                     "IQM [95% CI]": interval_text(r["iqm"], r["iqm_lo"], r["iqm_hi"]),
                     "mean [95% CI]": interval_text(r["mean"], r["mean_lo"], r["mean_hi"]),
                     "note": r["no_interval"] or ("" if r["together"] else f"its own cells only: {r['cell_names']} "
                                                  "(not comparable with the rows above)")})
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    alone = est[~est["together"]]["method"].tolist()
    if alone:
        lines.append(f"- Aggregated together: {', '.join(f'`{m}`' for m in agg['together']) or 'none'} (a score in "
                     f"every cell). {', '.join(f'`{m}`' for m in alone)}: absent from some cell, so each is "
                     "aggregated over its own cells (named) and left out of the figures.")
    reasons = sorted({r for r in est["no_interval"] if r})
    if reasons:
        lines.append(f"- No interval where the runs cannot carry one: {'; '.join(reasons)}.")
    lines.append("")
    for family, table in agg.get("per_family", {}).items():
        if table["method"].isin(agg["together"]).all():
            continue  # nothing beyond the table above
        lines += [f"### Per family: {family}", "", f"Over the {table['cells'].iloc[0]} cells of {family}, every method "
                  "with a score in each of them (so a family's own methods sit beside the shared ones):", "",
                  markdown_table(pd.DataFrame([{
                      "method": r["method"], "runs": r["runs"],
                      "IQM [95% CI]": interval_text(r["iqm"], r["iqm_lo"], r["iqm_hi"]),
                      "mean [95% CI]": interval_text(r["mean"], r["mean_lo"], r["mean_hi"]),
                      "note": r["no_interval"]} for r in table.to_dict("records")])), ""]
    imp = agg["improvements"]
    if len(imp):
        order = est.sort_values(["together", "iqm"], ascending=[False, False])["method"].tolist()
        lines += ["### Probability of improvement", "", "Row X, column Y: P(X > Y), the probability that a run of X "
                  "scores above a run of Y in the same cell (ties count half; Mann-Whitney U over run pairs), averaged "
                  "over the cells both have; above 0.5, X tends to beat Y. **Bold**: its 95 % interval (X's and Y's "
                  "runs resampled independently within each cell) excludes 0.5; †: one shared cell, no interval; "
                  "·: no shared cell. Intervals and cell counts: `improvement.csv`.", "",
                  markdown_table(improvement_matrix(imp, order)), ""]
    for name in figures.get("aggregate", []) + figures.get("profile", []):
        if name.endswith(".png"):
            lines += [f"![{name}]({name})", ""]
    if figures.get("profile"):
        lines += ["Performance profile: the fraction of runs x cells whose normalised score exceeds τ, per method "
                  "aggregated together; bands: 95 % stratified bootstrap.", ""]
    return lines


def improvement_matrix(imp: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """P(row > column) for every pair of ``order`` (``imp`` holds each pair once; the other way round is 1 - p, its
    interval mirrored)."""
    found = {}
    for r in imp.to_dict("records"):
        found[(r["x"], r["y"])] = (r["p"], r["lo"], r["hi"], bool(r["no_interval"]))
        found[(r["y"], r["x"])] = (1 - r["p"], 1 - r["hi"], 1 - r["lo"], bool(r["no_interval"]))

    def entry(x, y):
        if x == y:
            return "—"
        if (x, y) not in found:
            return "·"
        p, lo, hi, alone = found[(x, y)]
        text = fmt(p, 2) + ("†" if alone or math.isnan(lo) else "")
        return f"**{text}**" if not alone and (lo > 0.5 or hi < 0.5) else text

    return pd.DataFrame([{"X \\ Y": x, **{y: entry(x, y) for y in order}} for x in order])


def figure_lines(heading: str, intro: str, names) -> list[str]:
    png = [n for n in names if n.endswith(".png")]
    if not png:
        return [f"## {heading}", "", "_No figure: nothing recorded to draw._", ""]
    return [f"## {heading}", "", intro, ""] + [f"![{n}]({n})" for n in png] + [""]


def grid_lines(suite, names) -> list[str]:
    """One image grid per cell, under its name."""
    from bench.core.text import safe_name

    if not any(n.endswith(".png") for n in names):
        return figure_lines(SECTIONS[4], "", [])
    lines = [f"## {SECTIONS[4]}", "", "Per cell, the base model and each method's final model (first seed) on the same "
             "evaluation prompts and noise, the learned reward under each image.", ""]
    for cell in suite.present():
        name = f"effect_{safe_name(cell.task)}_{safe_name(cell.family)}.png"
        lines += [f"**{cell_name(cell.task, cell.family)}**", "", f"![{name}]({name})" if name in names else
                  "_no image grid: the runs' folders hold no eval_first/eval_last images and rewards_", ""]
    return lines


def cost_lines(suite) -> list[str]:
    """The cost of each method per family: training CPU seconds per reward query (mean over its finished runs, every
    task) and the training CPU hours of those runs."""
    parts = [c.results.runs.assign(family=c.family) for c in suite.present()]
    runs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not len(runs) or "cpu_s" not in runs:
        return []
    runs = runs[(runs["samples"] > 0) & runs["status"].isin(COMPLETED)]
    runs = runs.assign(per_query=runs["cpu_s"] / runs["samples"])
    table = {}
    for (method, family), g in runs.groupby(["label", "family"], sort=True):
        table.setdefault(method, {"method": method})[family] = (
            f"{fmt(g['per_query'].mean(), 3)} ({fmt(g['cpu_s'].sum() / 3600, 2)} h, {len(g)} runs)")
    total = runs["cpu_s"].sum() / 3600
    return ["### Cost", "", "Training CPU seconds per reward query, mean over the method's finished runs in the family "
            "(every task; evaluation excluded, as in `runs.csv`'s `cpu_s`), and in brackets the CPU hours of those "
            f"runs. All finished runs: {fmt(total, 3)} CPU hours of training.", "",
            markdown_table(pd.DataFrame(list(table.values())).fillna("*absent*")), ""]


def speedup_lines(reach: pd.DataFrame, refs: dict[str, str], explicit: bool) -> list[str]:
    chosen = ", ".join(f"{f}: `{m}`" for f, m in refs.items())
    how = "given with --reference" if explicit else "the default: the suite's policy-gradient anchor per family"
    lines = ["## Speed-ups", "", f"Reference per family: {chosen} ({how}). Time to the reference's mean final "
             "*learned* reward in reward queries, per seed read between the two evaluations that bracket its crossing "
             "(the single-folder report's machinery, docs/reports.md \"Time to target\"); "
             "speed-up = the reference's mean queries / the method's, a point with a 95 % bootstrap interval where "
             "every seed of both crossed between evaluations, else a bound (\">=\" or \"<=\") with the seed counts "
             "that make it one; \"—\" where it is bounded both ways (e.g. both reached the target at their first "
             "evaluation, so neither time is known). All targets and cost axes: `speedups.csv`.", ""]
    if not len(reach):
        return lines + ["_No cell has a target (no method improved its learned reward)._", ""]
    finals = reach[(reach["cost"] == "samples") & reach["target_name"].str.endswith(" final")]
    table, bullets = {}, []
    for (task, family), g in finals.groupby(["task", "family"], sort=False):
        name = cell_name(task, family)
        reference = g["reference"].iloc[0]
        target = g.iloc[0]
        if reference not in set(g["method"]):
            bullets.append(f"- **{name}:** no run of `{reference}`: the target is {target['target_name']} "
                           f"({fmt(target['target'])}), no ratios.")
        elif not target["target_name"].startswith(f"{reference} "):
            bullets.append(f"- **{name}:** `{reference}` did not improve; the target is {target['target_name']} "
                           f"({fmt(target['target'])}), no ratios to it.")
        if bool(target.get("inside_noise", False)):
            bullets.append(f"- **{name}: target inside the noise.** {target['target_name']} ({fmt(target['target'])}): "
                           f"the 95 % interval of {target['level_of']}'s final reward contains the start "
                           f"({fmt(target['start'])}), so a time to it measures noise, not learning; read these "
                           "ratios as no speed-up claim.")
        for r in g.itertuples():
            cell = "(reference)" if r.is_reference else speedup.speedup_text(r)
            why = "" if r.is_reference else speedup.note(r, reference)
            if why:
                bullets.append(f"- {name}, `{r.method}`: {why}.")
            table.setdefault(r.method, {"method": r.method})[name] = cell
    lines += [markdown_table(pd.DataFrame(list(table.values())).fillna("*absent*")), ""] + bullets
    return lines + ([""] if bullets else [])


DEFINITIONS = """\
- **Normalised score**: per run, (final - base) / (best - base) in its (task, family) cell; final = the run's last
  evaluation, base = the base model's step-0 evaluation (mean over the cell's runs under its most common evaluation
  setting), best = the best method's mean final in the cell, best in the score's direction (the smallest JPEG for
  jpeg-compressibility). 0 = the base model, 1 = the best method; base and best are fixed, not resampled. Replicates
  of one seed are averaged first.
- **Interval** (scoreboard): 95 % percentile bootstrap of the mean over seeds; none with 1 seed.
- **IQM**: mean of the middle 50 % of all runs x cells (floor(n/4) cut at each end; below 4 runs it is the mean).
- **Stratified bootstrap**: each resample redraws every cell's runs within that cell (as many as it has), so no
  cell is lost or doubled; the interval is the 2.5th-97.5th percentile of the statistic. None over 1 cell or 1 seed.
- **P(X > Y)**: per cell, the share of (X run, Y run) pairs where X's score is higher, ties counting half; mean over
  the cells both methods have.
- **Performance profile**: at τ, the fraction of all runs x cells with a normalised score above τ.
- **Absent**: no run of the method in the cell: never a 0; the aggregate over all cells holds only methods present
  in every cell, others are aggregated over their own cells, named.
"""


def seeds_text(seeds) -> str:
    if isinstance(seeds, str):
        return seeds or "(not recorded)"
    return ", ".join(str(s) for s in seeds or []) or "(not recorded)"


def report_markdown(suite, board, cells, agg, reach, refs, figures, *, score: str, what: str, seed: int, n_boot: int,
                    command: str | None, explicit_reference: bool, claims: list[str] = ()) -> str:
    """report.md's text; ``claims``: the "Published claims" section's lines (``suite_claims.claim_lines``)."""
    head = [f"# Suite report{f' — {QUICK}' if suite.quick else ''}", ""]
    if suite.quick:
        head += [f"> **{QUICK}.** This suite ran at the quick budget (`\"quick\": true` in suite.json): it checks "
                 "that every cell runs, not which method is better.", ""]
    spec = suite.spec
    recorded = spec.get("command")
    recorded = " ".join(recorded) if isinstance(recorded, list) else recorded
    tasks = "; ".join(f"`{t.name}` (reward {t.reward}; true score {t.true_score or '—'}, "
                      f"{'higher' if t.true_higher_is_better else 'lower'} is better)" for t in suite.tasks.values())
    head += [f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{suite.root}`"
             + (f" (suite command: `{recorded}`)" if recorded else "") + ".", "",
             f"Tasks: {tasks}. Families: {', '.join(suite.families)}. Methods: {', '.join(suite.methods)}. Seeds: "
             f"{seeds_text(spec.get('seeds'))}. Scored on: the "
             f"{'true score' if score == 'true' else 'learned reward'} (`--score {score}`).", ""]
    if command:
        head += [f"Report command: `{command}`", ""]
    lines = head + scoreboard_lines(suite, board, cells, what)
    lines += aggregate_lines(agg, what, figures, seed, n_boot)
    lines += figure_lines(SECTIONS[2], "Per task, the learned reward (top) and the true score (bottom) against "
                          "reward queries, one column per family.", figures.get("curves", []))
    lines += figure_lines(SECTIONS[3], f"The final {what} (x) against diversity and fidelity (y), one point per "
                          "method and cell (colour: method; marker: task; filled or hollow: family); grey at x = 0: "
                          "the base model.", figures.get("diversity", []) + figures.get("fidelity", []))
    lines += grid_lines(suite, figures.get("grids", []))
    lines += speedup_lines(reach, refs, explicit_reference)
    lines += cost_lines(suite)
    lines += list(claims)
    lines += ["## Definitions", "", DEFINITIONS]
    return "\n".join(lines)
