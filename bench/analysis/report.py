"""A report folder from results folders: report.md, summary.csv and figures (``python -m bench.report``).

Reads results folders only (manifest.json, metrics.parquet/csv, runs.csv, runs/<run_id>/eval_*.png); it never
re-runs anything. Several folders (e.g. one per reward) combine into one report. Figures:

- ``reward_vs_step``, ``reward_vs_wall_s``, ``reward_vs_samples``: one panel per reward, one line per method, a
  marker per evaluation; with two or more seeds a mean row and an interquartile-mean (IQM) row, each with a seeded
  95 % bootstrap band (seeds interpolated onto a common grid first); with one seed the runs themselves;
- ``reward_seen_vs_heldout``: training-prompt reward against held-out evaluation reward by step;
- ``eval_metrics``: a reward's extra evaluation metrics (shape world: exact count, colour and shape accuracy);
- ``resources``: peak memory, wall-clock and CPU seconds per optimizer step per method (also in the table);
- ``images_<reward>``: evaluation prompts x methods, first and last evaluation, from each method's first seed.

Table columns are defined at the end of report.md. Failed runs appear with their status (and in each figure's
caption); runs whose timings a busy machine or the time budget distorted are listed. Every stand-in
(random-weight) model or reward is named once in each figure's title and in the table. Folders of the same command
pool (a run id in two folders becomes ``id#2`` when both configurations match).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.analysis.configs import method_configurations
from bench.analysis.effect import effect_figures, learned_vs_true_figures
from bench.analysis.figures import image_figures, resource_figure
from bench.analysis.figures_curves import curve_figures, extra_metrics_figure, seen_vs_heldout_figure
from bench.analysis.hacking import fidelity_figures
from bench.analysis import speedup
from bench.analysis.results import add_labels, load_results
from bench.analysis.summary import DEFINITIONS, FAILED, summarize, summary_markdown
from bench.core.files import atomic_dir
from bench.core.text import fmt, markdown_table


def build_report(directories, out: Path, *, seed: int = 0, n_boot: int = 2000, formats=("png", "pdf"),
                 reference: str = "ddpo") -> Path:
    """Write the report folder ``out`` (report.md, summary.csv, figures) from results folders; returns ``out``."""
    results = load_results(directories)
    for problem in results.problems:
        print(f"warning: {problem}", file=sys.stderr)
    add_labels(results.runs, results.metrics)
    summary = summarize(results, rng=np.random.default_rng(seed), n_boot=n_boot)
    reach = speedup.time_to_targets(results, reference, rng=np.random.default_rng(seed), n_boot=n_boot)
    marks = {} if not len(reach) else {
        reward: list(g[["target_name", "target"]].drop_duplicates().itertuples(index=False, name=None))
        for reward, g in reach.groupby("reward")}
    with atomic_dir(out, "report.md", directories) as tmp:
        curve_files = curve_figures(results, tmp, seed=seed, n_boot=min(n_boot, 1000), formats=formats, targets=marks)
        hacking_files = fidelity_figures(results, tmp, seed=seed, n_boot=min(n_boot, 1000), formats=formats)
        reach.to_csv(tmp / "time_to_target.csv", index=False)
        curve_files += seen_vs_heldout_figure(results, tmp, formats=formats)
        curve_files += extra_metrics_figure(results, tmp, formats=formats)
        resource_files = resource_figure(summary, tmp, runs=results.runs, stand_ins=results.stand_ins, formats=formats)
        image_files = image_figures(results, tmp, formats=formats)
        effect_files = effect_figures(results, tmp, formats=formats) + learned_vs_true_figures(results, tmp,
                                                                                             formats=formats)
        summary.to_csv(tmp / "summary.csv", index=False)
        lines = ["# Reward fine-tuning benchmark report", ""]
        lines.append(f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from: "
                     + ", ".join(f"`{d}`" for d in directories))  # fmt: skip
        lines.append("")
        if results.stand_ins:
            lines.append("> **STAND-INS (random weights; numbers say nothing about real models):**")
            lines += [f"> - {s}" for s in results.stand_ins]
            lines.append("")
        if results.problems:
            lines += ["> **Damaged results (read around):**"] + [f"> - {p}" for p in results.problems] + [""]
        runs = results.runs
        if {"precision", "protocol"} <= set(runs.columns):  # folders written before these columns lack them
            settings = runs[["method", "precision", "protocol"]].drop_duplicates().astype(str)
            lines += ["Precision and protocol: " + "; ".join(f"`{m}` {p}, {q}" for m, p, q in settings.values), ""]
        lines += ["## Summary", "", summary_markdown(summary) if len(summary) else "_no runs found_", ""]
        configs = method_configurations(results)
        if configs:
            lines += ["## Method configurations", "", "Settings that differ from each method's defaults (first seed's "
                      "run); *tuned*: chosen by `python -m bench.tune` and applied with `--config-from`.", "",
                      markdown_table(configs), ""]
        lines += speedup.markdown(reach, reference)
        failed = results.runs[results.runs["status"].isin(FAILED + ("unknown",))]
        if len(failed):
            lines += ["### Runs that did not finish", ""]
            cols = ["run_id", "status", "steps", "error"]
            lines += [markdown_table(failed[cols].fillna("")), ""]
        warned = results.runs[results.runs["warning"] != ""]
        if len(warned):
            lines += ["### Timing warnings", "", "Wall-clock numbers of these runs mislead; compare `CPU s/step`.", ""]
            lines += [markdown_table(warned[["run_id", "status", "steps", "load_avg", "cores", "warning"]]), ""]
        png = [f for f in curve_files if f.endswith(".png")]
        if png:
            lines += ["## Reward curves", ""] + [f"![{f}]({f})" for f in png] + [""]
        lines += ["## Memory and speed", ""]
        res = summary[["reward", "label", "peak_mem_mb", "sec_per_step", "cpu_per_step", "status"]].rename(columns={"label": "method"})
        res = res.assign(peak_mem_mb=res["peak_mem_mb"].map(lambda v: fmt(v, 1)), sec_per_step=res["sec_per_step"].map(fmt),
                         cpu_per_step=res["cpu_per_step"].map(fmt))
        lines += [markdown_table(res) if len(res) else "_no runs_", ""]
        lines += [f"![{f}]({f})" for f in resource_files if f.endswith(".png")] + [""]
        shown = [f for f in hacking_files if f.endswith(".png")]
        if shown:
            lines += ["## Reward vs fidelity along training (the reward-hacking axis)", "", "Each evaluation a point "
                      "(mean over seeds, 95 % intervals), each method a line from the start (star) to its end: compare "
                      "methods at equal learned reward.", ""] + [f"![{f}]({f})" for f in shown] + [""]
        shown = [f for f in effect_files if f.endswith(".png")]
        if shown:
            lines += ["## What fine-tuning changed", "", "Base model and each method's final model on the same "
                      "evaluation prompts and noise (reward under each image); learned reward vs the true score it "
                      "stands for, where the reward has one.", ""] + [f"![{f}]({f})" for f in shown] + [""]
        img = [f for f in image_files if f.endswith(".png")]
        if img:
            lines += ["## Evaluation images (first vs last evaluation)", ""] + [f"![{f}]({f})" for f in img] + [""]
        lines += ["## Definitions", "", DEFINITIONS]
        (tmp / "report.md").write_text("\n".join(lines))
    return out
