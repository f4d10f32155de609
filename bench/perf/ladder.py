"""Memory and speed ladder of every method on one model: ``python -m bench.memory_ladder``.

    python -m bench.memory_ladder --model sd15-random --steps 50 --batch 1 --dtypes fp32,bf16   # the GPU table
    python -m bench.memory_ladder --model tiny-random --steps 20 --batch 4 --dtypes fp32 --rows all --repeats 10

For each row and dtype (fp32, or bf16 autocast), one fresh process builds the model, runs ``--warmup`` untimed and
``--repeats`` timed optimizer steps of the method with the toy reward, and reports the median seconds per step,
reward queries per step, the timed steps' own peak memory and the process peak (see ``bench.memory``). A row that
runs out of memory is reported as ``oom``. Default rows: AlignProp full without / with checkpointing, K=1,
randomized K, DDPO, RWR, and ``sampler``, which times the shared sampler without gradient against diffusers' own
``StableDiffusionPipeline`` (``StableDiffusion3Pipeline``, ``FluxPipeline`` for the sd3, flux families) on the same
latents (ratio < 1: ours is faster). ``--rows all`` adds trl's AlignPropTrainer at equal settings (per-step random
thresholds, full, last step only), our sampler in the official code's truncation mode (``alignprop-code``) and
``rwr-sparse``; the report then states our time and memory relative to trl's for each matched pair.

Auto checkpointing rows (``alignprop-auto``, ``alignprop-full-auto``, ``alignprop-k1-auto``) take a budget suffix
``@Nx``: the step may add N times the step peak of its trl pair (``alignprop-trl``, ``-trl-full``, ``-trl-k1``,
measured first in the same invocation, added when not listed) to the memory in use; ``budget_mb`` and
``under_budget`` say whether our step stayed under it. ``dtype`` is the method's ``precision`` (frozen weights in
that dtype, autocast, fp32 LoRA).
"""

from __future__ import annotations

import time

LAST = "last"
"""Placeholder in a row's overrides for the index of the last sampling step (T - 1)."""
ON, AUTO = {"checkpointing": "on"}, {"checkpointing": "auto"}
ROWS = {  # row -> (method, config overrides)
    "alignprop-full-nockpt": ("alignprop-full", {"checkpointing": "off"}),
    "alignprop-full": ("alignprop-full", ON),
    "alignprop-k1": ("alignprop-k1", ON),
    "alignprop": ("alignprop", ON),  # randomized K ~ U[1, T] per rollout (the paper)
    "alignprop-code": ("alignprop", {"truncation": "alignprop-code", **ON}),  # per-step thresholds (official code, trl)
    # auto checkpointing under a memory budget (row@Nx: N x the trl pair's step peak)
    "alignprop-auto": ("alignprop", AUTO),
    "alignprop-full-auto": ("alignprop-full", AUTO),
    "alignprop-k1-auto": ("alignprop-k1", AUTO),
    # trl's AlignPropTrainer at the same settings: per-step random thresholds, full, and the last step only
    "alignprop-trl": ("alignprop-trl", {}),
    "alignprop-trl-full": ("alignprop-trl", {"random_truncation": False, "truncation_step": 0}),
    "alignprop-trl-k1": ("alignprop-trl", {"random_truncation": False, "truncation_step": LAST}),
    "ddpo": ("ddpo", {}),  # trl's DDPOTrainer
    "rwr": ("rwr", {}),
    "rwr-sparse": ("rwr-sparse", {}),
    "flow-grpo": ("flow-grpo", {"group_size": 0}),  # one group of --batch images, Flow-GRPO's SDE and KL (sd3)
}
TRL_PAIRS = {  # our row -> trl's row at equal settings
    "alignprop-full": "alignprop-trl-full",
    "alignprop-k1": "alignprop-trl-k1",
    "alignprop-code": "alignprop-trl",
    "alignprop": "alignprop-trl",  # randomized truncation, ours (K ~ U[1, T]) against trl's (per-step thresholds)
    "alignprop-full-nockpt": "alignprop-trl-full",
    "alignprop-auto": "alignprop-trl",
    "alignprop-full-auto": "alignprop-trl-full",
    "alignprop-k1-auto": "alignprop-trl-k1",
}
AUTO_ROWS = ("alignprop-auto", "alignprop-full-auto", "alignprop-k1-auto")
DEFAULT_ROWS = ("alignprop-full-nockpt", "alignprop-full", "alignprop-k1", "alignprop", "ddpo", "rwr", "sampler")
"""The GPU memory ladder's rows (issue: AlignProp full without / with checkpointing, K=1, randomized K, DDPO, RWR)."""


