"""Issue 34: the flow policy gradients run as their authors' code runs them. Each test recomputes the reference's
quantity independently (from the paper or the cited lines of the reference code), never by calling our helper that
computes it, and fails if the corresponding deviation comes back."""

from bench.harness.plan import plan
from bench.run import build_parser

FLOW_ARGS = ["--preset", "default", "--model", "tiny-flow-random", "--reward", "mean-brightness", "--out", "unused"]


def planned(*args):
    runs, info = plan(build_parser().parse_args([*FLOW_ARGS, *args]))
    return {r.method: r for r in runs}, info


def test_a_preset_never_overrides_diffusion_nfts_cfg_free_sampling():
    # DiffusionNFT config/nft.py: sample.guidance_scale = 1.0 (CFG-free), for rollouts and evaluation alike. The
    # default preset's guidance (2.0 on the shape world) applies to the methods that do not pin one.
    runs, info = planned("--methods", "diffusion-nft,flow-grpo")
    nft, grpo = runs["diffusion-nft"], runs["flow-grpo"]
    assert nft.method_config["guidance_scale"] == 1.0 and nft.eval.config.guidance_scale == 1.0
    assert grpo.eval.config.guidance_scale == grpo.method_config["guidance_scale"] != 1.0
    assert info["notes"] == []


def test_an_explicit_guidance_set_is_applied_and_announced():
    for sets in (["--set", "guidance_scale=3"], ["--set", "diffusion-nft.guidance_scale=3"]):
        runs, info = planned("--methods", "diffusion-nft", *sets)
        nft = runs["diffusion-nft"]
        assert nft.method_config["guidance_scale"] == 3.0 and nft.eval.config.guidance_scale == 3.0
        assert len(info["notes"]) == 1 and "diffusion-nft's published guidance_scale 1" in info["notes"][0]
        assert sets[1].split("=")[0] in info["notes"][0]


# --------------------------------------------------------------------------------------------- methods on a model
import copy

import numpy as np
import pytest
import torch

from bench.core.models import load_model
from bench.core.prompts import load_prompts
from methods import METHODS
from rewards.toy import MeanBrightness

SMALL = dict(steps=4, batch_size=4, group_size=2, guidance_scale=3.0)


@pytest.fixture(scope="module")
def flow():
    return load_model("tiny-flow-random")


class Recording(MeanBrightness):
    """Mean brightness that remembers every (prompt, reward) it returned, in order."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, float]] = []

    def score(self, images, prompts):
        out = super().score(images, prompts)
        self.seen += list(zip(prompts, out.tolist()))
        return out


def build(name, flow, reward=None, seed=0, **overrides):
    cls = METHODS.get(name)
    config = cls.Config(**{**SMALL, **overrides})
    return cls(copy.deepcopy(flow).pipe, reward or MeanBrightness(), load_prompts("simple-animals"), config, seed=seed)


def tracker_advantages(seen, eps):
    """flow_grpo/stat_tracking.py PerPromptStatTracker.update with global_std=True, written from its lines: the mean
    of each prompt's rewards, the std of ALL the rewards (np.std, ddof 0), (r - mean) / (std + eps)."""
    prompts = np.array([p for p, _ in seen])
    rewards = np.array([r for _, r in seen], dtype=np.float64)
    out = np.empty_like(rewards)
    std = np.std(rewards)
    for p in np.unique(prompts):
        out[prompts == p] = (rewards[prompts == p] - np.mean(rewards[prompts == p])) / (std + eps)
    return out


@pytest.mark.parametrize("name", ["flow-grpo", "diffusion-nft"])
def test_advantages_are_normalised_over_the_whole_round_with_the_population_std(flow, name):
    # A round of 4 rollout batches (16 samples, 8 groups): prompt means, ONE std over all 16 rewards, ddof 0.
    reward = Recording()
    rounds = dict(grad_accum=2, updates_per_batch=2) if name == "flow-grpo" else dict(grad_accum=4)
    method = build(name, flow, reward=reward, **rounds)
    batches = method.collect()
    assert len(reward.seen) == 16
    expected = dict(zip([r for _, r in reward.seen], tracker_advantages(reward.seen, method.config.adv_eps)))
    got = torch.cat([b["rewards"] for b in batches]).tolist()
    if name == "flow-grpo":
        adv = torch.cat([b["advantages"] for b in batches]).tolist()
    else:  # r = clamp(A / adv_clip_max / 2 + 1/2, 0, 1): train_nft_sd3.py
        adv = [(float(r) - 0.5) * 2 * method.config.adv_clip_max for b in batches for r in b["r"]]
    assert np.allclose(adv, [expected[r] for r in got], atol=1e-5)
    # The round's samples are shuffled across its rollout batches (the group order is not kept).
    assert got != [r for _, r in reward.seen]


