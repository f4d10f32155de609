"""bench.memory_vs_steps: memory and time of the sampler's gradient modes as T grows."""

import pandas as pd
import pytest

from bench import memory_vs_steps
from bench.perf import scaling


def test_scaling_cli_small(tmp_path, capsys):
    """bench.memory_vs_steps on tiny-random with T in {2, 4}, in-process: table, figure, gradient steps per mode."""
    out = tmp_path / "scaling"
    code = memory_vs_steps.main(["--model", "tiny-random", "--steps", "2,4", "--modes", "full-nockpt,last-k,random-k",
                         "--k-range", "2,3", "--isolate", "no", "--out", str(out), "--threads", "1"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(out / "scaling.csv")
    assert len(table) == 6 and (table["seconds"] > 0).all() and (table["peak_mem_mb"] >= 0).all()
    steps = {(r.mode, r.steps): r.grad_steps for r in table.itertuples()}
    assert steps[("full-nockpt", 4)] == 4 and steps[("last-k", 4)] == 1 and steps[("random-k", 2)] == 2
    assert steps[("random-k", 4)] in (2, 3)
    assert (table["grad_norm"] > 0).all()  # every mode trains the adapter
    assert (out / "scaling.png").stat().st_size > 1000
    text = (out / "scaling.md").read_text()
    assert "STAND-IN" in text and "K=1 memory ratio" in text


def test_scaling_flatness_and_bad_input(tmp_path, capsys):
    table = pd.DataFrame({"mode": ["last-k"] * 4 + ["full"] * 2, "steps": [5, 10, 20, 50, 10, 50],
                          "peak_mem_mb": [20.0, 24.0, 24.5, 25.0, 30.0, 90.0]})  # fmt: skip
    ratio, lo, hi = scaling.flatness(table)
    assert (lo, hi) == (10, 50) and ratio == pytest.approx(25 / 24)
    assert scaling.flatness(table, "full")[0] == pytest.approx(3.0)
    assert memory_vs_steps.main(["--steps", "0,5", "--out", str(tmp_path / "s")]) == 2
    assert memory_vs_steps.main(["--modes", "full,bogus", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.count("error:") == 2 and not (tmp_path / "s").exists()
