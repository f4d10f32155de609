"""Loading results folders (what ``bench.run`` writes) into one tidy pair of tables: used by report, compare and
interpolate alike."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.pooling import check_seeds_poolable, pool_repeat
from bench.analysis.settings import eval_setting, fmt_setting, guidance_text, true_cfg  # noqa: F401 (re-exported)
from bench.core.errors import UsageError
from bench.core.files import check_shape
# the tables' schema and the shapes of the files read back live in one place, the recorder
from bench.harness.recorder import MANIFEST_SHAPE, METRIC_COLUMNS, RESULT_SHAPE, ROWS, RUN_COLUMNS, read_rows
from rewards import higher_is_better as reward_higher_is_better  # noqa: F401 (the report modules' name for it)


@dataclass
class Results:
    """One or more results folders, concatenated."""

    runs: pd.DataFrame
    """One row per run (runs.csv; runs seen only in metrics get status "unknown")."""
    metrics: pd.DataFrame
    """Long-format metrics (metrics.parquet or metrics.csv)."""
    sources: dict[str, Path]
    """run_id -> the results folder it came from."""
    stand_ins: list[str] = field(default_factory=list)
    """Every stand-in description found in manifests, runs and metrics."""
    problems: list[str] = field(default_factory=list)
    """Damage found while reading (truncated or binary tables, rows dropped), one line each."""
    run_dirs: dict[str, Path] = field(default_factory=dict)
    """run_id -> its run folder, where it differs from ``source/runs/run_id`` (a pooled repeat)."""

    def run_dir(self, run_id: str) -> Path:
        return self.run_dirs.get(run_id) or self.sources[run_id] / "runs" / run_id

REQUIRED = {"metrics": ("run_id", "step", "split", "metric", "value"), "runs": ("run_id", "status")}
"""Columns without which a table says nothing; rows missing one of their values are dropped (and said so)."""
RUN_NUMBERS = ("steps", "samples", "wall_s", "peak_mem_mb", "final_eval_reward", "sec_per_step", "seed", "cpu_s",
               "cpu_per_step", "load_avg", "cores", "threads", "calib_cpu_s", "cpu_per_step_norm", "eval_guidance",
               "eval_steps", "eval_true_cfg")
"""runs.csv's numeric columns: text in one is said (one line) and read as missing."""


def _read_metrics(directory: Path, problems: list[str]) -> pd.DataFrame | None:
    parquet, csv = directory / "metrics.parquet", directory / "metrics.csv"
    if parquet.is_file():
        try:
            frame = _check(pd.read_parquet(parquet), parquet, "metrics", problems)
        except Exception as exc:  # a truncated parquet (crashed run): fall back to the CSV
            problems.append(f"{parquet} cannot be read ({type(exc).__name__}); using metrics.csv")
        else:
            return _rows_if_empty(frame, parquet, directory, problems)
    return _rows_if_empty(_read_csv(csv, "metrics", problems), csv, directory, problems)


def _rows_if_empty(frame: pd.DataFrame | None, path: Path, directory: Path, problems: list[str]):
    """``frame``; when the metrics file holds no rows (emptied, cut to 0 bytes) while the run folders' ``rows.jsonl``
    do, the table rebuilt from them, said in one line (a 0-byte file with no rows anywhere: said too)."""
    if frame is None or len(frame) or not path.is_file():
        return frame
    rows = [row for log in sorted(directory.glob(f"runs/*/{ROWS}")) for row in read_rows(log)]
    size = path.stat().st_size
    if rows:
        problems.append(f"{path} holds no rows ({size} bytes) but the runs' {ROWS} hold {len(rows)}: the table is "
                        "rebuilt from them (bench.run --resume with the same flags writes it again)")
        return pd.DataFrame(rows, columns=METRIC_COLUMNS)
    if not size:
        problems.append(f"{path} is empty (0 bytes) and no run folder holds {ROWS}: there are no metrics to show")
    return frame


def _read_runs(directory: Path, problems: list[str]) -> pd.DataFrame | None:
    return _read_csv(directory / "runs.csv", "runs", problems)


