"""``python -m bench.compare NEW_DIR --baseline BASELINE``: regression gate for smoke benchmarks.

Per (method, reward, model) it compares the new results folder against a baseline (a results folder or a JSON
file written by ``--write-baseline``):

- final eval reward: a regression when the new mean is worse than the baseline mean by more than
  ``max(reward_abs_tol, reward_rel_tol * |baseline|, reward_sigmas * SE)``, SE = sqrt(s_b^2/n_b + s_n^2/n_n) the
  standard error of the difference across seeds (a side with one seed borrows the other side's spread);
  "worse" follows the reward's ``higher_is_better``;
- time per step and peak memory: a regression when new / baseline exceeds ``time_tol`` / ``mem_tol``. Time is
  the process's CPU seconds per optimizer step divided by the calibration workload's CPU seconds (``bench.core.
  calibrate``), measured in every worker of the job; the gate divides by the *median* calibration over the job's
  runs (``job_normalised``: one worker's calibration read 1.2x its neighbours' at the same moment, which alone
  moved its ratio to the 1.5x limit), so a machine that is slower per CPU second, or busier, moves both alike (CPU
  seconds alone differed 1.4x between two machines of the same kind, quiet). Un-normalised CPU seconds are
  compared where a side has no calibration (an older baseline), wall-clock s/step where a side lacks CPU time; the
  check says which. CPU time is itself far less inflated by other processes than wall-clock (a run on 2 cores at
  load 8 took 18x the wall time at the same CPU time). The absolute figures stay in the table.
  CPU seconds depend on the number of torch threads (two threads spend CPU time on each other: 0.37 CPU s/step
  on 2 threads vs 0.26 on 1 for the same rwr smoke step), so both sides must have run with the same thread count
  (``threads`` in runs.csv); a mismatch fails the check and names the fix (CI runs the smoke with
  ``OMP_NUM_THREADS=1``, where CPU s/step varied by under 15 % between an idle machine and load 10);
- a (method, reward, model) in the baseline with no finished run in the new folder is a regression; one that is
  new gets no verdict.

Prints a markdown table; exit code 0 when nothing regressed, 1 on a regression, 2 on bad input.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.errors import UsageError
from bench.core.files import NULL, check_shape, read_json
from bench.analysis.results import load_results, reward_higher_is_better
from bench.core.text import fmt, markdown_table
from bench.harness.recorder import COMPLETED

KEY = ["method", "reward", "model"]
BASELINE_FORMAT = "bench-baseline/1"
BASELINE_SHAPE = {"entries": [{"method": str, "reward": str, "model": str, "n": (float, NULL),
                               "reward_mean": (float, NULL), "threads?": (str, float, NULL),
                               **{f"{k}?": (float, NULL) for k in ("runs", "reward_std", "sec_per_step", "cpu_per_step",
                                  "calib_cpu_s", "cpu_per_step_norm", "load_avg", "peak_mem_mb")}}]}
"""What a baseline JSON file's entries hold (``bench.core.files.check_shape``)."""


@dataclass
class Tolerance:
    """How far a new run may fall behind the baseline before the gate fails."""

    reward_sigmas: float = 3.0
    """Allowed reward drop in standard errors of the difference across seeds."""
    reward_rel_tol: float = 0.05
    """Allowed reward drop as a fraction of |baseline reward| (covers single-seed runs)."""
    reward_abs_tol: float = 0.0
    """Allowed reward drop in reward units, at least."""
    time_tol: float = 2.0
    """Largest allowed ratio new / baseline of CPU seconds per step (wall-clock where a side lacks CPU time)."""
    mem_tol: float = 2.0
    """Largest allowed ratio new / baseline of peak memory."""

    def __post_init__(self):
        for name in ("reward_sigmas", "reward_rel_tol", "reward_abs_tol"):
            if getattr(self, name) < 0 or math.isnan(getattr(self, name)):
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("time_tol", "mem_tol"):
            if not getattr(self, name) >= 1:
                raise UsageError(f"--{name.replace('_', '-')} is a ratio and must be >= 1, got {getattr(self, name)}")


def _count(value) -> int:
    """A run count from a table or baseline JSON (None / NaN: 0)."""
    return int(value) if value is not None and pd.notna(value) else 0


