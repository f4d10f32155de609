"""What ``bench.tune`` scores a candidate's run by (``--score``): ``final``, its last evaluation's reward, or
``late``, the mean of its evaluations in the last half of its budget, which one lucky or unlucky last evaluation
cannot swing alone; and the evaluation schedule ``late`` needs (``late_schedule``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.core.errors import UsageError

SCORES = {"final": "final eval reward (mean over tuning seeds)",
          "late": "late eval reward (mean over the last half's evaluations, then over tuning seeds)"}
"""``--score`` kinds and the column of the tuning's markdown table each fills."""


def check_score(kind: str) -> str:
    if kind not in SCORES:
        raise UsageError(f"--score {kind!r} is not a score; give --score final (each run's last evaluation) or "
                         "--score late (the mean of its evaluations in the last half of its budget)")
    return kind


def late_schedule(passthrough: list[str]) -> list[str]:
    """The ``--eval-at`` that ``--score late`` adds to runs evaluated only at their start and end (``--eval-every
    0`` and no query schedule): at 1/2 and 3/4 of ``--max-samples``, so the last half holds 3 evaluations. Without
    ``--max-samples`` the counts are unknown: a UsageError asks for ``--eval-at``."""
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--eval-every", "--eval-at", "--eval-every-samples", "--max-samples"):
        p.add_argument(flag)
    known, _ = p.parse_known_args(passthrough)
    if known.eval_at is not None or known.eval_every_samples not in (None, "0") or known.eval_every != "0":
        return []  # the runs evaluate on their own schedule
    try:
        budget = int(float(known.max_samples)) if known.max_samples is not None else 0
    except ValueError:
        budget = 0  # bench.run names the bad --max-samples
    if budget < 4:
        raise UsageError("--score late with --eval-every 0 needs evaluations in the last half of the budget: give "
                         "--max-samples (bench.tune adds --eval-at at 1/2 and 3/4 of it) or --eval-at yourself")
    return ["--eval-at", f"{math.ceil(budget / 2)},{math.ceil(budget * 3 / 4)}"]


def late_rewards(folder: Path, table) -> tuple[list[float], list[int]]:
    """Per finished run of a candidate (``runs.csv`` rows ``table``, in order): the mean eval reward over its
    evaluations at reward queries >= half its final count (the final one included), and how many there were."""
    from bench.core.files import read_table
    from bench.harness.statuses import COMPLETED

    done = table[table.status.isin(COMPLETED) & table.final_eval_reward.notna()]
    if done.empty:
        return [], []
    metrics = read_table(folder / "metrics.csv", "delete the candidate's folder to run it again, or restore the file",
                         columns=("run_id", "split", "metric"), numbers=("samples", "value"))
    evals = metrics[(metrics.split == "eval") & (metrics.metric == "reward_mean") & metrics.value.notna()]
    values, counts = [], []
    for run_id, samples in zip(done.run_id, done.samples):
        own = evals[evals.run_id == run_id]
        late = own[own.samples >= float(samples) / 2].value.tolist()
        if late:
            values.append(sum(late) / len(late))
            counts.append(len(late))
    return values, counts
