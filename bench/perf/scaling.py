"""``python -m bench.memory_vs_steps --model tiny-random --steps 5,10,20,50``: memory and time of AlignProp's gradient modes.

For each number of sampling steps T and each mode, one training step is measured: build the model, attach LoRA,
sample a batch with the mode's ``GradMode``, score it with the toy reward (mean brightness), backpropagate.

Modes: ``full`` (gradient through every step, activation checkpointing on), ``full-nockpt`` (checkpointing off),
``last-k`` (K = 1: only the last step carries gradient) and ``random-k`` (K drawn from ``--k-range`` per rollout,
clipped to T; the drawn K is reported).

Memory, and how it is measured:

- CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the memory allocated before it (weights, LoRA,
  text states): the step's own peak.
- CPU: peak resident-set growth during the step. Each measurement runs in a fresh Python process (``--isolate``),
  whose glibc mmap threshold is set to 128 KiB so freed tensors go back to the OS instead of a cache; the peak
  (VmHWM) is reset through /proc/self/clear_refs just before the step and read after it, minus VmRSS before it.
  Where clear_refs is unavailable the whole process peak (ru_maxrss) is reported instead (column memory_kind).

Writes scaling.csv, scaling.md and scaling.png/pdf. Goal: K = 1 memory flat in T (<= 1.1x from 10 to 50 steps).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from bench.core.errors import UsageError
from bench.perf.memory import PeakMemory, last_line, run_isolated

MODES = ("none", "full", "full-nockpt", "last-k", "random-k")
MODE_LABELS = {
    "none": "sampling only, no graph (no backward)",
    "full": "full backprop, checkpointing",
    "full-nockpt": "full backprop, no checkpointing",
    "last-k": "last-k K=1",
    "random-k": "random-k",
}
FLAT_GOAL = 1.1
"""Largest allowed ratio of K = 1 memory at the largest T to memory at T = 10 (or the smallest T above it)."""


def grad_mode(mode: str, steps: int, k_range: tuple[int, int]):
    from bench.core.sampler import GradMode

    if mode == "none":
        return GradMode(mode="none")
    if mode == "full":
        return GradMode(mode="full", checkpoint=True)
    if mode == "full-nockpt":
        return GradMode(mode="full", checkpoint=False)
    if mode == "last-k":
        return GradMode(mode="last-k", k=1)
    if mode == "random-k":
        lo, hi = k_range
        return GradMode(mode="random-k", k_range=(min(lo, steps), min(hi, steps)))
    raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


def measure(model: str, steps: int, mode: str, *, batch: int, device: str, k_range=(1, 10), guidance: float = 7.5,
            seed: int = 0) -> dict:  # fmt: skip
    """Seconds and peak memory of one training step (sample with the mode's gradient, reward, backward)."""
    import torch

    from bench.core.lora import LoraSettings, add_lora
    from bench.core.models import load_model
    from bench.core.sampler import GradMode, Sampler, SamplerConfig
    from rewards.toy import MeanBrightness

    loaded = load_model(model, seed=0, device=device)
    params = add_lora(loaded.pipe.unet, LoraSettings())
    reward = MeanBrightness()
    prompts = ["a photo of a cat"] * batch
    # Warm-up: one 1-step rollout with gradient, so one-time allocations are not charged to the measured step.
    warm = Sampler(loaded.pipe, SamplerConfig(steps=1, guidance_scale=guidance))
    warm_out = warm.sample(prompts, generator=torch.Generator().manual_seed(seed), grad=GradMode(mode="full"))
    (-reward.objective(warm_out.images, prompts).mean()).backward()
    for p in params:
        p.grad = None
    del warm_out
    sampler = Sampler(loaded.pipe, SamplerConfig(steps=steps, guidance_scale=guidance))
    grad = grad_mode(mode, steps, k_range)
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        rollout = sampler.sample(prompts, generator=torch.Generator().manual_seed(seed), grad=grad)
        loss = -reward.objective(rollout.images, prompts).mean()
        if loss.requires_grad:  # mode "none" has no graph
            loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    grad_norm = float(sum(float(p.grad.norm()) ** 2 for p in params if p.grad is not None) ** 0.5)
    return dict(
        steps=steps, mode=mode, label=MODE_LABELS[mode], grad_steps=int(sum(rollout.grad_steps)), batch=batch,
        seconds=seconds, peak_mem_mb=peak.mb, memory_kind=peak.kind, device=device, grad_norm=grad_norm,
        stand_in=loaded.stand_in or "",
    )  # fmt: skip


def measure_isolated(args_dict: dict) -> dict:
    """Run ``measure`` in a fresh Python process and return its result."""
    result, done = run_isolated("bench.memory_vs_steps", args_dict)
    if done.returncode != 0 or result is None:
        return dict(steps=args_dict["steps"], mode=args_dict["mode"], label=MODE_LABELS[args_dict["mode"]],
                    error=last_line(done.stderr), seconds=float("nan"), peak_mem_mb=float("nan"))  # fmt: skip
    return result


def flatness(table: pd.DataFrame, mode: str = "last-k", low: int = 10) -> tuple[float, int, int] | None:
    """(memory at the largest T / memory at T = ``low`` or the next larger T, that T, largest T) for ``mode``."""
    rows = table[(table["mode"] == mode) & table["peak_mem_mb"].notna()].sort_values("steps")
    if len(rows) < 2:
        return None
    base = rows[rows["steps"] >= low]
    base = base.iloc[0] if len(base) >= 2 else rows.iloc[0]
    top = rows.iloc[-1]
    if base["peak_mem_mb"] <= 0:
        return None
    return float(top["peak_mem_mb"] / base["peak_mem_mb"]), int(base["steps"]), int(top["steps"])


def legend_labels(table: pd.DataFrame) -> dict[str, str]:
    """Legend text per mode: what ``none`` measures (no graph: its growth is about 0 MB) and random-k's single
    draw of K at each T."""
    labels = {m: m for m in table["mode"].unique()}
    if "none" in labels:
        labels["none"] = "none (sampling without graph: ~0 MB growth)"
    if "random-k" in labels:
        drawn = table[table["mode"] == "random-k"].sort_values("steps")
        draws = ", ".join(f"{int(r.steps)}:{r.grad_steps}" for r in drawn.itertuples() if pd.notna(r.grad_steps))
        labels["random-k"] = f"random-k (one draw of K per T; T:K = {draws})"
    return labels


def write_outputs(table: pd.DataFrame, out: Path, *, model: str) -> Path:
    from bench.analysis import plots
    from bench.analysis.plots import stand_in_note
    from bench.core.files import atomic_dir
    from bench.core.text import markdown_table

    stand = sorted({s for s in table.get("stand_in", pd.Series(dtype=str)).fillna("") if s})
    note = stand_in_note(stand, 90)
    kind = "; ".join(sorted(set(table.get("memory_kind", pd.Series(dtype=str)).dropna())))
    flat = flatness(table)
    with atomic_dir(out, "scaling.md") as tmp:
        table.to_csv(tmp / "scaling.csv", index=False)
        fig, axes = plots.plt.subplots(1, 2, figsize=(12, 5))
        labels = legend_labels(table)
        cuda = kind.startswith("cuda")
        plots.plot_scaling(axes[0], table, value="peak_mem_mb", labels=labels, title="memory of one training step",
                           ylabel="MB: " + ("CUDA max allocated during the step" if cuda
                                            else "peak RSS growth during the step (CPU)"))  # fmt: skip
        plots.plot_scaling(axes[1], table, value="seconds", labels=labels, title="time of one training step",
                           ylabel="seconds per step (sample + backward)")
        fig.suptitle(f"Memory and time vs sampling steps on {model}" + note, fontsize=10)
        fig.tight_layout()
        plots.save_figure(fig, tmp / "scaling")
        wide_mem = table.pivot_table(index="steps", columns="mode", values="peak_mem_mb")
        wide_sec = table.pivot_table(index="steps", columns="mode", values="seconds")
        shown = pd.DataFrame({"T": wide_mem.index})
        for mode in [m for m in MODES if m in wide_mem.columns]:
            shown[f"{mode} MB"] = wide_mem[mode].map(lambda v: f"{v:.1f}").to_numpy()
            shown[f"{mode} s"] = wide_sec[mode].map(lambda v: f"{v:.2f}").to_numpy()
        lines = [f"# Memory scaling on `{model}`", ""]
        if stand:
            lines += ["> **STAND-IN (random weights):** " + "; ".join(stand), ""]
        lines += [f"Memory: {kind}. Modes: " + "; ".join(f"`{m}` = {MODE_LABELS[m]}" for m in MODES), ""]
        lines += [markdown_table(shown), ""]
        if "random-k" in set(table["mode"]):
            drawn = table[table["mode"] == "random-k"].sort_values("steps")
            lines.append("random-k gradient steps drawn: " + ", ".join(f"T={int(r.steps)}: K={r.grad_steps}" for r in drawn.itertuples()))
            lines.append("")
        if flat is not None:
            ratio, lo, hi = flat
            verdict = "meets" if ratio <= FLAT_GOAL else "MISSES"
            lines.append(f"K=1 memory ratio T={hi} vs T={lo}: {ratio:.3f} ({verdict} the goal <= {FLAT_GOAL}).")
        elif "last-k" in set(table["mode"]):
            lines.append("K=1 memory ratio: not computable (fewer than two sizes, or 0 MB measured at the smaller T).")
        if "error" in table.columns and table["error"].notna().any():
            lines += ["", "Failed measurements:"] + [f"- T={r.steps} {r.mode}: {r.error}" for r in table.itertuples() if isinstance(r.error, str)]
        lines += ["", "![scaling.png](scaling.png)", ""]
        (tmp / "scaling.md").write_text("\n".join(lines))
    return out
