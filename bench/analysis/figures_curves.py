"""Curve figures of a report: evaluation reward against step / time / queries, training (seen) prompts against
evaluation (held-out) prompts, and a reward's extra evaluation metrics (drawn by ``plots``).

Every figure names its stand-ins once (in its title) and lists, in a caption, the runs it cannot show in full
(skipped, failed); with one seed per method it draws the runs themselves, without a band or an IQM panel.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import plots
from bench.analysis.plots import reward_label, stand_in_note
from bench.analysis.results import Results, eval_curves
from bench.harness.recorder import COMPLETED
from bench.analysis.summary import IQM_MIN_SEEDS

CURVE_AXES = ("step", "wall_s", "samples", "cpu_s")
TARGET_AXES = ("samples", "cpu_s")
"""Axes on which time-to-target targets are drawn (dashed lines)."""
EXTRA_SKIP = ("reward_mean", "reward_std")
"""Evaluation metrics every run records; the others (exact_count, colour/shape accuracy, ...) get their own figure."""


def not_shown_caption(runs: pd.DataFrame, width: int = 120) -> str:
    """One caption line per (status, reason) of runs that did not finish their budget, naming them; "" when none."""
    bad = runs[~runs["status"].isin(COMPLETED)]
    bad = bad if "error" in bad else bad.assign(error="")
    lines = []
    for (status, error), g in bad.fillna({"error": ""}).groupby(["status", "error"], sort=True):
        names = "; ".join(f"{label} " + ", ".join(f"s{int(s)}" for s in lg["seed"].dropna())
                          for label, lg in g.groupby("label", sort=True))
        reason = f" ({error})" if error else ""
        lines.append(textwrap.fill(f"Not shown or partial, {status}: {names}{reason}", width))
    return "\n".join(lines)


def finish(fig, title: str, runs: pd.DataFrame, stand_ins, out: Path, name: str, formats) -> list[str]:
    """Title with the stand-in note once, the caption of runs not shown (under a legend drawn below the panels),
    save; returns the file names."""
    fig.suptitle(title + stand_in_note(stand_ins, 110), fontsize=11)
    below = getattr(fig, "below_legend", None)
    fig.tight_layout()  # lays out the axes only: a legend below them stays where it is
    caption = not_shown_caption(runs)
    if caption:
        y = 0.0
        if below is not None:
            fig.canvas.draw()
            y = below.get_window_extent().transformed(fig.transFigure.inverted()).y0 - 0.01
        fig.text(0.01, y, caption, ha="left", va="top", fontsize=8, color="dimgray")
    return [Path(n).name for n in plots.save_figure(fig, out / name, formats)]


def panel_grid(n: int, *, per_row: int = 3, width: float = 4.6, height: float = 3.6):
    """A figure of ``n`` panels wrapped ``per_row`` to a row (never one row of a dozen); returns (figure, the
    ``n`` axes in reading order), the unused cells of the last row hidden."""
    cols = max(1, min(per_row, n))
    n_rows = -(-n // cols)
    fig, axes = plots.plt.subplots(n_rows, cols, figsize=(width * cols, height * n_rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def seeds_per_label(runs: pd.DataFrame) -> int:
    return int(runs.groupby("label")["seed"].nunique().max()) if len(runs) else 0


def min_seeds_per_label(runs: pd.DataFrame) -> int:
    """The fewest distinct seeds any method finished with (repeats of one seed count once)."""
    done = runs[runs["status"].isin(COMPLETED)]
    return int(done.groupby("label")["seed"].nunique().min()) if len(done) else 0


def curve_figures(results: Results, out: Path, *, seed: int, n_boot: int, formats=("png", "pdf"),
                  targets: dict | None = None) -> list[str]:
    """``reward_vs_{step,wall_s,samples,cpu_s}``: one column per reward; with 2+ seeds a mean row and an IQM row,
    each with seeded 95 % bootstrap bands; with 1 seed one row of the runs themselves. ``targets`` (reward -> list
    of (name, value)) are drawn as dashed lines on the query and CPU-second figures."""
    curves = eval_curves(results)
    rewards = sorted(results.runs["reward"].unique())
    if not len(curves) or not rewards:
        return []
    colors = plots.color_map(results.runs["label"])
    n_seeds = min_seeds_per_label(results.runs)
    several = n_seeds > 1
    # an IQM row only where it can differ from the mean: below 4 seeds it trims nothing (the summary's IQM column
    # needs IQM_MIN_SEEDS alike)
    stats_rows = ("mean", "iqm") if n_seeds >= IQM_MIN_SEEDS else ("mean",)
    names = []
    for x in CURVE_AXES:
        fig, axes = plots.plt.subplots(len(stats_rows), len(rewards), figsize=(8 * len(rewards), 4.2 * len(stats_rows)),
                                       squeeze=False)
        for j, reward in enumerate(rewards):
            rc = curves[curves["reward"] == reward]
            split = "held-out eval prompts" if (rc["curve_split"] == "eval").all() else "eval (train where no eval)"
            drawn = (targets or {}).get(reward, []) if x in TARGET_AXES else []
            for i, stat in enumerate(stats_rows):
                plots.plot_reward_curves(axes[i, j], rc, x=x, stat=stat, rng=np.random.default_rng(seed),
                                         n_boot=n_boot, colors=colors, title=f"{reward}: {split}",
                                         ylabel=reward_label(reward), legend=None)  # fmt: skip
                for k, (name, value) in enumerate(drawn):
                    # each target a line of its own style, named in the legend beside the axes: labels written on
                    # the axes collided where two targets lay close
                    axes[i, j].axhline(value, color=TARGET_GREYS[k % len(TARGET_GREYS)],
                                       linestyle=TARGET_STYLES[k % len(TARGET_STYLES)], linewidth=1.0,
                                       label=f"target: {name} ({value:.3g})")
            if len(stats_rows) and (axes[0, j].get_legend_handles_labels()[0]):
                plots.legend_beside(axes[0, j])  # the top row's legend serves the IQM row below it
        what = ("1 seed per method: no confidence band" if not several else
                "mean and IQM over seeds, 95 % bootstrap bands" if len(stats_rows) > 1 else
                "mean over seeds, 95 % bootstrap bands")
        names += finish(fig, f"Reward vs {plots.X_LABELS[x]} ({what})", results.runs, results.stand_ins, out,
                        f"reward_vs_{x}", formats)
    return names


TARGET_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
TARGET_GREYS = ("0.25", "0.45", "0.6", "0.35")
"""Line styles and grey levels of time-to-target targets, one per target (named in the legend)."""


def mean_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean value per step over the runs that have it (steps are shared by seeds of one invocation)."""
    return rows.groupby("step", as_index=False)["value"].mean().sort_values("step")


