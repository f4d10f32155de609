"""Scale-out: data-parallel processes inside a run, concurrent local jobs, and the submitit launcher."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bench.recorder import METRIC_COLUMNS, RUN_COLUMNS
from test_run import bench_run

SMOKE = ["--preset", "smoke", "--reward", "mean-brightness", "--max-steps", "3"]


@pytest.mark.parametrize("method", ["alignprop-k1", "grpo"])
def test_two_processes_keep_identical_adapters_and_the_schema(tmp_path, method):
    out = tmp_path / "dp"
    bench_run(*SMOKE, "--methods", method, "--processes", "2", "--out", str(out))
    run_dir = out / "runs" / f"{method}__mean-brightness__s0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["processes"] == 2 and result["status"] == "max_steps"
    # each process draws its own prompts and noise, so without gradient averaging the adapters would drift apart
    assert result["rank_weight_spread"] == 0.0
    assert result["samples"] == 3 * 2 * 2  # steps x batch x processes
    adapter = load_file(str(run_dir / "adapter.safetensors"))
    assert any(torch.any(v != 0) for k, v in adapter.items() if "lora_B" in k)  # B starts at zero: it trained
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert list(pd.read_csv(out / "runs.csv").columns) == RUN_COLUMNS


def test_local_jobs_run_concurrently_and_all_finish(tmp_path):
    out = tmp_path / "jobs"
    bench_run(*SMOKE, "--methods", "rwr,rwr-sparse", "--jobs", "2", "--out", str(out))
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps", "max_steps"]


def test_submitit_launcher_collects_results_and_resumes(tmp_path):
    out = tmp_path / "slurm"
    args = [*SMOKE, "--methods", "rwr", "--launcher", "slurm", "--slurm-cluster", "debug", "--out", str(out)]
    dry = bench_run(*args, "--dry-run").stdout
    assert "slurm" in dry and "bench.worker" in dry and not out.exists()
    bench_run(*args)
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"]
    assert (out / "slurm").is_dir()
    result = out / "runs" / "rwr__mean-brightness__s0" / "result.json"
    stamp = result.stat().st_mtime
    bench_run(*args, "--resume")
    assert result.stat().st_mtime == stamp  # finished runs are not made again


def test_ladder_measures_methods_and_the_sampler_ratio(tmp_path):
    from bench import ladder

    out = tmp_path / "ladder"
    assert ladder.main(["--model", "tiny-random", "--steps", "2", "--dtypes", "fp32", "--rows",
                        "alignprop-k1,alignprop-trl-k1,sampler", "--warmup", "0", "--repeats", "2", "--out", str(out)]) == 0
    table = pd.read_csv(out / "ladder.csv").set_index("row")
    assert (table.status == "ok").all()
    assert table.loc["alignprop-k1", "seconds"] > 0 and table.loc["alignprop-k1", "peak_mem_mb"] > 0
    assert table.loc["alignprop-k1", "step_mem_mb"] > 0 and table.loc["alignprop-trl-k1", "samples"] == 1
    assert table.loc["sampler", "ratio"] > 0
    report = (out / "ladder.md").read_text()
    assert "STAND-IN" in report and "fp32 `alignprop-k1` / `alignprop-trl-k1`: time" in report
    assert ladder.main(["--rows", "bogus", "--out", str(tmp_path / "x")]) == 2


def test_sd15_random_has_the_sd15_architecture():
    from bench.sd15 import build_sd15_random

    pipe = build_sd15_random()
    assert pipe.unet.config.block_out_channels == (320, 640, 1280, 1280) or list(pipe.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert 850e6 < sum(p.numel() for p in pipe.unet.parameters()) < 870e6
    assert pipe.vae.config.sample_size == 512 and pipe.text_encoder.config.num_hidden_layers == 12
