"""The runner end to end on tiny-random: schema, budgets, isolation, divergence, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.harness.recorder import METRIC_COLUMNS, RUN_COLUMNS

REPO = Path(__file__).resolve().parents[2]
PLUGINS = str(REPO / "tests" / "plugins.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def bench_run(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "r"
    proc = bench_run("--preset", "smoke", "--methods", f"alignprop-k1,rwr,{PLUGINS}:Boom", "--reward", "mean-brightness",
                     "--seeds", "0,1", "--max-steps", "2", "--eval-every", "1", "--out", str(out),
                     env={"BENCH_PROGRESS_S": "0.5"})  # fmt: skip
    (out.parent / "stderr.txt").write_text(proc.stderr)  # output redirected, as in `make bench > log`
    return out


def test_redirected_log_shows_each_run_start_end_and_status_lines(smoke):
    log = (smoke.parent / "stderr.txt").read_text()
    assert "[1/6] alignprop-k1__mean-brightness__s0: start" in log
    assert "[1/6] alignprop-k1__mean-brightness__s0: end, max_steps, 2 steps, train" in log
    assert "[alignprop-k1__mean-brightness__s0] eval at step 2: reward" in log
    assert "[alignprop-k1__mean-brightness__s0] step" in log  # the timer's status line (every 0.5 s here)
    runs = pd.read_csv(smoke / "runs.csv").set_index("run_id")
    done = runs.loc["alignprop-k1__mean-brightness__s0"]
    assert 0 < done.cpu_s and done.cpu_per_step == pytest.approx(done.cpu_s / 2, rel=1e-3)
    assert done.cores >= 1 and done.load_avg >= 0


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
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert {"command", "runs", "versions", "git_commit", "device", "started", "finished", "stand_ins"} <= manifest.keys()
    assert manifest["stand_ins"] and manifest["versions"]["trl"] == "0.23.1"
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


def test_eval_is_identical_across_methods_at_step_zero(smoke):
    metrics = pd.read_parquet(smoke / "metrics.parquet")
    first = metrics[(metrics.split == "eval") & (metrics.step == 0) & (metrics.metric == "reward_mean")]
    assert first.value.nunique() == 1 and len(first) == 6


def test_nan_reward_is_diverged(tmp_path):
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", "alignprop-k1", "--reward", f"{PLUGINS}:NaNReward", "--out", str(out))
    runs = pd.read_csv(out / "runs.csv")
    assert runs.status.tolist() == ["diverged"] and runs.steps.tolist() == [1]


def test_max_seconds_is_respected_within_one_step(tmp_path):
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", f"{PLUGINS}:Slow", "--reward", "mean-brightness",
              "--max-seconds", "1.0", "--out", str(out))
    runs = pd.read_csv(out / "runs.csv")
    row = runs.iloc[0]
    assert row.status == "max_seconds"
    assert 1.0 <= row.wall_s <= 1.0 + row.sec_per_step * 1.5, row.to_dict()


def test_kill_and_resume_continues_without_duplicates(tmp_path):
    out = tmp_path / "r"
    args = [sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", "rwr", "--reward",
            "mean-brightness", "--max-steps", "12", "--checkpoint-every", "2", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = out / "runs" / "rwr__mean-brightness__s0" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "runs.csv").exists() or "max_steps" not in (out / "runs.csv").read_text()
    refused = bench_run(*args[3:], check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    bench_run(*args[3:], "--resume")
    metrics = pd.read_parquet(out / "metrics.parquet")
    loss_steps = metrics[(metrics.split == "train") & (metrics.metric == "loss")].step.tolist()
    assert loss_steps == list(range(1, 13))
    assert not metrics.duplicated(["run_id", "step", "split", "metric"]).any()
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"]


def test_resume_skips_finished_runs(smoke):
    before = (smoke / "runs" / "rwr__mean-brightness__s0" / "result.json").stat().st_mtime
    proc = bench_run("--preset", "smoke", "--methods", f"alignprop-k1,rwr,{PLUGINS}:Boom", "--reward",
                     "mean-brightness", "--seeds", "0,1", "--max-steps", "2", "--eval-every", "1", "--out", str(smoke),
                     "--resume", "--dry-run")
    assert "6 run(s)" in proc.stdout
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
        (["--methods", "rwr", "--reward", "aesthetic", "--preset", "default"],
         "huggingface-cli download trl-lib/ddpo-aesthetic-predictor.*or pass --allow-stand-in"),
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
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    import re

    out = tmp_path / "never"
    proc = bench_run("--preset", "smoke", *args, "--out", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), proc.stderr
    assert not out.exists()


def test_out_that_is_a_file_and_resume_with_other_runs_are_refused(smoke, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = bench_run("--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--out", str(a_file),
                     check=False)
    assert proc.returncode == 2 and "is a file" in proc.stderr and a_file.read_text() == "x"
    before = sorted(p.name for p in (smoke / "runs").iterdir())
    proc = bench_run("--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--seeds", "0",
                     "--max-steps", "2", "--eval-every", "1", "--out", str(smoke), "--resume", check=False)
    assert proc.returncode == 2 and "repeat the original" in proc.stderr
    assert sorted(p.name for p in (smoke / "runs").iterdir()) == before


def test_relative_paths_mean_the_working_directory(tmp_path):
    # Run from a folder other than the repository: --out and --prompts are relative to it.
    (tmp_path / "my_prompts.txt").write_text("a red fox\na blue heron\n")
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", "rwr", "--reward",
                           "mean-brightness", "--max-steps", "1", "--prompts", "my_prompts.txt", "--out", "rel"],
                          cwd=tmp_path, env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "rel" / "runs.csv")
    assert runs.status.tolist() == ["max_steps"], runs.error.tolist()


def test_dry_run_prints_runs_and_writes_nothing(tmp_path):
    out = tmp_path / "dry"
    proc = bench_run("--preset", "smoke", "--methods", "alignprop,ddpo", "--reward", "mean-brightness", "--seeds",
                     "0,1", "--dry-run", "--out", str(out))
    assert "4 run(s)" in proc.stdout and "ddpo__mean-brightness__s1" in proc.stdout
    assert "STAND-IN" in proc.stdout and "tiny-random" in proc.stdout and "sampling steps 4" in proc.stdout
    assert not out.exists()
    asked = bench_run("--methods", "rwr", "--reward", "aesthetic", "--allow-stand-in", "--dry-run", "--out", str(out))
    assert "STAND-IN" in asked.stdout and "stand-in for aesthetic" in asked.stdout and not out.exists()


def test_list_names_everything():
    text = bench_run("--list").stdout
    for name in ("tiny-random", "mean-brightness", "alignprop-trl", "simple-animals", "smoke"):
        assert name in text


def test_user_reward_plugin_from_a_temporary_file_runs_end_to_end(tmp_path):
    plugin = tmp_path / "greenness.py"
    plugin.write_text(
        "from rewards.base import Reward\n"
        "class Greenness(Reward):\n    name = 'greenness'\n    differentiable = True\n"
        "    def score(self, images, prompts):\n        return images[:, 1].mean(dim=(1, 2))\n"
    )
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", "alignprop-k1,rwr", "--reward", f"{plugin}:Greenness", "--out", str(out))
    runs = pd.read_csv(out / "runs.csv")
    assert runs.status.tolist() == ["max_steps", "max_steps"]
    assert runs.run_id.tolist() == ["alignprop-k1__Greenness__s0", "rwr__Greenness__s0"]
    assert runs.final_eval_reward.notna().all()


def test_stand_in_reward_is_named_in_every_output(tmp_path):
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", "rwr", "--reward", "aesthetic", "--max-steps", "1", "--out", str(out))
    runs = pd.read_csv(out / "runs.csv")
    assert runs.status.tolist() == ["max_steps"]
    assert "stand-in for aesthetic" in runs.stand_in[0] and "tiny-random" in runs.stand_in[0]
    assert pd.read_parquet(out / "metrics.parquet").stand_in.str.contains("stand-in for aesthetic").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("aesthetic" in s for s in manifest["stand_ins"])
    assert "stand-in for aesthetic" in (out / "summary.md").read_text()
