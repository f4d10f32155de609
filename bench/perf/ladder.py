"""Memory and speed ladder of every method on one model: ``python -m bench.memory_ladder``.

    python -m bench.memory_ladder --model sd15-random --steps 50 --batch 1 --dtypes fp32,bf16   # the GPU table
    python -m bench.memory_ladder --model tiny-random --steps 20 --batch 4 --dtypes fp32 --rows all --repeats 10

For each row and dtype (fp32, or bf16 autocast), one fresh process builds the model, runs ``--warmup`` untimed and
``--repeats`` timed optimizer steps of the method with the toy reward, and reports the median seconds per step,
reward queries per step, the timed steps' own peak memory and the process peak (see ``bench.memory``). A row that
runs out of memory is reported as ``oom``. Default rows: AlignProp full without / with checkpointing, K=1,
randomized K, DDPO, RWR, and ``sampler``, which times the shared sampler without gradient against diffusers' own
``StableDiffusionPipeline`` on the same latents (ratio < 1: ours is faster). ``--rows all`` adds trl's
AlignPropTrainer at equal settings (per-step random thresholds, full, last step only), our sampler in the official
code's truncation mode (``alignprop-code``) and ``rwr-sparse``; the report then states our time and memory
relative to trl's for each matched pair.
"""

from __future__ import annotations

import time

LAST = "last"
"""Placeholder in a row's overrides for the index of the last sampling step (T - 1)."""
ROWS = {  # row -> (method, config overrides)
    "alignprop-full-nockpt": ("alignprop-full", {"checkpointing": False}),
    "alignprop-full": ("alignprop-full", {}),
    "alignprop-k1": ("alignprop-k1", {}),
    "alignprop": ("alignprop", {}),  # randomized K ~ U[1, T] per rollout (the paper)
    "alignprop-code": ("alignprop", {"truncation": "alignprop-code"}),  # per-step thresholds (official code, trl)
    # trl's AlignPropTrainer at the same settings: per-step random thresholds, full, and the last step only
    "alignprop-trl": ("alignprop-trl", {}),
    "alignprop-trl-full": ("alignprop-trl", {"random_truncation": False, "truncation_step": 0}),
    "alignprop-trl-k1": ("alignprop-trl", {"random_truncation": False, "truncation_step": LAST}),
    "ddpo": ("ddpo", {}),  # trl's DDPOTrainer
    "rwr": ("rwr", {}),
    "rwr-sparse": ("rwr-sparse", {}),
}
TRL_PAIRS = {  # our row -> trl's row at equal settings
    "alignprop-full": "alignprop-trl-full",
    "alignprop-k1": "alignprop-trl-k1",
    "alignprop-code": "alignprop-trl",
    "alignprop": "alignprop-trl",  # randomized truncation, ours (K ~ U[1, T]) against trl's (per-step thresholds)
    "alignprop-full-nockpt": "alignprop-trl-full",
}
DEFAULT_ROWS = ("alignprop-full-nockpt", "alignprop-full", "alignprop-k1", "alignprop", "ddpo", "rwr", "sampler")
"""The GPU memory ladder's rows (issue: AlignProp full without / with checkpointing, K=1, randomized K, DDPO, RWR)."""


def measure(row: str, model: str, steps: int, batch: int, dtype: str, warmup: int, repeats: int = 1) -> dict:
    """One row in this process: median seconds of ``repeats`` optimizer steps, reward queries and peak memory."""
    import statistics

    import torch

    from bench.perf.memory import PeakMemory, return_freed_memory_to_os
    from bench.core.models import load_model
    from bench.core.prompts import load_prompts
    from bench.harness.recorder import peak_memory_mb
    from bench.core.cli import quiet_libraries
    from methods import METHODS
    from rewards.toy import MeanBrightness

    return_freed_memory_to_os()
    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(model, device=str(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    if row == "sampler":
        return _sampler_ratio(loaded.pipe, steps, batch, autocast, device)
    name, extra = ROWS[row]
    extra = {k: steps - 1 if v == LAST else v for k, v in extra.items()}
    cls = METHODS.get(name)
    method = cls(loaded.pipe, MeanBrightness(), load_prompts("simple-animals"),
                 cls.Config(steps=steps, batch_size=batch, **extra), seed=0)
    seconds = []
    try:
        for _ in range(warmup):
            with autocast:
                method.step()
        with PeakMemory(device) as step_peak:
            for _ in range(repeats):
                start = time.perf_counter()
                with autocast:
                    metrics = method.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError:
        return dict(status="oom", seconds=None, peak_mem_mb=peak_memory_mb(device), device=device.type)
    return dict(status="ok", seconds=statistics.median(seconds), samples=metrics["samples"],
                step_mem_mb=step_peak.mb, peak_mem_mb=peak_memory_mb(device), repeats=repeats,
                stand_in=loaded.stand_in or "", device=device.type)


def _sampler_ratio(pipe, steps, batch, autocast, device) -> dict:
    import torch

    from bench.core.sampler import Sampler, SamplerConfig

    sampler = Sampler(pipe, SamplerConfig(steps=steps, guidance_scale=7.5))
    prompts = ["a photo of a cat"] * batch
    noise = sampler.initial_noise(batch, torch.Generator().manual_seed(0))

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
        ours = timed(lambda: sampler.sample(prompts, latents=noise))
        theirs = timed(lambda: pipe(prompts, latents=noise.clone(), num_inference_steps=steps, guidance_scale=7.5,
                                    output_type="pt"))
    return dict(status="ok", seconds=ours, diffusers_seconds=theirs, ratio=ours / theirs, peak_mem_mb=None)


def trl_ratios(table) -> list[str]:
    """Our AlignProp rows against trl's AlignPropTrainer at equal settings, measured in the same invocation."""
    lines = []
    for dtype, part in table[table["status"] == "ok"].groupby("dtype", sort=False):
        rows = part.set_index("row")
        for mine, theirs in TRL_PAIRS.items():
            if mine in rows.index and theirs in rows.index:
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
    digits = {"seconds": 4, "diffusers_seconds": 4, "ratio": 3, "step_mem_mb": 1, "peak_mem_mb": 1}
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
