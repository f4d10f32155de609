"""Every method: one step = one update of adapter weights only; learning follows the reward; trl is really used."""

import pytest
import torch

from bench.core.prompts import load_prompts
from methods import METHODS
from rewards.base import RewardNotDifferentiable
from rewards.jpeg import JpegCompressibility
from rewards.toy import MeanBrightness

SMALL = dict(steps=3, batch_size=2, guidance_scale=3.0)  # the learning checks keep 4 sampling steps
SD_METHODS = [n for n in METHODS.names() if "sd" in METHODS.get(n).families]
"""The methods that run on tiny-random; the sd3-only flow policy gradients: tests/methods/test_flow_pg.py."""


def build(name, tiny, reward=None, seed=0, **overrides):
    cls = METHODS.get(name)
    config = cls.Config(**{**SMALL, **overrides})
    return cls(tiny.pipe, reward or MeanBrightness(), load_prompts("simple-animals"), config, seed=seed)


@pytest.mark.parametrize("name", SD_METHODS)
def test_step_changes_only_adapter_weights(name, tiny):
    base_before = {n: p.clone() for n, p in tiny.pipe.unet.named_parameters()}
    vae_before = [p.clone() for p in tiny.pipe.vae.parameters()]
    method = build(name, tiny)
    lora_before = {n: p.detach().clone() for n, p in tiny.pipe.unet.named_parameters() if "lora_" in n}
    assert lora_before and all(p.requires_grad for p in method.trainable_parameters())
    for _ in range(2):
        metrics = method.step()
    assert {"reward_mean", "reward_std", "loss", "samples"} <= metrics.keys()
    assert metrics["samples"] == 2 * getattr(method.config, "draws", 1)  # DRaFT-LV scores each image `draws` times
    assert all(isinstance(v, float) for v in metrics.values())
    after = dict(tiny.pipe.unet.named_parameters())
    base_after = {n.replace(".base_layer", ""): p for n, p in after.items() if "lora_" not in n}
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_before[n], base_after[n]) for n in base_before), "a base UNet weight changed"
    assert all(torch.equal(a, b) for a, b in zip(vae_before, tiny.pipe.vae.parameters()))
    assert any(not torch.equal(lora_before[n], after[n]) for n in lora_before), "no adapter weight changed"
    assert set(method.adapter_state_dict()) == set(lora_before)


@pytest.mark.parametrize("name", ["alignprop", "alignprop-full", "alignprop-k1", "alignprop-trl", "draft-k", "draft-lv",
                                  "refl"])
def test_gradient_methods_refuse_rewards_without_gradient(name, tiny):
    with pytest.raises(RewardNotDifferentiable, match="not differentiable"):
        build(name, tiny, reward=JpegCompressibility())  # the bare true score: no gradient, no surrogate


def eval_brightness(pipe):
    from bench.core.evaluate import EvalConfig, evaluate

    scores, _ = evaluate(pipe, MeanBrightness(), load_prompts("eval-animals").first(4),
                         EvalConfig(n=4, steps=4, guidance_scale=3.0))
    return float(scores.mean())


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_alignprop_k1_moves_eval_reward_in_the_rewarded_direction(tiny, higher_is_better):
    # The toy reward, maximised or (higher_is_better=False) minimised: fixed-noise evaluation must move the
    # matching way. K=1 has little leverage (last-step coefficient ~0.04 on tiny-random), hence the large lr.
    reward = MeanBrightness()
    reward.higher_is_better = higher_is_better
    before = eval_brightness(tiny.pipe)
    method = build("alignprop-k1", tiny, reward=reward, steps=4, lr=0.1, max_grad_norm=0.0, batch_size=4)
    for _ in range(4):
        method.step()
    change = eval_brightness(tiny.pipe) - before
    assert (change > 5e-5) if higher_is_better else (change < -5e-5), change


def test_rwr_raises_eval_reward(tiny):
    before = eval_brightness(tiny.pipe)
    method = build("rwr", tiny, steps=4, lr=3e-2, batch_size=4, temperature=0.005)
    for _ in range(4):
        method.step()
    assert eval_brightness(tiny.pipe) - before > 2e-4


def test_rwr_normalises_weights_over_the_whole_step(tiny, monkeypatch):
    method = build("rwr-sparse", tiny, batch_size=2, grad_accum=3)
    seen = []
    original = method.weights
    monkeypatch.setattr(method, "weights", lambda r: seen.append(len(r)) or original(r))
    method.step()
    assert seen == [6]  # one normalisation over 2 x 3 images, not three over 2


def test_alignprop_refuses_a_differentiable_reward_that_detaches(tiny):
    class Detaching(MeanBrightness):
        def score(self, images, prompts):
            return images.detach().mean(dim=(1, 2, 3))

    method = build("alignprop-k1", tiny, reward=Detaching())
    with pytest.raises(RuntimeError, match="detaches its input"):
        method.step()


