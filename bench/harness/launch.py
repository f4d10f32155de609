"""Launching runs: one worker subprocess per (method, reward, seed), locally or as SLURM jobs; the results folder
is locked, laid out and, on ``--resume``, checked against the original runs.

Each worker runs in its own process group (stopped as a group on SIGINT/SIGTERM or a timeout) and dies with its
parent (``bench.harness.guard``); its stderr passes through to ours (``bench.harness.lines``: through a
pseudo-terminal when ours is one, so progress bars still draw) and its last lines are kept to name the cause when
it dies without a result."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import check_output, read_json, write_text
from bench.harness.guard import LOCK, PARENT_ENV, Interrupted, lock_folder, oom_kills
from bench.harness.lines import StderrTail, emit, follow_window_size
from bench.harness.plan import REPO
from bench.harness.recorder import COMPLETED, MANIFEST_SHAPE, RESULT_SHAPE, ROWS, cores, counters, read_rows
from bench.harness.spec import RunSpec

BAR_SLOT_ENV = "BENCH_BAR_SLOT"
"""The worker's progress-bar line among the runs at once (tqdm ``position``)."""
STOP_GRACE_S = 15.0
"""Seconds a stopped worker gets to record ``interrupted`` before its process group is killed."""


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

class Workers:
    """The live worker processes of this runner, to stop them all at once."""

    live: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    @classmethod
    def signal_all(cls, sig: int) -> None:
        with cls.lock:
            for pid in list(cls.live):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass

    @classmethod
    def stop_all(cls, grace_s: float = STOP_GRACE_S) -> threading.Timer:
        """SIGTERM every worker's process group (it records ``interrupted``); SIGKILL what is left after grace_s;
        start no new worker. Returns the timer of the kill (cancel it once every worker has ended)."""
        cls.stopping.set()
        cls.signal_all(signal.SIGTERM)
        timer = threading.Timer(grace_s, cls.signal_all, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()
        return timer


def run_worker(spec: RunSpec, out: Path, processes: int = 1, timeout: float | None = None, cwd: str | None = None,
               threads: int | None = None, slot: int = 0) -> dict:
    """Run one spec in a subprocess; a crash, hang or kill becomes a result with its cause, never lost rows.

    The worker runs in the user's working directory (``cwd``), so relative paths given on the command line
    (prompt files, model folders, weights, plug-in files) mean there what they meant here; the package is found
    through PYTHONPATH. ``threads``: the worker's torch threads (``OMP_NUM_THREADS``) unless the user set them.
    ``slot``: which of the runs at once this is (its progress bar's line on a terminal)."""
    run_dir = Path(out).resolve() / "runs" / spec.run_id
    result_file = run_dir / "result.json"
    if Workers.stopping.is_set():
        return dict(status="interrupted", error="not started: the runner was stopped",
                    **counters(read_rows(run_dir / ROWS)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    env[PARENT_ENV] = str(os.getpid())
    env[BAR_SLOT_ENV] = str(slot)
    # OpenMP threads that spin while they wait bill a busy machine's waiting as CPU time (measured: 8.3 CPU s per
    # smoke step at load 22 on 2 cores, 0.40 s with passive waiting) and slow each other down; a user's setting wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads and not env.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(threads)
    oom_before = oom_kills()
    tail = StderrTail()
    proc = subprocess.Popen(worker_command(run_dir, processes), cwd=cwd or os.getcwd(), env=env,
                            stderr=tail.child_fd, start_new_session=True)
    tail.start()
    with Workers.lock:
        Workers.live[proc.pid] = proc
    if Workers.stopping.is_set():  # stopped while it was starting
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = "timeout"
    finally:
        with Workers.lock:
            Workers.live.pop(proc.pid, None)
        tail.join()
    if result_file.is_file():
        try:
            return json.loads(result_file.read_text())
        except (ValueError, OSError):
            pass  # torn by a kill or a full disk: the cause is below
    if code == "timeout":
        status, message = "error", f"worker timed out after {timeout:.0f} s (--run-timeout)"
    elif Workers.stopping.is_set():
        status, message = "interrupted", "stopped with the runner"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        oom_after = oom_kills()
        if code == -signal.SIGKILL and oom_before is not None and oom_after is not None and oom_after > oom_before:
            status, message = "oom", "worker killed by the kernel's OOM killer (SIGKILL)"
        else:
            status, message = "killed", f"worker killed by signal {-code} ({name})"
    else:
        status, message = "error", f"worker exited with code {code}" + (f": {tail.cause()}" if tail.cause() else "")
    if tail.lines and not (run_dir / "error.log").is_file():
        try:
            (run_dir / "error.log").write_text("\n".join(tail.lines) + "\n")
        except OSError:
            pass
    return dict(status=status, error=message, **counters(read_rows(run_dir / ROWS)))


def launch(runs: list[RunSpec], out: Path, args) -> dict[str, dict]:
    """Results of every run by id: finished ones reused on --resume, the rest made by the chosen launcher."""
    results = {}
    todo = []
    Workers.stopping.clear()
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
    # Several runs at once share the cores: each worker gets its share of threads (more threads than cores make
    # every process slower; a user's OMP_NUM_THREADS wins).
    threads = max(1, cores() // (args.jobs * args.processes)) if args.jobs > 1 else None

    slots: queue.SimpleQueue = queue.SimpleQueue()  # each running worker draws its bar on its own line
    for slot in range(args.jobs):
        slots.put(slot)

    if sys.stderr.isatty():
        follow_window_size()  # the workers' bars follow a resized terminal

    def logged(index: int, spec: RunSpec) -> dict:
        tag = f"[{index + 1}/{len(todo)}] {spec.run_id}"
        emit(f"{tag}: start")  # one write per line: two runs' lines never share one
        started = time.monotonic()
        slot = slots.get()
        try:
            result = run_worker(spec, out, args.processes, run_timeout(spec, args.run_timeout), cwd, threads, slot)
        finally:
            slots.put(slot)
        result["job_workers"] = min(args.jobs, len(todo)) * args.processes  # the load this job itself makes
        emit(f"{tag}: end, {run_end_line(result, time.monotonic() - started)}")
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        made = [(spec, pool.submit(logged, index, spec)) for index, spec in enumerate(todo)]
        try:
            for spec, future in made:
                results[spec.run_id] = future.result()
        except Interrupted as exc:  # stop every worker, collect what each recorded, and let the caller write it
            timer = Workers.stop_all()
            for spec, future in made:
                results[spec.run_id] = future.result()
            timer.cancel()
            exc.results = results
            raise
    return results

def run_end_line(result: dict, elapsed: float) -> str:
    """How a run ended, for the console: status, steps, final evaluation reward, training and CPU seconds, a busy
    machine (load beyond the job's own workers x threads, ``recorder.busy_text``), the reason of a failure."""
    from bench.harness.recorder import busy_text, own_load
    from bench.harness.summary_text import cpu_per_query

    parts = [str(result.get("status")), f"{result.get('steps') or 0} steps"]
    if result.get("final_eval_reward") is not None:
        parts.append(f"final eval reward {result['final_eval_reward']:.4g}")
    if result.get("wall_s"):
        per_query = cpu_per_query(result)
        cost = f", {per_query:.3g} CPU s/query" if per_query is not None else ""
        parts.append(f"train {result['wall_s']:.1f} s (CPU {result.get('cpu_s') or 0:.1f} s{cost})")
    busy = busy_text(result.get("load_avg"), result.get("cores"), own_load(result))
    if busy:
        parts.append(busy)
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
        try:
            result = read_json(path, "", RESULT_SHAPE)
        except UsageError:  # damaged or hand-edited: its rows are in rows.jsonl; the run is made again
            os.replace(path, path.with_name("result.json.damaged"))
            print(f"warning: {path} is damaged (set aside as result.json.damaged); running {spec.run_id} again "
                  "from its last checkpoint", file=sys.stderr, flush=True)
            return None
        if result["status"] in FINISHED:
            return result
        path.unlink()  # errors, kills and interruptions are retried from their last checkpoint
    return None

def check_out(out: Path, runs: list[RunSpec], resume: bool, processes: int | None = None) -> dict | None:
    """Check the results folder without writing; on --resume return the earlier manifest (whose ``processes``, where
    recorded, ``processes`` must equal: a run is never continued on another number of data-parallel processes)."""
    previous = None
    check_output(out, "--out", folder=True)  # a file, under a file, or not writable: refused before anything
    if resume:
        if not (out / "manifest.json").is_file():
            raise UsageError(f"--resume: {str(out)!r} holds no results (manifest.json); drop --resume or fix --out")
        previous = read_json(out / "manifest.json", "it cannot be resumed: start a new --out with the same flags",
                             MANIFEST_SHAPE)
        if not isinstance(previous.get("runs"), dict):
            raise UsageError(f"{str(out / 'manifest.json')!r} holds no run specs; it cannot be resumed: start a new "
                             "--out with the same flags")
        if processes is not None and previous.get("processes") not in (None, processes):
            raise UsageError(f"--resume: {str(out)!r} was run with --processes {previous['processes']}, not "
                             f"{processes}; repeat the original flags (--processes {previous['processes']})")
        before, now = sorted(previous["runs"]), sorted(spec.run_id for spec in runs)
        if before != now:
            raise UsageError(f"--resume: {str(out)!r} holds runs {', '.join(before)}, the flags give "
                             f"{', '.join(now)}; repeat the original --methods, --reward and --seeds")
        for spec in runs:
            changed = spec_changes(previous["runs"][spec.run_id], spec)
            if changed:
                raise UsageError(f"--resume: run {spec.run_id} was made with other settings ({', '.join(changed)} "
                                 "differ from manifest.json); repeat the original flags")
            stored = out / "runs" / spec.run_id / "config.json"
            if not stored.is_file():
                continue  # written again from the manifest's (equal) spec
            try:
                same = not spec_changes(RunSpec.from_file(stored).to_dict(), spec)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise UsageError(f"--resume: {str(stored)!r} is damaged; delete it (it is written again from the "
                                 "flags) and repeat the original flags") from None
            if not same:
                raise UsageError(f"--resume: run {spec.run_id} was made with other settings; repeat the original flags")
    elif out.exists() and any(p.name != LOCK for p in out.iterdir()):
        raise UsageError(f"{str(out)!r} already holds results; pass --resume to continue them or choose another --out")
    return previous

def spec_changes(recorded, spec: RunSpec) -> list[str]:
    """The fields in which the manifest's recorded spec of a run differs from the planned one (fields an older
    manifest lacks are not compared; a method or evaluation config field added since counts at its default, which
    the older run sampled at: ``true_cfg_scale`` 1); empty when they agree."""
    planned = json.loads(spec.to_json())
    if not isinstance(recorded, dict):
        return ["its whole spec"]
    recorded = with_added_defaults(recorded, spec.method)
    return sorted(k for k in planned if k in recorded and recorded[k] != planned[k])


def with_added_defaults(recorded: dict, method: str) -> dict:
    """``recorded`` with its ``method_config`` and ``eval.config`` completed by their classes' field defaults."""
    from dataclasses import MISSING, fields

    from bench.core.evaluate import EvalConfig

    def complete(values, cls):
        if not isinstance(values, dict) or cls is None:
            return values
        return {**{f.name: f.default for f in fields(cls) if f.default is not MISSING}, **values}

    try:
        from methods import METHODS

        config_cls = METHODS.get(method).Config
    except Exception:  # a plug-in that no longer loads: its recorded config as it is
        config_cls = None
    out = dict(recorded)
    if "method_config" in out:
        out["method_config"] = complete(out["method_config"], config_cls)
    if isinstance(out.get("eval"), dict):
        out["eval"] = dict(out["eval"], config=complete(out["eval"].get("config"), EvalConfig))
    return out


def prepare_out(out: Path, runs: list[RunSpec], resume: bool, processes: int | None = None):
    """Check, lock and lay out the results folder; returns (the earlier manifest on --resume, the held lock).
    Another ``bench.run`` on the folder, or a folder that cannot be made, is a ``UsageError``."""
    lock = None
    # On a results folder, lock before the checks (another runner may be rewriting what they read); any other
    # folder is locked only once accepted, so a refusal leaves nothing in it.
    if resume and (out / "manifest.json").is_file():
        try:
            lock = lock_folder(out, "bench.run")
        except OSError:
            pass  # a read-only folder: the writes below say so
    previous = check_out(out, runs, resume, processes)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock or lock_folder(out, "bench.run")
        for spec in runs:
            run_dir = out / "runs" / spec.run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / "config.json").is_file():
                write_text(run_dir / "config.json", spec.to_json())
    except OSError as exc:
        raise UsageError(f"cannot write results to --out {str(out)!r} ({exc.strerror or exc}); choose a writable "
                         "folder") from None
    return previous, lock
