"""The reward-hacking axis: each method's learned reward against its prompt fidelity and the true score, along
training.

Every evaluation is a point (mean over seeds, 95 % bootstrap intervals over seeds on both axes), each method a line
in evaluation order from its start (a star: the base model under the method's evaluation setting) to its end (a
large marker), so methods are compared at equal learned reward, not only at their ends: a line that moves right and
down trades fidelity for reward. The y axes
are the evaluation metrics a reward records beside its score: for the shape world's ``shape-aesthetic``, exact
count, colour and shape accuracy and the hand-defined ``true_aesthetic`` the learned reward stands for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import plots, stats
from bench.analysis.figures_curves import finish, panel_grid
from bench.analysis.plots import reward_label
from bench.harness.recorder import COMPLETED

FIDELITY = {"exact_count": "exact count accuracy", "color_accuracy": "colour accuracy",
            "shape_accuracy": "shape accuracy", "true_aesthetic": "true aesthetic score (hand-defined)"}
"""Evaluation metrics drawn against the learned reward, in panel order, with their axis labels."""


def trajectories(metrics: pd.DataFrame, runs: pd.DataFrame, metric: str, *, rng: np.random.Generator,
                 n_boot: int) -> pd.DataFrame:
    """One row per (label, evaluation k): mean and 95 % interval over seeds of the learned reward and ``metric``.

    Evaluations are matched by their order in each run (seeds of one invocation share the schedule), up to the
    fewest any seed of the label has."""
    done = set(runs.loc[runs["status"].isin(COMPLETED), "run_id"])
    ev = metrics[(metrics["split"] == "eval") & metrics["run_id"].isin(done)]
    wide = ev[ev["metric"].isin(["reward_mean", metric])].pivot_table(
        index=["label", "run_id", "step"], columns="metric", values="value").reset_index()
    rows = []
    for label, g in wide.groupby("label", sort=True):
        per_run = [r.sort_values("step") for _, r in g.groupby("run_id")]
        if metric not in g or any(r[metric].isna().all() for r in per_run):
            continue
        n = min(len(r) for r in per_run)
        for k in range(n):
            point = {"label": label, "k": k, "seeds": len(per_run)}
            for col, name in (("reward_mean", "x"), (metric, "y")):
                values = np.array([r[col].iloc[k] for r in per_run], dtype=float)
                point[name], point[name + "_lo"], point[name + "_hi"] = stats.bootstrap_ci(
                    values, "mean", rng=rng, n_boot=n_boot)
            rows.append(point)
    return pd.DataFrame(rows)


def fidelity_figures(results, out: Path, *, seed: int = 0, n_boot: int = 1000, formats=("png", "pdf")) -> list[str]:
    """``hacking_<reward>``: learned reward (x) against each fidelity metric (one panel each), per method a line."""
    names = []
    colors = plots.color_map(results.runs["label"])
    for reward, runs in results.runs.groupby("reward", sort=True):
        metrics = results.metrics[results.metrics["reward"] == reward]
        present = [m for m in FIDELITY if m in set(metrics.loc[metrics["split"] == "eval", "metric"])]
        if not present:
            continue
        fig, axes = panel_grid(len(present), per_row=2, width=4.4, height=3.6)
        for ax, metric in zip(axes, present):
            table = trajectories(metrics, runs, metric, rng=np.random.default_rng(seed), n_boot=n_boot)
            for label, t in table.groupby("label", sort=True):
                c = colors.get(label)
                xerr = np.abs(np.vstack([t["x"] - t["x_lo"], t["x_hi"] - t["x"]]))
                yerr = np.abs(np.vstack([t["y"] - t["y_lo"], t["y_hi"] - t["y"]]))
                ax.errorbar(t["x"], t["y"], xerr=xerr, yerr=yerr, fmt="-o", color=c, markersize=3, linewidth=1.2,
                            elinewidth=0.6, alpha=0.85, capsize=0, label=f"{label} ({t['seeds'].iloc[0]} seeds)")
                ax.plot(t["x"].iloc[-1], t["y"].iloc[-1], "o", color=c, markersize=9, markeredgecolor="black")
            if len(table):  # each evaluation setting's own start (methods evaluated alike share one)
                first = table[table["k"] == 0].round({"x": 9, "y": 9}).drop_duplicates(["x", "y"])
                ax.plot(first["x"], first["y"], "*", color="black", markersize=14, linestyle="none", zorder=5,
                        label="start (base model, step 0)")
            ax.set_xlabel(reward_label(reward, "learned reward (eval)"))
            ax.set_ylabel(FIDELITY[metric])
            ax.grid(alpha=0.3)
        plots.legend_below(fig, axes, ncol=3)
        title = (f"{reward}: learned reward vs fidelity along training\n(each evaluation a point, mean over seeds, "
                 "95 % intervals; star = start, large marker = end)")
        names += finish(fig, title, runs, results.stand_ins, out, f"hacking_{reward}", formats)
    return names