def _read_csv(path: Path, kind: str, problems: list[str]) -> pd.DataFrame | None:
    """A results CSV; damage (binary, cut mid-row, partial header, unparsable) is added to ``problems``."""
    import io

    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
        if "\0" in text:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        problems.append(f"{path} is not a text file (damaged); it is ignored")
        return None
    if text and not text.endswith("\n"):
        problems.append(f"{path} ends mid-row (truncated); its last row is dropped")
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame(columns=METRIC_COLUMNS if kind == "metrics" else RUN_COLUMNS)
    try:
        frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, ValueError) as exc:
        problems.append(f"{path} cannot be parsed ({str(exc).splitlines()[0]}); it is ignored")
        return None
    return _check(frame, path, kind, problems)


def _check(frame: pd.DataFrame, path: Path, kind: str, problems: list[str]) -> pd.DataFrame | None:
    missing = [c for c in REQUIRED[kind] if c not in frame.columns]
    if missing:
        problems.append(f"{path} has no column {', '.join(missing)} (damaged header); it is ignored")
        return None
    bad = frame[[c for c in REQUIRED[kind] if c != "value"]].isna().any(axis=1)  # a value may be NaN (diverged)
    for col in ("step", "value") if kind == "metrics" else ():
        text = frame[col].astype(str).str.strip().str.lower()
        bad |= pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna() & (text != "nan")
    if bad.any():
        problems.append(f"{path}: {int(bad.sum())} damaged row(s) dropped")
        frame = frame[~bad].reset_index(drop=True)
    for col in [c for c in RUN_NUMBERS if c in frame.columns] if kind == "runs" else ():
        text = frame[col].astype(str).str.strip().str.lower()
        wrong = pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna() & (text != "nan")
        if wrong.any():  # a hand edit: the value is read as missing, never as text inside arithmetic
            problems.append(f"{path} (column {col}): {int(wrong.sum())} value(s) not a number, e.g. "
                            f"{frame[col][wrong].iloc[0]!r}; read as missing")
    return frame

