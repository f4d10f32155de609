"""The runner end to end on tiny-random: schema, budgets, isolation, divergence, resume, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.harness.recorder import METRIC_COLUMNS, RUN_COLUMNS

REPO = Path(__file__).resolve().parents[2]
PLUGINS = str(REPO / "tests" / "plugins.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def bench_run_inprocess(capsys, *args) -> tuple[int, str, str]:
    """``python -m bench.run ARGS`` called in this process (for runs that plan, refuse or dry-run: no worker starts);
    returns (exit code, stdout, stderr)."""
    from bench.run import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def bench_run(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "r"
    proc = bench_run("--preset", "smoke", "--methods", f"alignprop-k1,rwr,{PLUGINS}:Boom", "--reward", "mean-brightness",
                     "--seeds", "0,1", "--max-steps", "2", "--eval-every", "1", "--jobs", "2", "--out", str(out),
                     env={"BENCH_PROGRESS_S": "0.5", "BENCH_CALIBRATE_REPEATS": "2"})  # fmt: skip
    (out.parent / "stderr.txt").write_text(proc.stderr)  # output redirected, as in `make bench > log`
    return out


def test_redirected_log_shows_each_run_start_end_and_status_lines(smoke):
    log = (smoke.parent / "stderr.txt").read_text()
    assert "[1/6] alignprop-k1__mean-brightness__s0: start" in log
    assert "[1/6] alignprop-k1__mean-brightness__s0: end, max_steps, 2 steps, final eval reward" in log
    assert "[alignprop-k1__mean-brightness__s0] eval at step 2 (4 queries): reward" in log
    assert "[alignprop-k1__mean-brightness__s0] step" in log  # the timer's status line (every 0.5 s here)
    for line in log.splitlines():  # two runs at once, yet each line is one run's whole line
        assert line.count(": start") + line.count(": end, ") <= 1 and not re.search(r"\S\[\d+/6\]", line), line
    runs = pd.read_csv(smoke / "runs.csv").set_index("run_id")
    done = runs.loc["alignprop-k1__mean-brightness__s0"]
    assert 0 < done.cpu_s and done.cpu_per_step == pytest.approx(done.cpu_s / 2, rel=1e-3)
    assert done.cores >= 1 and done.load_avg >= 0
    assert 0 < done.calib_cpu_s < 2 and done.cpu_per_step_norm == pytest.approx(done.cpu_per_step / done.calib_cpu_s,
                                                                                  rel=1e-2)


def test_results_schema(smoke):
    metrics = pd.read_parquet(smoke / "metrics.parquet")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics.equals(pd.read_csv(smoke / "metrics.csv", keep_default_na=False).astype(metrics.dtypes.to_dict()))
    assert set(metrics.split) == {"train", "eval"}
    assert {"reward_mean", "reward_std", "loss"} <= set(metrics[metrics.split == "train"].metric)
    assert {"reward_mean", "reward_std"} <= set(metrics[metrics.split == "eval"].metric)
    assert not metrics.duplicated(["run_id", "step", "split", "metric"]).any()
    assert (metrics.stand_in.str.contains("random")).all()
    ok = metrics[metrics.run_id == "alignprop-k1__mean-brightness__s0"]
    assert sorted(ok[(ok.split == "eval") & (ok.metric == "reward_mean")].step) == [0, 1, 2]
    assert sorted(ok[(ok.split == "train") & (ok.metric == "loss")].step) == [1, 2]
    assert (ok[ok.split == "train"].samples == ok[ok.split == "train"].step * 2).all()
    runs = pd.read_csv(smoke / "runs.csv")
    assert list(runs.columns) == RUN_COLUMNS and len(runs) == 6
    assert set(runs.precision) == {"fp32"} and set(runs.protocol) == {"matched"}  # CPU default, smoke preset
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert {"command", "runs", "versions", "git_commit", "device", "started", "finished", "stand_ins"} <= manifest.keys()
    assert manifest["stand_ins"] and manifest["versions"]["trl"] == "0.23.1"
    assert manifest["plan"]["precision"] == "fp32" and manifest["plan"]["protocol"] == "matched"
    run_dir = smoke / "runs" / "alignprop-k1__mean-brightness__s0"
    for name in ("config.json", "adapter.safetensors", "eval_first.png", "eval_last.png"):
        assert (run_dir / name).is_file(), name
    assert (smoke / "summary.md").read_text().count("max_steps") == 4


def test_one_failing_method_does_not_stop_the_others(smoke):
    runs = pd.read_csv(smoke / "runs.csv", keep_default_na=False).set_index("run_id")
    boom = runs.loc[[r for r in runs.index if "Boom" in r]]
    assert (boom.status == "error").all() and boom.error.str.contains("planted failure").all()
    assert (boom.steps == 1).all()  # the second step raised: it is not counted, the first step's rows are kept
    others = runs.loc[[r for r in runs.index if "Boom" not in r]]
    assert (others.status == "max_steps").all() and (others.steps == 2).all()
    metrics = pd.read_parquet(smoke / "metrics.parquet")
    assert len(metrics[metrics.run_id.str.contains("Boom")]) > 0


def test_local_jobs_run_concurrently_and_all_finish(smoke):
    """The shared smoke run made its six runs two at a time (--jobs 2): each finished or failed on its own."""
    statuses = pd.read_csv(smoke / "runs.csv").status.tolist()
    assert sorted(statuses) == ["error"] * 2 + ["max_steps"] * 4  # the planted Boom fails, the rest finish


def test_eval_is_identical_across_methods_at_step_zero(smoke):
    metrics = pd.read_parquet(smoke / "metrics.parquet")
    first = metrics[(metrics.split == "eval") & (metrics.step == 0) & (metrics.metric == "reward_mean")]
    assert first.value.nunique() == 1 and len(first) == 6


def test_resume_skips_finished_runs(smoke, capsys):
    before = (smoke / "runs" / "rwr__mean-brightness__s0" / "result.json").stat().st_mtime
    code, out, _ = bench_run_inprocess(
        capsys, "--preset", "smoke", "--methods", f"alignprop-k1,rwr,{PLUGINS}:Boom", "--reward", "mean-brightness",
        "--seeds", "0,1", "--max-steps", "2", "--eval-every", "1", "--jobs", "2", "--out", str(smoke), "--resume",
        "--dry-run")
    assert code == 0 and "6 run(s)" in out
    assert (smoke / "runs" / "rwr__mean-brightness__s0" / "result.json").stat().st_mtime == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "alignprp", "--reward", "mean-brightness"], "unknown method 'alignprp'.*alignprop"),
        (["--methods", "rwr", "--reward", "brightness"], "unknown reward"),
        (["--methods", "rwr,", "--reward", "mean-brightness"], "malformed"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--max-steps", "-1"], "--max-steps must be"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--max-seconds", "0"], "--max-seconds must be"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--model", "./missing/dir"], "does not exist"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--model", "org/not-cached"], "not in the Hugging Face"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--set", "rwr.lrr=1"], "unknown key.*lr"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--set", "rwr.lr=abc"], "expected a float"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--prompts", "animals"], "unknown prompt set"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--seeds", "a"], "not an integer"),
        (["--methods", "alignprop", "--reward", "mean-brightness", "--set", "steps=4", "--set", "alignprop.k_max=9"],
         "k_range"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--preset", "fast"], "unknown preset"),
        (["--methods", "rwr", "--reward", "aesthetic", "--strict-weights"], "weights for aesthetic.*not found"),
        (["--methods", "rwr", "--reward", "aesthetic", "--preset", "default", "--model", "tiny-random"],
         "huggingface-cli download trl-lib/ddpo-aesthetic-predictor.*or pass --allow-stand-in"),  # LAION's, off the
        # shape world (on tiny-shapes aesthetic is shape-aesthetic: tests/harness/test_mission.py)
        (["--methods", "rwr", "--reward", "mean-brightness", "--max-steps", "nan"], "--max-steps must be"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--max-seconds", "inf"], "--max-seconds must be"),
        (["--methods", "rwr", "--reward", "aesthetic", "--reward-weights", "no/such.pth"], "does not exist"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--reward-weights", str(REPO / "README.md")],
         "takes no weights file"),
        (["--methods", "rwr", "--reward", "0.5*aesthetic+0.5*mean-brightness", "--reward-weights",
          str(REPO / "README.md")], "not a combination"),
        (["--methods", "rwr", "--reward", "count"], "shape-world prompts"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--model", str(REPO / "tests")], "model_index.json"),
        (["--methods", "ddpo", "--reward", "mean-brightness", "--processes", "2"], "use --processes 1"),
        (["--methods", "rwr", "--reward", "mean-brightness", "--jobs", "0"], "--jobs must be"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    import re

    out = tmp_path / "never"
    code, _, err = bench_run_inprocess(capsys, "--preset", "smoke", *args, "--out", str(out))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert not out.exists()


def test_bad_input_from_the_command_line_exits_2(tmp_path):
    proc = bench_run("--preset", "smoke", "--methods", "alignprp", "--reward", "mean-brightness", "--out",
                     str(tmp_path / "never"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown method" in proc.stderr


def test_out_that_is_a_file_and_resume_with_other_runs_are_refused(smoke, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = bench_run_inprocess(capsys, "--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness",
                                       "--out", str(a_file))
    assert code == 2 and "is a file" in err and a_file.read_text() == "x"
    before = sorted(p.name for p in (smoke / "runs").iterdir())
    code, _, err = bench_run_inprocess(capsys, "--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness",
                                       "--seeds", "0", "--max-steps", "2", "--eval-every", "1", "--out", str(smoke),
                                       "--resume")
    assert code == 2 and "repeat the original" in err
    assert sorted(p.name for p in (smoke / "runs").iterdir()) == before


def test_dry_run_prints_runs_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    code, text, _ = bench_run_inprocess(capsys, "--preset", "smoke", "--methods", "alignprop,ddpo", "--reward",
                                        "mean-brightness", "--seeds", "0,1", "--dry-run", "--out", str(out))
    assert code == 0 and "4 run(s)" in text and "ddpo__mean-brightness__s1" in text
    assert "STAND-IN" in text and "tiny-random" in text and "sampling_steps=4" in text
    assert not out.exists()
    asked = bench_run("--methods", "rwr", "--reward", "aesthetic", "--model", "tiny-random", "--allow-stand-in",
                      "--dry-run", "--out", str(out))
    assert "STAND-IN" in asked.stdout and "stand-in for aesthetic" in asked.stdout and not out.exists()


def test_list_names_everything(capsys):
    text = bench_run_inprocess(capsys, "--list")[1]
    for name in ("tiny-random", "mean-brightness", "alignprop-trl", "simple-animals", "smoke"):
        assert name in text


@pytest.mark.parametrize("variable,lr", [("BENCH_ARGS", "0.005"), ("LONG_ARGS", "0.005"), ("FLOW_ARGS", "0.003"),
                                         ("FLOW_PG_ARGS", "0.01")])
def test_the_makefile_jobs_plan(variable, lr, capsys, tmp_path, monkeypatch):
    """`make bench`, `make bench-long` and `make bench-flow` pass planning (a --set the planner refuses would stop
    them after install) with their tuned files' values."""
    made = subprocess.run(["make", "-s", "--eval", "print-%: ; @echo $($*)", f"print-{variable}"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    monkeypatch.chdir(REPO)  # the tuned file's path is relative to the repository
    argv = made.stdout.split()
    tuned = argv[argv.index("--config-from") + 1]
    if not all((REPO / f).is_file() for f in tuned.split(",")):  # `make tune-flow-pg` writes it (docs/benchmarks.md)
        argv = argv[: argv.index("--config-from")] + argv[argv.index("--config-from") + 2 :]
        lr = None
    code, out, err = bench_run_inprocess(capsys, *argv, "--dry-run", "--out", str(tmp_path / "r"))
    assert code == 0, err
    alignprop = next(line for line in out.splitlines() if "alignprop__shape-aesthetic__s0" in line)
    assert "sampling_steps=10" in alignprop  # the shared steps
    assert lr is None or re.search(rf" lr={lr}( |$)", alignprop)  # the tuned value
