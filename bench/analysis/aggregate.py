"""Aggregate metrics across tasks and seeds, with rliable's definitions (Agarwal et al. 2021, "Deep RL at the Edge
of the Statistical Precipice"; google-research/rliable ``metrics.py``, ``library.py``).

One input contract, rliable's: ``scores`` is an array [runs, tasks] of one method's normalised scores (a suite's
tasks are its (task, family) cells, its runs the seeds); NaN is a run that is not there (a task with fewer seeds), and
is left out of every statistic. Comparisons take two such arrays over the same tasks, in the same column order.

- **IQM**: the interquartile mean of all runs x tasks pooled, ``stats.iqm`` (rliable's ``aggregate_iqm``:
  ``scipy.stats.trim_mean(scores, 0.25, axis=None)``, floor(n/4) values cut at each end).
- **Stratified bootstrap**: a resample redraws, within every task separately, as many runs as the task has, with
  replacement (rliable's ``StratifiedBootstrap``: tasks are the strata, so a resample never loses or doubles a task).
  Draws: ``stats.bootstrap_indices(n_j, n_boot, rng)`` per task, tasks in column order. The interval is the
  percentile interval of the statistic over the resamples.
- **Probability of improvement** P(X > Y): per task, the Mann-Whitney U of X's runs against Y's over the number of
  pairs, i.e. P(x > y) + 0.5 P(x = y) over every pair (x run, y run); then the mean over tasks (rliable's
  ``probability_of_improvement``). Its interval resamples X's and Y's runs independently within each task (rliable's
  ``StratifiedIndependentBootstrap``), X before Y per task.
- **Performance profile** at tau: the fraction of all runs x tasks whose score exceeds tau (rliable's
  ``create_performance_profile``, run-score distribution); bands from the stratified bootstrap.

Nothing here draws a number without the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bench.analysis import stats

CONFIDENCE = 0.95


def columns(scores: np.ndarray) -> list[np.ndarray]:
    """Each task's finite runs (a list over columns of 1-d arrays)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be an array [runs, tasks], got shape {scores.shape}")
    return [col[~np.isnan(col)] for col in scores.T]


def pooled(scores: np.ndarray) -> np.ndarray:
    """Every finite score of [runs, tasks], tasks in column order."""
    parts = columns(scores)
    return np.concatenate(parts) if parts else np.zeros(0)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all runs x tasks pooled (NaN when there is none)."""
    values = pooled(scores)
    return float(stats.iqm(values)) if len(values) else float("nan")


def mean(scores: np.ndarray) -> float:
    values = pooled(scores)
    return float(values.mean()) if len(values) else float("nan")


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {"iqm": iqm, "mean": mean}


def stratified_resamples(scores: np.ndarray, *, rng: np.random.Generator, n_boot: int) -> list[np.ndarray]:
    """Per task, its runs resampled with replacement: [n_boot, n_j] arrays, tasks in column order."""
    return [col[stats.bootstrap_indices(len(col), n_boot, rng)] for col in columns(scores) if len(col)]


def percentile_interval(boots: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval over the first axis of ``boots`` (resamples)."""
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail], axis=0)
    return lo, hi


def interval(scores: np.ndarray, stat: str = "iqm", *, rng: np.random.Generator, n_boot: int = 2000,
             confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(point, lo, hi): ``stat`` ("iqm" or "mean") of all runs x tasks and its stratified-bootstrap percentile
    interval. No finite score: NaNs."""
    if stat not in AGGREGATES:
        raise ValueError(f"unknown aggregate {stat!r}; valid: {', '.join(AGGREGATES)}")
    point = AGGREGATES[stat](scores)
    parts = stratified_resamples(scores, rng=rng, n_boot=n_boot)
    if not parts:
        return (float("nan"),) * 3
    resampled = np.concatenate(parts, axis=1)  # [n_boot, n]
    boots = stats.iqm(resampled) if stat == "iqm" else resampled.mean(axis=1)
    lo, hi = percentile_interval(boots, confidence)
    return point, float(lo), float(hi)


def no_interval_reason(scores: np.ndarray, task: str = "task") -> str:
    """Why the aggregate of ``scores`` gets no interval ("" when it gets one): a single task (the bootstrap over
    tasks has nothing to stratify) or a single seed in every task (nothing to resample). ``task``: what a column is
    called in the message (the suite's are cells)."""
    cols = [c for c in columns(scores) if len(c)]
    if not cols:
        return "no score"
    if len(cols) < 2:
        return f"1 {task}: no interval"
    if max(len(c) for c in cols) < 2:
        return "1 seed: no interval"
    return ""


def improvement_per_task(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + 0.5 P(x = y) over every pair of runs, per task: x [..., n_x], y [..., n_y] -> [...]."""
    x, y = np.asarray(x, dtype=float)[..., :, None], np.asarray(y, dtype=float)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1))


def paired_columns(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    cx, cy = columns(x), columns(y)
    if len(cx) != len(cy):
        raise ValueError(f"X has {len(cx)} tasks and Y {len(cy)}: compare them over the same tasks")
    return [(a, b) for a, b in zip(cx, cy) if len(a) and len(b)]


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): the mean over tasks (where both have runs) of the per-task Mann-Whitney probability."""
    pairs = paired_columns(x, y)
    if not pairs:
        return float("nan")
    return float(np.mean([improvement_per_task(a, b) for a, b in pairs]))


def improvement_interval(x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator, n_boot: int = 2000,
                         confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(point, lo, hi) of P(X > Y), X's and Y's runs resampled independently within each task."""
    pairs = paired_columns(x, y)
    if not pairs:
        return (float("nan"),) * 3
    per_task = []
    for a, b in pairs:
        xa = a[stats.bootstrap_indices(len(a), n_boot, rng)]
        yb = b[stats.bootstrap_indices(len(b), n_boot, rng)]
        per_task.append(improvement_per_task(xa, yb))  # [n_boot]
    lo, hi = percentile_interval(np.mean(per_task, axis=0), confidence)
    return probability_of_improvement(x, y), float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs x tasks with a score above each tau (NaN where there is no score)."""
    values = pooled(scores)
    taus = np.asarray(taus, dtype=float)
    if not len(values):
        return np.full(len(taus), np.nan)
    return (values[None, :] > taus[:, None]).mean(axis=1)


def profile_band(scores: np.ndarray, taus: np.ndarray, *, rng: np.random.Generator, n_boot: int = 2000,
                 confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
    """The profile (``value``) and its pointwise stratified-bootstrap band (``lo``, ``hi``) at ``taus``."""
    taus = np.asarray(taus, dtype=float)
    value = performance_profile(scores, taus)
    parts = stratified_resamples(scores, rng=rng, n_boot=n_boot)
    if not parts:
        return {"value": value, "lo": value.copy(), "hi": value.copy()}
    resampled = np.concatenate(parts, axis=1)  # [n_boot, n]
    boots = (resampled[:, None, :] > taus[None, :, None]).mean(axis=2)  # [n_boot, n_tau]
    lo, hi = percentile_interval(boots, confidence)
    return {"value": value, "lo": lo, "hi": hi}
