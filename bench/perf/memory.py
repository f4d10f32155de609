"""Peak memory of one region of code (a training step), shared by ``bench.memory_vs_steps`` and ``bench.memory_ladder``.

- CUDA: ``torch.cuda.max_memory_allocated`` during the region minus what was allocated before it.
- CPU: growth of the resident set during the region. The peak (VmHWM) is reset through /proc/self/clear_refs just
  before the region and read after it, minus VmRSS before it. Call ``return_freed_memory_to_os()`` at process start
  (glibc then serves allocations >= 128 KiB by mmap), so freed tensors leave the RSS at once instead of hiding in a
  cache. Where clear_refs is unavailable the whole process peak (ru_maxrss) is reported; ``kind`` says which.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys

import torch

MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves an allocation by mmap (also passed as MALLOC_MMAP_THRESHOLD_ to workers)."""


def return_freed_memory_to_os() -> None:
    """glibc: serve allocations >= 128 KiB by mmap, so a freed tensor leaves the RSS at once."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run_isolated(module: str, spec: dict, timeout: float | None = None):
    """``python -m module --worker SPEC`` in a fresh process whose freed memory leaves the RSS at once; returns the
    last JSON line it printed (None if none) and the finished ``CompletedProcess`` (``returncode`` "timeout" when it
    ran past ``timeout`` seconds and was stopped)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    command = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = (x.decode() if isinstance(x, bytes) else x or "" for x in (exc.stdout, exc.stderr))
        done = subprocess.CompletedProcess(command, "timeout", out, err + f"\nstopped after {timeout:g} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), done


def last_line(text: str) -> str:
    """The last non-empty line of a worker's stderr (its exception), or "no output"."""
    return (text.strip().splitlines() or ["no output"])[-1]


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb`` (the region's own peak) and ``peak.kind``."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.mb = float("nan")
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
            self.kind = "cuda max_memory_allocated - allocated before"
        else:
            self._before = (_status_kb("VmRSS") or 0.0) * 1024
            self._reset = _reset_peak_rss()
            self.kind = "cpu peak RSS growth (VmHWM reset)" if self._reset else "cpu process peak RSS (ru_maxrss)"
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - self._before
        elif self._reset:
            peak = (_status_kb("VmHWM") or 0.0) * 1024 - self._before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mb = max(peak, 0.0) / 2**20
