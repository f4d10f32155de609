"""Issue 36's closing sweep, reports: seeds of one method spread over folders pool only when made with the same
settings, and a runs.csv that lost its identity columns is read around, not reported as runs of nothing."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from bench.analysis import results as loading
from bench.core.errors import UsageError
from test_report import write_results


def set_config(folder, run_id: str, **changes) -> None:
    path = folder / "runs" / run_id / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_seeds_of_one_method_from_two_folders_pool_only_with_the_same_settings(tmp_path):
    # Sweep: `bench.run --seeds 0 --max-steps 2` and `--seeds 1 --max-steps 1 --set lr=1e-2` in two folders were
    # averaged by bench.report as two seeds of one configuration (a mean with an interval, exit 0).
    first = write_results(tmp_path / "a", "mean-brightness", seeds=(0, 1), failed=False, stand_in="")
    second = write_results(tmp_path / "b", "mean-brightness", seeds=(2,), failed=False, stand_in="")
    assert len(loading.load_results([first, second]).runs) == 6  # same settings: seeds 0, 1 and 2 pool
    set_config(second, "ddpo__mean-brightness__s2", budget={"max_steps": 1}, method_config={"lr": 0.01})
    with pytest.raises(UsageError) as caught:
        loading.load_results([first, second])
    message = str(caught.value)
    assert "'ddpo__mean-brightness__s0'" in message and "'ddpo__mean-brightness__s2'" in message
    assert "cannot be pooled as seeds of one configuration: settings differ in budget, method_config" in message
    assert len(loading.load_results([first]).runs) == 4 and len(loading.load_results([second]).runs) == 2


def test_a_runs_csv_without_its_identity_columns_is_filled_from_the_metrics_and_said(tmp_path):
    # Sweep: runs.csv with its method and model columns deleted ended bench.report in a ValueError traceback
    # (cannot convert float NaN to integer) and let bench.compare report the runs as missing.
    folder = write_results(tmp_path / "a", "mean-brightness", seeds=(0, 1), failed=False, stand_in="")
    table = pd.read_csv(folder / "runs.csv")
    table.drop(columns=["method", "model"]).to_csv(folder / "runs.csv", index=False)
    results = loading.load_results([folder])
    assert set(results.runs["method"]) == {"alignprop", "ddpo"} and set(results.runs["model"]) == {"tiny-random"}
    assert results.runs["status"].eq("max_steps").all()
    (problem,) = results.problems
    assert "runs.csv has no column method, model" in problem and "read from metrics" in problem


def test_one_reader_of_config_json_is_lenient_or_strict_about_a_damaged_one(tmp_path):
    from bench.analysis.pooling import read_config

    run = tmp_path / "runs" / "rwr__r__s0"
    run.mkdir(parents=True)
    assert read_config(run) is None and read_config(run, strict=True) is None  # missing: no settings to read
    (run / "config.json").write_text(json.dumps({"seed": 0, "method_config": {"lr": 1e-3}}))
    assert read_config(run, strict=True) == {"seed": 0, "method_config": {"lr": 1e-3}}
    for damaged, said in (("{", "is not valid JSON"), ('{"method_config": [1]}', "(key method_config): expected")):
        (run / "config.json").write_text(damaged)
        assert read_config(run) is None  # pooling: not compared
        with pytest.raises(UsageError, match=r"config.json' .*" + re.escape(said)) as caught:
            read_config(run, strict=True)
        assert "\n" not in str(caught.value)
