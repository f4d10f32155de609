"""Figures that show what fine-tuning changed: the same evaluation prompts and noise drawn by the base model and by
each method's final model, with each image's reward under it; and the learned reward beside the true score it
stands for (reward hacking shows as the two curves parting)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from bench.analysis import plots
from bench.analysis.figures import read_eval_settings, split_row
from bench.analysis.results import Results, guidance_text
from bench.analysis.summary import true_metric as summary_true_metric
from bench.core.files import read_json
from bench.core.text import fmt, safe_name
from bench.harness.recorder import EVAL_SHAPE


def read_scores(path: Path) -> list[float] | None:
    """Per-image rewards of one evaluation (``eval_first.json`` / ``eval_last.json``); None when absent. A damaged
    or hand-edited file (a reward that is not a number) is a ``UsageError`` naming it and the key."""
    if not path.is_file():
        return None
    return [float(v) for v in read_json(path, "restore it or run the evaluation again with bench.run --resume",
                                        EVAL_SHAPE)["reward"]]


def chosen_columns(changes: np.ndarray, n_change: int, n_fixed: int) -> list[int]:
    """The prompts whose reward changed most (mean |final - base| over methods), then a fixed, evenly spaced
    sample of the others, in evaluation order within each group."""
    order = [int(i) for i in np.argsort(-changes, kind="stable")[:n_change]]
    rest = [i for i in range(len(changes)) if i not in order]
    fixed = [rest[int(k)] for k in np.linspace(0, len(rest) - 1, min(n_fixed, len(rest)))] if rest else []
    return sorted(order) + [i for i in dict.fromkeys(fixed) if i not in order]


def effect_figures(results: Results, out: Path, *, n_change: int = 4, n_fixed: int = 4,
                   formats=("png", "pdf")) -> list[str]:
    """Per reward: base model vs each method's final model (first seed) on the chosen prompts, rewards under."""
    names = []
    runs = results.runs.sort_values(["reward", "label", "seed"])
    for reward, group in runs.groupby("reward", sort=True):
        # step 0 is the base model on the fixed noise: the same for every method evaluated alike, but a method
        # evaluated at another setting (a CFG-free one at guidance 1 on sd/sd3) starts from its own base images
        bases, finals, prompts = {}, {}, None
        for label, g in group.groupby("label", sort=True):
            for _, run in g.iterrows():
                run_dir = results.run_dir(run["run_id"])
                last, first = read_scores(run_dir / "eval_last.json"), read_scores(run_dir / "eval_first.json")
                if last is None or first is None or not (run_dir / "eval_last.png").is_file():
                    continue
                settings = read_eval_settings(run_dir)
                n = len(last)
                cfg = guidance_text(run.get("eval_guidance"), run.get("eval_true_cfg", 1.0))
                if cfg not in bases:
                    bases[cfg] = (split_row(run_dir / "eval_first.png", n), first)
                if prompts is None:
                    prompts = settings.prompt_per_image() if settings else [f"prompt {i}" for i in range(n)]
                finals[label] = (split_row(run_dir / "eval_last.png", n), last, cfg)
                break
        if not bases or not finals or any(len(s) != len(b[1]) for _, s, _ in finals.values() for b in bases.values()):
            continue
        changes = np.mean([np.abs(np.subtract(s, bases[cfg][1])) for _, s, cfg in finals.values()], axis=0)
        cols = chosen_columns(changes, n_change, n_fixed)
        several = len(bases) > 1
        rows = []
        for cfg, base in bases.items():
            # two lines: a method's name and its setting stacked fit a row's height (one line ran into the images)
            rows.append((f"base model\n({cfg})" if several else "base model", base))
            rows += [(f"{label}\n(final{f', {c}' if several else ''})", (tiles, scores))
                     for label, (tiles, scores, c) in finals.items() if c == cfg]
        height = 1.45 * len(rows) + 0.9
        fig, axes = plots.plt.subplots(len(rows), len(cols), figsize=(1.25 * len(cols) + 1.2, height), squeeze=False)
        for i, (row_label, (tiles, scores)) in enumerate(rows):
            for j, col in enumerate(cols):
                ax = axes[i, j]
                ax.imshow(np.clip(tiles[col], 0, 1), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(fmt(scores[col], 3), fontsize=8, labelpad=2)
                if i == 0:
                    mark = "Δ" if j < min(n_change, len(cols)) else "·"
                    ax.set_title(textwrap.fill(f"{mark} {prompts[col]}", 20), fontsize=7)
                if j == 0:
                    ax.set_ylabel(row_label, fontsize=8)
        stand = plots.stand_in_note(group["stand_in"], 100)
        fig.suptitle(f"{reward}: base model vs final models, same prompts and noise; reward under each image\n"
                     f"Δ: the {min(n_change, len(cols))} prompts whose reward changed most; ·: a fixed sample"
                     + stand, fontsize=9)
        # the title's lines keep a fixed height in inches: leave it that, not a share of a tall figure
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.1 + 0.15 * (2 + stand.count("\n"))) / height))
        safe = safe_name(reward)
        names += plots.save_figure(fig, out / f"effect_{safe}", formats)
    return [Path(n).name for n in names]


def learned_vs_true_figures(results: Results, out: Path, *, formats=("png", "pdf")) -> list[str]:
    """Per reward that records a true score beside the learned one (``true_*`` eval metrics): both against
    optimizer steps, mean over seeds, one colour per method (solid learned, dashed true)."""
    names = []
    m = results.metrics[results.metrics["split"] == "eval"]
    colors = plots.color_map(results.runs["label"])
    for reward, group in m.groupby("reward", sort=True):
        true_metric = summary_true_metric(reward, set(group["metric"]))
        if true_metric is None:
            continue
        fig, ax = plots.plt.subplots(figsize=(6.4, 4.4))
        named = {}  # legend name -> colour: one entry per method, the line styles explained once
        for label, g in group.groupby("label", sort=True):
            for metric, style in (("reward_mean", "-"), (true_metric, "--")):
                curve = g[g["metric"] == metric].groupby("step")["value"].mean()
                ax.plot(curve.index, curve.to_numpy(), style, marker="o", ms=3, color=colors[label])
            n = g["run_id"].nunique()
            named[f"{label} ({n} seed{'s' * (n > 1)})"] = colors[label]
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{reward} (evaluation mean, 0-1)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        plots.method_style_legend(ax, named, list(named), [("learned reward", "-", "o"),
                                                           (f"true score ({true_metric})", "--", "o")], fontsize=7)
        ax.set_title(f"{reward}: learned reward (trained on) vs true score (hand-defined)\nthe curves parting = reward "
                     "hacking" + plots.stand_in_note(group["stand_in"], 90), fontsize=9)
        fig.tight_layout()
        safe = safe_name(reward)
        names += plots.save_figure(fig, out / f"learned_vs_true_{safe}", formats)
    return [Path(n).name for n in names]
