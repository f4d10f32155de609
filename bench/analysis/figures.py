"""Figures of a report: reward curves, memory and speed bars, evaluation image grids (drawn by ``plots``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import plots
from bench.analysis.plots import stand_in_note
from bench.analysis.results import Results, eval_curves
from bench.harness.spec import EvalSettings

CURVE_AXES = ("step", "wall_s", "samples")


def curve_figures(results: Results, out: Path, *, seed: int, n_boot: int, formats=("png", "pdf")) -> list[str]:
    curves = eval_curves(results)
    rewards = sorted(results.runs["reward"].unique())
    if not len(curves) or not rewards:
        return []
    colors = plots.color_map(results.runs["label"])
    names = []
    for x in CURVE_AXES:
        fig, axes = plots.plt.subplots(2, len(rewards), figsize=(4.5 * len(rewards), 7), squeeze=False)
        for j, reward in enumerate(rewards):
            rc = curves[curves["reward"] == reward]
            split = "eval" if (rc["curve_split"] == "eval").all() else "eval (train where no eval)"
            for i, stat in enumerate(("mean", "iqm")):
                rng = np.random.default_rng(seed)
                title = f"{reward} — {split}" + stand_in_note(rc["stand_in"])
                plots.plot_reward_curves(
                    axes[i, j], rc, x=x, stat=stat, rng=rng, n_boot=n_boot, colors=colors, title=title
                )
        fig.suptitle(f"Reward vs {plots.X_LABELS[x]} (95% bootstrap CI across seeds)" + stand_in_note(results.stand_ins), fontsize=10)
        fig.tight_layout()
        names += plots.save_figure(fig, out / f"reward_vs_{x}", formats)
    return [Path(n).name for n in names]

def resource_figure(summary: pd.DataFrame, out: Path, *, formats=("png", "pdf")) -> list[str]:
    if summary.empty:
        return []
    table = summary.copy()
    table["bar_label"] = table["label"] + " / " + table["reward"]
    by_method = plots.color_map(table["label"])
    colors = {bar: by_method[label] for bar, label in zip(table["bar_label"], table["label"])}
    fig, axes = plots.plt.subplots(1, 2, figsize=(max(6, 1.2 * len(table) + 4), 4))
    note = stand_in_note(table["stand_in"])
    plots.plot_bars(axes[0], table, value="peak_mem_mb", error="peak_mem_std", label="bar_label", colors=colors,
                    title="peak memory" + note, ylabel="MB")  # fmt: skip
    plots.plot_bars(axes[1], table, value="sec_per_step", error="sec_per_step_std", label="bar_label",
                    colors=colors, title="seconds per optimizer step" + note, ylabel="s")  # fmt: skip
    fig.tight_layout()
    return [Path(n).name for n in plots.save_figure(fig, out / "resources", formats)]

def read_eval_settings(path: Path) -> EvalSettings | None:
    """A run's evaluation settings from its config.json; None when the file is missing or damaged."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return EvalSettings.from_dict(json.loads(path.read_text()).get("eval"))
    return None


def split_row(path: Path, n: int | None) -> list[np.ndarray]:
    """Split a saved row of evaluation images into tiles (n from the run config; else square tiles)."""
    from PIL import Image

    row = np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255.0
    height, width = row.shape[:2]
    if not n or width % n:
        n = max(1, width // height)
    tile = width // n
    return [row[:, i * tile : (i + 1) * tile] for i in range(n)]

def image_figures(results: Results, out: Path, *, max_prompts: int = 6, formats=("png", "pdf")) -> list[str]:
    names = []
    runs = results.runs.sort_values(["reward", "label", "seed"])
    for reward, rgroup in runs.groupby("reward", sort=True):
        tiles, row_labels, prompts = [], [], None
        for label, g in rgroup.groupby("label", sort=True):
            run = next((r for _, r in g.iterrows() if (results.run_dir(r["run_id"]) / "eval_last.png").is_file()), None)
            if run is None:
                continue
            run_dir = results.run_dir(run["run_id"])
            settings = read_eval_settings(run_dir / "config.json")
            n = settings.config.n if settings else None
            if prompts is None and settings:
                prompts = settings.prompt_per_image()
            for which in ("first", "last"):
                path = run_dir / f"eval_{which}.png"
                row = split_row(path, n) if path.is_file() else []
                tiles.append(row[:max_prompts])
                row_labels.append(f"{label} s{int(run['seed']) if not pd.isna(run['seed']) else '?'} {which}")
        if not tiles:
            continue
        n_cols = max(len(r) for r in tiles)
        tiles = [r + [None] * (n_cols - len(r)) for r in tiles]
        col_labels = (prompts or [f"prompt {i}" for i in range(n_cols)])[:n_cols]
        col_labels += [f"prompt {i}" for i in range(len(col_labels), n_cols)]
        fig, ax = plots.plt.subplots(figsize=(1.3 * n_cols + 2, 0.75 * len(tiles) + 1.2))
        title = f"{reward}: evaluation images, first vs last evaluation" + stand_in_note(rgroup["stand_in"])
        plots.plot_image_grid(ax, tiles, row_labels=row_labels, col_labels=col_labels, title=title)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in reward)
        names += plots.save_figure(fig, out / f"images_{safe}", formats)
    return [Path(n).name for n in names]
