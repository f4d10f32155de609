"""Time to target as a statistic over seeds (crossings interpolated between evaluations, bounds where a seed does not
cross between two), and the reward-vs-fidelity trajectories, on hand-made tables."""


import numpy as np
import pandas as pd
import pytest

from bench.analysis import hacking, reach, speedup
from bench.analysis.results import Results, add_labels

SAMPLES = (0, 10, 20, 30, 40)


def results(curves: dict[str, list[list[float]]], extra: dict[str, list[list[float]]] | None = None,
            samples=SAMPLES) -> Results:
    """Runs of ``method -> per-seed eval rewards at samples`` (wall_s = 3 x samples, cpu_s = 2 x samples), all
    finished."""
    runs, rows = [], []
    for method, seeds in curves.items():
        for seed, values in enumerate(seeds):
            run_id = f"{method}__r__s{seed}"
            runs.append(dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, status="max_samples",
                             final_eval_reward=values[-1], stand_in="", error=""))
            for k, (n, value) in enumerate(zip(samples, values)):
                common = dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, step=k, samples=n,
                              wall_s=3.0 * n, cpu_s=2.0 * n, split="eval", stand_in="")
                rows.append(dict(common, metric="reward_mean", value=value))
                if extra:
                    rows.append(dict(common, metric="exact_count", value=extra[method][seed][k]))
    r = Results(runs=pd.DataFrame(runs), metrics=pd.DataFrame(rows), sources={})
    add_labels(r.runs, r.metrics)
    return r


def rows_of(table, target_name, cost="samples"):
    return table[(table["target_name"] == target_name) & (table["cost"] == cost)].set_index("method")


def table_line(table, target: str, method: str, reference: str = "ddpo") -> str:
    lines = "\n".join(speedup.markdown(table, reference)).splitlines()
    return next(l for l in lines if l.startswith(f"| {target}") and f"| {method} |" in l)


def one_run(values, samples=SAMPLES):
    return pd.DataFrame(dict(step=range(len(values)), value=values, samples=samples,
                             wall_s=[3.0 * n for n in samples], cpu_s=[2.0 * n for n in samples]))


def test_a_crossing_is_read_on_the_line_between_the_two_evaluations_that_bracket_it():
    # 0.0, 0.1, 0.3, ...: 0.25 is first reached at 20 queries, after 0.1 at 10: 10 + (0.25 - 0.1) / (0.3 - 0.1) x 10
    found = reach.first_crossing(one_run([0.0, 0.1, 0.3, 0.2, 0.5]), 0.25, higher=True)
    assert found["reached"] and not found["at_first"]
    assert found["samples"] == pytest.approx((17.5, 10, 20))  # by hand
    assert found["samples"][0] == pytest.approx(np.interp(0.25, [0.1, 0.3], [10, 20]))  # an independent formula
    assert found["cpu_s"] == pytest.approx((35.0, 20, 40)) and found["wall_s"] == pytest.approx((52.5, 30, 60))
    # the first crossing, not a later one (0.3 at 20 falls back to 0.2 at 30 before 0.5 at 40)
    assert reach.first_crossing(one_run([0.0, 0.1, 0.3, 0.2, 0.5]), 0.4, True)["samples"][0] == pytest.approx(
        30 + (0.4 - 0.2) / (0.5 - 0.2) * 10)
    # lower is better: 1.0, 0.8, 0.4: 0.5 is crossed between 10 and 20 at 10 + (0.5 - 0.8) / (0.4 - 0.8) x 10 = 17.5
    assert reach.first_crossing(one_run([1.0, 0.8, 0.4, 0.3, 0.2]), 0.5, False)["samples"][0] == pytest.approx(17.5)
    # at the first evaluation after training began: that evaluation's cost (an upper bound), no line from the start
    first = reach.first_crossing(one_run([0.0, 0.6, 0.7, 0.8, 0.9]), 0.5, True)
    assert first["reached"] and first["at_first"] and first["samples"] == (10, 0, 10)
    # never: the last evaluation's cost (a lower bound); the far end of its bracket is unknown
    never = reach.first_crossing(one_run([0.0, 0.1, 0.1, 0.2, 0.2]), 0.5, True)
    assert not never["reached"] and never["samples"] == (40, 40, np.inf)


