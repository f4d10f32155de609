"""The recorder: tidy long-format rows, peak memory, atomic writes of the results tables.

Methods never write files; the worker hands each ``step()``'s metrics and each evaluation to a ``Recorder``, which
appends them to the run's own ``rows.jsonl`` as they are recorded (never only inside a checkpoint), and the runner
merges every run's rows into ``metrics.parquet`` / ``metrics.csv`` / ``runs.csv``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import resource
from pathlib import Path

import torch

from bench.core.errors import OutputError, UsageError
from bench.core.files import NULL, atomic_write, check_shape, read_json, write_json, write_text
from bench.harness.statuses import COMPLETED, STATUSES  # noqa: F401  (re-exported: imported from here)
from bench.harness.summary_text import summary_markdown

METRIC_COLUMNS = ["run_id", "method", "reward", "model", "seed", "step", "samples", "wall_s", "split", "metric",
                  "value", "peak_mem_mb", "stand_in", "cpu_s"]
RUN_COLUMNS = ["run_id", "method", "reward", "model", "seed", "status", "steps", "samples", "wall_s", "peak_mem_mb",
               "final_eval_reward", "error", "stand_in", "sec_per_step", "memory_overrun", "device", "surrogate",
               "precision", "protocol", "cpu_s", "cpu_per_step", "load_avg", "cores", "threads", "warning",
               "calib_cpu_s", "cpu_per_step_norm", "eval_guidance", "eval_steps", "eval_true_cfg"]
ROWS = "rows.jsonl"
"""A run's recorded rows, one JSON object a line, appended as they are recorded (a torn last line is ignored)."""

# What the files read back hold (``bench.core.files.check_shape``): a hand-edited value of the wrong type is refused
# where it is read, naming the file and key, instead of failing later inside arithmetic.
EVAL_SHAPE = {"reward": [float], "step?": int}
"""``eval_first.json`` / ``eval_last.json``: one evaluation's per-image rewards (prompt order)."""
ROW_SHAPE = {"step": int, "split": str, "metric": str, "value": (float, NULL), "samples?": (float, NULL),
             "wall_s?": (float, NULL), "cpu_s?": (float, NULL), "peak_mem_mb?": (float, NULL)}
"""One row of ``rows.jsonl``."""
RESULT_SHAPE = {"status": str, **{f"{k}?": (float, NULL) for k in (
    "steps", "samples", "wall_s", "peak_mem_mb", "final_eval_reward", "cpu_s", "load_avg", "cores", "threads",
    "calib_cpu_s", "job_workers")}, **{f"{k}?": (str, NULL) for k in ("error", "stand_in", "device", "surrogate", "warning")}}
"""A run's ``result.json`` (what ``run_row`` reads)."""
MANIFEST_SHAPE = {"runs?": {"*": dict}, "command?": [str], "command_line?": str, "started?": (str, NULL),
                  "resumed?": [dict], "stand_ins?": [str], "jobs?": (int, NULL), "processes?": (int, NULL),
                  "plan?": {"eval?": dict, "tuned?": ({"file?": str, "files?": {"*": str}, "methods?": dict}, NULL)}}
"""A results folder's ``manifest.json`` (what --resume, the report and the regression gate read)."""


def cores() -> int:
    """CPU cores this process may run on (its affinity mask; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak: CUDA max allocated on a GPU, else peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Recorder:
    """Collects one run's rows; knows the run's identity columns, its counters and its peak memory."""

    def __init__(self, identity: dict, device: torch.device, rows: list[dict] | None = None, peak_mb: float = 0.0,
                 log: Path | None = None):
        self.identity = identity
        self.device = device
        self.rows: list[dict] = list(rows or [])
        self.log = log
        """Where rows are appended as they are recorded (the main process's ``rows.jsonl``); None: memory only."""
        self.step, self.samples, self.wall_s = 0, 0, 0.0
        self.cpu_s = 0.0
        """Process CPU seconds (all threads) spent in training steps: unlike wall_s, a busy machine cannot inflate it."""
        self.load_max: float | None = None
        """The highest 1-minute load average seen at a training step."""
        self._peak_before = peak_mb
        self.tracker = None
        """An experiment tracker mirroring every recorded row (``bench.harness.tracking``); None: none."""

    def note_load(self) -> None:
        load = load_average()
        if load is not None:
            self.load_max = load if self.load_max is None else max(self.load_max, load)

    @property
    def peak_mb(self) -> float:
        return max(self._peak_before, peak_memory_mb(self.device))

    def add(self, split: str, metrics: dict[str, float]) -> None:
        new = [{**self.identity, "step": self.step, "samples": self.samples, "wall_s": round(self.wall_s, 6),
                "split": split, "metric": name, "value": float(value), "peak_mem_mb": round(self.peak_mb, 3),
                "cpu_s": round(self.cpu_s, 6)}
               for name, value in metrics.items() if name != "samples" and isinstance(value, (int, float))]
        self.rows += new
        if self.log is not None and new:
            with open(self.log, "a") as f:
                f.write("".join(json.dumps(row) + "\n" for row in new))
        if self.tracker is not None and new:
            self.tracker.log(split, metrics, dict(samples=self.samples, wall_s=self.wall_s, cpu_s=self.cpu_s,
                                                  peak_mem_mb=self.peak_mb), self.step)

    def compact(self) -> None:
        """Replace the log with exactly this run's rows (drops rows of an earlier attempt past its checkpoint)."""
        if self.log is not None:
            write_rows(self.log, self.rows)

    def last(self, split: str, metric: str) -> float | None:
        for row in reversed(self.rows):
            if row["split"] == split and row["metric"] == metric:
                return row["value"]
        return None


def write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)))


