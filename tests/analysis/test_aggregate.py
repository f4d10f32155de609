"""The suite's aggregate metrics (rliable's definitions) recomputed by hand and by independent loops on tiny arrays."""

import itertools

import numpy as np
import pytest

from bench.analysis import aggregate, stats

NAN = np.nan


def hand_trim_mean(values):
    """scipy.stats.trim_mean(x, 0.25) written out: sort, drop int(n / 4) at each end, average the rest."""
    v = sorted(float(x) for x in values if not np.isnan(x))
    cut = int(len(v) * 0.25)
    return sum(v[cut: len(v) - cut]) / len(v[cut: len(v) - cut])


def hand_mann_whitney(x, y):
    """U / (n_x n_y) counted pair by pair: 1 for x > y, 1/2 for a tie."""
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y))
    return wins / (len(x) * len(y))


def test_iqm_of_known_arrays():
    # 8 scores 0..7 (2 runs x 4 tasks): cut 2 at each end, mean of 2, 3, 4, 5
    assert aggregate.iqm(np.arange(8.0).reshape(2, 4)) == pytest.approx(3.5)
    # an outlier at each end is trimmed: sorted -50 1 2 3 4 7 8 100 -> mean of 2 3 4 7 = 4
    scores = np.array([[1, 2, 3, 4], [100, -50, 7, 8]], dtype=float)
    assert aggregate.iqm(scores) == pytest.approx(4.0) == pytest.approx(hand_trim_mean(scores.ravel()))
    # a missing run is left out, not read as 0: 1 2 3 4 5 -> cut 1 each end -> mean of 2 3 4
    assert aggregate.iqm(np.array([[1, 2, 3], [4, 5, NAN]])) == pytest.approx(3.0)
    assert aggregate.mean(np.array([[1, 2, 3], [4, 5, NAN]])) == pytest.approx(3.0)
    assert np.isnan(aggregate.iqm(np.full((2, 2), NAN)))


def test_probability_of_improvement_from_a_hand_counted_mann_whitney():
    # task 1: x 3 5 7 against y 2 5 6: 3>2; 5>2, 5=5 (half); 7 beats all three -> 5.5 of 9 pairs
    # task 2: x 1 1 against y 2 0: each 1 beats 0 and loses to 2 -> 2 of 4
    x = np.array([[3, 1], [5, 1], [7, NAN]], dtype=float)
    y = np.array([[2, 2], [5, 0], [6, NAN]], dtype=float)
    assert aggregate.improvement_per_task(np.array([3, 5, 7.0]), np.array([2, 5, 6.0])) == pytest.approx(5.5 / 9)
    expected = (5.5 / 9 + 2 / 4) / 2  # the mean over tasks
    assert aggregate.probability_of_improvement(x, y) == pytest.approx(expected)
    by_hand = [hand_mann_whitney([3, 5, 7], [2, 5, 6]), hand_mann_whitney([1, 1], [2, 0])]
    assert expected == pytest.approx(np.mean(by_hand))
    # P(X > Y) + P(Y > X) = 1 (ties split), identical runs give 1/2, a clean sweep 1
    assert aggregate.probability_of_improvement(y, x) == pytest.approx(1 - expected)
    assert aggregate.probability_of_improvement(x, x) == pytest.approx(0.5)
    assert aggregate.probability_of_improvement(x + 100, y) == 1.0
    # a task one of them lacks is left out of the mean
    assert aggregate.probability_of_improvement(np.array([[1.0, NAN]]), np.array([[0.0, 5.0]])) == 1.0
    with pytest.raises(ValueError, match="same tasks"):
        aggregate.probability_of_improvement(np.zeros((2, 2)), np.zeros((2, 3)))


def test_probability_interval_contains_the_point_and_is_seeded():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.5, 1, size=(5, 3)), rng.normal(0.0, 1, size=(4, 3))
    point, lo, hi = aggregate.improvement_interval(x, y, rng=np.random.default_rng(0), n_boot=500)
    assert lo <= point <= hi and 0 <= lo < hi <= 1
    assert aggregate.improvement_interval(x, y, rng=np.random.default_rng(0), n_boot=500) == (point, lo, hi)
    assert aggregate.improvement_interval(x + 10, y, rng=np.random.default_rng(0), n_boot=100) == (1.0, 1.0, 1.0)