def test_every_seed_reaching_gives_a_point_whose_interval_contains_the_true_ratio():
    # Straight curves from the start, evaluated at --eval-at log's counts: interpolation between evaluations is exact.
    # ddpo reaches 0.5 at 300, 400, 500 queries (mean 400), fast at 80, 100, 120 (mean 100): the true ratio is 4.
    from bench.harness.schedule import QuerySchedule

    counts = QuerySchedule.parse("log").evaluations(768)
    curve = lambda at: [min(1.0, 0.5 * n / at) for n in counts[:-1]] + [1.0]  # noqa: E731 (every final 1.0)
    table = speedup.time_to_targets(results({"ddpo": [curve(300), curve(400), curve(500)],
                                             "fast": [curve(80), curve(100), curve(120)]}, samples=counts),
                                    "ddpo", rng=np.random.default_rng(0), n_boot=2000)
    assert rows_of(table, "50% of ddpo's gain").loc["ddpo", "target"] == pytest.approx(0.5)
    row = rows_of(table, "50% of ddpo's gain").loc["fast"]  # ddpo's mean final is 1.0; its 50 % level 0.5
    assert row["bound"] == "" and row["reached"] == 3 and row["at_first"] == 0 and row["mean_cost"] == pytest.approx(100)
    assert row["speedup"] == pytest.approx(4.0)
    assert row["speedup_lo"] < 4.0 < row["speedup_hi"]
    # resampling each side's 3 seeds: ddpo's mean lies in [300, 500], fast's in [80, 120]
    assert 300 / 120 <= row["speedup_lo"] and row["speedup_hi"] <= 500 / 80
    # every crossing at the far or near end of its bracket (64-96, 96-128, 96-128 vs 256-384, 384-512, 384-512)
    assert row["spacing_lo"] == pytest.approx((256 + 384 + 384) / (96 + 128 + 128))
    assert row["spacing_hi"] == pytest.approx((384 + 512 + 512) / (64 + 96 + 96))
    cpu = rows_of(table, "50% of ddpo's gain", "cpu_s").loc["fast"]
    assert cpu["mean_cost"] == pytest.approx(200) and cpu["speedup"] == pytest.approx(4.0)  # its own column
    line = table_line(table, "50% of ddpo's gain", "fast")
    assert f"4.00x [{row['speedup_lo']:.2f}x, {row['speedup_hi']:.2f}x]" in line


def test_the_interval_resamples_each_methods_seeds_on_their_own():
    ref, mine = np.array([300.0, 400.0, 500.0]), np.array([80.0, 100.0, 130.0])
    point, lo, hi = reach.ratio_interval(ref, mine, rng=np.random.default_rng(7), n_boot=500)
    rng = np.random.default_rng(7)  # recomputed: reference's draw first, then the method's, one call each
    boots = ref[rng.integers(0, 3, size=(500, 3))].mean(axis=1) / mine[rng.integers(0, 3, size=(500, 3))].mean(axis=1)
    assert point == pytest.approx(400 / (310 / 3))
    assert (lo, hi) == tuple(np.quantile(boots, [0.025, 0.975], method="nearest"))
    # one seed on either side: a point, no interval, and the report says so
    one = speedup.time_to_targets(results({"ddpo": [[0.0, 0.1, 0.3, 0.4, 0.5]], "fast": [[0.0, 0.3, 0.6, 0.8, 1.0]] * 2}),
                                  "ddpo", rng=np.random.default_rng(0), n_boot=100)
    row = rows_of(one, "ddpo final").loc["fast"]
    assert row["bound"] == "" and row["speedup"] == pytest.approx(40 / (10 + 20 / 3))  # 0.5: 40 vs 10 + 2/3 x 10
    assert np.isnan(row["speedup_lo"]) and np.isnan(row["speedup_hi"])
    line = table_line(one, "ddpo final", "fast")
    assert "| 2.40x |" in line and "1 seed of ddpo: no interval" in line and "[" not in line


def test_a_seed_that_never_reaches_makes_a_bound_that_says_how_many_seeds_reached():
    curves = {"ddpo": [[0.0, 0.1, 0.3, 0.4, 0.6], [0.0, 0.1, 0.2, 0.4, 0.6], [0.0, 0.0, 0.1, 0.2, 0.3]],
              "fast": [[0.0, 0.3, 0.6, 0.8, 1.0]] * 3}
    table = speedup.time_to_targets(results(curves), "ddpo", rng=np.random.default_rng(0), n_boot=200)
    row = rows_of(table, "ddpo final")  # ddpo's mean final 0.5: seeds 0 and 1 cross 0.4-0.6 at 35, seed 2 never
    assert row.loc["ddpo", "reached"] == 2 and row.loc["ddpo", "mean_cost"] == pytest.approx((35 + 35 + 40) / 3)
    fast = row.loc["fast"]  # 0.3 at 10, 0.6 at 20: 0.5 at 10 + 2/3 x 10
    assert fast["reached"] == 3 and fast["mean_cost"] == pytest.approx(10 + 20 / 3)
    assert fast["bound"] == ">=" and fast["speedup"] == pytest.approx((110 / 3) / (50 / 3))
    assert np.isnan(fast["speedup_lo"])  # a bound has no interval
    line = table_line(table, "ddpo final", "fast")
    assert ">= 2.20x" in line and "2 of 3 seeds of ddpo reached" in line and "[" not in line
    assert "| >= 36.7 | (reference) |" in "\n".join(speedup.markdown(table, "ddpo"))
    # a method that reaches at its first evaluation: a bound the other way round from the method's side
    quick = {"ddpo": curves["ddpo"][:2], "quick": [[0.0, 0.6, 0.7, 0.8, 0.9]] * 3}  # ddpo: 0.6 at 40 on both seeds
    table = speedup.time_to_targets(results(quick), "ddpo", rng=np.random.default_rng(0), n_boot=100)
    q = rows_of(table, "ddpo final").loc["quick"]
    assert q["bound"] == ">=" and q["at_first"] == 3 and q["mean_cost"] == 10 and q["speedup"] == pytest.approx(4.0)
    line = table_line(table, "ddpo final", "quick")
    assert "| <= 10.0 | >= 4.00x |" in line and line.endswith("| 3 of 3 seeds of quick at the 1st evaluation |")
    assert reach.bound(np.array([True, True]), np.array([True, True])) == ""
    assert reach.bound(np.array([True]), np.array([True]), np.array([True]), np.array([False])) == "<="
    assert reach.bound(np.array([False]), np.array([False])) == "none"