def parse_row(row: str) -> tuple[str, float | None]:
    """``alignprop-auto@2x`` -> ("alignprop-auto", 2.0); a row without a budget -> (row, None)."""
    base, at, mult = row.partition("@")
    if not at:
        return row, None
    try:
        value = float(mult.rstrip("x"))
    except ValueError:
        value = -1.0
    if base not in AUTO_ROWS or not value > 0:
        raise ValueError(f"row {row!r}: a budget suffix @Nx (N > 0) goes on {', '.join(AUTO_ROWS)} only")
    return base, value


def with_pairs(rows: list[str]) -> list[str]:
    """The rows in order, each budgeted row's trl pair placed (once) before the first row that needs it."""
    out: list[str] = []
    for row in rows:
        base, mult = parse_row(row)
        pair = TRL_PAIRS[base] if mult is not None else None
        if pair and pair not in out:
            out.append(pair)
        if row not in out:
            out.append(row)
    return out


def measure(row: str, model: str, steps: int, batch: int, dtype: str, warmup: int, repeats: int = 1,
            budget_mb: float | None = None, resolution: int = 0) -> dict:
    """One row in this process: median seconds of ``repeats`` optimizer steps, reward queries and peak memory.
    A row whose method cannot run on the model's family (``Method.families``) is reported as ``n/a``; the family's
    own config values (``family_defaults``: eta 0 on the flow ODE) apply under the row's."""
    import statistics

    import torch

    from bench.perf.memory import PeakMemory, return_freed_memory_to_os
    from bench.core.families import family_defaults
    from bench.core.models import family_of, load_model
    from bench.core.prompts import load_prompts
    from bench.harness.recorder import peak_memory_mb
    from bench.core.cli import quiet_libraries
    from methods import METHODS
    from rewards.toy import MeanBrightness

    fam = family_of(model)
    if row != "sampler" and fam.name not in METHODS.get(ROWS[parse_row(row)[0]][0]).families:
        return dict(status="n/a", error=f"{ROWS[parse_row(row)[0]][0]} cannot run on model family {fam.name}")
    return_freed_memory_to_os()
    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(model, device=str(device))
    if row == "sampler":
        return _sampler_ratio(loaded.pipe, steps, batch, dtype, device, resolution)
    name, extra = ROWS[parse_row(row)[0]]
    extra = {k: steps - 1 if v == LAST else v for k, v in extra.items()}
    extra = {**{k: v for k, v in family_defaults(fam, METHODS.get(name).Config).items() if k != "lora_targets"},
             **extra}
    if budget_mb is not None:
        extra["memory_budget_mb"] = budget_mb
    cls = METHODS.get(name)
    method = cls(loaded.pipe, MeanBrightness(), load_prompts("simple-animals"),
                 cls.Config(steps=steps, batch_size=batch, precision=dtype, resolution=resolution, **extra), seed=0)
    seconds = []
    try:
        for _ in range(warmup):
            method.step()
        with PeakMemory(device) as step_peak:
            for _ in range(repeats):
                start = time.perf_counter()
                metrics = method.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError:
        return dict(status="oom", seconds=None, peak_mem_mb=peak_memory_mb(device), device=device.type)
    result = dict(status="ok", seconds=statistics.median(seconds), samples=metrics["samples"],
                  step_mem_mb=step_peak.mb, peak_mem_mb=peak_memory_mb(device), repeats=repeats,
                  stand_in=loaded.stand_in or "", device=device.type)
    if budget_mb is not None:
        result.update(budget_mb=budget_mb, under_budget=bool(step_peak.mb <= budget_mb),
                      kept_steps=metrics.get("kept_steps"))
    return result


def _sampler_ratio(pipe, steps, batch, dtype, device, resolution: int = 0) -> dict:
    import torch

    from bench.analysis.export import call_arguments
    from bench.core import precision as mp
    from bench.core.sampler import Sampler, SamplerConfig

    mp.cast_frozen(pipe, dtype)
    autocast = mp.autocast(device, dtype)
    sampler = Sampler(pipe, SamplerConfig(steps=steps, guidance_scale=7.5, precision=dtype, resolution=resolution))
    size = sampler.image_size
    extra = {**call_arguments(pipe), "height": size, "width": size}  # and a T5 family's max_sequence_length
    prompts = ["a photo of a cat"] * batch

    def timed(fn):
        fn()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with autocast:
        # the same x_T: both draw it from the seed in the unpacked shape (a flux pipeline packs its own)
        ours = timed(lambda: sampler.sample(prompts, generator=torch.Generator().manual_seed(0)))
        theirs = timed(lambda: pipe(prompts, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                                    guidance_scale=7.5, output_type="pt", **extra))
    return dict(status="ok", seconds=ours, diffusers_seconds=theirs, ratio=ours / theirs, peak_mem_mb=None)


