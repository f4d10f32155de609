"""bench.compare: the regression gate on synthetic results folders with known numbers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import compare as compare_cli
from bench.analysis import compare
from bench.core.errors import UsageError


def write_runs(directory: Path, rows: list[dict]) -> Path:
    """A minimal results folder: runs.csv only (compare reads nothing else)."""
    directory.mkdir(parents=True)
    full = []
    for r in rows:
        run_id = f"{r['method']}__{r.get('reward', 'mean-brightness')}__s{r['seed']}"
        full.append(dict(run_id=run_id, reward="mean-brightness", model="tiny-random", status="max_steps", steps=4,
                         samples=8, wall_s=4.0, error="", stand_in="random weights (tiny-random)") | r)  # fmt: skip
    pd.DataFrame(full).to_csv(directory / "runs.csv", index=False)
    return directory


def runs(method, rewards, sec=1.0, mem=100.0, **extra):
    return [dict(method=method, seed=s, final_eval_reward=v, sec_per_step=sec, peak_mem_mb=mem, **extra)
            for s, v in enumerate(rewards)]  # fmt: skip


@pytest.fixture
def baseline(tmp_path):
    return write_runs(tmp_path / "base", runs("alignprop", [0.50, 0.52, 0.48]) + runs("ddpo", [0.30, 0.31, 0.29]))


class Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*args):
    """Run ``python -m bench.compare ARGS`` in-process (as main), capturing its output."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compare_cli.main([str(a) for a in args])
    return Done(code, out.getvalue(), err.getvalue())


def gate(new, base, *extra):
    return cli(new, "--baseline", base, *extra)


def test_margin_is_seed_aware():
    base = pd.Series(dict(n=3, reward_mean=0.5, reward_std=0.02))
    new = pd.Series(dict(n=3, reward_mean=0.5, reward_std=0.04))
    tol = compare.Tolerance(reward_sigmas=3, reward_rel_tol=0.0, reward_abs_tol=0.0)
    assert compare.reward_margin(base, new, tol) == pytest.approx(3 * math.sqrt(0.02**2 / 3 + 0.04**2 / 3))
    single = pd.Series(dict(n=1, reward_mean=0.5, reward_std=float("nan")))
    assert compare.reward_margin(base, single, tol) == pytest.approx(3 * math.sqrt(0.02**2 / 3 + 0.02**2 / 1))
    tol_rel = compare.Tolerance(reward_sigmas=0, reward_rel_tol=0.1, reward_abs_tol=0.0)
    assert compare.reward_margin(single, single, tol_rel) == pytest.approx(0.05)


def test_identical_results_pass(baseline, tmp_path):
    new = write_runs(tmp_path / "new", runs("alignprop", [0.50, 0.52, 0.48]) + runs("ddpo", [0.30, 0.31, 0.29]))
    done = gate(new, baseline)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout and "| alignprop |" in done.stdout


def test_reward_drop_beyond_margin_fails(baseline, tmp_path):
    new = write_runs(tmp_path / "new", runs("alignprop", [0.30, 0.32, 0.28]) + runs("ddpo", [0.30, 0.31, 0.29]))
    done = gate(new, baseline)
    assert done.returncode == 1
    assert "REGRESSION" in done.stdout and "alignprop/mean-brightness/tiny-random" in done.stdout
    # A drop within 3 standard errors (SE ~ 0.016) passes.
    within = write_runs(tmp_path / "within", runs("alignprop", [0.47, 0.49, 0.45]) + runs("ddpo", [0.30, 0.31, 0.29]))
    assert gate(within, baseline, "--reward-rel-tol", "0").returncode == 0


def test_time_and_memory_ratios(baseline, tmp_path):
    slow = write_runs(tmp_path / "slow", runs("alignprop", [0.5, 0.52, 0.48], sec=1.9, mem=190)
                      + runs("ddpo", [0.30, 0.31, 0.29]))  # fmt: skip
    assert gate(slow, baseline).returncode == 0  # below 2x: machine noise never fails
    slower = write_runs(tmp_path / "slower", runs("alignprop", [0.5, 0.52, 0.48], sec=2.5)
                        + runs("ddpo", [0.30, 0.31, 0.29], mem=250))  # fmt: skip
    done = gate(slower, baseline)
    assert done.returncode == 1 and done.stdout.count("REGRESSION (>2x)") == 2


