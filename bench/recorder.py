"""The recorder: tidy long-format rows, peak memory, atomic writes of the results tables.

Methods never write files; the worker hands each ``step()``'s metrics and each evaluation to a ``Recorder``, and
the runner merges every run's rows into ``metrics.parquet`` / ``metrics.csv`` / ``runs.csv``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
from pathlib import Path

import torch

METRIC_COLUMNS = ["run_id", "method", "reward", "model", "seed", "step", "samples", "wall_s", "split", "metric",
                  "value", "peak_mem_mb", "stand_in"]
RUN_COLUMNS = ["run_id", "method", "reward", "model", "seed", "status", "steps", "samples", "wall_s", "peak_mem_mb",
               "final_eval_reward", "error", "stand_in", "sec_per_step", "memory_overrun", "device",
               "surrogate"]
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


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: give results the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


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
