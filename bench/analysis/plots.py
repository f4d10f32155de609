"""Plot functions for reports: each takes tidy data and a matplotlib ``ax`` and returns the figure; none runs anything.

Matplotlib runs on the non-interactive Agg backend, so reports render on machines without a display.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis import stats  # noqa: E402

X_LABELS = {"step": "optimizer step", "wall_s": "training wall-clock seconds", "samples": "reward queries",
            "cpu_s": "training CPU seconds (all threads)"}
DPI = 150
"""Resolution of every PNG the tools write."""
REWARD_UNITS = {
    "mean-brightness": "mean pixel value, 0-1",
    "jpeg-compressibility": "-JPEG size, kB",
    "compressibility": "-JPEG size, kB",
    "jpeg-incompressibility": "JPEG size, kB",
    "incompressibility": "JPEG size, kB",
    "aesthetic": "LAION aesthetic score, 1-10",
    "clip-score": "CLIP cosine similarity",
    "pickscore": "PickScore, 100 x cosine",
    "hpsv2": "HPS v2.1 score",
    "count": "p(prompted count), 0-1",
    "prompt-match": "log p(colour) + log p(shape) + log p(count)",
}
"""What each registered reward's number is, for axis labels (combinations and plug-ins show their name only)."""


def reward_label(reward: str, what: str = "eval reward") -> str:
    """An axis label naming the reward and its units: "eval reward: count (p(prompted count), 0-1)"."""
    units = REWARD_UNITS.get(reward)
    return f"{what}: {reward}" + (f"\n({units})" if units else "")


def tidy_axis(ax, *, integer_x: bool = False) -> None:
    """Integer x ticks where x counts things (steps, queries); at most 6 y ticks, written in full (no "1e-5+0.5"
    offset) with the fewest digits that tell them apart."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))


def legend_below(fig, axes, *, extra=(), ncol: int | None = None):
    """One legend for the whole figure, below its panels (off the data): every label drawn in ``axes`` once, then
    ``extra`` (handle, label) pairs; the legend is remembered as ``fig.below_legend`` (captions go under it)."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    for handle, label in extra:
        seen.setdefault(label, handle)
    if not seen:
        return None
    legend = fig.legend(list(seen.values()), list(seen.keys()), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                        ncol=ncol or min(len(seen), 3), fontsize=8, frameon=False)
    fig.below_legend = legend
    return legend


def legend_beside(ax, *, fontsize: int = 8, handles=None, labels=None):
    """The legend of one panel to the right of its axes (off the data)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def method_style_legend(ax, colors: dict, labels, styles, *, fontsize: int = 8) -> None:
    """A legend beside ``ax`` with one entry per method (its colour) and one per line style (``styles``: (label,
    linestyle, marker) in black), not one per (method, style): 8 methods x 2 styles made 16 entries that squeezed
    the axes."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors.get(label), linewidth=2) for label in labels]
    handles += [Line2D([], [], color="black", linestyle=ls, marker=marker, markersize=4) for _, ls, marker in styles]
    legend_beside(ax, fontsize=fontsize, handles=handles, labels=list(labels) + [name for name, _, _ in styles])


def stand_in_note(labels, width: int = 60) -> str:
    """A figure-title line naming every stand-in (random-weight) model or reward among ``labels``; "" if none."""
    labels = sorted({s for s in labels if s})
    return ("\n" + textwrap.fill("STAND-IN: " + "; ".join(labels), width)) if labels else ""


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#000000", "#000075", "#800000", "#f032e6", "#469990", "#e6b800", "#7cb342", "#a6cee3", "#fb9a99",
           "#6a3d9a", "#b15928")
"""20 colours told apart on white: tab10 without its grey (the base model's colour in every figure), then ten more of
other hues or lightness. The suite shows up to 19 methods, and tab10's ten made pairs of them share a colour."""


def color_map(labels) -> dict[str, tuple]:
    """A stable colour per label (sorted order), shared by every figure of one report; distinct up to 20 labels."""
    return {label: mcolors.to_rgba(PALETTE[i % len(PALETTE)]) for i, label in enumerate(sorted(set(labels)))}