@pytest.mark.parametrize("name", ["dance-grpo", "mixgrpo"])
def test_group_methods_normalise_each_group_with_its_unbiased_std(flow, name):
    reward = Recording()
    method = build(name, flow, reward=reward, steps=6, **(dict(window_size=2) if name == "mixgrpo" else {}))
    batches = method.collect()
    rewards = torch.tensor([r for _, r in reward.seen], dtype=torch.float64).view(-1, 2)
    expected = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-8)).flatten()
    assert torch.allclose(torch.cat([b["advantages"] for b in batches]), expected, atol=1e-6)


def test_dance_grpo_makes_two_updates_per_round_and_the_clip_acts_on_the_second(flow):
    # finetune_flux_grpo_8gpus_lora.sh: 2 prompts x 12 samples, an optimizer step every 12 samples -> 2 per round.
    method = build("dance-grpo", flow, steps=6, lr=1e-2, max_grad_norm=0.0, clip_range=1e-6)
    assert method.config.updates_per_batch == 2
    first, second, third = method.step(), method.step(), method.step()
    assert first["sampled"] == 8.0 and second["sampled"] == 0.0 and third["sampled"] == 8.0  # a round per 2 updates
    assert first["clipfrac"] == 0.0 and first["ratio_max_dev"] < 1e-6  # on-policy
    assert second["clipfrac"] > 0.0  # one update stale: ratios leave 1 +- 1e-4 and are clipped


def test_dance_grpo_sigmas_and_decoded_image_are_the_references(flow):
    method = build("dance-grpo", flow, steps=6)
    sampler = method.sampler
    sampler.set_steps()
    t = torch.linspace(1, 0, 7, dtype=torch.float64)
    shifted = 3 * t / (1 + 2 * t)  # train_grpo_flux.py sd3_time_shift(3, linspace(1, 0, T + 1))
    assert torch.allclose(sampler.chain.sigmas.double().cpu(), shifted, atol=1e-6)
    # The reward image is the last step's x0 prediction x - sigma v (TGF: latents = pred_original), decoded.
    prompts = ["a cat"] * 2
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        rollout = sampler.sample(prompts, generator=gen)
        x, t_last = rollout.latents[:, -2], rollout.timesteps[-1]
        v = sampler.model_output(x, t_last, rollout.prompt_embeds)
        by_hand = sampler.decode(x - float(shifted[-2]) * v)
    assert torch.allclose(rollout.images, by_hand, atol=1e-5)
    assert not torch.allclose(rollout.images, sampler.decode(rollout.latents[:, -1]), atol=1e-4)


def test_diffusion_nft_evaluates_the_ema_of_its_adapter(flow):
    # flow_grpo/ema.py EMAModuleWrapper(decay 0.9), stepped with the post-increment global_step s = 1, 2, ...:
    # ema <- ema + (1 - min((1 + s) / (10 + s), 0.9)) (p - ema).
    method = build("diffusion-nft", flow, lr=1e-2, weight_decay=0.0)
    ema = [p.detach().clone() for p in method.params]
    for s in (1, 2, 3):
        method.step()
        d = min((1 + s) / (10 + s), 0.9)
        ema = [e + (1 - d) * (p.detach() - e) for e, p in zip(ema, method.params)]
    trained = [p.detach().clone() for p in method.params]
    with method.evaluation_weights():
        assert all(torch.allclose(p, e, atol=1e-7) for p, e in zip(method.params, ema))
    assert all(torch.equal(p, q) for p, q in zip(method.params, trained))  # swapped back
    assert any(not torch.allclose(p, e) for p, e in zip(trained, ema))


def test_flow_grpo_kl_is_divided_by_g_squared_without_dt(flow):
    # train_sd3.py: kl = mean((mean - mean_ref)^2) / (2 std_dev_t^2), std_dev_t = a sqrt(sigma / (1 - sigma)) (the
    # SDE's g, sd3_sde_with_logprob.py), no sqrt(-dt): the transition's std is g sqrt(-dt).
    method = build("flow-grpo", flow, lr=1e-2)
    batch = method.collect()[0]
    method.step()
    rows, c = torch.arange(4), 1
    _, info = method.transition_loss(batch, c, rows)
    j, t = int(batch["steps"][c]), batch["timesteps"][int(batch["steps"][c])]
    x, emb = batch["latents"][rows, j], batch["embeds"][rows]
    sigmas = method.sampler.chain.sigmas
    sigma, sigma_next = float(sigmas[j]), float(sigmas[j + 1])
    with torch.no_grad():
        v = method.sampler.model_output(x, t, emb)
        with method.base_model():
            v_ref = method.sampler.model_output(x, t, emb)
    g = method.config.eta * (sigma / (1 - sigma)) ** 0.5
    dt = sigma_next - sigma

    def mean(v):  # x + [v + g^2 / (2 sigma) (x + (1 - sigma) v)] dt
        return x + (v + g * g / (2 * sigma) * (x + (1 - sigma) * v)) * dt

    kl = ((mean(v) - mean(v_ref)) ** 2).mean(dim=(1, 2, 3)) / (2 * g * g)
    assert info["kl"] == pytest.approx(float(kl.mean()), rel=1e-4)


