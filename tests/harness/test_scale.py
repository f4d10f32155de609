"""Scale-out: data-parallel processes inside a run, concurrent local jobs, and the submitit launcher."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bench.harness.recorder import METRIC_COLUMNS, RUN_COLUMNS
from test_run import bench_run, bench_run_inprocess

SMOKE = ["--preset", "smoke", "--reward", "mean-brightness", "--max-steps", "3"]


@pytest.mark.slow
def test_two_processes_keep_identical_adapters_and_the_schema(tmp_path):
    out = tmp_path / "dp"
    bench_run(*SMOKE, "--methods", "alignprop-k1,grpo", "--processes", "2", "--max-steps", "2", "--out", str(out))
    for method in ("alignprop-k1", "grpo"):
        run_dir = out / "runs" / f"{method}__mean-brightness__s0"
        result = json.loads((run_dir / "result.json").read_text())
        assert result["processes"] == 2 and result["status"] == "max_steps", method
        # each process draws its own prompts and noise, so without gradient averaging the adapters would drift apart
        assert result["rank_weight_spread"] == 0.0, method
        assert result["samples"] == 2 * 2 * 2  # steps x batch x processes
        adapter = load_file(str(run_dir / "adapter.safetensors"))
        assert any(torch.any(v != 0) for k, v in adapter.items() if "lora_B" in k), method  # B starts at zero
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert list(pd.read_csv(out / "runs.csv").columns) == RUN_COLUMNS


@pytest.mark.slow
def test_the_flow_policy_gradients_keep_identical_adapters_over_two_processes(tmp_path):
    out = tmp_path / "dp-flow"
    methods = ("flow-grpo", "flow-grpo-guard", "dance-grpo", "mixgrpo", "diffusion-nft", "awm")
    bench_run(*SMOKE, "--model", "tiny-flow-random", "--methods", ",".join(methods), "--processes", "2",
              "--max-steps", "2", "--out", str(out))
    for method in methods:
        result = json.loads((out / "runs" / f"{method}__mean-brightness__s0" / "result.json").read_text())
        assert result["processes"] == 2 and result["status"] == "max_steps", method
        assert result["rank_weight_spread"] == 0.0, method  # DiffusionNFT's old, AWM's trailing adapter too
        assert result["samples"] == 2 * 2 * 2, method  # steps x batch x processes


@pytest.mark.slow
def test_submitit_launcher_collects_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "slurm"
    args = [*SMOKE, "--methods", "rwr", "--launcher", "slurm", "--slurm-cluster", "debug", "--out", str(out)]
    code, dry, _ = bench_run_inprocess(capsys, *args, "--dry-run")
    assert code == 0 and "slurm" in dry and "bench.worker" in dry and not out.exists()
    bench_run(*args)
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"]
    assert (out / "slurm").is_dir()
    result = out / "runs" / "rwr__mean-brightness__s0" / "result.json"
    stamp = result.stat().st_mtime
    assert bench_run_inprocess(capsys, *args, "--resume")[0] == 0
    assert result.stat().st_mtime == stamp  # finished runs are not made again
