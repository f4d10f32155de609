"""The flow policy gradients (flow-grpo, dance-grpo, mixgrpo, diffusion-nft, awm) on tiny-flow-random: only adapters
train, the ratio is exactly 1 on-policy, MixGRPO's window is the only stochastic and trained part of its chain and
moves on its schedule, DiffusionNFT's weight r lies in [0, 1] and equal rewards give no update, resume restores
their own state, queries are counted as the budget counts them, and each learns the toy reward's way."""

import copy

import pytest
import torch

from bench.core.models import load_model
from bench.core.prompts import load_prompts
from bench.core.sampler import SamplerConfig, Sampler
from methods import METHODS
from rewards.toy import MeanBrightness

FLOW_PG = ("flow-grpo", "flow-grpo-guard", "dance-grpo", "mixgrpo", "diffusion-nft", "awm")
SMALL = dict(steps=4, batch_size=4, group_size=2, guidance_scale=3.0)
SMALL_BY = {"mixgrpo": dict(window_size=2)}


@pytest.fixture(scope="module")
def flow():
    return load_model("tiny-flow-random")


def build(name, flow, reward=None, seed=0, **overrides):
    cls = METHODS.get(name)
    config = cls.Config(**{**SMALL, **SMALL_BY.get(name, {}), **overrides})
    return cls(copy.deepcopy(flow).pipe, reward or MeanBrightness(), load_prompts("simple-animals"), config, seed=seed)


class PerPrompt(MeanBrightness):
    """Equal rewards for every image of a prompt (so within every group), different across prompts."""

    def score(self, images, prompts):
        return torch.tensor([0.1 * len(p) for p in prompts]) + 0 * images.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("name", FLOW_PG)
def test_only_the_transformer_adapters_train_and_queries_are_counted(flow, name):
    method = build(name, flow)
    base = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_B" in n}
    assert any("add_k_proj" in n for n in lora) and METHODS.get(name).families == ("sd3", "flux")
    metrics = method.step()
    after = dict(method.denoiser.named_parameters())
    assert all(torch.equal(base[n], after[n]) for n in base), "a base transformer weight changed"
    assert any(not torch.equal(lora[n], after[n]) for n in lora), "no adapter weight changed"
    assert metrics["samples"] == 4.0 and all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("name", ["flow-grpo", "dance-grpo", "mixgrpo"])
def test_ratio_is_one_on_policy_and_not_after_an_update(flow, name):
    # updates_per_batch 2: the first update trains on-policy data (ratio exactly 1, nothing clipped), the second on
    # data sampled before the first update (ratio off 1). Queries: 4 per update, 8 sampled by the first.
    method = build(name, flow, updates_per_batch=2, lr=1e-2, clip_range=1e-6, max_grad_norm=0.0)
    first, second = method.step(), method.step()
    assert first["ratio_max_dev"] < 1e-6 and first["clipfrac"] == 0.0
    assert (first["samples"], first["sampled"], second["samples"], second["sampled"]) == (4.0, 8.0, 4.0, 0.0)
    assert second["ratio_max_dev"] > 1e-6 and second["clipfrac"] > 0


def test_flow_grpo_kl_is_on_flow_grpos_scale(flow):
    method = build("flow-grpo", flow)
    batch = method.collect()[0]
    method.step()  # the adapter moves off the base, so the KL is positive
    rows = torch.arange(4)
    method.config.kl_per_time = False
    _, gaussian = method.transition_loss(batch, 0, rows)
    method.config.kl_per_time = True
    _, scaled = method.transition_loss(batch, 0, rows)
    dt = method.sampler.chain.step_length(batch["timesteps"][0])
    assert gaussian["kl"] > 0 and scaled["kl"] == pytest.approx(gaussian["kl"] * dt, rel=1e-5)


def test_dance_grpo_trains_its_own_random_steps_per_sample(flow):
    method = build("dance-grpo", flow, steps=6, batch_size=8, group_size=4)
    mask = method.collect()[0]["chosen"]
    assert mask.shape == (8, 6) and not mask[:, -1].any()  # the last transition is never trained
    assert (mask.sum(dim=1) == int(5 * 0.6)).all() and len({tuple(r) for r in mask.tolist()}) > 1
    shared = method.collect()[0]["latents"][:, 0]
    assert torch.equal(shared[0], shared[3]) and not torch.equal(shared[0], shared[4])  # one x_T per group