def test_stratified_bootstrap_contains_the_point_and_respects_the_strata():
    # within each task every run scores alike: a stratified resample always holds 2 runs of each, so its mean is
    # exactly (0 + 10) / 2 and the interval has zero width; an unstratified one would move
    constant = np.array([[0.0, 10.0], [0.0, 10.0]])
    assert aggregate.interval(constant, "mean", rng=np.random.default_rng(1), n_boot=300) == (5.0, 5.0, 5.0)
    # a task with fewer runs (NaN) keeps its own size: 3 runs of task a (all 0), 1 of task b (12) -> mean 3 always
    uneven = np.array([[0.0, 12.0], [0.0, NAN], [0.0, NAN]])
    assert aggregate.interval(uneven, "mean", rng=np.random.default_rng(1), n_boot=300) == (3.0, 3.0, 3.0)
    scores = np.random.default_rng(4).normal(size=(6, 3))
    for stat in ("iqm", "mean"):
        point, lo, hi = aggregate.interval(scores, stat, rng=np.random.default_rng(2), n_boot=800)
        assert lo <= point <= hi and lo < hi
    # the same draws as stats.bootstrap_ci with the tasks as strata (labels in column order): the same interval
    point, lo, hi = aggregate.interval(scores, "iqm", rng=np.random.default_rng(2), n_boot=800)
    labels = np.repeat(np.arange(3)[None, :], 6, axis=0).ravel(order="F")
    assert (point, lo, hi) == pytest.approx(stats.bootstrap_ci(scores.ravel(order="F"), "iqm",
                                                               rng=np.random.default_rng(2), strata=labels, n_boot=800))


def test_stratified_bootstrap_agrees_with_an_independent_loop():
    """A loop with its own draws (rng.choice per task per resample) gives the same interval up to Monte Carlo."""
    scores = np.random.default_rng(9).normal(size=(8, 4))
    _, lo, hi = aggregate.interval(scores, "iqm", rng=np.random.default_rng(0), n_boot=4000)
    rng = np.random.default_rng(77)
    boots = [hand_trim_mean(np.concatenate([rng.choice(scores[:, j], size=8) for j in range(4)]))
             for _ in range(4000)]
    ref_lo, ref_hi = np.percentile(boots, [2.5, 97.5])
    width = ref_hi - ref_lo
    assert lo == pytest.approx(ref_lo, abs=0.08 * width) and hi == pytest.approx(ref_hi, abs=0.08 * width)


def test_one_task_or_one_seed_gives_no_interval():
    assert aggregate.no_interval_reason(np.array([[0.1], [0.2], [0.3]])) == "1 task: no interval"
    assert aggregate.no_interval_reason(np.array([[0.1], [0.2]]), "cell") == "1 cell: no interval"
    assert aggregate.no_interval_reason(np.array([[0.1, 0.2, 0.3]])) == "1 seed: no interval"
    assert aggregate.no_interval_reason(np.array([[0.1, 0.2], [0.3, NAN]])) == ""


def test_performance_profile_counts_runs_above_tau():
    scores = np.array([[0.0, 0.5], [1.0, 1.5], [NAN, 2.0]])  # five runs
    profile = aggregate.performance_profile(scores, np.array([-1.0, 0.0, 0.75, 1.5, 3.0]))
    assert profile == pytest.approx([1.0, 4 / 5, 3 / 5, 1 / 5, 0.0])  # strictly above tau
    band = aggregate.profile_band(scores, np.array([0.75]), rng=np.random.default_rng(0), n_boot=500)
    assert band["lo"][0] <= band["value"][0] <= band["hi"][0]


def test_a_suite_where_no_cell_can_be_normalised_aggregates_to_empty_tables():
    """No method moved any cell's score the right way (e.g. a one-method quick suite): the aggregate's tables are
    empty but keep their columns, so the report writes its sections instead of failing with a KeyError."""
    import pandas as pd

    from bench.analysis.suite import aggregates

    cells = pd.DataFrame({"task": ["t"], "family": ["sd"], "present": [True], "note": ["no method moved it"]})
    agg = aggregates(pd.DataFrame(), cells, ["rwr"], seed=0, n_boot=10)
    assert agg["cells"] == [] and len(agg["estimates"]) == 0 and len(agg["improvements"]) == 0
    assert {"no_interval", "together", "iqm"} <= set(agg["estimates"].columns)
    assert {"no_interval", "together"} <= set(agg["improvements"].columns)