def trl_ratios(table) -> list[str]:
    """Our AlignProp rows against trl's AlignPropTrainer at equal settings, measured in the same invocation."""
    lines = []
    for dtype, part in table[table["status"] == "ok"].groupby("dtype", sort=False):
        rows = part.set_index("row")
        for mine in rows.index:
            theirs = TRL_PAIRS.get(parse_row(mine)[0])
            if theirs in rows.index:
                a, b = rows.loc[mine], rows.loc[theirs]
                lines.append(f"- {dtype} `{mine}` / `{theirs}`: time {a.seconds / b.seconds:.2f}x, "
                             f"step memory {a.step_mem_mb / b.step_mem_mb:.2f}x, "
                             f"process peak {a.peak_mem_mb / b.peak_mem_mb:.2f}x")
    return lines


def ladder_figure(table, args, out) -> list[str]:
    """``ladder.png/pdf``: the memory ladder (each method row's own step memory, log scale, GPU memory on a GPU)
    and its seconds per step, one bar per (row, dtype) with its value; oom and failed rows are named, not drawn."""
    import numpy as np

    from bench.analysis import plots

    rows = table[table["row"] != "sampler"].copy()
    if rows.empty:
        return []
    rows["bar"] = rows["row"] + " " + rows["dtype"]
    cuda = "cuda" in set(rows.get("device", []))
    fig, axes = plots.plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2.2))
    for ax, value, label in ((axes[0], "step_mem_mb", "CUDA max allocated during the step, MB" if cuda
                              else "peak RSS growth during the step (CPU), MB"),
                             (axes[1], "seconds", "seconds per optimizer step (median)")):  # fmt: skip
        heights = rows[value].astype(float).to_numpy() if value in rows else np.full(len(rows), np.nan)
        pos = np.arange(len(rows))
        bars = ax.barh(pos, np.nan_to_num(heights, nan=0.0), color=[f"C{i % 10}" for i in pos])
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.3g}" for h in heights], fontsize=8, padding=2)
        for p, h, status in zip(pos, heights, rows["status"]):
            if np.isnan(h):
                ax.text(0.01, p, str(status), va="center", fontsize=8, transform=ax.get_yaxis_transform())
        ax.set_yticks(pos)
        ax.set_yticklabels(rows["bar"], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        positive = heights[heights > 0]
        if value == "step_mem_mb" and len(positive) and positive.max() / positive.min() > 20:  # the paper's ladder
            ax.set_xscale("log")  # spans orders of magnitude (about 1 TB naive to 15 GB checkpointed)
            ax.xaxis.set_major_formatter(plots.plt.ScalarFormatter())
        ax.margins(x=0.2)
        ax.grid(axis="x", alpha=0.3)
    stand = sorted({s for s in table.get("stand_in", []) if isinstance(s, str) and s})
    fig.suptitle(f"Memory ladder on {args.model}: T={args.steps}, batch {args.batch}"
                 + plots.stand_in_note(stand, 110), fontsize=11)  # fmt: skip
    fig.tight_layout()
    return plots.save_figure(fig, out / "ladder")


def ladder_markdown(table, args) -> str:
    from bench.core.text import markdown_table

    stand = sorted({s for s in table.get("stand_in", []) if isinstance(s, str) and s})
    digits = {"seconds": 4, "diffusers_seconds": 4, "ratio": 3, "step_mem_mb": 1, "peak_mem_mb": 1, "budget_mb": 1}
    shown = table.drop(columns=["stand_in", "repeats"], errors="ignore").round(digits).astype(object)
    shown = shown.where(shown.notna(), "")
    lines = [f"# Ladder: {args.model}, T={args.steps}, batch {args.batch}", ""]
    if stand:
        lines += ["> **STAND-IN (random weights):** " + "; ".join(stand), ""]
    lines += [f"`seconds`: median of {args.repeats} optimizer step(s) after {args.warmup} warm-up step(s); `samples`: "
              "reward queries per step; `step_mem_mb`: the timed steps' own peak (CUDA max allocated minus allocated "
              "before; CPU peak RSS growth); `peak_mem_mb`: the process peak (CUDA max allocated incl. weights; CPU "
              "peak RSS incl. libraries).", "", markdown_table(shown), ""]
    ratios = trl_ratios(table)
    if ratios:
        lines += ["Ours against trl's AlignPropTrainer (same model, T, batch, reward; < 1: ours is cheaper):", *ratios]
    return "\n".join(lines)
