"""The runner end to end on tiny-random, one invocation per case: divergence, time budget, kill and resume,
relative paths, a reward plug-in file, a stand-in reward."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from test_run import ENV, PLUGINS, REPO, bench_run


@pytest.mark.slow  # a whole run (about 20 s of CPU): make test-slow
def test_nan_reward_is_diverged(tmp_path):
    out = tmp_path / "r"
    proc = bench_run("--preset", "smoke", "--methods", "alignprop-k1", "--reward", f"{PLUGINS}:NaNReward", "--out",
                     str(out), check=False)
    assert proc.returncode == 1 and "no run finished its budget" in proc.stderr  # a script can tell
    runs = pd.read_csv(out / "runs.csv")
    assert runs.status.tolist() == ["diverged"] and runs.steps.tolist() == [1]


@pytest.mark.slow
def test_max_seconds_is_respected_within_one_step(tmp_path):
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", f"{PLUGINS}:Slow", "--reward", "mean-brightness",
              "--max-seconds", "1.0", "--out", str(out))
    runs = pd.read_csv(out / "runs.csv")
    row = runs.iloc[0]
    assert row.status == "max_seconds"
    assert 1.0 <= row.wall_s <= 1.0 + row.sec_per_step * 1.5, row.to_dict()


@pytest.mark.slow
def test_kill_and_resume_continues_without_duplicates(tmp_path):
    out = tmp_path / "r"
    args = [sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", "rwr", "--reward",
            "mean-brightness", "--max-steps", "6", "--max-seconds", "3600", "--checkpoint-every", "2", "--out", str(out)]
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
    assert loss_steps == list(range(1, 7))
    assert not metrics.duplicated(["run_id", "step", "split", "metric"]).any()
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_user_reward_plugin_from_a_temporary_file_runs_end_to_end(tmp_path):
    plugin = tmp_path / "greenness.py"
    plugin.write_text(
        "from rewards.base import Reward\n"
        "class Greenness(Reward):\n    name = 'greenness'\n    differentiable = True\n"
        "    def score(self, images, prompts):\n        return images[:, 1].mean(dim=(1, 2))\n"
    )
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", "alignprop-k1,rwr", "--reward", f"{plugin}:Greenness", "--jobs", "2",
              "--out", str(out), env={"OMP_NUM_THREADS": ""})
    runs = pd.read_csv(out / "runs.csv")
    assert (runs.threads == max(1, len(os.sched_getaffinity(0)) // 2)).all()  # two runs at once share the cores
    assert runs.status.tolist() == ["max_steps", "max_steps"]
    assert runs.run_id.tolist() == ["alignprop-k1__Greenness__s0", "rwr__Greenness__s0"]
    assert runs.final_eval_reward.notna().all()


@pytest.mark.slow  # a whole run (about 20 s of CPU): make test-slow
def test_stand_in_reward_is_named_in_every_output(tmp_path):
    out = tmp_path / "r"
    bench_run("--preset", "smoke", "--methods", "rwr", "--reward", "aesthetic", "--max-steps", "2",
              "--eval-every-samples", "2", "--out", str(out))  # 2 images per smoke step: an evaluation after each
    runs = pd.read_csv(out / "runs.csv")
    assert runs.status.tolist() == ["max_steps"]
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(metrics.query("split == 'eval' and metric == 'reward_mean'").step) == [0, 1, 2]
    assert "stand-in for aesthetic" in runs.stand_in[0] and "tiny-random" in runs.stand_in[0]
    assert pd.read_parquet(out / "metrics.parquet").stand_in.str.contains("stand-in for aesthetic").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("aesthetic" in s for s in manifest["stand_ins"])
    assert "stand-in for aesthetic" in (out / "summary.md").read_text()


def test_training_does_not_depend_on_the_evaluation_schedule(tmp_path):
    # Evaluating used to draw from the global RNGs inside the worker: DDPO on tiny-shapes then trained differently with
    # --eval-every 1 than with 0 (train reward off by 0.046 at step 2 of a smoke run). The evaluation now gives the RNG
    # states back. Both runs go through the worker's own loop, in this process (no process start-ups).
    from bench import run
    from bench.harness.loop import Run
    from bench.harness.recorder import ROWS

    train = []
    for every in ("0", "1"):
        args = run.build_parser().parse_args([
            "--preset", "smoke", "--model", "tiny-shapes", "--prompts", "shapes-train", "--eval-prompts", "shapes-eval",
            "--methods", "ddpo", "--reward", "shape-aesthetic", "--max-steps", "2", "--eval-n", "2",
            "--eval-every", every])  # fmt: skip
        (spec,), _ = run.plan(args)
        run_dir = tmp_path / every
        run_dir.mkdir()
        (run_dir / "config.json").write_text(spec.to_json())
        assert Run(run_dir).execute()["status"] == "max_steps"
        rows = pd.read_json(run_dir / ROWS, lines=True)
        assert sorted(rows.query("split == 'eval'").step.unique()) == ([0, 2] if every == "0" else [0, 1, 2])
        train.append(rows[rows.split == "train"].set_index(["step", "metric"]).value.sort_index())
    pd.testing.assert_series_equal(train[0], train[1])
