"""bench.stats against independent implementations on known data."""

import numpy as np
import pytest

from bench.analysis import stats


def naive_iqm(values):
    """scipy.stats.trim_mean(x, 0.25) written out: drop int(n/4) values at each end of the sorted list."""
    v = sorted(x for x in values if not np.isnan(x))
    cut = int(len(v) * 0.25)
    kept = v[cut : len(v) - cut]
    return sum(kept) / len(kept)


def naive_percentile_bootstrap(values, fn, n_boot, seed, confidence=0.95):
    """A loop bootstrap with its own generator and draw protocol (rng.choice per resample)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    boots = [fn(rng.choice(values, size=len(values), replace=True)) for _ in range(n_boot)]
    tail = (1 - confidence) / 2
    return float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5, 1, 4, 2, 3], list(range(10)), [1, 2, 3, 4, 100, -50, 7, 8]])
def test_iqm_matches_trimmed_mean(values):
    assert float(stats.iqm(np.array(values, dtype=float))) == pytest.approx(naive_iqm(values))


def test_iqm_ignores_nan_and_is_robust():
    assert float(stats.iqm(np.array([1.0, 2.0, np.nan, 3.0, 4.0]))) == pytest.approx(2.5)
    assert float(stats.iqm(np.array([0.0, 1.0, 1.0, 1e9]))) == pytest.approx(1.0)
    rows = stats.iqm(np.array([[1.0, 2.0, 3.0, 4.0], [np.nan] * 4]))
    assert rows[0] == pytest.approx(2.5) and np.isnan(rows[1])


def test_bootstrap_matches_independent_bootstrap_statistically():
    data = np.random.default_rng(7).normal(1.0, 2.0, size=40)
    point, lo, hi = stats.bootstrap_ci(data, "mean", rng=np.random.default_rng(0), n_boot=4000)
    ref_lo, ref_hi = naive_percentile_bootstrap(data, np.mean, 4000, seed=123)
    assert point == pytest.approx(data.mean())
    width = ref_hi - ref_lo
    assert lo == pytest.approx(ref_lo, abs=0.08 * width) and hi == pytest.approx(ref_hi, abs=0.08 * width)
    # ... and the normal-theory interval of the mean (bootstrap ~ mean +- 1.96 SE for n = 40).
    se = data.std(ddof=0) / np.sqrt(len(data))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_exact_with_same_draws_and_iqm():
    data = np.array([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8])
    point, lo, hi = stats.bootstrap_ci(data, "iqm", rng=np.random.default_rng(5), n_boot=500)
    idx = np.random.default_rng(5).integers(0, len(data), size=(500, len(data)))
    boots = [naive_iqm(data[row]) for row in idx]
    assert point == pytest.approx(naive_iqm(data))
    assert (lo, hi) == pytest.approx((np.percentile(boots, 2.5), np.percentile(boots, 97.5)))


def test_bootstrap_is_seeded_and_stratified():
    data = np.array([0.0, 0.0, 0.0, 10.0, 10.0, 10.0])
    strata = ["a", "a", "a", "b", "b", "b"]
    one = stats.bootstrap_ci(data, "mean", rng=np.random.default_rng(1), strata=strata, n_boot=300)
    two = stats.bootstrap_ci(data, "mean", rng=np.random.default_rng(1), strata=strata, n_boot=300)
    assert one == two
    # Within each stratum values are constant, so a stratified resample always has mean 5: zero width.
    assert one == pytest.approx((5.0, 5.0, 5.0))
    free = stats.bootstrap_ci(data, "mean", rng=np.random.default_rng(1), n_boot=300)
    assert free[2] - free[1] > 3


def test_bootstrap_degenerate_inputs():
    assert stats.bootstrap_ci([2.0], "mean", rng=np.random.default_rng(0)) == (2.0, 2.0, 2.0)
    assert all(np.isnan(stats.bootstrap_ci([np.nan], "mean", rng=np.random.default_rng(0))))
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], "median", rng=np.random.default_rng(0))


def test_interpolation_onto_common_grid():
    xs = [[0, 10, 20], [0, 5, 15]]
    ys = [[0, 1, 2], [0, 1, 3]]
    grid = stats.common_grid(xs, 5)
    np.testing.assert_allclose(grid, [0, 5, 10, 15, 20])
    curves = stats.interpolate_curves(xs, ys, grid)
    np.testing.assert_allclose(curves[0], [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(curves[1][:4], [0, 1, 2, 3])
    assert np.isnan(curves[1][4])  # no extrapolation past a seed's last point
    np.testing.assert_allclose(stats.common_grid(xs, 3, how="overlap"), [0, 7.5, 15])


def test_curve_band_single_seed_has_no_band_and_multi_seed_contains_mean():
    one = stats.curve_band(np.array([[1.0, 2.0, 3.0]]), "mean", rng=np.random.default_rng(0))
    np.testing.assert_allclose(one["value"], [1, 2, 3])
    assert np.isnan(one["lo"]).all() and np.isnan(one["hi"]).all()
    curves = np.random.default_rng(3).normal(size=(6, 4)) + np.arange(4)
    band = stats.curve_band(curves, "iqm", rng=np.random.default_rng(0), n_boot=500)
    assert (band["lo"] <= band["value"] + 1e-12).all() and (band["value"] <= band["hi"] + 1e-12).all()
    # Pointwise the band equals the scalar bootstrap with the same draws.
    point, lo, hi = stats.bootstrap_ci(curves[:, 2], "iqm", rng=np.random.default_rng(0), n_boot=500)
    assert (band["lo"][2], band["hi"][2]) == pytest.approx((lo, hi))