def read_rows(path: Path) -> list[dict]:
    """The rows in a ``rows.jsonl``: undecodable lines (a torn last line) and rows unlike ``ROW_SHAPE`` (a value of
    the wrong type) skipped, a (step, split, metric) recorded twice (a step replayed after a resume) kept once, the
    latest."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    latest: dict[tuple, dict] = {}
    for line in lines:
        try:
            row = json.loads(line)
            check_shape(row, ROW_SHAPE, ROWS, "")
            key = (row["step"], row["split"], row["metric"])
        except ValueError:  # UsageError included
            continue
        latest.pop(key, None)
        latest[key] = row
    return list(latest.values())


def counters(rows: list[dict]) -> dict:
    """steps, samples and training seconds of the last recorded training step (for a worker that died)."""
    train = [r for r in rows if r["split"] == "train"]
    last = max(train, key=lambda r: r["step"], default=None)
    if last is None:
        return dict(steps=0, samples=0, wall_s=0.0)
    peak = max(r.get("peak_mem_mb") or 0.0 for r in rows)
    return dict(steps=last["step"], samples=last["samples"], wall_s=last["wall_s"], peak_mem_mb=peak or None)


def is_finite(*values: float) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def write_tables(out: Path, rows: list[dict], runs: list[dict]) -> None:
    """runs.csv, metrics.parquet and metrics.csv, each written atomically (a failed write leaves the earlier file),
    rows de-duplicated."""
    import pandas as pd

    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics = metrics.drop_duplicates(subset=["run_id", "step", "split", "metric"], keep="last")
    metrics = metrics.sort_values(["run_id", "split", "step", "metric"], kind="stable").reset_index(drop=True)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    atomic_write(out / "runs.csv", lambda tmp: runs_df.to_csv(tmp, index=False))
    atomic_write(out / "metrics.parquet", lambda tmp: metrics.to_parquet(tmp, index=False))
    atomic_write(out / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))


def write_manifest(out: Path, manifest: dict) -> None:
    try:
        write_json(out / "manifest.json", manifest)
    except OSError as exc:
        raise OutputError(f"cannot write {out / 'manifest.json'} ({exc.strerror or exc}); free space and retry") from None


def write_results(out: Path, runs: list, results: dict[str, dict], manifest: dict) -> list[dict]:
    """Every results file from the runs' results (a run without one, never started, is ``interrupted``): runs.csv,
    metrics.parquet/.csv, manifest.json, summary.md. A failed write (disk full) leaves the earlier file and is an
    ``OutputError`` naming it, after the other files were tried. Returns the rows of runs.csv."""
    from datetime import datetime, timezone

    for spec in runs:
        if spec.run_id not in results:
            rows = read_rows(Path(out) / "runs" / spec.run_id / ROWS)
            results[spec.run_id] = dict(status="interrupted", error="not started: the runner was stopped",
                                        **counters(rows))
    per_run = {spec.run_id: read_rows(Path(out) / "runs" / spec.run_id / ROWS)  # or, for results written before
               or list(results[spec.run_id].get("rows", [])) for spec in runs}     # rows.jsonl existed, theirs
    rows = [row for spec in runs for row in per_run[spec.run_id]]
    table = [run_row(spec, dict(results[spec.run_id], rows=per_run[spec.run_id])) for spec in runs]
    for spec, row in zip(runs, table):  # the summary's per-image noise (not columns of runs.csv)
        row.update(per_image_rewards(Path(out) / "runs" / spec.run_id))
    manifest.update(finished=datetime.now(timezone.utc).isoformat(),
                    stand_ins=sorted({r["stand_in"] for r in table if r["stand_in"]}))
    failures = []
    for name, write in (("tables", lambda: write_tables(out, rows, table)),
                        ("manifest.json", lambda: write_json(out / "manifest.json", manifest)),
                        ("summary.md", lambda: write_text(out / "summary.md", summary_markdown(table)))):
        try:
            write()
        except OSError as exc:
            failures.append(f"{exc.filename or name}: {exc.strerror or exc}")
    if failures:
        raise OutputError(f"cannot write results in {str(out)!r} ({failures[0]}); the files written before are "
                          "intact: free space, then run again with --resume")
    return table


def per_image_rewards(run_dir: Path) -> dict:
    """``start_images`` / ``final_images``: the per-image rewards of a run's first and last evaluation
    (``eval_first.json``, ``eval_last.json``), where they were written."""
    found = {}
    for key, name in (("start_images", "eval_first.json"), ("final_images", "eval_last.json")):
        if (run_dir / name).is_file():
            try:  # the runner never stops on them: a damaged or hand-edited file only leaves the noise out
                values = read_json(run_dir / name, "", EVAL_SHAPE)["reward"]
            except UsageError:
                continue
            if values:
                found[key] = values
    return found


def start_eval(rows: list[dict]) -> float | None:
    """The run's step-0 evaluation reward (the base model on the evaluation images), if recorded."""
    first = [r for r in rows if r.get("split") == "eval" and r.get("metric") == "reward_mean" and r.get("step") == 0]
    return first[-1]["value"] if first else None


