"""bench.memory_ladder: every method's step time and memory, measured in fresh processes."""

import subprocess

import pandas as pd
import pytest

from bench import memory_ladder
from bench.perf import ladder, memory


@pytest.mark.slow  # a whole run (about 20 s of CPU): make test-slow
def test_ladder_measures_methods_and_the_sampler_ratio(tmp_path, monkeypatch):
    # One row goes through the real fresh-process path; the others are measured in this process (same code, no
    # interpreter start-up and trl import per row).
    fresh = memory.run_isolated

    def isolate_first_row_only(module, spec, timeout=None):
        if spec["row"] == "alignprop-k1":
            return fresh(module, spec, timeout=timeout)
        return ladder.measure(**spec), subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(memory, "run_isolated", isolate_first_row_only)
    out = tmp_path / "ladder"
    assert memory_ladder.main(["--model", "tiny-random", "--steps", "2", "--dtypes", "fp32", "--rows",
                        "alignprop-k1,alignprop-trl-k1,sampler", "--warmup", "0", "--repeats", "2", "--out", str(out)]) == 0
    table = pd.read_csv(out / "ladder.csv").set_index("row")
    assert (table.status == "ok").all()
    assert table.loc["alignprop-k1", "seconds"] > 0 and table.loc["alignprop-k1", "peak_mem_mb"] > 0
    assert table.loc["alignprop-k1", "step_mem_mb"] > 0 and table.loc["alignprop-trl-k1", "samples"] == 1
    assert table.loc["sampler", "ratio"] > 0
    report = (out / "ladder.md").read_text()
    assert (out / "ladder.png").stat().st_size > 1000
    assert "STAND-IN" in report and "fp32 `alignprop-k1` / `alignprop-trl-k1`: time" in report
    assert memory_ladder.main(["--rows", "bogus", "--out", str(tmp_path / "x")]) == 2


def test_budget_rows_name_their_trl_pair_first():
    from bench.perf.ladder import parse_row, with_pairs

    assert parse_row("alignprop-auto@2x") == ("alignprop-auto", 2.0) and parse_row("rwr") == ("rwr", None)
    assert with_pairs(["alignprop-auto@1x", "alignprop-auto@2x", "rwr"]) == [
        "alignprop-trl", "alignprop-auto@1x", "alignprop-auto@2x", "rwr"]
    assert memory_ladder.main(["--rows", "rwr@2x", "--out", "unused"]) == 2
