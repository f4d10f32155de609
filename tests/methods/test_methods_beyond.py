"""DRaFT-LV, ReFL and GRPO: properties that a wrong implementation would break, and learning on the toy reward."""

import pytest
import torch

from bench.core.models import load_model
from methods import METHODS
from rewards.toy import MeanBrightness
from test_methods import SMALL, build, eval_brightness

# Toy settings under which each method must move the fixed-noise evaluation reward the rewarded way in 4 steps.
# Every registered method is listed, so a new method cannot skip the learning check silently.
LEARNS = {
    "alignprop-k1": dict(steps=4, lr=0.1, max_grad_norm=0.0, batch_size=4),
    "draft-k": dict(steps=4, lr=0.1, max_grad_norm=0.0, batch_size=4),
    "draft-lv": dict(steps=4, lr=0.1, max_grad_norm=0.0, batch_size=4),
    "refl": dict(steps=4, lr=0.1, max_grad_norm=0.0, batch_size=4),
    "grpo": dict(steps=4, lr=3e-2, max_grad_norm=0.0, batch_size=4),
    "rwr": dict(steps=4, lr=3e-2, batch_size=4, temperature=0.005),
}
ELSEWHERE = {  # checked by their own tests, or too slow for a 4-step toy run
    "alignprop": "randomized K: covered by alignprop-k1 and alignprop-full's shared sampler tests",
    "alignprop-full": "same loss as alignprop-k1, more steps under gradient",
    "alignprop-trl": "trl's trainer; test_ddpo_and_alignprop_trl_go_through_trl_trainers",
    "ddpo": "trl's trainer; test_ddpo_and_alignprop_trl_go_through_trl_trainers",
    "rwr-sparse": "rwr with top-fraction weights; test_rwr_weights",
    "grpo-kl": "grpo with kl_weight 0.04 by default; the KL term: test_grpo_ratio_is_one_before_the_first_update...",
    "flow-grpo-cps": "flow-grpo with sde=cps: test_guard_cps.py::test_flow_grpo_cps_is_flow_grpo_with_cps",
    "adjoint-matching": "both families: test_adjoint_matching.py::test_learns_in_the_rewarded_direction",
    **{name: "sd3 family: test_flow_pg.py::test_learns_in_the_rewarded_direction" for name in
       ("flow-grpo", "flow-grpo-guard", "dance-grpo", "mixgrpo", "diffusion-nft", "awm")},
}


def test_every_method_has_a_learning_check_or_a_reason():
    assert set(METHODS.names()) == set(LEARNS) | set(ELSEWHERE)


@pytest.mark.parametrize("name", sorted(LEARNS))
def test_learns_in_the_rewarded_direction(tiny, name):
    before = eval_brightness(tiny.pipe)
    method = build(name, tiny, **LEARNS[name])
    for _ in range(4):
        method.step()
    assert eval_brightness(tiny.pipe) - before > 5e-5


class PerPrompt(MeanBrightness):
    """Equal rewards for every image of a prompt (so within every GRPO group), different across prompts."""

    def score(self, images, prompts):
        return torch.tensor([0.1 * len(p) for p in prompts]) + 0 * images.mean(dim=(1, 2, 3))


def test_grpo_equal_rewards_in_every_group_make_a_zero_update(tiny):
    method = build("grpo", tiny, reward=PerPrompt(), batch_size=4, group_size=2, weight_decay=0.0)
    before = [p.detach().clone() for p in method.trainable_parameters()]
    metrics = method.step()
    assert metrics["grad_norm"] == 0.0 and metrics["reward_std"] > 0  # rewards differ across groups, not within
    assert all(torch.equal(a, b) for a, b in zip(before, method.trainable_parameters()))


def test_grpo_advantages_are_group_relative():
    from methods.grpo import group_advantages

    adv = group_advantages(torch.tensor([1.0, 3.0, 0.1, 0.1, 0.1, 0.1]), 2)
    assert torch.allclose(adv[:2], torch.tensor([-1.0, 1.0], dtype=adv.dtype) / 2**0.5)
    assert torch.equal(adv[2:], torch.zeros(4, dtype=adv.dtype))  # float32 0.1 * 3 / 3 != 0.1: no 0/0 noise