def from_manifest(directory: Path, problems: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The tables of a folder whose runner died before writing them (SIGKILL), rebuilt in memory from
    ``manifest.json`` and each run's ``rows.jsonl`` / ``result.json``, the way the runner writes them; (None, None)
    when the folder has no readable manifest."""
    from bench.harness.recorder import counters, run_row
    from bench.harness.spec import RunSpec

    manifest = read_manifest(directory)  # a hand-edited value of the wrong type: a UsageError naming it
    try:
        specs = {run_id: RunSpec.from_dict(spec) for run_id, spec in manifest["runs"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):  # no manifest, or no run specs: no results folder
        return None, None
    rows, table = [], []
    for run_id, spec in specs.items():
        run_rows = read_rows(directory / "runs" / run_id / ROWS)
        path = directory / "runs" / run_id / "result.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            result = dict(status="unknown", error="the runner stopped before this run ended", **counters(run_rows))
        check_shape(result, RESULT_SHAPE, repr(str(path)), "restore it, or delete it to read the run as unknown")
        rows += run_rows
        table.append(run_row(spec, dict(result, rows=run_rows)))
    problems.append(f"{directory}: no runs.csv or metrics (the runner was stopped before writing them); read from "
                    "manifest.json and each run's rows: run bench.run again with the same flags and --resume to "
                    "finish it")
    return pd.DataFrame(rows, columns=METRIC_COLUMNS), pd.DataFrame(table, columns=RUN_COLUMNS)


def _clean_stand_in(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()

def load_results(directories: list[str | Path]) -> Results:
    """Read and concatenate results folders. A run id present in two folders is pooled as a repeat (``id#2``) when
    both were made with the same configuration (e.g. the same command run twice), and refused otherwise."""
    if not directories:
        raise UsageError("no results folder given; pass one or more folders written by python -m bench.run")
    runs_parts, metric_parts, sources, stand_ins, problems, run_dirs = [], [], {}, [], [], {}
    seen = set()
    for entry in directories:
        directory = Path(entry)
        if not directory.is_dir():
            raise UsageError(f"results folder {str(directory)!r} does not exist; pass a folder written by bench.run")
        if directory.resolve() in seen:
            raise UsageError(f"results folder {str(directory)!r} is given twice; pass each folder once")
        seen.add(directory.resolve())
        found = len(problems)
        metrics, runs = _read_metrics(directory, problems), _read_runs(directory, problems)
        if metrics is None and runs is None and not (directory / "runs.csv").exists():
            metrics, runs = from_manifest(directory, problems)
        if metrics is None and runs is None:
            damage = "; ".join(problems[found:])
            raise UsageError(f"{str(directory)!r} holds nothing usable ({damage}); re-run or --resume it" if damage else
                             f"{str(directory)!r} is not a results folder (no runs.csv or metrics.csv/parquet)")
        metrics = metrics if metrics is not None else pd.DataFrame(columns=METRIC_COLUMNS)
        for col in METRIC_COLUMNS:
            if col not in metrics.columns:
                metrics[col] = np.nan if col not in ("stand_in",) else ""
        runs = with_identity(runs, metrics, directory / "runs.csv", problems) if runs is not None else None
        runs = runs if runs is not None else pd.DataFrame(columns=RUN_COLUMNS)
        known = set(runs["run_id"].astype(str)) if len(runs) else set()
        extra = metrics[~metrics["run_id"].astype(str).isin(known)]
        if len(extra):  # runs the runner never finished writing into runs.csv
            first = extra.groupby("run_id", as_index=False).first()
            rows = first[["run_id", "method", "reward", "model", "seed", "stand_in"]].copy()
            rows["status"] = "unknown"
            runs = pd.concat([runs, rows], ignore_index=True)
        for col in RUN_COLUMNS:
            if col not in runs.columns:
                runs[col] = np.nan
        runs["run_id"], metrics["run_id"] = runs["run_id"].astype(str), metrics["run_id"].astype(str)
        manifest = read_manifest(directory)
        stand_ins += [str(s) for s in manifest.get("stand_ins", []) or []]
        runs = with_eval_settings(runs, manifest)  # before pooling renames a repeat's id away from its spec's
        runs["job_workers"] = job_workers(manifest)
        for run_id in list(runs["run_id"]):
            if run_id in sources:
                pooled = pool_repeat(run_id, sources, directory)
                runs.loc[runs["run_id"] == run_id, "run_id"] = pooled
                metrics.loc[metrics["run_id"] == run_id, "run_id"] = pooled
                run_dirs[pooled] = directory / "runs" / run_id
                run_id = pooled
            sources[run_id] = directory
        runs_parts.append(runs)
        metric_parts.append(metrics)
    runs = pd.concat(runs_parts, ignore_index=True)
    metrics = pd.concat(metric_parts, ignore_index=True)
    if len(directories) > 1:  # one folder is one command: its seeds share their settings
        check_seeds_poolable(runs, lambda r: run_dirs.get(r) or sources[r] / "runs" / r)
    for frame in (runs, metrics):
        frame["run_id"] = frame["run_id"].astype(str)
        frame["stand_in"] = frame["stand_in"].map(_clean_stand_in)
        for col in ("method", "reward", "model"):
            frame[col] = frame[col].astype(str)
    for col in (*RUN_NUMBERS, "job_workers"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    runs["warning"] = runs["warning"].fillna("").astype(str)
    runs["warning"] = [busy_rewritten(w, load, n, own) for w, load, n, own in
                       zip(runs["warning"], runs["load_avg"], runs["cores"], own_load(runs))]
    for col in ("step", "samples", "wall_s", "value", "peak_mem_mb", "seed", "cpu_s"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce")
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    stand_ins += [s for s in runs["stand_in"].tolist() + metrics["stand_in"].tolist() if s]
    return Results(runs=runs, metrics=metrics, sources=sources, stand_ins=sorted(set(stand_ins)), problems=problems,
                   run_dirs=run_dirs)

IDENTITY = ("method", "reward", "model", "seed")
"""What a run is: the columns every table groups by."""


def with_identity(runs: pd.DataFrame, metrics: pd.DataFrame, path: Path, problems: list[str]) -> pd.DataFrame:
    """runs.csv with its identity columns whole: a column or value missing (a hand edit) is read from the run's
    metrics rows, said in one line; a run whose identity no table holds is dropped, said too."""
    missing = [c for c in IDENTITY if c not in runs.columns]
    runs = runs.copy()
    for col in missing:
        runs[col] = np.nan
    holes = runs[list(IDENTITY)].isna().any(axis=1)
    if not holes.any():
        return runs
    known = metrics.dropna(subset=list(IDENTITY)).groupby(metrics["run_id"].astype(str)).first()
    for col in IDENTITY:
        runs[col] = runs[col].where(runs[col].notna(), runs["run_id"].astype(str).map(known[col]))
    lost = runs[list(IDENTITY)].isna().any(axis=1)
    what = f"has no column {', '.join(missing)}" if missing else f"lacks {', '.join(IDENTITY)} in some rows"
    problems.append(f"{path} {what} (a hand edit?); read from metrics" + (
        f"; {int(lost.sum())} run(s) no table identifies dropped" if lost.any() else ""))
    return runs[~lost].reset_index(drop=True)


def read_manifest(directory: Path) -> dict:
    """A results folder's manifest.json as a dict; {} when it is missing or not JSON (a crashed runner may leave a
    partial one; runs.csv still says what the report needs). A value of the wrong type in it (a hand edit) is a
    ``UsageError`` naming the file and key (``MANIFEST_SHAPE``)."""
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    check_shape(manifest, MANIFEST_SHAPE, repr(str(path)), "restore it, or delete it (runs.csv says what a report needs)")
    return manifest


def _eval_config(spec) -> dict:
    """The evaluation config of a run spec or plan (``eval.config``; flat ``eval`` keys where it does not nest)."""
    block = spec.get("eval", {}) if isinstance(spec, dict) else {}
    if not isinstance(block, dict):
        return {}
    nested = block.get("config")
    return {**{k: v for k, v in block.items() if k != "config"}, **(nested if isinstance(nested, dict) else {})}


def with_eval_settings(runs: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """``eval_guidance``, ``eval_steps``, ``eval_true_cfg`` of every run: runs.csv's own columns (a method's pinned
    setting, e.g. DiffusionNFT's CFG-free guidance 1.0), else the run's spec in manifest.json (``runs.<id>.eval.config``),
    else the invocation's (``plan.eval.config``); NaN where none says (true CFG: 1.0, none, as older folders ran)."""
    runs = runs.copy()
    specs = manifest.get("runs", {}) if isinstance(manifest.get("runs"), dict) else {}
    shared = _eval_config(manifest.get("plan"))
    for column, key, absent in (("eval_guidance", "guidance_scale", None), ("eval_steps", "steps", None),
                                ("eval_true_cfg", "true_cfg_scale", 1.0)):
        values = pd.to_numeric(runs[column], errors="coerce") if column in runs else pd.Series(np.nan, runs.index)
        fallback = [_eval_config(specs.get(str(run_id))).get(key, shared.get(key, absent)) for run_id in runs["run_id"]]
        fallback = pd.to_numeric(pd.Series(fallback, index=runs.index, dtype=object), errors="coerce")
        runs[column] = values.fillna(fallback)
    return runs


def _flag(command, name: str) -> int | None:
    """The integer after ``--name`` (or ``--name=N``) in a recorded command line; None when absent."""
    for i, arg in enumerate(command):
        text = str(arg)
        value = text.split("=", 1)[1] if text.startswith(f"--{name}=") else (
            command[i + 1] if text == f"--{name}" and i + 1 < len(command) else None)
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def job_workers(manifest: dict) -> int:
    """The workers a job ran at once: ``jobs`` (capped by its runs) x ``processes``, from the manifest's own keys
    when it records them, else from its recorded command line (``--jobs``, ``--processes``); 1 when unknown."""
    command = manifest.get("command") if isinstance(manifest.get("command"), list) else []
    jobs = manifest.get("jobs") or _flag(command, "jobs") or 1
    processes = manifest.get("processes") or _flag(command, "processes") or 1
    n_runs = len(manifest.get("runs") or {}) if isinstance(manifest.get("runs"), dict) else 0
    return int(max(1, min(int(jobs), n_runs) if n_runs else int(jobs)) * max(1, int(processes)))


def own_load(runs: pd.DataFrame) -> list[int]:
    """The load each run's job made itself: its workers running at once x each worker's torch threads."""
    workers = pd.to_numeric(runs.get("job_workers", 1), errors="coerce")
    threads = pd.to_numeric(runs.get("threads", 1), errors="coerce")
    workers = workers.fillna(1) if isinstance(workers, pd.Series) else pd.Series(1, runs.index)
    threads = threads.fillna(1) if isinstance(threads, pd.Series) else pd.Series(1, runs.index)
    return [int(max(1, w)) * int(max(1, t)) for w, t in zip(workers, threads)]


BUSY_NOTE = re.compile(r"machine busy: .*?\(wall-clock inflated[^)]*\)|machine busy: [^;]*")
"""A busy-machine note in runs.csv's ``warning`` (older runners wrote it without subtracting the job's own load)."""


def busy_note(load, n_cores, own: int) -> str:
    """The busy-machine warning of one run: load above the cores *and* at least one runnable process beyond the
    job's own ``own`` (workers x threads), i.e. other processes competed for the cores; "" otherwise."""
    from bench.harness.recorder import busy_text  # the runner's own rule, applied again to older folders

    if load is None or n_cores is None or pd.isna(load) or pd.isna(n_cores):
        return ""
    busy = busy_text(float(load), int(n_cores), own)
    return f"{busy} (wall-clock inflated; see cpu_per_step)" if busy else ""


def busy_rewritten(warning: str, load, n_cores, own: int) -> str:
    """``warning`` with its busy-machine note recomputed by ``busy_note`` (the other notes kept): a folder written
    before the runner subtracted its own workers flagged a job that only loaded the machine itself."""
    kept = [w.strip(" ;") for w in BUSY_NOTE.sub("", warning or "").split("; ")]
    notes = [w for w in kept if w] + [busy_note(load, n_cores, own)]
    return "; ".join(w for w in notes if w)



def add_labels(runs: pd.DataFrame, metrics: pd.DataFrame) -> None:
    """``label`` column: the method, plus the model when a report mixes several models, plus the evaluation
    guidance (``@guidance g[, true CFG c]``: ``guidance_text``) where one method of one model was evaluated at several."""
    several = runs["model"].nunique() > 1
    for frame in (runs, metrics):
        frame["label"] = (frame["method"] + " [" + frame["model"] + "]") if several else frame["method"]
    if "eval_guidance" not in runs:
        return
    text = [guidance_text(g, c) for g, c in zip(runs["eval_guidance"], true_cfg(runs))]
    known = pd.Series(text, runs.index).where(runs["eval_guidance"].notna())
    split = {label for label, g in known.groupby(runs["label"]) if g.nunique() > 1}
    if split:
        cfg = {r: f"{label} @{t}" for r, label, t in zip(runs["run_id"], runs["label"], text) if label in split}
        for frame in (runs, metrics):
            frame["label"] = [cfg.get(r, label) for r, label in zip(frame["run_id"], frame["label"])]


def eval_curves(results: Results) -> pd.DataFrame:
    """Evaluation reward_mean rows (training rows where a run has no evaluation), with a ``curve_split`` column."""
    m = results.metrics
    m = m[m["metric"] == "reward_mean"]
    ev = m[m["split"] == "eval"].assign(curve_split="eval")
    missing = set(m["run_id"]) - set(ev["run_id"])
    tr = m[(m["split"] == "train") & m["run_id"].isin(missing)].assign(curve_split="train")
    return pd.concat([ev, tr], ignore_index=True)
