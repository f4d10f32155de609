"""``python -m bench.report DIR [DIR ...] [--out OUT_DIR]``: report.md plus figures from results folders.

Reads results folders only (manifest.json, metrics.parquet/csv, runs.csv, runs/<run_id>/eval_*.png); it never
re-runs anything. Several folders (e.g. one per reward) combine into one report. Figures:

- ``reward_vs_step``, ``reward_vs_wall_s``, ``reward_vs_samples``: one panel per reward, one line per method; top
  row mean, bottom row interquartile mean (IQM) across seeds, each with a seeded 95 % bootstrap band (seeds
  interpolated onto a common grid first; a single seed draws a line without a band);
- ``resources``: peak memory and seconds per optimizer step per method (bar charts, also in the table);
- ``images_<reward>``: evaluation prompts x methods, first and last evaluation, from each method's first seed.

Table columns are defined at the end of report.md. Failed runs appear with their status. Every stand-in
(random-weight) model or reward is named in figure titles and the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import UsageError

from bench.recorder import COMPLETED, METRIC_COLUMNS, RUN_COLUMNS, current_umask  # noqa: E402  (the schema lives in one place)

FAILED = ("diverged", "oom", "error", "skipped")
"""Statuses of runs that did not finish their budget (their numbers, if any, are partial)."""
CURVE_AXES = ("step", "wall_s", "samples")
FRACTION = 0.9
"""Time-to-target: the fraction of the best method's improvement over the starting reward."""


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class Results:
    """One or more results folders, concatenated."""

    runs: pd.DataFrame
    """One row per run (runs.csv; runs seen only in metrics get status "unknown")."""
    metrics: pd.DataFrame
    """Long-format metrics (metrics.parquet or metrics.csv)."""
    sources: dict[str, Path]
    """run_id -> the results folder it came from."""
    stand_ins: list[str] = field(default_factory=list)
    """Every stand-in description found in manifests, runs and metrics."""

    def run_dir(self, run_id: str) -> Path:
        return self.sources[run_id] / "runs" / run_id