def test_grpo_ratio_is_one_before_the_first_update_and_not_after(tiny):
    method = build("grpo", tiny, updates_per_batch=2, lr=1e-2, kl_weight=0.1)
    first, second = method.step(), method.step()
    assert first["ratio_max_dev"] == 0.0 and first["clipfrac"] == 0.0 and first["samples"] == 2
    # the second update reuses the samples under changed weights: ratios move, the tiny clip range (1e-4) acts
    # its queries are counted by the step that trains on them, so a query budget never cuts the set's last update
    assert second["ratio_max_dev"] > 0 and second["clipfrac"] > 0 and second["samples"] == 2
    # KL to the base model (adapter disabled): 0 while LoRA's B is still zero, positive after an update
    assert first["kl"] == 0.0 and second["kl"] > 0


def test_grpo_shares_initial_noise_within_groups_only(tiny, monkeypatch):
    method = build("grpo", tiny, batch_size=4, group_size=2)
    seen = []
    original = method.sampler.sample
    monkeypatch.setattr(method.sampler, "sample", lambda *a, **k: seen.append(k["latents"]) or original(*a, **k))
    method.step()
    x = seen[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[2], x[3]) and not torch.equal(x[0], x[2])


def test_refl_gradient_flows_through_exactly_one_unet_call(tiny):
    method = build("refl", tiny, checkpointing=False)  # checkpointing would re-run the call in the backward pass
    calls = []
    hook = tiny.pipe.unet.register_forward_hook(lambda m, i, out: calls.append(out[0].requires_grad))
    metrics = method.step()
    hook.remove()
    assert calls.count(True) == 1 and calls[-1]  # the last call, at step s, is the only one with a graph
    assert len(calls) == metrics["stop_step"] + 1 and metrics["grad_norm"] > 0


def test_draft_lv_with_one_draw_equals_k1_on_the_same_noise(tiny):
    # AlignProp K=1 at eta 0: its chain's x_1 is what DRaFT-LV's re-noising of x_0 gives for
    # eps = (x_1 - sqrt(a) x_0) / sqrt(1 - a); from there both take the same gradient-carrying last step.
    k1 = build("alignprop-k1", tiny, seed=3, loss_scale=1.0)
    prompts = ["a cat", "a dog"]
    rollout = k1.sampler.sample(prompts, generator=torch.Generator().manual_seed(0), grad=k1.grad)
    k1.loss_fn(k1.reward.objective(rollout.images, prompts)).backward()
    g_k1 = [p.grad.clone() for p in k1.params]

    lv = build("draft-lv", load_model("tiny-random"), seed=3, draws=1, guidance_scale=SMALL["guidance_scale"])
    x0, x1 = rollout.latents[:, -1], rollout.latents[:, -2]
    t = lv.sampler.set_steps()[-1]
    a = float(lv.sampler.scheduler.alphas_cumprod[int(t)])
    eps = (x1 - a**0.5 * x0) / (1 - a) ** 0.5
    assert torch.allclose(lv.sampler.renoise(x0, t, eps), x1, atol=1e-5)
    objective, _ = lv.last_step(lv.sampler.renoise(x0, t, eps), rollout.prompt_embeds, prompts)
    lv.loss_fn(objective).backward()
    g_lv = [p.grad for p in lv.params]
    assert any(g.abs().max() > 0 for g in g_k1)
    for a_, b_ in zip(g_k1, g_lv):
        assert torch.allclose(a_, b_, rtol=1e-3, atol=1e-9)


def test_draft_lv_scores_each_image_draws_times(tiny):
    method = build("draft-lv", tiny, draws=3)
    assert method.step()["samples"] == 2 * 3


@pytest.mark.parametrize("drop", [True, False])
def test_grpo_drops_the_last_transition_as_dancegrpo(tiny, drop):
    method = build("grpo", tiny, drop_last_step=drop)
    batch = method.collect()[0]
    n = batch["log_probs"].shape[1]
    kept = [True] * (n - 1) + [not drop]  # timestep_fraction 1: every kept one, for every sample
    assert batch["chosen"].tolist() == [kept] * len(batch["rewards"])


def test_grpo_has_dancegrpo_published_settings():
    published = METHODS.get("grpo").published
    assert published["updates_per_batch"] == 2 and published["group_size"] == 16 and published["drop_last_step"]
    METHODS.get("grpo").Config(**published)  # a valid configuration


@pytest.mark.parametrize("name", ["refl", "draft-lv", "grpo"])
def test_fp16_step_goes_through_the_gradient_scaler(name):
    # A bare .backward() bypassed the scaler, whose unscale_ then failed on the unscaled gradients at step 1.
    method = build(name, load_model("tiny-random"), precision="fp16", steps=2)
    scaled = []
    original = method.scaler.scale
    method.scaler.scale = lambda loss: scaled.append(1) or original(loss)
    metrics = method.step()
    assert scaled and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