def plot_reward_curves(
    ax,
    curves: pd.DataFrame,
    *,
    x: str = "step",
    stat: str = "mean",
    rng: np.random.Generator,
    n_boot: int = 1000,
    n_points: int = 100,
    colors: dict | None = None,
    title: str = "",
    ylabel: str = "eval reward",
    legend: str | None = "beside",
):
    """One line per ``label`` of ``stat`` across runs, with a 95 % bootstrap band where two or more runs have data;
    ``legend``: "beside" the axes (right of them, off the data), or None (the caller draws one).

    ``curves``: columns ``label``, ``run_id``, ``x`` (the named column) and ``value``. Each run's curve is
    interpolated onto a common grid (spanning all the label's runs) before the statistic and band are taken, and the
    line and band are drawn only where every run has data (up to the shortest run's last x: on CPU- or wall-second
    axes a mean over fewer seeds would jump); every run's own evaluation points are drawn as markers, so straight
    segments between them are visible as such.
    """
    if colors is None:
        colors = color_map(curves["label"])
    for label, group in sorted(curves.groupby("label"), key=lambda kv: kv[0]):
        runs = [g.sort_values(x) for _, g in group.groupby("run_id")]
        xs = [r[x].to_numpy(float) for r in runs]
        ys = [r["value"].to_numpy(float) for r in runs]
        grid = stats.common_grid(xs, n_points)
        if len(grid) == 0:
            continue
        matrix = stats.interpolate_curves(xs, ys, grid)
        band = stats.curve_band(matrix, stat, rng=rng, n_boot=n_boot)
        # Only where every run has data: past the end of a run's x range (CPU or wall seconds differ per seed) the
        # statistic would be over fewer seeds and jump; the runs' own markers still show their later points.
        covered = ~np.isnan(matrix).any(axis=0)
        band = {k: np.where(covered, v, np.nan) for k, v in band.items()}
        color = colors.get(label)
        name = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        if len(runs) == 1:  # the run itself: its evaluation points joined
            ax.plot(xs[0], ys[0], "o-", color=color, label=name, markersize=5)
            continue
        ax.plot(grid, band["value"], "-" if len(grid) > 1 else "o", color=color, label=name)
        for run_x, run_y in zip(xs, ys):
            ax.plot(run_x, run_y, "o", color=color, markersize=3.5, alpha=0.6)
        ok = ~np.isnan(band["lo"])
        if ok.any():
            ax.fill_between(grid, band["lo"], band["hi"], where=ok, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(ylabel if stat == "mean" else f"{ylabel}\n[{'IQM' if stat == 'iqm' else stat} over seeds]")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    tidy_axis(ax, integer_x=x in ("step", "samples"))
    if legend == "beside":
        legend_beside(ax)
    return ax.figure


def plot_bars(
    ax,
    table: pd.DataFrame,
    *,
    value: str,
    error: str | None = None,
    label: str = "label",
    colors: dict | None = None,
    title: str = "",
    ylabel: str = "",
    missing: str | None = None,
):
    """Bar per row of ``table`` (one per method), height ``value`` written on it, error bar column ``error`` (a std
    over runs: drawn only where it exists, i.e. two or more runs).

    Rows whose value is missing (a skipped run, a run that failed before measuring) get an empty slot marked with
    ``missing`` (a column of text, e.g. the status) or "n/a".
    """
    labels = table[label].astype(str).tolist()
    heights = pd.to_numeric(table[value], errors="coerce").to_numpy(float)
    errors = pd.to_numeric(table[error], errors="coerce").to_numpy(float) if error else np.full(len(labels), np.nan)
    colors = colors or color_map(labels)
    pos = np.arange(len(labels))
    ax.bar(pos, np.nan_to_num(heights, nan=0.0), color=[colors.get(l, "grey") for l in labels])
    has_err = ~np.isnan(errors) & ~np.isnan(heights)
    if has_err.any():
        ax.errorbar(pos[has_err], heights[has_err], yerr=errors[has_err], fmt="none", ecolor="black", capsize=3)
    # written along the bar (narrow bars cut a horizontal label): inside at its middle, clear of the error bar on
    # its top; above the bar (and its error bar), in black, where the bar is too short to hold it
    top = np.nanmax(np.where(np.isnan(heights), 0.0, heights + np.nan_to_num(errors)), initial=0.0) or 1.0
    for p, h, e in zip(pos, heights, errors):
        if np.isnan(h):
            continue
        inside = h >= 0.22 * top
        ax.text(p, h / 2 if inside else h + (0 if np.isnan(e) else e) + 0.02 * top, f"{h:.3g}", rotation=90,
                ha="center", va="center" if inside else "bottom", fontsize=8, fontweight="bold",
                color="white" if inside else "black")
    notes = table[missing].astype(str).tolist() if missing else ["n/a"] * len(labels)
    for p, h, note in zip(pos, heights, notes):
        if np.isnan(h):
            ax.text(p, 0.03, note, ha="center", va="bottom", fontsize=8, rotation=90, transform=ax.get_xaxis_transform())
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    return ax.figure


def plot_image_grid(ax, tiles: list[list[np.ndarray | None]], *, row_labels, col_labels, title: str = ""):
    """A mosaic of images [H, W, 3] (rows x columns; ``None`` leaves a grey cell) with row and column labels."""
    height = max((t.shape[0] for row in tiles for t in row if t is not None), default=8)
    width = max((t.shape[1] for row in tiles for t in row if t is not None), default=8)
    pad = max(1, height // 16)
    n_rows, n_cols = len(tiles), max((len(r) for r in tiles), default=0)
    canvas = np.full((n_rows * (height + pad), max(n_cols, 1) * (width + pad), 3), 0.85)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            if tile is None:
                continue
            tile = np.asarray(tile, dtype=float)
            if tile.max() > 1.0:
                tile = tile / 255.0
            canvas[i * (height + pad) : i * (height + pad) + tile.shape[0], j * (width + pad) : j * (width + pad) + tile.shape[1]] = tile[..., :3]
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([j * (width + pad) + width / 2 for j in range(n_cols)])
    ax.set_xticklabels(col_labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks([i * (height + pad) + height / 2 for i in range(n_rows)])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    return ax.figure


def plot_tradeoff(ax, table: pd.DataFrame, *, x: str, y: str, xlabel: str, ylabel: str, title: str = "",
                  xerr=None, yerr=None):
    """The LoRA-interpolation trade-off: reward ``x`` against reward ``y``, one point per alpha (with optional error
    bars), annotated."""
    table = table.sort_values("alpha")
    ax.errorbar(table[x], table[y], xerr=None if xerr is None else xerr[table.index],
                yerr=None if yerr is None else yerr[table.index], fmt="o-", color="tab:purple", capsize=3)
    for _, row in table.iterrows():
        ax.annotate(f"α={row['alpha']:g}", (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    tidy_axis(ax)
    ax.xaxis.set_major_formatter(plt.ScalarFormatter(useOffset=False))
    return ax.figure


def plot_scaling(ax, table: pd.DataFrame, *, value: str, ylabel: str, title: str = "", log: bool = False,
                 labels: dict | None = None):
    """One line per ``mode`` of ``value`` against the number of sampling steps ``steps`` (legend: ``labels``)."""
    colors = color_map(table["mode"])
    for mode, group in table.groupby("mode"):
        group = group.sort_values("steps")
        ax.plot(group["steps"], group[value], "o-", color=colors[mode], label=(labels or {}).get(mode, mode))
    ax.set_xlabel("sampling steps T")
    ax.set_xticks(sorted(table["steps"].unique()))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure


def save_figure(fig, path_stem, formats=("png", "pdf")) -> list[str]:
    """Save ``fig`` as ``path_stem.png`` (and ``.pdf``) and close it; returns the file names written."""
    names = []
    for fmt in formats:
        path = f"{path_stem}.{fmt}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        names.append(path)
    plt.close(fig)
    return names