def test_speed_check_uses_cpu_time_so_a_busy_machine_passes_and_a_real_slowdown_fails(tmp_path):
    base = write_runs(tmp_path / "base", runs("alignprop", [0.5], sec=0.3, cpu_per_step=0.5, load_avg=1.0, cores=2))
    # A loaded machine (load 8 on 2 cores): wall-clock 18x, CPU seconds per step about the same.
    busy = write_runs(tmp_path / "busy", runs("alignprop", [0.5], sec=5.4, cpu_per_step=0.6, load_avg=8.0, cores=2))
    done = gate(busy, base)
    assert done.returncode == 0, done.stdout
    assert "CPU ok" in done.stdout
    # A real 2x slowdown does twice the work: CPU seconds per step double, whatever the wall-clock says.
    slow = write_runs(tmp_path / "slow", runs("alignprop", [0.5], sec=0.35, cpu_per_step=1.1, load_avg=1.0, cores=2))
    done = gate(slow, base)
    assert done.returncode == 1 and "CPU REGRESSION (>2x)" in done.stdout
    # An older baseline without CPU time falls back to wall-clock and says so.
    old = write_runs(tmp_path / "old", runs("alignprop", [0.5], sec=0.3))
    done = gate(busy, old)
    assert done.returncode == 1 and "wall REGRESSION" in done.stdout and "no CPU time" in done.stdout


def test_speed_check_normalised_by_the_calibration_is_machine_independent(tmp_path):
    def folder(name, cpu, calib):
        return write_runs(tmp_path / name, runs("ddpo", [0.5], cpu_per_step=cpu, calib_cpu_s=calib,
                                                cpu_per_step_norm=cpu / calib, threads=1))

    base = folder("base", 0.60, 0.11)
    # A machine 1.4x slower per CPU second: the step and the calibration slow alike; raw CPU s would read 1.45x.
    done = gate(folder("slower", 0.87, 0.155), base, "--time-tol", "1.3")
    assert done.returncode == 0 and "1.03x CPU/calib ok" in done.stdout, done.stdout
    assert "0.600 (0.110) → 0.870 (0.155)" in done.stdout  # the absolute figures stay in the table
    # Twice the work per step on the same machine: the calibration stays, the ratio doubles.
    done = gate(folder("double", 1.21, 0.11), base, "--time-tol", "1.5")
    assert done.returncode == 1 and "CPU/calib REGRESSION (>1.5x)" in done.stdout
    # An uncalibrated side falls back to raw CPU seconds and says the verdict depends on the machine.
    old = write_runs(tmp_path / "old", runs("ddpo", [0.5], cpu_per_step=0.60, threads=1))
    done = gate(folder("slower2", 0.87, 0.155), old, "--time-tol", "1.3")
    assert done.returncode == 1 and "no calibration: machine-dependent" in done.stdout


def test_calibration_workload_is_cheap_positive_and_leaves_the_random_streams():
    import torch

    from bench.core.calibrate import Calibration

    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the gate runs it (two threads on two busy cores can take 17x the time)
    try:
        calib = Calibration(repeats=2)
        calib.after_step()
        assert len(calib.times) == 1
        value = calib.cpu_s()
    finally:
        torch.set_num_threads(threads)
    assert len(calib.times) == 2 and 0 < value < 2
    assert torch.equal(torch.rand(3), expected)
    assert Calibration(repeats=0).cpu_s() is None


def test_cpu_time_on_a_different_thread_count_is_not_compared(tmp_path):
    # Two torch threads bill each other's overhead as CPU time: the same step costs more CPU seconds than on one.
    base = write_runs(tmp_path / "base", runs("alignprop", [0.5], cpu_per_step=0.25, threads=1))
    two = write_runs(tmp_path / "two", runs("alignprop", [0.5], cpu_per_step=0.26, threads=2))
    done = gate(two, base)
    assert done.returncode == 1 and "not comparable" in done.stdout and "OMP_NUM_THREADS=1" in done.stdout
    # The baseline JSON keeps the thread count, so the written file refuses the same comparison.
    path = tmp_path / "base.json"
    assert compare_cli.main([str(base), "--write-baseline", str(path)]) == 0
    assert json.loads(path.read_text())["entries"][0]["threads"] == "1"
    done = gate(two, path)
    assert done.returncode == 1 and "not comparable" in done.stdout
    same = write_runs(tmp_path / "same", runs("alignprop", [0.5], cpu_per_step=0.26, threads=1))
    assert gate(same, path).returncode == 0


def test_failed_and_missing_methods_fail(baseline, tmp_path):
    new = write_runs(tmp_path / "new", runs("alignprop", [np.nan] * 3, status="oom"))
    table = compare.compare(compare.summarize_runs(compare.load_results([new]).runs),
                            compare.load_summary(baseline), compare.Tolerance())  # fmt: skip
    checks = dict(zip(table["method"], table["reward_check"]))
    assert checks["alignprop"].startswith("REGRESSION (no finished run: oom: 3")
    assert checks["ddpo"].startswith("REGRESSION (missing")
    assert table["regression"].all()


