"""Time to target as a statistic over seeds, and the reward-vs-fidelity trajectories, on hand-made tables."""


import numpy as np
import pandas as pd
import pytest

from bench.analysis import hacking, speedup
from bench.analysis.results import Results, add_labels

SAMPLES = (0, 10, 20, 30, 40)


def results(curves: dict[str, list[list[float]]], extra: dict[str, list[list[float]]] | None = None) -> Results:
    """Runs of ``method -> per-seed eval rewards at SAMPLES`` (cpu_s = 2 x samples), all finished."""
    runs, rows = [], []
    for method, seeds in curves.items():
        for seed, values in enumerate(seeds):
            run_id = f"{method}__r__s{seed}"
            runs.append(dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, status="max_samples",
                             final_eval_reward=values[-1], stand_in="", error=""))
            for k, (n, value) in enumerate(zip(SAMPLES, values)):
                common = dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, step=k, samples=n,
                              cpu_s=2.0 * n, split="eval", stand_in="")
                rows.append(dict(common, metric="reward_mean", value=value))
                if extra:
                    rows.append(dict(common, metric="exact_count", value=extra[method][seed][k]))
    r = Results(runs=pd.DataFrame(runs), metrics=pd.DataFrame(rows), sources={})
    add_labels(r.runs, r.metrics)
    return r


CURVES = {
    "ddpo": [[0.0, 0.1, 0.3, 0.4, 0.5], [0.0, 0.1, 0.2, 0.4, 0.5], [0.0, 0.2, 0.3, 0.3, 0.5]],  # 0.5 at 40 on all
    "fast": [[0.0, 0.3, 0.6, 0.8, 1.0], [0.0, 0.3, 0.6, 0.8, 1.0], [0.0, 0.2, 0.4, 0.8, 1.0]],  # 0.5 at 20, 20, 30
    "flat": [[0.0, 0.0, 0.01, 0.0, 0.0], [0.0, 0.01, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.01, 0.0]],
}


def test_speedup_is_a_ratio_of_mean_costs_with_a_seed_bootstrap_interval():
    table = speedup.time_to_targets(results(CURVES), "ddpo", rng=np.random.default_rng(0), n_boot=500)
    ref = table[(table["target_name"] == "ddpo final") & (table["cost"] == "samples")].set_index("method")
    assert ref.loc["ddpo", "target"] == pytest.approx(0.5) and ref.loc["ddpo", "mean_cost"] == 40
    fast = ref.loc["fast"]
    assert fast["reached"] == 3 and fast["at_first"] == 0 and fast["mean_cost"] == pytest.approx(70 / 3)
    assert fast["speedup"] == pytest.approx(40 / (70 / 3)) and fast["bound"] == ""
    # ddpo's cost is 40 on every seed; fast's mean over resampled seeds lies in [20, 30]: ratio in [4/3, 2]
    assert 4 / 3 <= fast["speedup_lo"] < fast["speedup"] < fast["speedup_hi"] <= 2.0
    # flat never gets there: censored at its budget (40), so ddpo's 40 / 40 is an upper bound on its speed-up
    assert ref.loc["flat", "reached"] == 0 and ref.loc["flat", "mean_cost"] == 40
    assert ref.loc["flat", "speedup"] == pytest.approx(1.0) and ref.loc["flat", "bound"] == "<="
    assert np.isnan(ref.loc["flat", "speedup_lo"])  # a bound has no interval
    assert ref.loc["ddpo", "speedup"] == pytest.approx(1.0)
    cpu = table[(table["target_name"] == "ddpo final") & (table["cost"] == "cpu_s")].set_index("method")
    assert cpu.loc["fast", "mean_cost"] == pytest.approx(140 / 3)  # the CPU-seconds axis reads its own column
    # fractions of the best method's gain (fast: 0 -> 1) from the reference's own start (0): 0.25, 0.5, 0.75
    names = table.drop_duplicates("target_name").set_index("target_name")["target"]
    assert names["25% of fast's gain"] == pytest.approx(0.25) and names["75% of fast's gain"] == pytest.approx(0.75)
    text = "\n".join(speedup.markdown(table, "ddpo"))
    assert "No `ddpo final` target" not in text and "<= 1.00x (0/3 reached)" in text
    worse = speedup.time_to_targets(results({**CURVES, "ddpo": [[0.0, 0.0, 0.0, 0.0, -0.01]] * 3}), "ddpo",
                                    rng=np.random.default_rng(0), n_boot=100)  # did not improve: said, not dropped
    assert "ddpo final" not in set(worse["target_name"])
    assert "No `ddpo final` target" in "\n".join(speedup.markdown(worse, "ddpo"))