def test_rwr_weights():
    from methods.rwr import RWR, RWRConfig, RWRSparseConfig

    method = RWR.__new__(RWR)
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    method.config = RWRConfig(temperature=1.0)
    w = method.weights(r)
    assert torch.allclose(w.mean(), torch.tensor(1.0)) and torch.all(w[1:] > w[:-1])
    method.config = RWRSparseConfig(top_fraction=0.5)
    assert torch.equal(method.weights(r), torch.tensor([0.0, 0.0, 2.0, 2.0]))
    method.config = RWRSparseConfig(top_fraction=0.1)
    assert torch.equal(method.weights(r), torch.tensor([0.0, 0.0, 0.0, 4.0]))


def test_ddpo_and_alignprop_trl_go_through_trl_trainers(tiny, monkeypatch):
    from trl import AlignPropTrainer, DDPOTrainer

    calls = {"ddpo": 0, "alignprop": 0}
    ddpo_loss, ap_loss = DDPOTrainer.calculate_loss, AlignPropTrainer.calculate_loss

    def count_ddpo(self, *a, **k):
        calls["ddpo"] += 1
        return ddpo_loss(self, *a, **k)

    def count_ap(self, *a, **k):
        calls["alignprop"] += 1
        return ap_loss(self, *a, **k)

    monkeypatch.setattr(DDPOTrainer, "calculate_loss", count_ddpo)
    monkeypatch.setattr(AlignPropTrainer, "calculate_loss", count_ap)
    ddpo = build("ddpo", tiny)
    assert isinstance(ddpo.trainer, DDPOTrainer)
    ddpo.step()
    assert calls["ddpo"] == SMALL["steps"]  # one PPO loss per timestep, all accumulated into one update
    from bench.core.models import load_model

    other = load_model("tiny-random")
    ap = build("alignprop-trl", other)
    assert isinstance(ap.trainer, AlignPropTrainer)
    ap.step()
    assert calls["alignprop"] == 1


def test_trl_alignprop_range_beyond_steps_is_refused(tiny):
    with pytest.raises(ValueError, match="code_range"):
        build("alignprop-trl", tiny, code_max=50)


@pytest.mark.parametrize("name", SD_METHODS)
def test_method_state_round_trip(tiny, name):
    a = build(name, tiny, seed=5)
    a.step()
    state = a.state_dict()
    next_a = a.step()
    from bench.core.models import load_model

    other = load_model("tiny-random")
    b = build(name, other, seed=5)
    b.load_state_dict(state)
    next_b = b.step()
    assert next_a["loss"] == pytest.approx(next_b["loss"], rel=1e-5, abs=1e-9)
    assert next_a["reward_mean"] == pytest.approx(next_b["reward_mean"], rel=1e-5)


@pytest.mark.parametrize("name", SD_METHODS)
def test_bf16_step_trains_fp32_lora_only(name, tiny):
    # --precision bf16: frozen weights in bf16, adapters and their updates in fp32, rewards finite. No weight decay,
    # so a changed adapter weight means a gradient reached it.
    warm = {"warmup_steps": 0} if "warmup_steps" in METHODS.get(name).Config.field_names() else {}  # 1st lr: 0
    method = build(name, tiny, steps=2, precision="bf16", weight_decay=0.0, **warm)
    base_before = {n: p.clone() for n, p in tiny.pipe.unet.named_parameters() if "lora_" not in n}
    lora = {n: p for n, p in tiny.pipe.unet.named_parameters() if "lora_" in n}
    lora_before = {n: p.detach().clone() for n, p in lora.items()}
    metrics = method.step()
    assert torch.isfinite(torch.tensor([metrics["reward_mean"], metrics["loss"]])).all(), metrics
    assert tiny.pipe.unet.dtype == tiny.pipe.text_encoder.dtype == torch.bfloat16
    assert {p.dtype for p in lora.values()} == {torch.float32}
    assert all(torch.equal(p, base_before[n]) for n, p in tiny.pipe.unet.named_parameters() if "lora_" not in n)
    assert any(not torch.equal(lora_before[n], p) for n, p in lora.items()), "no gradient reached the adapters"


def test_ddpo_makes_several_updates_per_epoch(tiny):
    method = build("ddpo", tiny, steps=2, batch_size=2, sample_batches=2, train_batch_size=1, train_grad_accum=2)
    assert method.config.updates_per_step() == 2
    metrics = method.step()
    assert metrics["optimizer_steps"] == 2 and metrics["samples"] == 4


def test_auto_checkpointing_keeps_what_fits_the_budget(tiny):
    roomy = build("alignprop-full", tiny, memory_budget_mb=1e6)
    assert roomy.step()["kept_steps"] == SMALL["steps"]  # everything fits: nothing recomputed
    from bench.core.models import load_model

    tight = build("alignprop-full", load_model("tiny-random"), memory_budget_mb=1e-3)
    assert tight.step()["kept_steps"] == 0  # nothing fits: every call checkpointed
    unet, decode = tight.activations
    assert unet > 0 and decode > 0