def test_targets_are_levels_the_reference_reaches_from_its_own_start():
    curves = {"ddpo": [[0.1, 0.2, 0.3, 0.4, 0.5]] * 2 + [[0.1, 0.2, 0.3, 0.4, 0.6]],
              "fast": [[0.1, 0.5, 0.8, 0.9, 1.0]] * 3}
    table = speedup.time_to_targets(results(curves), "ddpo", rng=np.random.default_rng(0), n_boot=200)
    names = table.drop_duplicates("target_name").set_index("target_name")["target"]
    mean_final = (0.5 + 0.5 + 0.6) / 3  # from ddpo's start 0.1: 50 %, 75 % and 100 % of its gain
    assert list(names.index) == ["50% of ddpo's gain", "75% of ddpo's gain", "ddpo final"]
    assert names.to_numpy() == pytest.approx([0.1 + f * (mean_final - 0.1) for f in (0.5, 0.75, 1.0)])
    assert table["start"].to_numpy() == pytest.approx(0.1) and (table["level_of"] == "ddpo").all()
    # a reference that did not improve: said, and the levels are the best method's
    worse = speedup.time_to_targets(results({**curves, "ddpo": [[0.1, 0.1, 0.1, 0.1, 0.09]] * 3}), "ddpo",
                                    rng=np.random.default_rng(0), n_boot=100)
    assert "ddpo final" not in set(worse["target_name"]) and "fast final" in set(worse["target_name"])
    text = "\n".join(speedup.markdown(worse, "ddpo"))
    assert "No `ddpo final` target" in text and "the targets are fast's levels" in text
    # a target within half the width of the reference's final-reward interval of its start lies inside the noise
    noisy = {"ddpo": [[0.0, 0.0, 0.0, 0.0, 0.6], [0.0, 0.0, 0.0, 0.0, -0.4], [0.0, 0.0, 0.0, 0.0, 0.1]],
             "fast": curves["fast"]}
    marks = speedup.time_to_targets(results(noisy), "ddpo", rng=np.random.default_rng(0), n_boot=500)
    inside = marks.drop_duplicates("target_name").set_index("target_name")["inside_noise"]
    assert inside.all()  # ddpo's interval (about [-0.4, 0.6]) contains its start 0
    assert "Target inside the noise:** ddpo final" in "\n".join(speedup.markdown(marks, "ddpo"))


def test_fidelity_trajectories_pair_reward_and_metric_per_evaluation(tmp_path):
    curves = {"ddpo": [[0.0, 0.1, 0.3, 0.4, 0.5]] * 3, "fast": [[0.0, 0.3, 0.6, 0.8, 1.0]] * 2 + [[0.0, 0.2, 0.4,
                                                                                                    0.8, 1.0]]}
    extra = {m: [[1.0 - v for v in seed] for seed in seeds] for m, seeds in curves.items()}
    r = results(curves, extra)
    table = hacking.trajectories(r.metrics, r.runs, "exact_count", rng=np.random.default_rng(0), n_boot=200)
    fast = table[table["label"] == "fast"].set_index("k")
    assert len(fast) == len(SAMPLES) and fast.loc[1, "x"] == pytest.approx(0.8 / 3)
    assert fast.loc[1, "y"] == pytest.approx(1 - 0.8 / 3) and fast.loc[1, "x_lo"] <= fast.loc[1, "x"]
    assert hacking.fidelity_figures(r, tmp_path, n_boot=50, formats=("png",)) == ["hacking_r.png"]
