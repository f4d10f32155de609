"""A report folder from results folders: report.md, summary.csv and figures (``python -m bench.report``).

Reads results folders only (manifest.json, metrics.parquet/csv, runs.csv, runs/<run_id>/eval_*.png); it never
re-runs anything. Several folders (e.g. one per reward) combine into one report. report.md leads with the summary
(``bench.analysis.summary``: sorted by final value, a start row per evaluation setting, true score and fidelity
beside the learned reward, a winner only where the seeds separate one) and what fine-tuning changed, then time to
target (``bench.analysis.speedup``), curves, training diagnostics (``bench.analysis.diagnostics``), the
reward-hacking axis, memory and speed. Figures:

- ``effect_<reward>``, ``learned_vs_true_<reward>``: base vs final images per method; learned vs true score;
- ``reward_vs_step``, ``reward_vs_wall_s``, ``reward_vs_samples``, ``reward_vs_cpu_s``: one panel per reward, one
  line per method, a marker per evaluation; with two or more seeds a mean row and an interquartile-mean (IQM) row,
  each with a seeded 95 % bootstrap band (seeds interpolated onto a common grid first); with one seed the runs
  themselves; time-to-target targets as grey lines named in the legend beside the axes;
- ``reward_seen_vs_heldout``: training-prompt reward against held-out evaluation reward by step;
- ``eval_metrics``: a reward's extra evaluation metrics (shape world: exact count, colour and shape accuracy, true
  score), panels wrapped three to a row, one legend below;
- ``diagnostics``: the training metrics that show whether a policy gradient's clip, ratio and anchors acted;
- ``hacking_<reward>``: learned reward against each fidelity metric along training;
- ``resources``: peak memory, wall-clock and CPU seconds per optimizer step and per reward query per method (also
  in the table);
- ``images_<reward>``: evaluation prompts x methods, first and last evaluation, from each method's first seed.

Table columns are defined at the end of report.md. Failed runs appear with their status (and in each figure's
caption); runs whose timings a busy machine (load beyond the job's own workers) or the time budget distorted are
listed. Every stand-in (random-weight) model or reward is named once in each figure's title and in the table.
Folders of the same command pool (a run id in two folders becomes ``id#2`` when both configurations match; a
repeat of a seed is a replicate, not another seed).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import diagnostics
from bench.analysis.configs import method_configurations
from bench.analysis.effect import effect_figures, learned_vs_true_figures
from bench.analysis.figures import image_figures, resource_figure
from bench.analysis.figures_curves import curve_figures, extra_metrics_figure, seen_vs_heldout_figure
from bench.analysis.hacking import fidelity_figures
from bench.analysis.html import report_command, write_html
from bench.analysis import speedup
from bench.analysis.results import add_labels, fmt_setting, guidance_text, load_results, true_cfg
from bench.analysis.summary import DEFINITIONS, FAILED, summarize, summary_markdown
from bench.core.files import atomic_dir
from bench.core.text import fmt, markdown_table


def build_report(directories, out: Path, *, seed: int = 0, n_boot: int = 2000, formats=("png", "pdf"),
                 reference: str | None = None, command: str | None = None) -> Path:
    """Write the report folder ``out`` (report.md, summary.csv, figures) from results folders; returns ``out``.
    ``"html"`` among ``formats`` adds report.html (``bench.analysis.html``; PNG figures too, which it embeds), with
    ``command`` (the bench.report command line) among its commands."""
    html = "html" in formats
    asked = formats
    formats = tuple(dict.fromkeys([f for f in formats if f != "html"] + (["png"] if html else [])))
    results = load_results(directories)
    reference = speedup.reference_method(results.runs, reference)  # one given must have runs here
    for problem in results.problems:
        print(f"warning: {problem}", file=sys.stderr)
    add_labels(results.runs, results.metrics)
    summary = summarize(results, rng=np.random.default_rng(seed), n_boot=n_boot)
    methods = summary[summary["kind"] == "method"] if len(summary) else summary
    reach = speedup.time_to_targets(results, reference, rng=np.random.default_rng(seed), n_boot=n_boot)
    marks = {} if not len(reach) else {
        reward: list(g[["target_name", "target"]].drop_duplicates().itertuples(index=False, name=None))
        for reward, g in reach.groupby("reward")}
    with atomic_dir(out, "report.md", directories, default="DIR/report") as tmp:
        curve_files = curve_figures(results, tmp, seed=seed, n_boot=min(n_boot, 1000), formats=formats, targets=marks)
        hacking_files = fidelity_figures(results, tmp, seed=seed, n_boot=min(n_boot, 1000), formats=formats)
        reach.to_csv(tmp / "time_to_target.csv", index=False)
        curve_files += seen_vs_heldout_figure(results, tmp, formats=formats)
        curve_files += extra_metrics_figure(results, tmp, formats=formats)
        resource_files = resource_figure(methods, tmp, runs=results.runs, stand_ins=results.stand_ins, formats=formats)
        image_files = image_figures(results, tmp, formats=formats)
        effect_files = effect_figures(results, tmp, formats=formats) + learned_vs_true_figures(results, tmp,
                                                                                             formats=formats)
        diagnostic_files = diagnostics.diagnostics_figure(results, tmp, formats=formats)
        kept = carried_images(out, tmp, methods, have=effect_files + image_files)
        effect_files = [f for f in kept if f.startswith("effect_")] + effect_files
        image_files += [f for f in kept if f.startswith("images_")]
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
        lines += ["Evaluation settings (guidance scale, sampling steps): " + eval_settings_line(runs), ""]
        lines += ["## Summary", "", summary_markdown(summary) if len(summary) else "_no runs found_", ""]
        shown = [f for f in effect_files if f.endswith(".png")]
        if shown:
            lines += ["## What fine-tuning changed", "", "Base model and each method's final model on the same "
                      "evaluation prompts and noise (reward under each image); learned reward vs the true score it "
                      "stands for, where the reward has one.", ""] + [f"![{f}]({f})" for f in shown] + [""]
        if kept:
            lines += [f"_{', '.join(f'`{f}`' for f in kept if f.endswith('.png'))}: kept from the earlier report in "
                      "this folder (same rewards and methods); these results folders hold no run folders "
                      "(`runs/<id>/eval_*`) to draw them from._", ""]
        elif not any(f.startswith(("effect_", "images_")) for f in effect_files + image_files):
            lines += ["_No image figures: these results folders hold no run folders (`runs/<id>/eval_*`)._", ""]
        lines += speedup.markdown(reach, reference)
        png = [f for f in curve_files if f.endswith(".png")]
        if png:
            lines += ["## Reward curves", ""] + [f"![{f}]({f})" for f in png] + [""]
        lines += diagnostics.markdown(results, diagnostic_files)
        shown = [f for f in hacking_files if f.endswith(".png")]
        if shown:
            lines += ["## Reward vs fidelity along training (the reward-hacking axis)", "", "Each evaluation a point "
                      "(mean over seeds, 95 % intervals), each method a line from its start (star: the base model "
                      "under its evaluation setting) to its end: compare methods at equal learned reward.", ""]
            lines += [f"![{f}]({f})" for f in shown] + [""]
        lines += ["## Memory and speed", "", resources_markdown(methods), ""]
        lines += [f"![{f}]({f})" for f in resource_files if f.endswith(".png")] + [""]
        configs = method_configurations(results)
        if configs:
            lines += ["## Method configurations", "", "Settings that differ from each method's defaults (first seed's "
                      "run); *tuned*: chosen by `python -m bench.tune` and applied with `--config-from`.", "",
                      markdown_table(configs), ""]
        failed = results.runs[results.runs["status"].isin(FAILED + ("unknown",))]
        if len(failed):
            lines += ["### Runs that did not finish", ""]
            cols = ["run_id", "status", "steps", "error"]
            lines += [markdown_table(failed[cols].fillna("")), ""]
        warned = results.runs[results.runs["warning"] != ""]
        if len(warned):
            lines += ["### Timing warnings", "", "Wall-clock numbers of these runs mislead; compare `CPU s/step`. "
                      "*Machine busy* counts only load beyond the job's own (its workers at once x their threads).", ""]
            shown = warned[["run_id", "status", "steps", "load_avg", "cores", "threads", "job_workers", "warning"]]
            lines += [markdown_table(shown.rename(columns={"job_workers": "job workers"})), ""]
        img = [f for f in image_files if f.endswith(".png")]
        if img:
            lines += ["## Evaluation images (first vs last evaluation)", ""] + [f"![{f}]({f})" for f in img] + [""]
        lines += ["## Definitions", "", DEFINITIONS]
        (tmp / "report.md").write_text("\n".join(lines))
        if html:
            write_html(tmp, "\n".join(lines), directories, command or report_command(
                directories, out, seed=seed, n_boot=n_boot, formats=asked, reference=reference))
    return out


IMAGE_FIGURES = ("effect_", "images_")
"""Figures drawn from run folders (``runs/<id>/eval_*``), which committed results folders leave out."""


def carried_images(out: Path, tmp: Path, methods: pd.DataFrame, *, have) -> list[str]:
    """The image figures of the earlier report in ``out``, copied into ``tmp``, when this report could draw none
    (its results folders hold no run folders) and the earlier report summarised the same (reward, method) rows:
    regenerating a committed report keeps the figures its run folders once gave. [] otherwise."""
    import shutil

    out = Path(out)
    if any(f.startswith(IMAGE_FIGURES) for f in have) or not (out / "report.md").is_file():
        return []
    try:
        earlier = pd.read_csv(out / "summary.csv")
    except (OSError, ValueError):
        return []
    if "kind" in earlier:
        earlier = earlier[earlier["kind"] == "method"]
    before = set(zip(earlier.get("reward", []), earlier.get("label", [])))
    same = before == set(zip(methods["reward"], methods["label"]))
    if not same or not len(methods):
        return []
    kept = []
    for path in sorted(out.iterdir()):
        if path.name.startswith(IMAGE_FIGURES) and path.suffix in (".png", ".pdf", ".svg"):
            shutil.copy2(path, tmp / path.name)
            kept.append(path.name)
    return kept


def eval_settings_line(runs) -> str:
    """Each method's evaluation setting: "`flow-grpo` guidance 2, 10 steps; `diffusion-nft` guidance 1, 10 steps"
    (``guidance_text``: not "CFG", which flux's guidance embedding is not; its true CFG is added where > 1)."""
    found = runs.assign(eval_true_cfg=true_cfg(runs))[["label", "eval_guidance", "eval_true_cfg", "eval_steps"]]
    return "; ".join(f"`{label}` {guidance_text(g, c)}, {fmt_setting(st)} steps"
                     for label, g, c, st in found.drop_duplicates().values)


def resources_markdown(methods) -> str:
    """The memory and speed table: peak memory, wall-clock and CPU seconds per optimizer step and per reward query."""
    if not len(methods):
        return "_no runs_"
    return markdown_table(pd.DataFrame({
        "reward": methods["reward"], "method": methods["label"],
        "peak mem (MB)": methods["peak_mem_mb"].map(lambda v: fmt(v, 1)),
        "s/step": methods["sec_per_step"].map(fmt), "CPU s/step": methods["cpu_per_step"].map(fmt),
        "s/query": methods["sec_per_query"].map(lambda v: fmt(v, 4)),
        "CPU s/query": methods["cpu_per_query"].map(lambda v: fmt(v, 4)),
        "status": methods["status"]}))
