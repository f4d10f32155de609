"""bench.perf.identity: the before/after comparison notices one changed value and ignores timings and memory."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from bench.perf import identity


def fake_run(folder, values=(0.5, 0.25), wall=1.0, adapter=1.0, first=(0.1, 0.2)):
    run = folder / "runs" / "rwr__r__s0"
    run.mkdir(parents=True)
    rows = [dict(run_id="rwr__r__s0", split="train", metric=m, step=1, value=v, wall_s=wall, cpu_s=wall,
                 peak_mem_mb=100 * wall) for m, v in zip(("loss", "reward_mean"), values)]
    pd.DataFrame(rows).to_parquet(folder / "metrics.parquet")
    (run / "eval_first.json").write_text(json.dumps(dict(step=0, reward=list(first))))
    (run / "eval_last.json").write_text(json.dumps(dict(step=1, reward=[0.3, 0.4])))
    save_file({"a.lora_A.weight": torch.full((2, 2), adapter)}, str(run / "adapter.safetensors"))
    return folder


@pytest.mark.parametrize("change, found", [
    (dict(wall=3.0), []),  # timings and memory differ between any two runs
    (dict(values=(0.5, 0.25000001)), ["train reward_mean step 1: 0.25 != 0.25000001"]),
    (dict(adapter=1.0 + 2**-20), ["adapter a.lora_A.weight"]),
    (dict(first=(0.1, 0.2000001)), ["eval_first.json"]),
])
def test_differences_name_every_changed_value_and_only_those(tmp_path, change, found):
    n, diffs = identity.differences(fake_run(tmp_path / "a"), fake_run(tmp_path / "b", **change))
    assert diffs == found and n == 2 * 5 + 4 + 4  # 2 rows x 5 compared columns, 4 per-image rewards, 4 weights


def test_the_tool_refuses_an_unknown_case(tmp_path, capsys):
    assert identity.main(["--before", str(tmp_path), "--cases", "nope"]) == 2
    assert "unknown case(s) ['nope']" in capsys.readouterr().err