def test_run_that_failed_early_with_the_base_reward_is_a_regression(baseline, tmp_path):
    # A run that errors at step 1 keeps its step-0 (base model) evaluation as final reward: it must not pass.
    new = write_runs(tmp_path / "new", runs("alignprop", [0.50, 0.52, 0.48], status="error")
                     + runs("ddpo", [0.30, 0.31, 0.29]))
    table = compare.compare(compare.summarize_runs(compare.load_results([new]).runs),
                            compare.load_summary(baseline), compare.Tolerance())  # fmt: skip
    checks = dict(zip(table["method"], table["reward_check"]))
    assert checks["alignprop"].startswith("REGRESSION (no finished run: error: 3")
    assert not table.set_index("method").loc["ddpo", "regression"]


def test_lower_is_better_direction(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "reward_higher_is_better", lambda name: False)
    base = compare.summarize_runs(compare.load_results([write_runs(tmp_path / "b", runs("rwr", [1.0, 1.0]))]).runs)
    better = compare.summarize_runs(compare.load_results([write_runs(tmp_path / "n", runs("rwr", [0.5, 0.5]))]).runs)
    assert not compare.compare(better, base, compare.Tolerance())["regression"].any()
    assert compare.compare(base.assign(reward_mean=2.0), base, compare.Tolerance())["regression"].all()


def test_json_baseline_roundtrip_and_new_method(baseline, tmp_path):
    path = tmp_path / "baseline.json"
    done = cli(baseline, "--write-baseline", path)
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text())["format"] == compare.BASELINE_FORMAT
    new = write_runs(tmp_path / "new", runs("alignprop", [0.50, 0.52, 0.48]) + runs("ddpo", [0.30, 0.31, 0.29])
                     + runs("rwr", [0.1]))  # fmt: skip
    done = gate(new, path, "--json", str(tmp_path / "cmp.json"))
    assert done.returncode == 0, done.stdout
    assert "new (no baseline)" in done.stdout
    assert len(json.loads((tmp_path / "cmp.json").read_text())) == 3


def test_bad_input_exit_2(baseline, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in ([str(baseline), "--baseline", str(bad)], [str(baseline), "--baseline", str(tmp_path / "none")],
                 [str(baseline)], [str(baseline), "--baseline", str(baseline), "--time-tol", "0.5"]):  # fmt: skip
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    with pytest.raises(UsageError):
        compare.Tolerance(mem_tol=0.9)


def test_cli_entry_point(baseline):
    """The module runs as a program: a folder compared with itself passes."""
    done = subprocess.run([sys.executable, "-m", "bench.compare", str(baseline), "--baseline", str(baseline)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: no regression in 2 entries" in done.stdout


def test_one_workers_calibration_outlier_does_not_move_its_ratio(tmp_path):
    """The gate divides by the job's median calibration: a single worker's noisy calibration (1.2x its neighbours'
    in the baseline) leaves its method's ratio at the step cost's own ratio."""
    def folder(name, calibs):
        rows = [r for (m, cpu), c in zip([("alignprop-k1", 0.35), ("ddpo", 0.63), ("rwr", 0.29)], calibs)
                for r in runs(m, [0.5], cpu_per_step=cpu, calib_cpu_s=c, cpu_per_step_norm=cpu / c, threads=1)]
        return write_runs(tmp_path / name, rows)

    base = folder("base", [0.137, 0.114, 0.112])  # alignprop-k1's worker calibrated during a busy moment
    new = folder("new", [0.114, 0.114, 0.112])
    done = gate(new, base, "--time-tol", "1.5")
    assert done.returncode == 0 and done.stdout.count("1.00x CPU/calib ok") == 3, done.stdout  # per-run: 1.20x


def test_write_baseline_and_json_under_a_file_or_unwritable_exit_2_before_anything_is_read(baseline, tmp_path,
                                                                                            monkeypatch):
    # Issue 36: --write-baseline / --json under a regular file raised FileExistsError (--json after the table was
    # printed); /proc raised FileNotFoundError.
    monkeypatch.setattr(compare_cli, "load_summary", lambda *a: pytest.fail("read before the outputs were checked"))
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("keep")
    cases = [("--write-baseline", a_file / "b.json", f"its parent {str(a_file)!r} is a regular file"),
             ("--write-baseline", "/proc/b.json", "no file can be created in '/proc'"),
             ("--json", a_file / "c.json", f"its parent {str(a_file)!r} is a regular file"),
             ("--json", tmp_path, "is a folder; name the file to write")]
    for flag, path, message in cases:
        done = cli(baseline, "--baseline", baseline, flag, path)
        assert done.returncode == 2 and not done.stdout, (flag, path, done.stdout)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {flag} {str(path)!r} "), done.stderr
        assert message in done.stderr, done.stderr
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["base", "somefile.txt"]