def test_mixgrpo_window_is_the_only_stochastic_part_and_moves(flow):
    method = build("mixgrpo", flow, steps=6, window_size=2, shift_interval=2, batch_size=2, group_size=2,
                   updates_per_batch=1)
    cfg = method.config
    assert [cfg.window(r).start for r in range(0, 12, 2)] == [0, 1, 2, 3, 0, 1]  # 4 positions, below T - 2 = 4
    assert cfg.window(6) == range(3, 4)  # shrinks at the end: steps 4 and 5 are never in it
    assert cfg.__class__(**{**SMALL, "steps": 6, "window_size": 2, "roll_back": False}).window(100) == range(3, 4)
    method.rounds = 2  # window [1, 2]
    batch = method.collect()[0]
    assert batch["steps"].tolist() == [1, 2] and batch["chosen"].all()
    # Outside the window the chain is the ODE: from the window's end the ODE reproduces the rollout's x_0.
    ode = Sampler(method.pipe, SamplerConfig(steps=6, guidance_scale=3.0, schedule="shifted-linspace"))
    x, timesteps = batch["latents"][:, 3], ode.set_steps()
    with torch.no_grad():
        for t in timesteps[3:]:
            x, _ = ode.transition(x, t, batch["embeds"])
    assert torch.allclose(x, batch["latents"][:, -1], atol=1e-6)
    assert not torch.allclose(batch["latents"][:, 2], ode.transition(batch["latents"][:, 1], timesteps[1],
                                                                     batch["embeds"])[0], atol=1e-4)
    with pytest.raises(ValueError, match="window_size 5 must be <= steps - 2"):
        cfg.__class__(**{**SMALL, "steps": 6, "window_size": 5})


def test_diffusion_nft_weights_lie_in_0_1_and_equal_rewards_make_no_update(flow):
    method = build("diffusion-nft", flow, batch_size=8, group_size=4)
    r = method.collect()[0]["r"]
    assert float(r.min()) >= 0 and float(r.max()) <= 1 and float(r.min()) < 0.5 < float(r.max())
    # Equal rewards in every group: r = 1/2 everywhere; old = current at the start, so the positive and the
    # negative implicit policy pull exactly against each other (and the KL's gradient is 0 at the base).
    flat = build("diffusion-nft", flow, reward=PerPrompt(), weight_decay=0.0)
    before = [p.detach().clone() for p in flat.trainable_parameters()]
    metrics = flat.step()
    assert metrics["r_mean"] == 0.5 and metrics["grad_norm"] < 1e-6
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(before, flat.trainable_parameters()))


def test_diffusion_nft_old_adapter_trails_the_current_one(flow):
    method = build("diffusion-nft", flow, decay_slope=0.25, lr=1e-2)
    method.step()  # d = min(0.25, 0.5): old = 0.25 old + 0.75 new
    new = [p.detach() for p in method.params]
    assert any(not torch.equal(q, p) for q, p in zip(method.old, new))
    state = method.state_dict()
    other = build("diffusion-nft", flow, decay_slope=0.25, lr=1e-2, seed=5)
    other.load_state_dict(state)
    assert other.updates == 1 and all(torch.equal(a, b) for a, b in zip(other.old, method.old))


def test_mixgrpo_resume_keeps_the_window(flow):
    method = build("mixgrpo", flow, steps=6, window_size=2, shift_interval=1)
    method.step()
    other = build("mixgrpo", flow, steps=6, window_size=2, shift_interval=1, seed=5)
    other.load_state_dict(method.state_dict())
    assert other.rounds == 1 and other.stochastic_steps() == range(1, 3) and len(other.buffer) == 3


@pytest.mark.parametrize("name", FLOW_PG)
def test_bf16_step_trains_fp32_adapters(flow, name):
    method = build(name, flow, precision="bf16", weight_decay=0.0)
    lora = {n: p for n, p in method.denoiser.named_parameters() if "lora_" in n}
    before = {n: p.detach().clone() for n, p in lora.items()}
    metrics = method.step()
    assert torch.isfinite(torch.tensor([metrics["reward_mean"], metrics["loss"]])).all(), metrics
    assert method.denoiser.dtype == torch.bfloat16 and {p.dtype for p in lora.values()} == {torch.float32}
    assert any(not torch.equal(before[n], p) for n, p in lora.items()), "no gradient reached the adapters"