def test_mixgrpo_window_moves_in_rounds_as_grpo_states_py():
    # grpo_states.py: the start moves prog_overlap_step every iters_per_group TRAINING ITERATIONS (sampling rounds),
    # rolls back past T - 2, and the window is range(cur, min(cur + group_size, T - 2)). Simulated here as their
    # loop does it, for the published 25 steps, window 4, stride 1, 25 rounds per move (the empty last position,
    # where their code crashes, is skipped).
    from methods.mixgrpo import MixGRPOConfig

    cfg = MixGRPOConfig(steps=25)
    cur, expected = 0, []
    for k in range(1200):
        if k and k % 25 == 0:
            cur += 1
            if cur >= 25 - 2:
                cur = 0
        expected.append(range(cur, min(cur + 4, 25 - 2)))
    assert [cfg.window(k) for k in range(1200)] == expected
    assert cfg.updates_per_batch == 4 and cfg.batch_size * cfg.updates_per_batch == cfg.group_size == 12


def test_mixgrpo_trains_a_group_in_four_updates_and_the_clip_acts_after_the_first(flow):
    # TGF:606-610: optimizer.step() every 3 samples of the group of 12: 4 updates per round, in sampling order.
    reward = Recording()
    method = build("mixgrpo", flow, reward=reward, steps=6, window_size=2, group_size=4, batch_size=1,
                   updates_per_batch=4, lr=1e-2, max_grad_norm=0.0, clip_range=1e-6)
    steps = [method.step() for _ in range(4)]
    assert [s["sampled"] for s in steps] == [4.0, 0.0, 0.0, 0.0] and len(reward.seen) == 4
    assert [s["reward_mean"] for s in steps] == pytest.approx([r for _, r in reward.seen])  # sampling order
    assert steps[0]["ratio_max_dev"] < 1e-6 and all(s["clipfrac"] > 0 for s in steps[1:])  # tiny model: 1e-6 clip
    assert all(s["window_start"] == 0.0 for s in steps) and method.rounds == 1


def test_flow_grpo_ema_every_8_updates_once_per_micro_batch(flow):
    # train_sd3.py@ac4c86e:445 EMAModuleWrapper(decay=0.9, update_step_interval=8), ema.step(params, global_step)
    # after every micro-batch (:954-955): with 2 micro-batches per update the update of step s is applied twice,
    # at unchanged weights, when (s + 1) % 8 == 0.
    method = build("flow-grpo", flow, lr=1e-2, weight_decay=0.0, grad_accum=2, updates_per_batch=1, batch_size=2,
                   group_size=2, kl_weight=0.0)
    ema = [p.detach().clone() for p in method.params]
    for s in range(1, 10):
        method.step()
        if (s + 1) % 8 == 0:
            d = min((1 + s) / (10 + s), 0.9)
            for _ in range(2):
                ema = [e + (1 - d) * (p.detach() - e) for e, p in zip(ema, method.params)]
    with method.evaluation_weights():
        assert all(torch.allclose(p, e, atol=1e-7) for p, e in zip(method.params, ema))


class HalfConstant(MeanBrightness):
    """Equal rewards within the groups of prompts of even length, varying within the others."""

    def score(self, images, prompts):
        bright = super().score(images, prompts)
        flat = torch.tensor([len(p) % 2 == 0 for p in prompts])
        return torch.where(flat, torch.full_like(bright, 0.5), bright)


def test_flow_grpo_drops_zero_advantage_samples_and_keeps_its_updates(flow):
    # train_sd3.py@ac4c86e:796-817: mask = advantages != 0; re-add dropped samples at random until the kept count
    # divides into num_batches_per_epoch minibatches; the minibatches shrink, their number stays.
    reward = Recording()
    reward.score = lambda images, prompts: Recording.score(reward, images, prompts) * 0 + HalfConstant().score(images, prompts)
    method = build("flow-grpo", flow, reward=reward, batch_size=4, group_size=2, grad_accum=2, updates_per_batch=2)
    batches = method.collect()
    adv = torch.cat([b["advantages"] for b in batches])
    nonzero = int((torch.tensor(tracker_advantages([(p, 0.5 if len(p) % 2 == 0 else r) for p, r in reward.seen],
                                                   method.config.adv_eps)) != 0).sum())
    kept = nonzero + (-nonzero) % 4
    assert len(batches) == 4 and len(adv) == (kept if nonzero else 16)
    assert int((adv == 0).sum()) == (kept - nonzero if nonzero else 16)


def test_mixgrpo_records_the_window_its_trained_data_was_sampled_in(flow):
    # Issue 36 item 7: a step training on a set sampled at window 0 recorded window 1. The window moves every round
    # here (shift_interval 1): the 2 updates of round 1 record 0, those of round 2 record 1.
    method = build("mixgrpo", flow, steps=6, window_size=2, group_size=2, batch_size=2, updates_per_batch=2,
                   shift_interval=1)
    assert [method.step()["window_start"] for _ in range(4)] == [0.0, 0.0, 1.0, 1.0]