def _threads(g: pd.DataFrame) -> str:
    """The torch thread counts a group's runs used, e.g. "1" or "1,2" ("" where not recorded)."""
    values = sorted({int(t) for t in g.get("threads", pd.Series(dtype=float)).dropna()})
    return ",".join(str(t) for t in values)


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, reward, model): seeds with a final eval, its mean and std, mean s/step and peak memory
    (``job_normalised`` adds the gate's normalised CPU s/step)."""
    rows = []
    for key, g in runs.groupby(KEY, sort=True):
        # Only runs that finished their budget count: a run that failed early keeps its step-0 evaluation, which
        # equals the base model's and would hide the failure.
        finals = g[g["status"].isin(COMPLETED)]["final_eval_reward"].dropna()
        rows.append(
            dict(
                zip(KEY, key),
                runs=len(g),
                n=len(finals),
                reward_mean=float(finals.mean()) if len(finals) else float("nan"),
                reward_std=float(finals.std(ddof=1)) if len(finals) > 1 else float("nan"),
                sec_per_step=float(g["sec_per_step"].mean()),
                cpu_per_step=float(g["cpu_per_step"].mean()),
                calib_cpu_s=float(g["calib_cpu_s"].mean()) if "calib_cpu_s" in g else float("nan"),
                load_avg=float(g["load_avg"].max()),
                threads=_threads(g),
                peak_mem_mb=float(g["peak_mem_mb"].mean()),
                status=", ".join(f"{k}: {v}" for k, v in sorted(g["status"].value_counts().items())),
                stand_in="; ".join(sorted({s for s in g["stand_in"] if s})),
            )
        )
    return pd.DataFrame(rows, columns=KEY + ["runs", "n", "reward_mean", "reward_std", "sec_per_step",
                                             "cpu_per_step", "calib_cpu_s", "load_avg", "threads", "peak_mem_mb",
                                             "status", "stand_in"])  # fmt: skip


def job_normalised(summary: pd.DataFrame) -> pd.DataFrame:
    """``cpu_per_step_norm`` = CPU s/step / the median calibration over the summary's rows (one job, one machine):
    the machine's speed without one worker's calibration noise. Rows stay un-normalised where none has one."""
    calib = pd.to_numeric(summary.get("calib_cpu_s", pd.Series(dtype=float)), errors="coerce").dropna()
    calib = calib[calib > 0]
    out = summary.copy()
    out["cpu_per_step_norm"] = out["cpu_per_step"] / float(calib.median()) if len(calib) else np.nan
    return out


def load_summary(source: str | Path) -> pd.DataFrame:
    """A baseline or new summary from a results folder or a baseline JSON file, normalised by ``job_normalised``."""
    path = Path(source)
    if path.is_dir():  # damage read around (tables rebuilt from the runs' rows, ...) is said, one line each
        results = load_results([path])
        for problem in results.problems:
            print(f"warning: {problem}", file=sys.stderr)
        return job_normalised(summarize_runs(results.runs))
    if not path.is_file():
        raise UsageError(f"baseline {str(path)!r} does not exist; pass a results folder or a baseline JSON file")
    data = read_json(path, "regenerate the baseline with --write-baseline")
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise UsageError(f"{str(path)!r} is not a {BASELINE_FORMAT} file; write one with --write-baseline")
    check_shape(data, BASELINE_SHAPE, f"baseline {str(path)!r}", "regenerate it with --write-baseline")
    if not data["entries"]:
        raise UsageError(f"baseline {str(path)!r} holds no entries; regenerate it with --write-baseline")
    frame = pd.DataFrame(data["entries"])
    for col in ("reward_std", "sec_per_step", "cpu_per_step", "calib_cpu_s", "cpu_per_step_norm", "peak_mem_mb"):
        frame[col] = pd.to_numeric(frame.get(col, np.nan), errors="coerce")
    return job_normalised(frame)


def baseline_json(summary: pd.DataFrame, source: str) -> str:
    entries = json.loads(summary.to_json(orient="records"))
    return json.dumps({"format": BASELINE_FORMAT, "source": source, "entries": entries}, indent=2) + "\n"


def _text(x) -> str:
    return "" if is_nan(x) else str(x)


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def reward_margin(base: pd.Series, new: pd.Series, tol: Tolerance) -> float:
    """The allowed drop of the new mean below the baseline mean (see the module docstring)."""
    sb, sn = base.get("reward_std"), new.get("reward_std")
    sb = sn if is_nan(sb) else sb
    sn = sb if is_nan(sn) else sn
    se = 0.0
    if not is_nan(sb):
        se = math.sqrt(sb**2 / max(_count(base["n"]), 1) + sn**2 / max(_count(new["n"]), 1))
    return max(tol.reward_abs_tol, tol.reward_rel_tol * abs(float(base["reward_mean"])), tol.reward_sigmas * se)


def _ratio_check(new, base, limit: float) -> tuple[float, str]:
    if is_nan(new) or is_nan(base) or base <= 0:
        return float("nan"), "n/a"
    ratio = float(new) / float(base)
    return ratio, ("ok" if ratio <= limit else f"REGRESSION (>{limit:g}x)")


def time_check(new: pd.Series, base: pd.Series, limit: float) -> tuple[float, str]:
    """Calibrated CPU seconds per step new / baseline (marked "CPU/calib"); raw CPU seconds (marked "CPU", saying
    the calibration is missing) or wall-clock (marked "wall") where either side lacks the finer figure."""
    if not is_nan(new.get("cpu_per_step")) and not is_nan(base.get("cpu_per_step")):
        t_new, t_base = _text(new.get("threads")), _text(base.get("threads"))
        if t_new and t_base and t_new != t_base:
            return float("nan"), (f"CPU REGRESSION (not comparable: {t_new} torch thread(s) vs the baseline's {t_base};"
                                  f" rerun with OMP_NUM_THREADS={t_base} or rewrite the baseline)")
        if not is_nan(new.get("cpu_per_step_norm")) and not is_nan(base.get("cpu_per_step_norm")):
            ratio, verdict = _ratio_check(new.get("cpu_per_step_norm"), base.get("cpu_per_step_norm"), limit)
            return ratio, f"CPU/calib {verdict}"
        ratio, verdict = _ratio_check(new.get("cpu_per_step"), base.get("cpu_per_step"), limit)
        return ratio, f"CPU {verdict} (no calibration: machine-dependent)"
    ratio, verdict = _ratio_check(new.get("sec_per_step"), base.get("sec_per_step"), limit)
    return ratio, f"wall {verdict} (no CPU time recorded)"


def compare(new: pd.DataFrame, base: pd.DataFrame, tol: Tolerance) -> pd.DataFrame:
    """One row per (method, reward, model) of either side, with per-check verdicts and ``regression``."""
    merged = base.merge(new, on=KEY, how="outer", suffixes=("_base", "_new"), indicator=True)
    rows = []
    for _, m in merged.iterrows():
        row = {k: m[k] for k in KEY}
        b = pd.Series({k[:-5]: m[k] for k in m.index if k.endswith("_base")})
        n = pd.Series({k[:-4]: m[k] for k in m.index if k.endswith("_new")})
        row.update(base_reward=b.get("reward_mean"), new_reward=n.get("reward_mean"), margin=float("nan"),
                   time_ratio=float("nan"), mem_ratio=float("nan"), base_cpu=b.get("cpu_per_step"),
                   new_cpu=n.get("cpu_per_step"), base_calib=b.get("calib_cpu_s"), new_calib=n.get("calib_cpu_s"))  # fmt: skip
        checks = []
        if m["_merge"] == "right_only":
            row.update(reward_check="new (no baseline)", time_check="n/a", mem_check="n/a")
            row["regression"] = False
            rows.append(row)
            continue
        if m["_merge"] == "left_only":
            row.update(reward_check="REGRESSION (missing from new results)", time_check="n/a", mem_check="n/a")
            row["regression"] = True
            rows.append(row)
            continue
        base_done, new_done = _count(b.get("n")) > 0, _count(n.get("n")) > 0
        if base_done and not new_done:
            row["reward_check"] = f"REGRESSION (no finished run: {n.get('status') or 'none'})"
        elif not base_done:
            row["reward_check"] = "n/a (no baseline reward)"
        else:
            margin = reward_margin(b, n, tol)
            higher = reward_higher_is_better(str(m["reward"]))
            gain = (n["reward_mean"] - b["reward_mean"]) * (1 if higher else -1)
            row["margin"] = margin
            row["reward_check"] = "ok" if gain >= -margin else f"REGRESSION (worse by {abs(gain):.4g} > {margin:.4g})"
        row["time_ratio"], row["time_check"] = time_check(n, b, tol.time_tol)
        row["mem_ratio"], row["mem_check"] = _ratio_check(n.get("peak_mem_mb"), b.get("peak_mem_mb"), tol.mem_tol)
        checks = [row["reward_check"], row["time_check"], row["mem_check"]]
        row["regression"] = any("REGRESSION" in c for c in checks)
        rows.append(row)
    return pd.DataFrame(rows)


def render(table: pd.DataFrame) -> str:
    """The comparison as a markdown table (one row per method, reward and model)."""
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "method": r["method"],
                "reward": r["reward"],
                "model": r["model"],
                "final eval reward base → new (margin)": f"{fmt(r['base_reward'], spec='.4g')} → {fmt(r['new_reward'], spec='.4g')} (±{fmt(r['margin'], spec='.4g')})",
                "reward check": r["reward_check"],
                "time/step new/base": f"{fmt(r['time_ratio'], spec='.2f', suffix='x')} {r['time_check']}",
                "CPU s/step base → new (calib s)": f"{fmt(r.get('base_cpu'), spec='.3f')} ({fmt(r.get('base_calib'), spec='.3f')}) → "
                                                   f"{fmt(r.get('new_cpu'), spec='.3f')} ({fmt(r.get('new_calib'), spec='.3f')})",
                "peak mem new/base": f"{fmt(r['mem_ratio'], spec='.2f', suffix='x')} {r['mem_check']}",
            }
        )
    return markdown_table(pd.DataFrame(rows))