def seen_vs_heldout_figure(results: Results, out: Path, *, formats=("png", "pdf")) -> list[str]:
    """``reward_seen_vs_heldout``: per reward, each method's training reward (the prompts it trains on, the batch
    it just sampled) against its evaluation reward (held-out prompts, fixed noise), by optimizer step."""
    m = results.metrics[results.metrics["metric"] == "reward_mean"]
    rewards = sorted(m["reward"].unique())
    if not len(m) or not (m["split"] == "train").any():
        return []
    colors = plots.color_map(results.runs["label"])
    fig, axes = plots.plt.subplots(1, len(rewards), figsize=(8 * len(rewards), 4.4), squeeze=False)
    for ax, reward in zip(axes[0], rewards):
        named = {}  # legend name -> colour: one entry per method, the two line styles explained once
        for label, g in sorted(m[m["reward"] == reward].groupby("label"), key=lambda kv: kv[0]):
            n = g["run_id"].nunique()
            for split, style in (("train", "--"), ("eval", "o-")):
                rows = mean_curve(g[g["split"] == split])
                if len(rows):
                    ax.plot(rows["step"], rows["value"], style, color=colors.get(label), markersize=4,
                            linewidth=1.0 if split == "train" else 1.6, alpha=0.7 if split == "train" else 1.0)
            named[f"{label} ({n} seed{'s' * (n > 1)})"] = colors.get(label)
        ax.set_xlabel(plots.X_LABELS["step"])
        ax.set_ylabel(reward_label(reward, "reward (mean over seeds)"))
        ax.set_title(f"{reward}: seen (dashed) vs held-out (solid) prompts", fontsize=10)
        ax.grid(alpha=0.3)
        plots.tidy_axis(ax, integer_x=True)
        plots.method_style_legend(ax, named, list(named), [("training prompts (the batch sampled)", "--", None),
                                                           ("held-out eval prompts", "-", "o")], fontsize=7)
    return finish(fig, "Training-prompt reward vs held-out evaluation reward", results.runs, results.stand_ins, out,
                  "reward_seen_vs_heldout", formats)


def extra_metrics_figure(results: Results, out: Path, *, formats=("png", "pdf")) -> list[str]:
    """``eval_metrics``: evaluation metrics beyond the reward (e.g. the shape world's exact_count, colour and shape
    accuracy), one panel per (reward, metric), one line per method (mean over seeds), by optimizer step."""
    m = results.metrics
    extra = m[(m["split"] == "eval") & ~m["metric"].isin(EXTRA_SKIP)]
    panels = sorted({(r, k) for r, k in zip(extra["reward"], extra["metric"])})
    if not panels:
        return []
    colors = plots.color_map(results.runs["label"])
    fig, axes = panel_grid(len(panels), per_row=EXTRA_PER_ROW, width=3.7, height=2.9)
    for ax, (reward, metric) in zip(axes, panels):
        rows = extra[(extra["reward"] == reward) & (extra["metric"] == metric)]
        for label, g in sorted(rows.groupby("label"), key=lambda kv: kv[0]):
            curve, n = mean_curve(g), g["run_id"].nunique()
            ax.plot(curve["step"], curve["value"], "o-", color=colors.get(label), markersize=3.5, linewidth=1.2,
                    label=f"{label} ({n} seed{'s' * (n > 1)})")
        ax.set_xlabel(plots.X_LABELS["step"], fontsize=9)
        ax.set_ylabel("fraction of eval images" if "accuracy" in metric or "count" in metric else "score (0-1)"
                      if metric.startswith("true_") else metric, fontsize=9)
        ax.set_title(f"{reward}: {metric}" if len({r for r, _ in panels}) > 1 else metric, fontsize=10)
        ax.grid(alpha=0.3)
        plots.tidy_axis(ax, integer_x=True)
    plots.legend_below(fig, axes, ncol=min(4, len(colors)))
    return finish(fig, "Extra evaluation metrics on held-out prompts (mean over seeds)", results.runs,
                  results.stand_ins, out, "eval_metrics", formats)


EXTRA_PER_ROW = 3
"""Panels per row of the ``eval_metrics`` figure (it wraps: one row of 8 panels was 4,484 px wide)."""
