"""--resume of a data-parallel run (issue 36): every process checkpoints and resumes its own state (buffered rollouts,
old adapter, generators, RNG states), so a run with --processes 2 killed mid-run and resumed records exactly the
uninterrupted run's values. The end-to-end checks run in `make test-slow`; the choice of the checkpoint every
process resumes from runs in the normal suite."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
KILLED = str(REPO / "tests" / "killed.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
ARGS = ["--preset", "smoke", "--reward", "mean-brightness", "--max-steps", "4", "--max-seconds", "3600",
        "--eval-n", "2", "--checkpoint-every", "1", "--processes", "2", "--jobs", "1"]
KEY = ["run_id", "step", "split", "metric"]


def bench_run(args: list[str], out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.run", *args, "--out", str(out)], cwd=REPO,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=1200)


def values(out: Path) -> pd.DataFrame:
    """Every recorded value (metrics.parquet's value column: timings and memory are other columns)."""
    m = pd.read_parquet(out / "metrics.parquet")
    return m[[*KEY, "samples", "value"]].sort_values(KEY).reset_index(drop=True)


# grpo with a buffered round (2 updates per sampled round) on the sd family; flow-grpo (a buffered round by default)
# and diffusion-nft (its old adapter) and awm (its trailing adapter) on sd3; adjoint-matching (its warm-up count and clipping EMA) on both. Process 0 dies while taking its 2nd checkpoint, so process 1 may
# have written one step more than it: both must resume from the step they share.
@pytest.mark.slow
@pytest.mark.parametrize("model, methods, sets", [
    ("tiny-random", ["KilledGRPO"], ["--set", "updates_per_batch=2"]),
    ("tiny-flow-random", ["KilledFlowGRPO", "KilledNFT", "KilledFlowGRPOGuard", "KilledAWM"], []),
    ("tiny-random", ["KilledAM"], ["--set", "warmup_steps=2"]),
    ("tiny-flow-random", ["KilledAM"], ["--set", "warmup_steps=2"]),
], ids=["grpo", "flow-grpo+diffusion-nft+guard+awm", "adjoint-matching-sd", "adjoint-matching-sd3"])
def test_killed_two_process_run_resumes_bit_for_bit(tmp_path, model, methods, sets):
    args = [*ARGS, "--model", model, "--methods", ",".join(f"{KILLED}:{m}" for m in methods), *sets]
    ref = bench_run(args, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "r"
    killed = bench_run(args, out, env={"BENCH_TEST_KILL": "0:2"})
    assert killed.returncode == 1 and "no run finished" in killed.stderr, killed.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    assert "max_steps" not in runs.status.tolist(), runs.to_dict("records")
    resumed = bench_run([*args, "--resume"], out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"] * len(methods)
    a, b = values(out), values(tmp_path / "ref")
    assert len(a) == len(b) and (a[KEY] == b[KEY]).all().all()
    differ = a[(a["value"] != b["value"]) | (a["samples"] != b["samples"])]
    assert differ.empty, f"{len(differ)} of {len(a)} recorded values differ:\n{differ.to_string()}"


# -- which checkpoint each process resumes from (threads stand in for the processes) -------------------------------
def save(path: Path, step: int, processes: int = 2, **extra) -> None:
    state = dict(method={}, step=step, samples=0, wall_s=0.0, peak_mb=0.0, py_rng=None, np_rng=None, **extra)
    if processes is not None:  # None: a checkpoint from before per-process checkpoints (no such key)
        state["processes"] = processes
    torch.save(state, path)


def resume_all(run_dir: Path, world: int = 2) -> list[tuple[dict | None, str]]:
    """``load_agreed`` on ``world`` threads standing in for the processes, gathering through a barrier."""
    from bench.harness.checkpoints import load_agreed

    slots, barrier, results = [None] * world, threading.Barrier(world), [None] * world

    def gather_for(rank):
        def gather(value):
            slots[rank] = value
            barrier.wait()
            everyone = list(slots)
            barrier.wait()
            return everyone
        return gather

    def run(rank):
        results[rank] = load_agreed(run_dir, rank, world, gather_for(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_each_process_resumes_its_own_checkpoint_of_the_newest_shared_step(tmp_path):
    from bench.harness.checkpoints import checkpoint_names

    assert checkpoint_names(0) == ("checkpoint.pt", "checkpoint.prev.pt")  # a single-process run's, as before
    assert checkpoint_names(1) == ("checkpoint.rank1.pt", "checkpoint.rank1.prev.pt")
    save(tmp_path / "checkpoint.pt", 2, who=0)
    save(tmp_path / "checkpoint.prev.pt", 1, who=0)
    save(tmp_path / "checkpoint.rank1.pt", 1, who=1)  # killed before its step-2 checkpoint
    (s0, note0), (s1, _) = resume_all(tmp_path)
    assert (s0["step"], s0["who"], s1["step"], s1["who"]) == (1, 0, 1, 1)
    assert "resuming from checkpoint.prev.pt at step 1" in note0
    save(tmp_path / "checkpoint.rank1.pt", 2, who=1)
    (s0, note0), (s1, note1) = resume_all(tmp_path)
    assert (s0["step"], s1["step"]) == (2, 2) and note0 == note1 == ""
    save(tmp_path / "checkpoint.rank1.prev.pt", 1, who=1)
    (tmp_path / "checkpoint.rank1.pt").write_bytes(b"\0" * 100)  # damaged: process 1 falls back, process 0 follows
    (s0, note0), (s1, note1) = resume_all(tmp_path)
    assert (s0["step"], s1["step"], s1["who"]) == (1, 1, 1) and note1 == ""  # process 0 speaks for all
    assert "process 1: checkpoint.rank1.pt is damaged" in note0 and (tmp_path / "checkpoint.rank1.pt.damaged").is_file()


def test_a_process_without_its_own_checkpoint_restarts_the_run_saying_so(tmp_path):
    from bench.harness.checkpoints import load_checkpoint

    save(tmp_path / "checkpoint.pt", 3, processes=None)  # written before per-process checkpoints: process 0's only
    (s0, note0), (s1, note1) = resume_all(tmp_path)
    assert s0 is None and s1 is None
    assert "checkpoint.rank1.pt" in note0 and "restarting the run from step 0" in note0, note0
    saved, note = load_checkpoint(tmp_path)  # the same file still resumes a single-process run
    assert saved["step"] == 3 and note == ""