def test_a_speedup_reached_at_the_first_evaluation_is_a_bound_without_interval():
    quick = {"ddpo": CURVES["ddpo"], "quick": [[0.0, 0.6, 0.7, 0.8, 0.9]] * 3}  # 0.5 at the first evaluation (10)
    table = speedup.time_to_targets(results(quick), "ddpo", rng=np.random.default_rng(0), n_boot=200)
    row = table[(table["target_name"] == "ddpo final") & (table["cost"] == "samples")].set_index("method")
    q = row.loc["quick"]
    assert q["reached"] == 3 and q["at_first"] == 3 and q["bound"] == ">=" and q["speedup"] == pytest.approx(4.0)
    assert np.isnan(q["speedup_lo"]) and np.isnan(q["speedup_hi"])
    lines = "\n".join(speedup.markdown(table, "ddpo")).splitlines()
    line = next(l for l in lines if l.startswith("| ddpo final") and "| quick |" in l)
    assert ">= 4.00x (3/3 at 1st eval)" in line and "[" not in line
    assert "<= 10.0" in line  # its cost is at most the first evaluation's
    assert speedup.bound(np.array([True, True]), np.array([True, True])) == ""
    assert speedup.bound(np.array([True, False]), np.array([True, True])) == ">="  # a reference seed never reached
    assert speedup.bound(np.array([True]), np.array([True]), np.array([True]), np.array([False])) == "<="
    assert speedup.bound(np.array([False]), np.array([False])) == "none"


def test_a_reference_that_never_gets_there_and_targets_inside_its_noise():
    noisy = {"ddpo": [[0.0, 0.0, 0.0, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0, -0.3], [0.0, 0.0, 0.0, 0.0, 0.05]],
             "fast": CURVES["fast"]}
    table = speedup.time_to_targets(results(noisy), "ddpo", rng=np.random.default_rng(0), n_boot=500)
    marks = table.drop_duplicates("target_name").set_index("target_name")["inside_noise"]
    assert marks["ddpo final"]  # ddpo's final interval (about [-0.3, 0.4]) contains the start 0
    assert marks["25% of fast's gain"] and not marks["50% of fast's gain"]  # half-width about 0.33
    row = table[(table["target_name"] == "75% of fast's gain") & (table["cost"] == "samples")].set_index("method")
    # ddpo never reaches 0.75: censored at 40 on every seed; fast reaches it at 30 on every seed -> at least 4/3x
    assert row.loc["ddpo", "reached"] == 0 and row.loc["fast", "bound"] == ">="
    assert row.loc["fast", "speedup"] == pytest.approx(40 / 30) and row.loc["ddpo", "bound"] == "none"
    text = "\n".join(speedup.markdown(table, "ddpo"))
    assert "Target inside the noise:** ddpo final" in text and ">= 1.33x (ddpo 0/3 reached)" in text
    assert "(reference)" in text


def test_fidelity_trajectories_pair_reward_and_metric_per_evaluation(tmp_path):
    extra = {m: [[1.0 - v for v in seed] for seed in seeds] for m, seeds in CURVES.items()}
    r = results(CURVES, extra)
    table = hacking.trajectories(r.metrics, r.runs, "exact_count", rng=np.random.default_rng(0), n_boot=200)
    fast = table[table["label"] == "fast"].set_index("k")
    assert len(fast) == len(SAMPLES) and fast.loc[1, "x"] == pytest.approx(0.8 / 3)
    assert fast.loc[1, "y"] == pytest.approx(1 - 0.8 / 3) and fast.loc[1, "x_lo"] <= fast.loc[1, "x"]
    assert hacking.fidelity_figures(r, tmp_path, n_boot=50, formats=("png",)) == ["hacking_r.png"]
