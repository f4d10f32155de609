"""Pure statistics for reports: interquartile mean, seeded (stratified) percentile bootstrap, common-grid curves.

Nothing here draws a random number without an explicit ``numpy.random.Generator``. Bootstrap resamples are drawn
with one call, ``rng.integers(0, n, size=(n_boot, n))`` per stratum (strata in sorted order), so a second
implementation that draws the same way gets identical intervals.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps an array [..., n] to [...] along the last axis (NaNs are missing values and are ignored)."""


def nanmean(values: np.ndarray) -> np.ndarray:
    """Mean along the last axis, ignoring NaNs (NaN where nothing is left), without warnings."""
    values = np.asarray(values, dtype=float)
    count = np.sum(~np.isnan(values), axis=-1)
    total = np.nansum(values, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis: drop the floor(n/4) lowest and highest values, average the rest.

    This is ``scipy.stats.trim_mean(x, 0.25)`` (rliable's IQM); NaNs are dropped first, so n counts finite values.
    With fewer than 4 values nothing is trimmed and the IQM is the mean.
    """
    values = np.asarray(values, dtype=float)
    ordered = np.sort(values, axis=-1)  # NaNs sort to the end
    n = np.sum(~np.isnan(values), axis=-1, keepdims=True)
    cut = n // 4
    pos = np.arange(values.shape[-1])
    keep = (pos >= cut) & (pos < n - cut)
    kept = np.where(keep, ordered, 0.0)
    count = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, kept.sum(axis=-1) / np.maximum(count, 1), np.nan)


STATISTICS: dict[str, Statistic] = {"mean": nanmean, "iqm": iqm}


def statistic(name: str) -> Statistic:
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}; valid: {', '.join(STATISTICS)}")
    return STATISTICS[name]


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resample indices [n_boot, n] drawn with replacement (the one draw protocol of this module)."""
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    values: Sequence[float],
    stat: str | Statistic = "mean",
    *,
    rng: np.random.Generator,
    strata: Sequence | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, lower, upper) percentile-bootstrap interval of ``stat`` over ``values``.

    ``strata``: one label per value; each resample redraws values within every stratum separately (keeping each
    stratum's size), as rliable's stratified bootstrap over tasks. NaN values are dropped first. A single value
    gives a degenerate interval (point, point, point); no value gives NaNs.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    fn = statistic(stat) if isinstance(stat, str) else stat
    values = np.asarray(values, dtype=float)
    labels = np.zeros(len(values), dtype=int) if strata is None else np.asarray(strata)
    if len(labels) != len(values):
        raise ValueError(f"strata has {len(labels)} labels for {len(values)} values")
    finite = ~np.isnan(values)
    values, labels = values[finite], labels[finite]
    if len(values) == 0:
        return (float("nan"),) * 3
    point = float(fn(values))
    if len(values) == 1:
        return point, point, point
    parts = []
    for label in sorted(set(labels.tolist())):
        group = values[labels == label]
        parts.append(group[bootstrap_indices(len(group), n_boot, rng)])
    resampled = np.concatenate(parts, axis=1)  # [n_boot, n]
    boots = fn(resampled)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.nanpercentile(boots, [tail, 100 - tail])
    return point, float(lo), float(hi)


def common_grid(xs: Sequence[Sequence[float]], n_points: int = 100, *, how: str = "union") -> np.ndarray:
    """An evenly spaced grid for curves with different x values (e.g. wall-clock seconds of several seeds).

    ``how="union"`` spans from the smallest to the largest x of any curve (a seed that stopped early is missing,
    not extrapolated, beyond its last point); ``how="overlap"`` spans only the range every curve covers.
    """
    arrays = [np.asarray(x, dtype=float) for x in xs if len(x)]
    if not arrays:
        return np.zeros(0)
    lows, highs = [a.min() for a in arrays], [a.max() for a in arrays]
    if how == "union":
        lo, hi = min(lows), max(highs)
    elif how == "overlap":
        lo, hi = max(lows), min(highs)
        if hi < lo:
            return np.zeros(0)
    else:
        raise ValueError(f"grid how must be 'union' or 'overlap', got {how!r}")
    if hi == lo:
        return np.array([lo])
    return np.linspace(lo, hi, n_points)


def interpolate(x: Sequence[float], y: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of one curve onto ``grid``; NaN outside the curve's own x range (no extrapolation).

    Repeated x values are averaged; NaN points are dropped.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    out = np.full(len(grid), np.nan)
    if len(x) == 0:
        return out
    ux, inverse = np.unique(x, return_inverse=True)
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    inside = (grid >= ux[0]) & (grid <= ux[-1])
    out[inside] = np.interp(grid[inside], ux, uy)
    return out


def interpolate_curves(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]], grid: np.ndarray) -> np.ndarray:
    """Matrix [n_curves, len(grid)] of every curve interpolated onto ``grid`` (NaN where a curve has no data)."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x arrays for {len(ys)} y arrays")
    return np.stack([interpolate(x, y, grid) for x, y in zip(xs, ys)]) if xs else np.zeros((0, len(grid)))


def curve_band(
    curves: np.ndarray,
    stat: str | Statistic = "mean",
    *,
    rng: np.random.Generator,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Point estimate and pointwise bootstrap band of ``stat`` across curves [n_curves, n_grid].

    Seeds (rows) are resampled jointly for all grid points, so the band is smooth. Where fewer than two curves
    have data the band is NaN (a single seed draws a line without a band). Returns ``value``, ``lo``, ``hi`` and
    ``n`` (curves with data at each grid point).
    """
    fn = statistic(stat) if isinstance(stat, str) else stat
    curves = np.asarray(curves, dtype=float)
    if curves.ndim != 2:
        raise ValueError(f"curves must be a matrix [n_curves, n_grid], got shape {curves.shape}")
    n = np.sum(~np.isnan(curves), axis=0)
    value = fn(curves.T) if curves.shape[0] else np.full(curves.shape[1], np.nan)
    lo = np.full(curves.shape[1], np.nan)
    hi = np.full(curves.shape[1], np.nan)
    if curves.shape[0] >= 2:
        idx = bootstrap_indices(curves.shape[0], n_boot, rng)  # [n_boot, n_curves]
        boots = fn(np.moveaxis(curves[idx], 1, 2))  # [n_boot, n_grid, n_curves] -> [n_boot, n_grid]
        tail = (1 - confidence) / 2 * 100
        banded = n >= 2
        if banded.any():
            with warnings.catch_warnings():  # all-NaN columns of a resample
                warnings.simplefilter("ignore", RuntimeWarning)
                lo[banded], hi[banded] = np.nanpercentile(boots[:, banded], [tail, 100 - tail], axis=0)
    return {"value": value, "lo": lo, "hi": hi, "n": n}
