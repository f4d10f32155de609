"""Figures of a suite report: the aggregate (IQM with intervals, probability of improvement), the performance
profile, per-task curves, the final score against diversity and fidelity, and one image grid per (task, family).

``plot_*`` functions draw on an ``ax`` from tidy inputs and return its figure (rliable's ``plot_utils`` style); the
``*_figure(s)`` functions lay them out and save them. Curves and image grids are the single-folder report's own
(``plots.plot_reward_curves``, ``effect.effect_figures``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import aggregate, plots
from bench.analysis.effect import effect_figures
from bench.analysis.figures_curves import panel_grid
from bench.analysis.plots import reward_label
from bench.analysis.results import eval_curves
from bench.analysis.summary import METRIC_NAMES
from bench.analysis.suite_scores import is_diversity
from bench.core.text import safe_name

QUICK = "QUICK: numbers meaningless at this budget"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FAMILY_FILL = ("full", "none")
"""Per family (in suite order): filled or hollow markers."""


def title(text: str, quick: bool) -> str:
    return f"{QUICK}\n{text}" if quick else text


def save(fig, out: Path, name: str, formats) -> list[str]:
    fig.tight_layout()
    return [Path(n).name for n in plots.save_figure(fig, out / name, formats)]


def plot_interval_estimates(ax, estimates: dict[str, tuple[float, float, float]], *, colors: dict, xlabel: str,
                            title: str = ""):
    """One horizontal bar per method from lo to hi with a tick at the point (rliable's ``plot_interval_estimates``);
    a method without an interval (NaN bounds) is its point alone."""
    names = list(estimates)
    for i, name in enumerate(names):
        point, lo, hi = estimates[name]
        color = colors.get(name)
        if not (np.isnan(lo) or np.isnan(hi)):
            ax.barh(i, hi - lo, left=lo, height=0.6, color=color, alpha=0.75)
        else:  # no interval: the point alone, in the method's colour
            ax.plot(point, i, "o", color=color, markersize=9)
        ax.plot([point, point], [i - 0.3, i + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return ax.figure


def plot_performance_profile(ax, taus: np.ndarray, profiles: dict[str, dict], *, colors: dict, xlabel: str,
                             title: str = ""):
    """Per method the fraction of runs scoring above tau, with its band (rliable's ``plot_performance_profiles``)."""
    for name, band in profiles.items():
        color = colors.get(name)
        ax.plot(taus, band["value"], color=color, linewidth=2, label=name)
        if not np.allclose(band["lo"], band["hi"]):
            ax.fill_between(taus, band["lo"], band["hi"], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("fraction of runs with score > τ", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax.figure


def aggregate_figure(out: Path, estimates: dict[str, dict], improvements: pd.DataFrame, *, colors: dict, what: str,
                     cells: str, quick: bool, formats, note: str = "") -> list[str]:
    """``aggregate``: IQM and mean of the normalised scores per method (95 % stratified-bootstrap intervals) and
    P(X > Y) per pair of methods."""
    if not estimates:
        return []
    panels = [("iqm", "IQM"), ("mean", "mean")]
    n_pairs = len(improvements)
    fig, axes = plots.plt.subplots(1, 3 if n_pairs else 2, figsize=(14 if n_pairs else 9.5, max(2.8, 1.4 + 0.45 * max(
        len(estimates), n_pairs))), squeeze=False)
    for ax, (stat, name) in zip(axes[0], panels):
        plot_interval_estimates(ax, {m: e[stat] for m, e in estimates.items()}, colors=colors,
                                xlabel=f"{name} of {what}", title=f"{name} over runs x cells")
    if n_pairs:
        ax = axes[0, 2]
        labels = [f"P({r.x} > {r.y})" for r in improvements.itertuples()]
        pairs = {label: (r.p, r.lo, r.hi) for label, r in zip(labels, improvements.itertuples())}
        plot_interval_estimates(ax, pairs, colors={label: "tab:gray" for label in labels},
                                xlabel="probability of improvement", title="P(X > Y) over shared cells")
        ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
    how = f"no intervals: {note}" if note else "95 % stratified-bootstrap intervals"
    fig.suptitle(title(f"Aggregate over {cells} ({how}; black tick: the point)", quick), fontsize=11)
    return save(fig, out, "aggregate", formats)


def profile_figure(out: Path, matrices: dict[str, np.ndarray], *, colors: dict, what: str, cells: str, quick: bool,
                   seed: int, n_boot: int, formats) -> list[str]:
    """``performance_profile``: the fraction of runs x cells with a normalised score above tau, per method."""
    values = [aggregate.pooled(m) for m in matrices.values()]
    values = np.concatenate(values) if values else np.zeros(0)
    if not len(values):
        return []
    lo, hi = min(0.0, float(values.min())), max(1.0, float(values.max()))
    taus = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 201)
    profiles = {m: aggregate.profile_band(x, taus, rng=np.random.default_rng(seed), n_boot=n_boot)
                for m, x in matrices.items()}
    fig, ax = plots.plt.subplots(figsize=(7.5, 4.6))
    plot_performance_profile(ax, taus, profiles, colors=colors, xlabel=f"τ ({what})")
    for x, text in ((0.0, "base model"), (1.0, "best method")):
        ax.axvline(x, color="0.4", linestyle=":", linewidth=1)
        ax.text(x, 1.0, f" {text}", fontsize=8, color="0.3", va="top", rotation=90)
    plots.legend_beside(ax)
    banded = any(not np.allclose(p["lo"], p["hi"]) for p in profiles.values())
    ax.set_title(title(f"Performance profile over {cells}\n(" + ("95 % stratified-bootstrap bands" if banded else
                       "no bands: 1 cell or 1 seed") + ")", quick), fontsize=10)
    return save(fig, out, "performance_profile", formats)


def curve_figures(suite, out: Path, *, colors: dict, seed: int, n_boot: int, quick: bool, formats) -> list[str]:
    """``curves_<task>``: per family a column, rows the learned reward and the task's true score against reward
    queries, one line per method with seed bands (``plots.plot_reward_curves``)."""
    names = []
    for task, info in suite.tasks.items():
        cells = [c for c in suite.cells if c.task == task and c.results is not None]
        if not cells:
            continue
        rows = [("reward_mean", reward_label(info.reward))]
        if info.true_score:
            better = "higher" if info.true_higher_is_better else "lower"
            rows.append((info.true_score, f"true score: {info.true_score}\n({better} is better)"))
        fig, axes = plots.plt.subplots(len(rows), len(cells), figsize=(6.2 * len(cells), 3.8 * len(rows)),
                                       squeeze=False)
        for j, cell in enumerate(cells):
            m = cell.results.metrics
            for i, (metric, ylabel) in enumerate(rows):
                if metric == "reward_mean":
                    data = eval_curves(cell.results)
                else:
                    data = m[(m["split"] == "eval") & (m["metric"] == metric)]
                model = ", ".join(sorted(set(cell.results.runs["model"])))
                plots.plot_reward_curves(axes[i, j], data, x="samples", rng=np.random.default_rng(seed),
                                         n_boot=n_boot, colors=colors, title=f"{task} on {cell.family} ({model})",
                                         ylabel=ylabel, legend=None)
        plots.legend_below(fig, list(axes.ravel()), ncol=min(4, max(1, len(colors))))
        fig.suptitle(title(f"{task}: evaluation against reward queries\n(mean over seeds, 95 % bootstrap bands; "
                           "markers: each seed's evaluations)", quick), fontsize=11)
        names += save(fig, out, f"curves_{safe_name(task)}", formats)
    return names


def scatter_panel(ax, board: pd.DataFrame, cells: pd.DataFrame, metric: str, *, colors: dict, markers: dict,
                  fills: dict) -> bool:
    """Final normalised score (x) against ``metric`` (y), one point per (method, cell); the cell's base model at
    x = 0 as a grey point. False when no point has the metric."""
    column = f"final_{metric}"
    if column not in board:
        return False
    shown = board[board[column].notna() & board["normalised"].notna()] if "normalised" in board else board.iloc[:0]
    for _, r in shown.iterrows():  # (itertuples renames columns such as diversity[space])
        ax.plot(r["normalised"], r[column], markers[r["task"]], color=colors.get(r["method"]),
                fillstyle=fills[r["family"]], markersize=8, linestyle="none", markeredgewidth=1.5)
    base = cells[cells[f"base_{metric}"].notna()] if f"base_{metric}" in cells else cells.iloc[:0]
    for _, r in base.iterrows():
        ax.plot(0.0, r[f"base_{metric}"], markers[r["task"]], color="0.55", fillstyle=fills[r["family"]],
                markersize=8, linestyle="none", markeredgewidth=1.5)
    ax.set_ylabel(METRIC_NAMES.get(metric, metric), fontsize=9)
    ax.grid(alpha=0.3)
    return bool(len(shown))


def scatter_figures(board: pd.DataFrame, cells: pd.DataFrame, out: Path, *, tasks, families, colors: dict, what: str,
                    quick: bool, formats) -> dict[str, list[str]]:
    """``score_vs_diversity`` and ``score_vs_fidelity``: the final normalised score against each diversity and
    fidelity metric (final evaluation, means over seeds), colour = method, marker = task, filled/hollow = family."""
    from matplotlib.lines import Line2D

    markers = {t: MARKERS[i % len(MARKERS)] for i, t in enumerate(tasks)}
    fills = {f: FAMILY_FILL[i % len(FAMILY_FILL)] for i, f in enumerate(families)}
    legend = ([(Line2D([], [], color=c, marker="o", linestyle="none"), m) for m, c in colors.items()]
              + [(Line2D([], [], color="0.55", marker="o", linestyle="none"), "base model (step 0)")]
              + [(Line2D([], [], color="black", marker=mk, linestyle="none"), t) for t, mk in markers.items()]
              + [(Line2D([], [], color="black", marker="o", fillstyle=fl, linestyle="none"), f"family {f}")
                 for f, fl in fills.items()])
    metrics = [c[len("final_"):] for c in board.columns if c.startswith("final_")]
    groups = {"diversity": [m for m in metrics if is_diversity(m)],
              "fidelity": [m for m in ("color_accuracy", "shape_accuracy", "exact_count") if m in metrics]}
    found = {}
    for kind, names in groups.items():
        if not names:
            continue
        fig, axes = panel_grid(len(names), per_row=3, width=4.8, height=3.8)
        drawn = [scatter_panel(ax, board, cells, m, colors=colors, markers=markers, fills=fills)
                 for ax, m in zip(axes, names)]
        if not any(drawn):
            plots.plt.close(fig)
            continue
        for ax in axes:
            ax.set_xlabel(what, fontsize=9)
            ax.axvline(0, color="0.6", linewidth=0.8)
            ax.axvline(1, color="0.6", linewidth=0.8, linestyle=":")
        plots.legend_below(fig, [], extra=legend, ncol=4)
        fig.suptitle(title(f"Final {what} against {kind} (final evaluation, mean over seeds; one point per method "
                           "and task)", quick), fontsize=10)
        found[kind] = save(fig, out, f"score_vs_{kind}", formats)
    return found


def image_grids(suite, out: Path, *, formats) -> list[str]:
    """``effect_<task>_<family>``: the single-folder report's base-vs-final image grid of each cell."""
    names = []
    for cell in suite.present():
        runs = cell.results.runs
        model = ", ".join(sorted(set(runs["model"])))
        named = replace(cell.results, runs=runs.assign(reward=f"{cell.task} on {cell.family} ({model})"))
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            made = effect_figures(named, Path(tmp), formats=formats)
            for name in made:
                target = f"effect_{safe_name(cell.task)}_{safe_name(cell.family)}{Path(name).suffix}"
                shutil.move(str(Path(tmp) / name), out / target)
                names.append(target)
    return names
