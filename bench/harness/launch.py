"""Launching runs: one worker subprocess per (method, reward, seed), locally or as SLURM jobs; the results folder
is laid out and, on ``--resume``, checked against the original runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import write_text
from bench.harness.plan import REPO
from bench.harness.recorder import COMPLETED
from bench.harness.spec import RunSpec


def worker_command(run_dir: Path, processes: int) -> list[str]:
    """The command that makes one run: a worker process, or a torch.distributed group of them."""
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "-m", "bench.worker", str(run_dir)]
    return [sys.executable, "-m", "bench.worker", str(run_dir)]

def run_timeout(spec: RunSpec, explicit: float | None) -> float | None:
    """Seconds a worker may take: ``--run-timeout``, else 10 x the time budget + 15 min, else no limit."""
    if explicit:
        return explicit
    return None if spec.budget.max_seconds is None else 10 * spec.budget.max_seconds + 900

def run_worker(spec: RunSpec, out: Path, processes: int = 1, timeout: float | None = None, cwd: str | None = None) -> dict:
    """Run one spec in a subprocess; a crash, hang or kill becomes an ``error`` result, never lost results.

    The worker runs in the user's working directory (``cwd``), so relative paths given on the command line
    (prompt files, model folders, weights, plug-in files) mean there what they meant here; the package is found
    through PYTHONPATH."""
    run_dir = Path(out).resolve() / "runs" / spec.run_id
    result_file = run_dir / "result.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    # OpenMP threads that spin while they wait bill a busy machine's waiting as CPU time (measured: 8.3 CPU s per
    # smoke step at load 22 on 2 cores, 0.40 s with passive waiting) and slow each other down; a user's setting wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        proc = subprocess.run(worker_command(run_dir, processes), cwd=cwd or os.getcwd(), env=env, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    from bench.harness.loop import rows_so_far

    if code == "timeout":
        status, message = "error", f"worker timed out after {timeout:.0f} s (--run-timeout)"
    elif code == -9:
        status, message = "oom", "worker killed by SIGKILL (most likely out of memory)"
    else:
        status, message = "error", f"worker exited with code {code}"
    return dict(status=status, error=message, rows=rows_so_far(run_dir))

def launch(runs: list[RunSpec], out: Path, args) -> dict[str, dict]:
    """Results of every run by id: finished ones reused on --resume, the rest made by the chosen launcher."""
    results = {}
    todo = []
    for spec in runs:
        previous = previous_result(out, spec) if args.resume else None
        if previous is None:
            todo.append(spec)
        else:
            results[spec.run_id] = previous
    if args.launcher == "slurm":
        results.update(launch_slurm(todo, out, args))
        return results
    from concurrent.futures import ThreadPoolExecutor

    cwd = os.getcwd()

    def logged(index: int, spec: RunSpec) -> dict:
        tag = f"[{index + 1}/{len(todo)}] {spec.run_id}"
        print(f"{tag}: start", file=sys.stderr, flush=True)
        started = time.monotonic()
        result = run_worker(spec, out, args.processes, run_timeout(spec, args.run_timeout), cwd)
        print(f"{tag}: end, {run_end_line(result, time.monotonic() - started)}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        made = pool.map(logged, range(len(todo)), todo)
        for spec, result in zip(todo, made):
            results[spec.run_id] = result
    return results

def run_end_line(result: dict, elapsed: float) -> str:
    """How a run ended, for the console: status, steps, training and CPU seconds, load, the reason of a failure."""
    parts = [str(result.get("status")), f"{result.get('steps') or 0} steps"]
    if result.get("wall_s"):
        parts.append(f"train {result['wall_s']:.1f} s (CPU {result.get('cpu_s') or 0:.1f} s)")
    if result.get("load_avg") is not None:
        parts.append(f"load {result['load_avg']:.1f} on {result.get('cores')} cores")
    parts.append(f"{elapsed:.0f} s in all")
    if result.get("error"):
        parts.append(str(result["error"]))
    return ", ".join(parts)

def launch_slurm(runs: list[RunSpec], out: Path, args) -> dict[str, dict]:
    """One submitit job per run; each job runs the same worker subprocess as the local launcher."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster=args.slurm_cluster)
    executor.update_parameters(timeout_min=args.slurm_time_min, gpus_per_node=args.slurm_gpus,
                               tasks_per_node=1, nodes=1, name="bench")
    if args.slurm_partition:
        executor.update_parameters(slurm_partition=args.slurm_partition)
    cwd = os.getcwd()
    jobs = [(spec, executor.submit(run_worker, spec, out, args.processes, run_timeout(spec, args.run_timeout), cwd))
            for spec in runs]
    results = {}
    for spec, job in jobs:
        try:
            results[spec.run_id] = job.result()
        except Exception as exc:  # a job that failed on the cluster is recorded, the others are kept
            results[spec.run_id] = dict(status="error", error=f"slurm job {job.job_id}: {exc}".splitlines()[0])
    return results

def check_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None

FINISHED = {*COMPLETED, "diverged", "skipped"}
"""Statuses a --resume does not run again."""

def previous_result(out: Path, spec: RunSpec) -> dict | None:
    """A finished run's result (skipped on --resume); None for runs still to do or to retry."""
    path = out / "runs" / spec.run_id / "result.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("status") in FINISHED:
            return result
        path.unlink()  # errors and OOMs are retried from their last checkpoint
    return None

def prepare_out(out: Path, runs: list[RunSpec], resume: bool) -> dict | None:
    """Check and lay out the results folder; on --resume return the earlier manifest."""
    previous = None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; pass a folder")
    if resume:
        if not (out / "manifest.json").is_file():
            raise UsageError(f"--resume: {str(out)!r} holds no results (manifest.json); drop --resume or fix --out")
        previous = json.loads((out / "manifest.json").read_text())
        before, now = sorted(previous.get("runs", {})), sorted(spec.run_id for spec in runs)
        if before != now:
            raise UsageError(f"--resume: {str(out)!r} holds runs {', '.join(before)}, the flags give "
                             f"{', '.join(now)}; repeat the original --methods, --reward and --seeds")
        for spec in runs:
            stored = out / "runs" / spec.run_id / "config.json"
            if stored.is_file() and RunSpec.from_file(stored).to_json() != spec.to_json():
                raise UsageError(f"--resume: run {spec.run_id} was made with other settings; repeat the original flags")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{str(out)!r} already holds results; pass --resume to continue them or choose another --out")
    for spec in runs:
        run_dir = out / "runs" / spec.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.json").is_file():
            write_text(run_dir / "config.json", spec.to_json())
    return previous
