"""The recorder: tidy long-format rows, peak memory, atomic writes of the results tables.

Methods never write files; the worker hands each ``step()``'s metrics and each evaluation to a ``Recorder``, and
the runner merges every run's rows into ``metrics.parquet`` / ``metrics.csv`` / ``runs.csv``.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path

import torch

from bench.core.files import atomic_write
from bench.core.text import fmt

METRIC_COLUMNS = ["run_id", "method", "reward", "model", "seed", "step", "samples", "wall_s", "split", "metric",
                  "value", "peak_mem_mb", "stand_in"]
RUN_COLUMNS = ["run_id", "method", "reward", "model", "seed", "status", "steps", "samples", "wall_s", "peak_mem_mb",
               "final_eval_reward", "error", "stand_in", "sec_per_step", "memory_overrun", "device", "precision",
               "protocol"]
COMPLETED = ("max_steps", "max_seconds", "max_samples")
"""Statuses of runs that finished their budget (their final evaluation is the trained adapter's)."""
STATUSES = (*COMPLETED, "diverged", "oom", "error", "skipped")


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak: CUDA max allocated on a GPU, else peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Recorder:
    """Collects one run's rows; knows the run's identity columns, its counters and its peak memory."""

    def __init__(self, identity: dict, device: torch.device, rows: list[dict] | None = None, peak_mb: float = 0.0):
        self.identity = identity
        self.device = device
        self.rows: list[dict] = list(rows or [])
        self.step, self.samples, self.wall_s = 0, 0, 0.0
        self._peak_before = peak_mb

    @property
    def peak_mb(self) -> float:
        return max(self._peak_before, peak_memory_mb(self.device))

    def add(self, split: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if name == "samples" or not isinstance(value, (int, float)):
                continue
            self.rows.append({**self.identity, "step": self.step, "samples": self.samples,
                              "wall_s": round(self.wall_s, 6), "split": split, "metric": name,
                              "value": float(value), "peak_mem_mb": round(self.peak_mb, 3)})

    def last(self, split: str, metric: str) -> float | None:
        for row in reversed(self.rows):
            if row["split"] == split and row["metric"] == metric:
                return row["value"]
        return None


def is_finite(*values: float) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def write_tables(out: Path, rows: list[dict], runs: list[dict]) -> None:
    """metrics.parquet, metrics.csv and runs.csv, each written atomically, rows de-duplicated."""
    import pandas as pd

    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics = metrics.drop_duplicates(subset=["run_id", "step", "split", "metric"], keep="last")
    metrics = metrics.sort_values(["run_id", "split", "step", "metric"], kind="stable").reset_index(drop=True)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    atomic_write(out / "metrics.parquet", lambda tmp: metrics.to_parquet(tmp, index=False))
    atomic_write(out / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))
    atomic_write(out / "runs.csv", lambda tmp: runs_df.to_csv(tmp, index=False))


def run_row(spec, result: dict) -> dict:
    """One row of runs.csv from a run's spec (``RunSpec``) and its worker's result."""
    steps = result.get("steps") or 0
    wall = result.get("wall_s") or 0.0
    cap = spec.budget.max_memory_gb
    peak = result.get("peak_mem_mb")
    return dict(
        run_id=spec.run_id, method=spec.method, reward=spec.reward, model=spec.model, seed=spec.seed,
        status=result["status"], steps=steps, samples=result.get("samples") or 0, wall_s=round(wall, 4),
        peak_mem_mb=None if peak is None else round(peak, 2), final_eval_reward=result.get("final_eval_reward"),
        error=result.get("error", ""), stand_in=result.get("stand_in", ""),
        sec_per_step=round(wall / steps, 4) if steps else None,
        memory_overrun=bool(cap and peak and peak > cap * 1024), device=result.get("device", ""),
        precision=getattr(spec, "precision", "fp32"), protocol=getattr(spec, "protocol", "matched"),
    )

def summary_markdown(rows: list[dict]) -> str:
    """The table printed at the end of ``bench.run`` and written to summary.md."""
    head = "| run | status | final eval reward | steps | train s | s/step | peak MB |\n|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        cell = lambda v, spec: fmt(v, spec=spec, missing="")  # noqa: E731
        lines.append(f"| {r['run_id']} | {r['status']} | {cell(r['final_eval_reward'], '.4g')} | {r['steps']} | "
                     f"{cell(r['wall_s'], '.1f')} | {cell(r['sec_per_step'], '.3f')} | {cell(r['peak_mem_mb'], '.0f')} |")
    stand_ins = sorted({r["stand_in"] for r in rows if r.get("stand_in")})
    note = "".join(f"\nStand-in (random weights): {s}\n" for s in stand_ins)
    settings = sorted({(r.get("precision"), r.get("protocol")) for r in rows if r.get("precision")})
    note += "".join(f"\nPrecision {p}, protocol {q}\n" for p, q in settings)
    return head + "\n".join(lines) + "\n" + note
