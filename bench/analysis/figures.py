"""Figures of a report: memory and speed bars, evaluation image grids (drawn by ``plots``); curves are in
``figures_curves``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import plots
from bench.analysis.figures_curves import finish
from bench.analysis.pooling import read_config
from bench.analysis.plots import stand_in_note
from bench.analysis.results import Results
from bench.core.text import safe_name
from bench.harness.spec import EvalSettings


def memory_label(devices) -> str:
    """What "peak memory" measured, from the runs' devices (runs.csv ``device``)."""
    kinds = {"cuda" if str(d).startswith("cuda") else "cpu" for d in devices if isinstance(d, str) and d}
    if kinds == {"cuda"}:
        return "peak GPU memory, MB\n(CUDA max allocated)"
    if kinds == {"cpu"}:
        return "peak memory, MB\n(whole-process peak RSS, CPU)"
    return "peak memory, MB\n(CUDA max allocated on GPU, peak RSS on CPU)"


def resource_figure(summary: pd.DataFrame, out: Path, *, runs: pd.DataFrame | None = None, stand_ins=(),
                    formats=("png", "pdf")) -> list[str]:
    """``resources``: peak memory, and wall-clock and CPU seconds per optimizer step (top row) and per reward query
    (bottom row: methods spend 1 to 8 queries a step), one bar per (method, reward) with its value; error bars (std
    over runs) only with two or more runs; skipped or failed methods get no bar."""
    if "kind" in summary:
        summary = summary[summary["kind"] == "method"]
    if summary.empty:
        return []
    table = summary.copy()
    several = table["reward"].nunique() > 1
    table["bar_label"] = table["label"] + (" / " + table["reward"] if several else "")
    table["missing"] = table["status"].astype(str)
    by_method = plots.color_map(table["label"])
    colors = {bar: by_method[label] for bar, label in zip(table["bar_label"], table["label"])}
    width = max(3.0, 0.38 * len(table) + 1.0)
    fig = plots.plt.figure(figsize=(3 * width, 7.8))
    grid = fig.add_gridspec(2, 3)
    panels = ((grid[:, 0], "peak_mem_mb", "peak_mem_std", memory_label(summary.get("device", [])), "peak memory"),
              (grid[0, 1], "sec_per_step", "sec_per_step_std", "wall-clock s per optimizer step",
               "wall-clock time per step"),
              (grid[0, 2], "cpu_per_step", "cpu_per_step_std", "process CPU s per optimizer step",
               "CPU time per step (load-proof)"),
              (grid[1, 1], "sec_per_query", "sec_per_query_std", "wall-clock s per reward query",
               "wall-clock time per reward query"),
              (grid[1, 2], "cpu_per_query", "cpu_per_query_std", "process CPU s per reward query",
               "CPU time per reward query (load-proof)"))  # fmt: skip
    for cell, value, error, ylabel, title in panels:
        if value not in table:
            continue
        plots.plot_bars(fig.add_subplot(cell), table, value=value, error=error, label="bar_label", colors=colors,
                        title=title, ylabel=ylabel, missing="missing")  # fmt: skip
    n = int(table["runs"].max())
    what = f"mean over {n} runs, error bar = std" if n > 1 else "1 run each: no error bars"
    reward = "" if several else f"{table['reward'].iloc[0]}: "
    return finish(fig, f"{reward}memory and speed ({what})", runs if runs is not None else table.iloc[0:0],
                  stand_ins, out, "resources", formats)


def read_eval_settings(run_dir: Path) -> EvalSettings | None:
    """A run's evaluation settings from its config.json; None when the file is missing or damaged."""
    with contextlib.suppress(ValueError, TypeError):
        return EvalSettings.from_dict((read_config(run_dir) or {}).get("eval"))
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
            settings = read_eval_settings(run_dir)
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
        safe = safe_name(reward)
        names += plots.save_figure(fig, out / f"images_{safe}", formats)
    return [Path(n).name for n in names]
