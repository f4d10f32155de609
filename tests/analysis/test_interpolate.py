"""bench.interpolate on two synthetic runs of tiny-random: alpha = 0 and 1 reproduce each run's own final eval reward."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from bench import interpolate as interpolate_cli
from bench.analysis import interpolate as mix
from bench.core.errors import UsageError
from bench.core.evaluate import EvalConfig, evaluate
from bench.core.lora import LoraSettings, add_lora, adapter_state_dict, load_adapter_state_dict
from bench.core.models import load_model
from rewards import make_reward

EVAL = dict(n=3, seed=1234, batch_size=2, steps=2, guidance_scale=7.5, eta=0.0)
PROMPTS = ["cat", "dog"]


def write_run(results, method, reward, seed, *, rank=4, lora_alpha=4.0, model="tiny-random", scale=0.3,
              runner_form=False):  # fmt: skip
    """A run folder as bench.run writes it: perturbed adapter + metadata, config.json, final eval reward.

    ``runner_form``: the spelling bench.run actually uses (eval settings nested under "config", LoRA settings as
    lora_rank / lora_alpha / lora_targets in method_config and the metadata) instead of the contract's.
    """
    settings = LoraSettings(rank=rank, alpha=lora_alpha)
    loaded = load_model("tiny-random")
    add_lora(loaded.pipe.unet, settings)
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in adapter_state_dict(loaded.pipe.unet).items()}
    load_adapter_state_dict(loaded.pipe.unet, state)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(EVAL["n"])]
    scores, _ = evaluate(loaded.pipe, make_reward(reward), prompts, EvalConfig(**EVAL))
    run_id = f"{method}__{reward}__s{seed}"
    run_dir = results / "runs" / run_id
    run_dir.mkdir(parents=True)
    lora = {"rank": rank, "alpha": lora_alpha, "target_modules": list(settings.target_modules)}
    config = {"method": method, "reward": reward, "model": model, "seed": seed, "method_config": {},
              "eval": dict(EVAL, prompts=PROMPTS), "lora": lora, "stand_in": loaded.stand_in}  # fmt: skip
    if runner_form:
        lora = {"lora_rank": rank, "lora_alpha": lora_alpha, "lora_targets": ",".join(settings.target_modules)}
        config.update(eval={"config": EVAL, "prompts": PROMPTS}, method_config=dict(lora))
        del config["lora"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(run_dir / "adapter.safetensors"),
              metadata={"model": model, "lora": json.dumps(lora)})  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    row = dict(run_id=run_id, method=method, reward=reward, model=model, seed=seed, status="max_steps",
               final_eval_reward=float(scores.mean()), stand_in=loaded.stand_in)  # fmt: skip
    runs_csv = results / "runs.csv"
    old = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame()
    pd.concat([old, pd.DataFrame([row])]).to_csv(runs_csv, index=False)
    return run_dir, float(scores.mean())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    a = write_run(results, "alignprop", "mean-brightness", 1)
    b = write_run(results, "ddpo", "jpeg-incompressibility", 2, rank=2, lora_alpha=8.0, runner_form=True)
    return a, b


def test_endpoints_reproduce_final_eval_rewards(two_runs, tmp_path):
    (dir_a, final_a), (dir_b, final_b) = two_runs
    out = tmp_path / "mix"
    assert interpolate_cli.main([str(dir_a), str(dir_b), "--alphas", "0,0.5,1", "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out / "mix.csv").set_index("alpha")
    assert table.loc[0.0, "mean-brightness mean"] == pytest.approx(final_a, abs=1e-4)
    assert table.loc[1.0, "jpeg-incompressibility mean"] == pytest.approx(final_b, abs=1e-3)
    # The middle is a different model from both ends (the blend does something).
    assert table.loc[0.5, "mean-brightness mean"] != pytest.approx(final_a, abs=1e-4)
    assert (out / "mix.png").stat().st_size > 1000 and (out / "mix.pdf").is_file()
    text = (out / "mix.md").read_text()
    assert "STAND-IN" in text and "recorded final eval reward" in text


def test_blend_is_linear_in_weight_space(two_runs):
    (dir_a, _), (dir_b, _) = two_runs
    a, b = mix.load_run(dir_a), mix.load_run(dir_b)
    key = next(k for k in a.state if ".lora_A." in k)
    b_key = key.replace(".lora_A.", ".lora_B.")

    def delta(run):
        return run.scale * run.state[b_key] @ run.state[key]

    state = mix.mixed_state(a, b, 0.25)
    assert state[key].shape[0] == a.rank + b.rank
    torch.testing.assert_close(state[b_key] @ state[key], 0.75 * delta(a) + 0.25 * delta(b), rtol=1e-5, atol=1e-6)


def test_base_endpoint_is_the_plain_model(two_runs, tmp_path):
    (dir_a, final_a), _ = two_runs
    table, _, _ = mix.run_mix(str(dir_a), "base", [0.0, 1.0])
    plain = load_model("tiny-random")
    scores, _ = evaluate(plain.pipe, make_reward("mean-brightness"), [PROMPTS[i % 2] for i in range(3)], EvalConfig(**EVAL))
    # As the AlignProp paper's figure: alpha = 0 is the base model, alpha = 1 the fine-tuned run.
    assert table.iloc[0]["mean-brightness mean"] == pytest.approx(float(scores.mean()), abs=1e-4)
    assert table.iloc[1]["mean-brightness mean"] == pytest.approx(final_a, abs=1e-4)


def test_refuses_different_base_models(two_runs, tmp_path, capsys):
    (dir_a, _), _ = two_runs
    other, _ = write_run(tmp_path, "rwr", "mean-brightness", 3, model="sd15", scale=0.0)
    with pytest.raises(UsageError, match="different base models"):
        mix.run_mix(str(dir_a), str(other), [0.0])
    assert interpolate_cli.main([str(dir_a), str(other), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: adapters come from different base models") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("alphas", ["0,2", "a,b", ""])
def test_bad_alphas(alphas):
    with pytest.raises(UsageError):
        interpolate_cli.parse_alphas(alphas)
