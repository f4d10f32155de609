"""Training diagnostics: whether a policy gradient's machinery acted, from its training rows (split ``train``).

A clipped objective whose ratios never leave 1 ± clip is plain on-policy REINFORCE with a baseline, whatever its
configuration says; an old-policy anchor that equals the current policy anchors nothing. The report shows, per
method, the metrics that tell (``GRPO``: clipfrac, max |ratio - 1|, approximate KL, KL to the base; ``NFT``:
DiffusionNFT's optimality probability r, its saturation, the old-vs-current adapter gap, the old adapter's decay,
the positive and negative branch losses) as a table (updates, mean, max; for clipfrac the fraction of updates it
acted on), a plain-language verdict per method, and a figure (``diagnostics``: one panel per metric, by optimizer
step, one line per method, mean over seeds).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import plots
from bench.analysis.results import Results
from bench.core.text import fmt, markdown_table

GRPO = {"clipfrac": "fraction of ratios outside 1 ± clip, per update",
        "ratio_max_dev": "max |ratio - 1| per update",
        "approx_kl": "approximate KL(old || current) per update",
        "kl": "KL to the base model (penalty term)"}
NFT = {"r_mean": "mean optimality probability r",
       "r_std": "std of r over the batch",
       "r_extreme": "fraction of samples with r at 0 or 1",
       "old_gap": "relative velocity gap, old vs current adapter",
       "old_decay": "old adapter's EMA decay",
       "positive": "positive-branch loss",
       "negative": "negative-branch loss"}
METRICS = {**GRPO, **NFT}
"""The diagnostic training metrics, in table and panel order, with what each measures."""
ON_POLICY = 1e-6
"""A max |ratio - 1| below this on every update: float rounding, the ratios never left 1."""


def diagnostic_rows(results: Results) -> pd.DataFrame:
    """The training rows of the diagnostic metrics (finite values), with the method label."""
    m = results.metrics
    rows = m[(m["split"] == "train") & m["metric"].isin(list(METRICS))]
    return rows[np.isfinite(rows["value"].to_numpy(float))]


def diagnostics_table(results: Results) -> pd.DataFrame:
    """One row per (method label, metric present): updates (rows over all seeds), seeds, mean, max, and the
    fraction of updates with a value above 0 (clipfrac: the updates the clip acted on)."""
    rows = diagnostic_rows(results)
    order = {k: i for i, k in enumerate(METRICS)}
    table = []
    for (label, metric), g in rows.groupby(["label", "metric"], sort=True):
        values = g["value"].to_numpy(float)
        table.append(dict(label=label, metric=metric, updates=len(values), seeds=g["run_id"].nunique(),
                          mean=float(values.mean()), max=float(values.max()), min=float(values.min()),
                          acted=float((values > 0).mean())))
    frame = pd.DataFrame(table, columns=["label", "metric", "updates", "seeds", "mean", "max", "min", "acted"])
    if len(frame):
        frame = frame.assign(_o=frame["metric"].map(order)).sort_values(["label", "_o"]).drop(columns="_o")
    return frame.reset_index(drop=True)


def verdicts(table: pd.DataFrame) -> dict[str, list[str]]:
    """Plain-language lines per method label: whether its clip acted, whether its ratios left 1, whether its
    DiffusionNFT machinery (r, the old adapter) did anything."""
    said: dict[str, list[str]] = {}
    for label, g in table.groupby("label", sort=True):
        by = g.set_index("metric")
        lines = []
        if "clipfrac" in by.index:
            c = by.loc["clipfrac"]
            if c["max"] == 0:
                lines.append(f"clip never acted: clipfrac 0 on all {int(c['updates'])} updates — every ratio within "
                             "1±clip")
            else:
                lines.append(f"clip acted on {c['acted']:.0%} of {int(c['updates'])} updates (clipfrac mean "
                             f"{c['mean']:.1%}, max {c['max']:.1%})")
        if "ratio_max_dev" in by.index and by.loc["ratio_max_dev", "max"] < ON_POLICY:
            dev = by.loc["ratio_max_dev", "max"]
            lines.append(f"ratios never left 1 (max |ratio-1| {'0' if dev == 0 else f'{dev:.1e}'} over "
                         f"{int(by.loc['ratio_max_dev', 'updates'])} updates): every update on-policy")
        if "r_extreme" in by.index:
            lines.append(f"r at 0 or 1 for {by.loc['r_extreme', 'mean']:.0%} of samples on average (max "
                         f"{by.loc['r_extreme', 'max']:.0%})")
        if "r_std" in by.index and by.loc["r_std", "max"] == 0:
            lines.append("r constant within every batch (r_std 0): no sample preferred over another")
        if "old_gap" in by.index and by.loc["old_gap", "max"] == 0:
            lines.append(f"old adapter equal to the current one on all {int(by.loc['old_gap', 'updates'])} updates "
                         "(old_gap 0): the anchor anchors nothing")
        if lines:
            said[label] = lines
    return said


def markdown(results: Results, figure: list[str]) -> list[str]:
    """The report section: the table, the verdicts, the figure; [] when no run records a diagnostic metric."""
    table = diagnostics_table(results)
    if not len(table):
        return []
    shown = pd.DataFrame({
        "method": table["label"], "metric": table["metric"],
        "updates (all seeds)": [f"{u} ({s} seed{'s' * (s > 1)})" for u, s in zip(table["updates"], table["seeds"])],
        "mean": table["mean"].map(lambda v: fmt(v, 4)), "max": table["max"].map(lambda v: fmt(v, 4)),
        "updates with clipfrac > 0": [f"{a:.0%}" if m == "clipfrac" else "" for m, a in
                                      zip(table["metric"], table["acted"])]})
    lines = ["## Training diagnostics", "",
             "Whether each policy gradient's machinery acted, from its training rows (one row per optimizer update, "
             "all seeds): " + "; ".join(f"`{k}` {v}" for k, v in METRICS.items() if k in set(table["metric"]))
             + ".", "", markdown_table(shown), ""]
    for label, said in verdicts(table).items():
        lines.append(f"- **{label}:** " + "; ".join(said) + ".")
    lines.append("")
    lines += [f"![{f}]({f})" for f in figure if f.endswith(".png")] + [""]
    return lines


def diagnostics_figure(results: Results, out: Path, *, formats=("png", "pdf"), per_row: int = 3) -> list[str]:
    """``diagnostics``: one panel per diagnostic metric, x = optimizer step, one line per method (mean over seeds
    at each step), panels wrapped ``per_row`` to a row, one legend below them."""
    from bench.analysis.figures_curves import finish, panel_grid

    rows = diagnostic_rows(results)
    present = [k for k in METRICS if k in set(rows["metric"])]
    if not present:
        return []
    colors = plots.color_map(results.runs["label"])
    fig, axes = panel_grid(len(present), per_row=per_row, width=3.7, height=2.9)
    for ax, metric in zip(axes, present):
        g = rows[rows["metric"] == metric]
        zero = []
        for label, lg in g.groupby("label", sort=True):
            curve = lg.groupby("step")["value"].mean().sort_index()
            n = lg["run_id"].nunique()
            ax.plot(curve.index, curve.to_numpy(), "-", color=colors.get(label), linewidth=1.1,
                    label=f"{label} ({n} seed{'s' * (n > 1)})")
            if (lg["value"] == 0).all():
                zero.append(label)
        ax.set_title(f"{metric}: " + textwrap.fill(METRICS[metric], 34), fontsize=9)
        ax.grid(alpha=0.3)
        plots.tidy_axis(ax, integer_x=True)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
        values = g["value"].to_numpy(float)
        middle = float(np.mean(values))
        note = ""
        if values.max() - values.min() <= 1e-6 * max(1.0, abs(middle)):  # constant up to rounding: draw it flat
            pad = 0.1 * max(abs(middle), 1e-3)
            ax.set_ylim(middle - pad, middle + pad)
            note = f"constant: {middle:.3g} on every update"
        elif zero:  # lines at 0 hide under each other: say whose they are, under the axis (off the data)
            note = textwrap.fill("0 on every update: " + ", ".join(zero), 44)
        ax.set_xlabel(plots.X_LABELS["step"] + (f"\n{note}" if note else ""), fontsize=9)
    plots.legend_below(fig, axes, ncol=min(4, max(1, rows["label"].nunique())))
    return finish(fig, "Training diagnostics (mean over seeds per optimizer step)", results.runs,
                  results.stand_ins, out, "diagnostics", formats)