def run_row(spec, result: dict) -> dict:
    """One row of runs.csv from a run's spec (``RunSpec``) and its worker's result."""
    steps = result.get("steps") or 0
    wall = result.get("wall_s") or 0.0
    cap = spec.budget.max_memory_gb
    peak = result.get("peak_mem_mb")
    cpu, load, n_cores = result.get("cpu_s"), result.get("load_avg"), result.get("cores")
    cpu_step, calib = median_step_cpu(result.get("rows") or []), result.get("calib_cpu_s")
    return dict(
        run_id=spec.run_id, method=spec.method, reward=spec.reward, model=spec.model, seed=spec.seed,
        status=result["status"], steps=steps, samples=result.get("samples") or 0, wall_s=round(wall, 4),
        peak_mem_mb=None if peak is None else round(peak, 2), final_eval_reward=result.get("final_eval_reward"),
        error=result.get("error", ""), stand_in=result.get("stand_in", ""),
        sec_per_step=round(wall / steps, 4) if steps else None,
        memory_overrun=bool(cap and peak and peak > cap * 1024), device=result.get("device", ""),
        surrogate=result.get("surrogate", ""),
        precision=getattr(spec, "precision", "fp32"), protocol=getattr(spec, "protocol", "matched"),
        cpu_s=None if cpu is None else round(cpu, 4), cpu_per_step=cpu_step,
        calib_cpu_s=calib, cpu_per_step_norm=round(cpu_step / calib, 4) if cpu_step and calib else None,
        load_avg=None if load is None else round(load, 2), cores=n_cores, threads=result.get("threads"),
        eval_guidance=spec.eval.config.guidance_scale, eval_steps=spec.eval.config.steps,
        eval_true_cfg=getattr(spec.eval.config, "true_cfg_scale", 1.0),
        start_eval_reward=start_eval(result.get("rows") or []),  # for the summary; not a column of runs.csv
        warning="; ".join(w for w in (result.get("warning", ""),
                                      timing_warning(result["status"], steps, spec.budget.max_steps, load, n_cores,
                                                     own_load(result))) if w),
    )


def median_step_cpu(rows: list[dict]) -> float | None:
    """The median over optimizer steps of each step's CPU seconds (from the cumulative ``cpu_s`` of the training
    rows): a load spike during one step moves it less than a mean."""
    cumulative = {r["step"]: r["cpu_s"] for r in rows if r.get("split") == "train" and r.get("cpu_s") is not None}
    values = [cumulative[s] for s in sorted(cumulative)]
    steps = [b - a for a, b in zip([0.0] + values, values)]
    return round(statistics.median(steps), 4) if steps else None


def own_load(result: dict) -> int:
    """The load the job itself makes: its workers running at once (processes included) times their torch threads."""
    return int(result.get("job_workers") or 1) * int(result.get("threads") or 1)


def busy_text(load: float | None, n_cores: int | None, own: int = 1) -> str:
    """"machine busy: ..." when other processes competed for the cores: the load above the cores *and* at least one
    runnable process beyond the job's own ``own`` (its workers at once x their threads); "" otherwise."""
    if load is None or not n_cores:
        return ""
    if round(load, 1) > n_cores and load - own >= 1:
        return f"machine busy: load {load:.1f} on {n_cores} cores, {load - own:.1f} beyond this job's own {own} thread(s)"
    return ""


def timing_warning(status: str, steps: int, max_steps: int | None, load: float | None, n_cores: int | None,
                   own: int = 1) -> str:
    """Why a run's timings may mislead: it stopped on its time budget short of its step budget, or other processes
    kept the machine busier than its cores (``busy_text``: wall-clock then measures contention; compare
    cpu_per_step instead)."""
    notes = []
    if status == "max_seconds" and max_steps and steps < max_steps:
        notes.append(f"stopped on --max-seconds after {steps} of {max_steps} steps")
    busy = busy_text(load, n_cores, own)
    if busy:
        notes.append(f"{busy} (wall-clock inflated; see cpu_per_step)")
    return "; ".join(notes)