def _read_metrics(directory: Path) -> pd.DataFrame | None:
    parquet, csv = directory / "metrics.parquet", directory / "metrics.csv"
    if parquet.is_file():
        try:
            return pd.read_parquet(parquet)
        except Exception:  # a truncated parquet (crashed run): fall back to the CSV
            if not csv.is_file():
                raise UsageError(f"{parquet} cannot be read and there is no metrics.csv; re-export the results")
    if csv.is_file():
        try:
            return pd.read_csv(csv, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            return pd.DataFrame(columns=METRIC_COLUMNS)
    return None


def _read_runs(directory: Path) -> pd.DataFrame | None:
    path = directory / "runs.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=RUN_COLUMNS)


def _clean_stand_in(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def load_results(directories: list[str | Path]) -> Results:
    """Read and concatenate results folders; a run id present in two folders is an error (it would double count)."""
    if not directories:
        raise UsageError("no results folder given; pass one or more folders written by python -m bench.run")
    runs_parts, metric_parts, sources, stand_ins = [], [], {}, []
    for entry in directories:
        directory = Path(entry)
        if not directory.is_dir():
            raise UsageError(f"results folder {str(directory)!r} does not exist; pass a folder written by bench.run")
        metrics, runs = _read_metrics(directory), _read_runs(directory)
        if metrics is None and runs is None:
            raise UsageError(f"{str(directory)!r} is not a results folder (no runs.csv or metrics.csv/parquet)")
        metrics = metrics if metrics is not None else pd.DataFrame(columns=METRIC_COLUMNS)
        for col in METRIC_COLUMNS:
            if col not in metrics.columns:
                metrics[col] = np.nan if col not in ("stand_in",) else ""
        runs = runs if runs is not None else pd.DataFrame(columns=RUN_COLUMNS)
        known = set(runs["run_id"].astype(str)) if len(runs) else set()
        extra = metrics[~metrics["run_id"].astype(str).isin(known)]
        if len(extra):  # runs the runner never finished writing into runs.csv
            first = extra.groupby("run_id", as_index=False).first()
            rows = first[["run_id", "method", "reward", "model", "seed", "stand_in"]].copy()
            rows["status"] = "unknown"
            runs = pd.concat([runs, rows], ignore_index=True)
        for col in RUN_COLUMNS:
            if col not in runs.columns:
                runs[col] = np.nan
        for run_id in runs["run_id"].astype(str):
            if run_id in sources:
                raise UsageError(
                    f"run {run_id!r} appears in both {str(sources[run_id])!r} and {str(directory)!r}; "
                    "pass folders with distinct runs (e.g. one folder per reward)"
                )
            sources[run_id] = directory
        manifest = directory / "manifest.json"
        if manifest.is_file():
            try:
                stand_ins += [str(s) for s in json.loads(manifest.read_text()).get("stand_ins", []) or []]
            except json.JSONDecodeError:
                pass  # a crashed runner may leave a partial manifest; runs.csv still labels stand-ins
        runs_parts.append(runs)
        metric_parts.append(metrics)
    runs = pd.concat(runs_parts, ignore_index=True)
    metrics = pd.concat(metric_parts, ignore_index=True)
    for frame in (runs, metrics):
        frame["run_id"] = frame["run_id"].astype(str)
        frame["stand_in"] = frame["stand_in"].map(_clean_stand_in)
        for col in ("method", "reward", "model"):
            frame[col] = frame[col].astype(str)
    for col in ("steps", "samples", "wall_s", "peak_mem_mb", "final_eval_reward", "sec_per_step", "seed"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    for col in ("step", "samples", "wall_s", "value", "peak_mem_mb", "seed"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce")
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    stand_ins += [s for s in runs["stand_in"].tolist() + metrics["stand_in"].tolist() if s]
    return Results(runs=runs, metrics=metrics, sources=sources, stand_ins=sorted(set(stand_ins)))


def reward_higher_is_better(reward: str) -> bool:
    """The reward's direction from the reward registry (class attribute); True when the name is unknown."""
    try:
        from rewards import REWARDS

        return bool(getattr(REWARDS.get(reward), "higher_is_better", True))
    except Exception:
        return True


def add_labels(runs: pd.DataFrame, metrics: pd.DataFrame) -> None:
    """``label`` column: the method, plus the model when a report mixes several models."""
    several = runs["model"].nunique() > 1
    for frame in (runs, metrics):
        frame["label"] = (frame["method"] + " [" + frame["model"] + "]") if several else frame["method"]


def eval_curves(results: Results) -> pd.DataFrame:
    """Evaluation reward_mean rows (training rows where a run has no evaluation), with a ``curve_split`` column."""
    m = results.metrics
    m = m[m["metric"] == "reward_mean"]
    ev = m[m["split"] == "eval"].assign(curve_split="eval")
    missing = set(m["run_id"]) - set(ev["run_id"])
    tr = m[(m["split"] == "train") & m["run_id"].isin(missing)].assign(curve_split="train")
    return pd.concat([ev, tr], ignore_index=True)


# ----------------------------------------------------------------------------------------------- summary


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def summarize(results: Results, *, rng: np.random.Generator, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (reward, method label): final eval reward with CI, time to target, memory, speed, statuses."""
    from bench import stats

    runs, curves = results.runs, eval_curves(results)
    rows = []
    for reward, rgroup in runs.groupby("reward", sort=True):
        higher = reward_higher_is_better(reward)
        # Final rewards of runs that finished their budget only: a failed run keeps a partial (often step-0) value.
        done = rgroup[rgroup["status"].isin(COMPLETED)]
        finals = {label: g["final_eval_reward"].dropna() for label, g in done.groupby("label")}
        means = {k: v.mean() for k, v in finals.items() if len(v)}
        best_label = (max if higher else min)(means, key=means.get) if means else None
        rc = curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval")]
        start = rc.sort_values("step").groupby("run_id")["value"].first().mean() if len(rc) else float("nan")
        target = float("nan")
        if best_label is not None and not math.isnan(start):
            gain = means[best_label] - start
            if (gain > 0) == higher and gain != 0:
                target = start + FRACTION * gain
        for label, g in rgroup.groupby("label", sort=True):
            final = finals.get(label, pd.Series(dtype=float))
            point, lo, hi = stats.bootstrap_ci(final.to_numpy(float), "mean", rng=rng, n_boot=n_boot)
            iqm_value = float(stats.iqm(final.to_numpy(float))) if len(final) else float("nan")
            lc = rc[rc["label"] == label]
            time_to = float("nan") if math.isnan(target) else time_to_reach(lc, target, higher)
            stand = sorted({s for s in g["stand_in"] if s})
            rows.append(
                dict(
                    reward=reward,
                    label=label,
                    method=g["method"].iloc[0],
                    model=", ".join(sorted(set(g["model"]))),
                    runs=len(g),
                    finished=len(final),
                    final_mean=point,
                    final_lo=lo,
                    final_hi=hi,
                    final_iqm=iqm_value,
                    best=label == best_label,
                    target=target,
                    time_to_target_s=time_to,
                    reached=not math.isnan(time_to),
                    has_curve=bool(len(lc)),
                    peak_mem_mb=g["peak_mem_mb"].mean(),
                    peak_mem_std=g["peak_mem_mb"].std(),
                    sec_per_step=g["sec_per_step"].mean(),
                    sec_per_step_std=g["sec_per_step"].std(),
                    status=status_counts(g["status"]),
                    all_failed=bool(g["status"].isin(FAILED).all()),
                    stand_in="; ".join(stand),
                )
            )
    return pd.DataFrame(rows)


def time_to_reach(curve_rows: pd.DataFrame, target: float, higher: bool, x: str = "wall_s") -> float:
    """First ``x`` at which the mean over seeds (interpolated onto a common grid) reaches ``target``; NaN if never."""
    from bench import stats

    if not len(curve_rows):
        return float("nan")
    per_run = [r.sort_values(x) for _, r in curve_rows.groupby("run_id")]
    xs = [r[x].to_numpy(float) for r in per_run]
    ys = [r["value"].to_numpy(float) for r in per_run]
    grid = stats.common_grid(xs, 200)
    if not len(grid):
        return float("nan")
    mean_curve = stats.nanmean(stats.interpolate_curves(xs, ys, grid).T)
    return stats.first_crossing(grid, mean_curve, target, higher_is_better=higher)


def speedups(results: Results, reference: str) -> pd.DataFrame:
    """Per reward, training seconds and optimizer steps each method needs to reach the ``reference`` method's mean
    final eval reward, and the speed-up (reference's own time / the method's time), as the AlignProp paper's
    "reaches DDPO's reward N times faster"."""
    runs, curves = results.runs, eval_curves(results)
    rows = []
    for reward, rgroup in runs.groupby("reward", sort=True):
        done = rgroup[rgroup["status"].isin(COMPLETED)]
        ref = done[done["method"] == reference]["final_eval_reward"].dropna()
        if ref.empty:
            continue
        target, higher = float(ref.mean()), reward_higher_is_better(reward)
        rc = curves[(curves["reward"] == reward) & (curves["curve_split"] == "eval")]
        start = rc.sort_values("step").groupby("run_id")["value"].first().mean() if len(rc) else float("nan")
        improved = (target > start) if higher else (target < start)
        ref_labels = set(rgroup[rgroup["method"] == reference]["label"])
        ref_time = time_to_reach(rc[rc["label"].isin(ref_labels)], target, higher)
        for label in sorted(rgroup["label"].unique()):
            lc = rc[rc["label"] == label]
            seconds = time_to_reach(lc, target, higher) if improved else float("nan")
            rows.append(dict(reward=reward, method=label, start=start, target=target, improved=improved,
                             seconds=seconds, steps=time_to_reach(lc, target, higher, x="step") if improved else float("nan"),
                             speedup=ref_time / seconds if improved and seconds > 0 else float("nan")))
    return pd.DataFrame(rows)


def speedup_markdown(table: pd.DataFrame, reference: str) -> list[str]:
    if not len(table):
        return []
    head = [f"## Time to reach {reference}'s final reward", ""]
    flat = table[~table["improved"].astype(bool)].drop_duplicates("reward")
    notes = [f"- {r.reward}: `{reference}`'s final eval reward ({_fmt(r.target)}) is no improvement on the start "
             f"({_fmt(r.start)}): there is no speed-up to measure." for r in flat.itertuples()]
    table = table[table["improved"].astype(bool)]
    if not len(table):
        return head + notes + [""]
    shown = pd.DataFrame({
        "reward": table["reward"], "method": table["method"], f"{reference} final reward": table["target"].map(_fmt),
        "train s to reach it": table["seconds"].map(lambda v: "not reached" if math.isnan(v) else _fmt(v, 1)),
        "steps to reach it": table["steps"].map(lambda v: "not reached" if math.isnan(v) else _fmt(v, 1)),
        f"speed-up vs {reference} (time)": table["speedup"].map(lambda v: "—" if math.isnan(v) else f"{v:.2f}x"),
    })  # fmt: skip
    return head + [
            f"Training seconds (and optimizer steps) until each method's mean evaluation curve first reaches the mean "
            f"final eval reward of `{reference}`; speed-up = {reference}'s own time to it / the method's time (the "
            "AlignProp paper reports about 25x for AlignProp vs DDPO on aesthetics).", "", markdown_table(shown), *notes, ""]


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines)


def summary_markdown(summary: pd.DataFrame) -> str:
    rows = []
    for _, s in summary.iterrows():
        if s["finished"]:
            final = f"{_fmt(s['final_mean'])} [{_fmt(s['final_lo'])}, {_fmt(s['final_hi'])}]"
            if s["best"]:
                final = f"**{final}**"
        else:
            final = f"— ({s['status']})"
        if not s["has_curve"]:
            time_to = "—"
        elif math.isnan(s["target"]):
            time_to = "n/a"
        elif s["reached"]:
            time_to = _fmt(s["time_to_target_s"], 1)
        else:
            time_to = "not reached"
        rows.append(
            {
                "reward": s["reward"],
                "method": s["label"],
                "runs (with final eval)": f"{s['runs']} ({s['finished']})",
                "final eval reward, mean [95% CI]": final,
                "IQM": _fmt(s["final_iqm"]),
                "time to 90% (s)": time_to,
                "peak mem (MB)": _fmt(s["peak_mem_mb"], 1),
                "s/step": _fmt(s["sec_per_step"]),
                "status": s["status"],
                "stand-in": f"**STAND-IN:** {s['stand_in']}" if s["stand_in"] else "",
            }
        )
    return markdown_table(pd.DataFrame(rows))


# ----------------------------------------------------------------------------------------------- figures


def _stand_in_note(labels, width: int = 60) -> str:
    labels = sorted({s for s in labels if s})
    return ("\n" + textwrap.fill("STAND-IN: " + "; ".join(labels), width)) if labels else ""


def curve_figures(results: Results, out: Path, *, seed: int, n_boot: int, formats=("png", "pdf")) -> list[str]:
    from bench import plots

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
                title = f"{reward} — {split}" + _stand_in_note(rc["stand_in"])
                plots.plot_reward_curves(
                    axes[i, j], rc, x=x, stat=stat, rng=rng, n_boot=n_boot, colors=colors, title=title
                )
        fig.suptitle(f"Reward vs {plots.X_LABELS[x]} (95% bootstrap CI across seeds)" + _stand_in_note(results.stand_ins), fontsize=10)
        fig.tight_layout()
        names += plots.save_figure(fig, out / f"reward_vs_{x}", formats)
    return [Path(n).name for n in names]


def resource_figure(summary: pd.DataFrame, out: Path, *, formats=("png", "pdf")) -> list[str]:
    from bench import plots

    if summary.empty:
        return []
    table = summary.copy()
    table["bar_label"] = table["label"] + " / " + table["reward"]
    by_method = plots.color_map(table["label"])
    colors = {bar: by_method[label] for bar, label in zip(table["bar_label"], table["label"])}
    fig, axes = plots.plt.subplots(1, 2, figsize=(max(6, 1.2 * len(table) + 4), 4))
    note = _stand_in_note(table["stand_in"])
    plots.plot_bars(axes[0], table, value="peak_mem_mb", error="peak_mem_std", label="bar_label", colors=colors,
                    title="peak memory" + note, ylabel="MB")  # fmt: skip
    plots.plot_bars(axes[1], table, value="sec_per_step", error="sec_per_step_std", label="bar_label",
                    colors=colors, title="seconds per optimizer step" + note, ylabel="s")  # fmt: skip
    fig.tight_layout()
    return [Path(n).name for n in plots.save_figure(fig, out / "resources", formats)]


def _split_row(path: Path, n: int | None) -> list[np.ndarray]:
    """Split a saved row of evaluation images into tiles (n from the run config; else square tiles)."""
    from PIL import Image

    row = np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255.0
    height, width = row.shape[:2]
    if not n or width % n:
        n = max(1, width // height)
    tile = width // n
    return [row[:, i * tile : (i + 1) * tile] for i in range(n)]


def image_figures(results: Results, out: Path, *, max_prompts: int = 6, formats=("png", "pdf")) -> list[str]:
    from bench import plots

    names = []
    runs = results.runs.sort_values(["reward", "label", "seed"])
    for reward, rgroup in runs.groupby("reward", sort=True):
        tiles, row_labels, prompts = [], [], None
        for label, g in rgroup.groupby("label", sort=True):
            run = next((r for _, r in g.iterrows() if (results.run_dir(r["run_id"]) / "eval_last.png").is_file()), None)
            if run is None:
                continue
            run_dir = results.run_dir(run["run_id"])
            config = {}
            if (run_dir / "config.json").is_file():
                with contextlib.suppress(json.JSONDecodeError):
                    config = json.loads((run_dir / "config.json").read_text())
            ev = dict(config.get("eval") or {}) if isinstance(config, dict) else {}
            ev.update(ev.get("config") or {})  # the runner nests the EvalConfig fields under "config"
            n = ev.get("n") or (len(ev["prompts"]) if ev.get("prompts") else None)
            if prompts is None and ev.get("prompts"):
                prompts = [ev["prompts"][i % len(ev["prompts"])] for i in range(n or len(ev["prompts"]))]
            for which in ("first", "last"):
                path = run_dir / f"eval_{which}.png"
                row = _split_row(path, n) if path.is_file() else []
                tiles.append(row[:max_prompts])
                row_labels.append(f"{label} s{int(run['seed']) if not pd.isna(run['seed']) else '?'} {which}")
        if not tiles:
            continue
        n_cols = max(len(r) for r in tiles)
        tiles = [r + [None] * (n_cols - len(r)) for r in tiles]
        col_labels = (prompts or [f"prompt {i}" for i in range(n_cols)])[:n_cols]
        col_labels += [f"prompt {i}" for i in range(len(col_labels), n_cols)]
        fig, ax = plots.plt.subplots(figsize=(1.3 * n_cols + 2, 0.75 * len(tiles) + 1.2))
        title = f"{reward}: evaluation images, first vs last evaluation" + _stand_in_note(rgroup["stand_in"])
        plots.plot_image_grid(ax, tiles, row_labels=row_labels, col_labels=col_labels, title=title)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in reward)
        names += plots.save_figure(fig, out / f"images_{safe}", formats)
    return [Path(n).name for n in names]


# ----------------------------------------------------------------------------------------------- writing


def check_replaceable(out: Path, marker: str, inputs=()) -> None:
    """Refuse an ``out`` that would destroy something else when replaced: an input folder, a folder holding one, or
    an existing non-empty folder (or file) that is not an earlier output (it lacks ``marker``)."""
    out = Path(out).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or out in src.parents:
            raise UsageError(f"--out {str(out)!r} is or holds the input {str(src)!r}; it would be replaced: choose "
                             "another folder (the default is DIR/report)")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / marker).is_file()):
        raise UsageError(f"--out {str(out)!r} exists and is not an earlier output (no {marker}); it would be "
                         "replaced whole: choose a new folder")


@contextlib.contextmanager
def atomic_dir(out: Path, marker: str, inputs=()):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` whole, on error it is removed.
    ``out`` must be new, empty or an earlier output holding ``marker`` (see ``check_replaceable``)."""
    check_replaceable(out, marker, inputs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: give the report the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


DEFINITIONS = """\
- **final eval reward**: the run's last evaluation (fixed prompts, fixed noise, true reward), mean over seeds with a
  seeded 95 % percentile-bootstrap interval over seeds; **IQM**: interquartile mean over seeds. Bold: best method.
- **time to 90%**: training seconds until the method's mean evaluation curve (seeds interpolated onto a common
  wall-clock grid) first reaches start + 0.9 × (best final − start), where start is the mean first evaluation of
  all runs of that reward and best final the best method's mean final eval reward (a fraction of the best method's
  *improvement*, so it is meaningful for negative rewards too). "n/a": no method improved on the start.
- **peak mem**, **s/step**: means over the method's runs (runs.csv); s/step counts training only.
- **status**: run counts per stop reason; diverged/oom/error/skipped runs are listed, not dropped.
- Curves: top row mean, bottom row IQM; bands are seeded 95 % bootstrap intervals over seeds, drawn where at
  least two seeds have data; a seed that stopped early is not extrapolated.
"""


def build_report(directories, out: Path, *, seed: int = 0, n_boot: int = 2000, formats=("png", "pdf"),
                 reference: str = "ddpo") -> Path:
    """Write the report folder ``out`` (report.md, summary.csv, figures) from results folders; returns ``out``."""
    results = load_results(directories)
    add_labels(results.runs, results.metrics)
    summary = summarize(results, rng=np.random.default_rng(seed), n_boot=n_boot)
    with atomic_dir(out, "report.md", directories) as tmp:
        curve_files = curve_figures(results, tmp, seed=seed, n_boot=min(n_boot, 1000), formats=formats)
        resource_files = resource_figure(summary, tmp, formats=formats)
        image_files = image_figures(results, tmp, formats=formats)
        summary.to_csv(tmp / "summary.csv", index=False)
        lines = ["# Reward fine-tuning benchmark report", ""]
        lines.append(f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from: "
                     + ", ".join(f"`{d}`" for d in directories))  # fmt: skip
        lines.append("")
        if results.stand_ins:
            lines.append("> **STAND-INS (random weights; numbers say nothing about real models):**")
            lines += [f"> - {s}" for s in results.stand_ins]
            lines.append("")
        lines += ["## Summary", "", summary_markdown(summary) if len(summary) else "_no runs found_", ""]
        lines += speedup_markdown(speedups(results, reference), reference)
        failed = results.runs[results.runs["status"].isin(FAILED + ("unknown",))]
        if len(failed):
            lines += ["### Runs that did not finish", ""]
            cols = ["run_id", "status", "steps", "error"]
            lines += [markdown_table(failed[cols].fillna("")), ""]
        png = [f for f in curve_files if f.endswith(".png")]
        if png:
            lines += ["## Reward curves", ""] + [f"![{f}]({f})" for f in png] + [""]
        lines += ["## Memory and speed", ""]
        res = summary[["reward", "label", "peak_mem_mb", "sec_per_step", "status"]].rename(columns={"label": "method"})
        res = res.assign(peak_mem_mb=res["peak_mem_mb"].map(lambda v: _fmt(v, 1)), sec_per_step=res["sec_per_step"].map(_fmt))
        lines += [markdown_table(res) if len(res) else "_no runs_", ""]
        lines += [f"![{f}]({f})" for f in resource_files if f.endswith(".png")] + [""]
        img = [f for f in image_files if f.endswith(".png")]
        if img:
            lines += ["## Evaluation images (first vs last evaluation)", ""] + [f"![{f}]({f})" for f in img] + [""]
        lines += ["## Definitions", "", DEFINITIONS]
        (tmp / "report.md").write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="results folder(s) written by python -m bench.run")
    parser.add_argument("--out", default=None, help="report folder to write (default: DIR/report of the first DIR); replaced whole")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for confidence intervals (default 2000)")
    parser.add_argument("--formats", default="png,pdf", help="figure formats, comma-separated (default png,pdf)")
    parser.add_argument("--reference", default="ddpo",
                        help="method whose final reward the speed-up table measures the others against (default ddpo)")
    args = parser.parse_args(argv)
    try:
        formats = tuple(f for f in args.formats.split(",") if f)
        if not formats or any(f not in ("png", "pdf", "svg") for f in formats):
            raise UsageError(f"--formats {args.formats!r} invalid; use a comma list of png, pdf, svg")
        if args.n_boot < 1:
            raise UsageError(f"--n-boot must be >= 1, got {args.n_boot}")
        out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
        build_report(args.dirs, out, seed=args.seed, n_boot=args.n_boot, formats=formats, reference=args.reference)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
