"""AWM (methods/awm.py) as scxue/advantage_weighted_matching runs it. Each expected value is recomputed here with
plain torch / numpy from the cited reference lines (``scripts/train_sd3_awm.py`` = T, ``config/dgx_awm.py`` = D),
never by calling the helper under test, and each test fails if its formula is altered."""

import copy

import numpy as np
import pytest
import torch

from bench.core.prompts import load_prompts
from bench.core.sampler import Sampler
from methods import METHODS
from methods.awm import AWMConfig, awm_loss, matching_weight, time_indices
from rewards.toy import MeanBrightness
from test_flow_faithful import SMALL, Recording, flow  # noqa: F401  (flow: the module fixture)


def build(flow, reward=None, seed=0, **overrides):
    cls = METHODS.get("awm")
    return cls(copy.deepcopy(flow).pipe, reward or MeanBrightness(), load_prompts("simple-animals"),
               cls.Config(**{**SMALL, **overrides}), seed=seed)


# -- advantages ---------------------------------------------------------------------------------------------------
def test_advantages_are_the_trackers_clipped_and_rescaled_to_advantage_max(flow):
    # stat_tracking.py:23-31 (global_std): (r - prompt mean) / (np.std(all) + 1e-4); T:1293-1299: clip to +-5, then
    # A / adv_clip_max * advantage_max. adv_clip_max 0.3 and advantage_max 2 make both visible.
    reward = Recording()
    method = build(flow, reward=reward, grad_accum=4, train_batch_size=2, adv_clip_max=0.3, advantage_max=2.0)
    batches = method.collect()
    prompts = np.array([p for p, _ in reward.seen])
    rewards = np.array([r for _, r in reward.seen], dtype=np.float64)
    assert len(rewards) == 16 and len(batches) == 8 and all(len(b["adv"]) == 2 for b in batches)
    std = np.std(rewards) + 1e-4
    raw = np.empty_like(rewards)
    for p in np.unique(prompts):
        raw[prompts == p] = (rewards[prompts == p] - np.mean(rewards[prompts == p])) / std
    assert (np.abs(raw) > 0.3).any() and (np.abs(raw) < 0.3).any()  # some are clipped, some not
    expected = np.clip(raw, -0.3, 0.3) / 0.3 * 2.0
    by_reward = dict(zip(rewards.tolist(), expected.tolist()))
    got_r = torch.cat([b["rewards"] for b in batches]).tolist()
    got_a = torch.cat([b["adv"] for b in batches]).tolist()
    assert np.allclose(got_a, [by_reward[r] for r in got_r], atol=1e-6)
    assert got_r != [r for _, r in reward.seen]  # the round is shuffled before it is cut into minibatches (T:1086)


# -- the loss -----------------------------------------------------------------------------------------------------
def toy(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 4, 5, 5)
    v, target, base, slow = (torch.randn(shape, generator=g) for _ in range(4))
    return v, target, base, slow, torch.tensor([0.8, -0.3, 0.0][:n], dtype=torch.float64)


def reference_loss(v, target, t, adv, base, slow, p=0.25, clip=1.0, beta=1e-3, ema_beta=1.0):
    """T:234-252 (ghuber) and T:1301-1352 (exp_first, on-policy: old log-prob = the log-prob detached), literally."""
    model_output = v.double()
    log_prob = -(model_output - target.double()) ** 2
    log_prob = log_prob.mean(dim=(1, 2, 3))
    log_prob = -(torch.pow(-log_prob + 1e-10, p) - torch.pow(torch.tensor(1e-10, dtype=torch.float64), p)) * t / p
    ratio = torch.exp(log_prob - log_prob.detach())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    policy = torch.maximum(unclipped, clipped)
    kl = ((model_output - base.double()) ** 2).mean(dim=(1, 2, 3))
    ema_kl = ((model_output - slow.double()) ** 2).mean(dim=(1, 2, 3))
    return policy + beta * kl + ema_beta * ema_kl


def test_loss_value_and_gradient_are_the_advantage_weighted_ghuber_matching_loss():
    cfg = AWMConfig(**SMALL)
    t = torch.tensor(0.6, dtype=torch.float64)
    v, target, base, slow, adv = toy()
    v1 = v.clone().requires_grad_()
    loss, info = awm_loss(v1, target, t, adv, cfg, base, slow)
    v2 = v.clone().requires_grad_()
    ref = reference_loss(v2, target, t, adv, base, slow)
    assert torch.allclose(loss, ref, rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    ref.sum().backward()
    assert torch.allclose(v1.grad, v2.grad, rtol=1e-10, atol=1e-14)
    # The gradient is A x d/dv of the weighted matching error w = ((m + 1e-10)^p - 1e-10^p) t / p (ratio 1) plus
    # the two regularisers' gradients, written without the surrogate:
    v3 = v.clone().requires_grad_()
    m = ((v3.double() - target.double()) ** 2).mean(dim=(1, 2, 3))
    w = ((m + 1e-10) ** 0.25 - 1e-10**0.25) * 0.6 / 0.25
    plain = adv * w + 1e-3 * ((v3.double() - base) ** 2).mean(dim=(1, 2, 3)) + ((v3.double() - slow) ** 2).mean(
        dim=(1, 2, 3))
    plain.sum().backward()
    assert torch.allclose(v1.grad, v3.grad, rtol=1e-6, atol=1e-9)  # float32 leaves: rounding of two paths
    assert info["clipfrac"] == 0.0 and info["policy"] == pytest.approx(float(-adv.mean()))
    assert info["matching"] == pytest.approx(float(w.detach().mean()))
    # A sample with A = 0 contributes only the regularisers; without them its gradient is 0.
    bare = AWMConfig(**SMALL, kl_weight=0.0, ema_kl_weight=0.0)
    v4 = v.clone().requires_grad_()
    awm_loss(v4, target, t, adv, bare)[0].sum().backward()
    assert torch.equal(v4.grad[2], torch.zeros_like(v4.grad[2])) and v4.grad[0].abs().sum() > 0


@pytest.mark.parametrize("weighting", ["ghuber", "uniform", "t", "t2", "huber"])
def test_matching_weights_are_their_log_prob_weightings(weighting):
    # T:237-251: log_prob = -mean (v - (eps - x0))^2, then reweighted; our weight is -log_prob.
    sq = torch.tensor([0.0, 1e-6, 0.3, 2.5], dtype=torch.float64)
    t = torch.tensor(0.45, dtype=torch.float64)
    lp = -sq
    ref = {"t": lp * t, "t2": lp * t**2, "uniform": lp, "huber": -(torch.sqrt(-lp + 1e-10) - 1e-5) * t,
           "ghuber": -(torch.pow(-lp + 1e-10, 0.4) - torch.pow(torch.tensor(1e-10, dtype=torch.float64), 0.4))
           * t / 0.4}[weighting]
    assert torch.allclose(matching_weight(sq, t, weighting, 0.4), -ref, rtol=1e-12, atol=0)


# -- training times -----------------------------------------------------------------------------------------------
def reference_indices(time_type, steps, n, fraction, generator):
    """T:1172-1205, written out from the lines."""
    if time_type == "discrete":
        boundaries = torch.linspace(0, int(steps * fraction), steps=n + 1)
    elif time_type == "discrete_wo_init":
        boundaries = torch.linspace(1, int(steps * fraction), steps=n + 1)
    else:
        init_index = torch.tensor([0], dtype=torch.long)
        boundaries = torch.linspace(1, int(steps * fraction), steps=n - 1 + 1)
        lower_bounds, upper_bounds = boundaries[:-1].long(), boundaries[1:].long()
        rand_u = torch.rand(n - 1, generator=generator)
        return torch.cat([init_index, lower_bounds + (rand_u * (upper_bounds - lower_bounds)).long()])
    lower_bounds, upper_bounds = boundaries[:-1].long(), boundaries[1:].long()
    rand_u = torch.rand(n, generator=generator)
    return lower_bounds + (rand_u * (upper_bounds - lower_bounds)).long()


@pytest.mark.parametrize("time_type", ["discrete_wo_init", "discrete", "discrete_with_init"])
def test_training_times_are_their_stratified_indices(time_type):
    cfg = AWMConfig(**{**SMALL, "steps": 14, "time_type": time_type})
    seen = set()
    for seed in range(200):
        got = time_indices(cfg, 14, torch.Generator().manual_seed(seed))
        ref = reference_indices(time_type, 14, 6, 0.9, torch.Generator().manual_seed(seed))
        assert torch.equal(got, ref)
        seen |= {(k, int(i)) for k, i in enumerate(got)}
    strata = {"discrete_wo_init": [{1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}],  # 14 steps: never 0, 12 or 13
              "discrete": [{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}],
              "discrete_with_init": [{0}, {1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10, 11}]}[time_type]
    assert seen == {(k, i) for k, s in enumerate(strata) for i in s}


def test_a_training_time_noises_the_final_latent_and_regresses_the_velocity(flow):
    # T:1209-1232, 1268-1280: x_t = (1 - t) x_0 + t eps, target eps - x_0, v_base with the adapter disabled, v_slow
    # from the trailing adapter; fresh eps per (sample, time).
    method = build(flow, lr=1e-2, weight_decay=0.0, ema_decay_slope=0.25, kl_weight=0.5, ema_kl_weight=2.0)
    method.step()  # the adapter leaves the base, the trailing copy lags it by d = 0.25
    batch = method.collect()[0]
    j = 2
    state = method.generator.get_state()
    loss, info = method.time_loss(batch, j)
    gen = torch.Generator()
    gen.set_state(state)
    eps = torch.randn(batch["x0"].shape, generator=gen)
    sigma = float(method.sampler.chain.sigmas[j])
    x0, t = batch["x0"], batch["timesteps"][j]
    x_t = (1 - sigma) * x0 + sigma * eps
    sampler = method.sampler
    with torch.no_grad():
        v = sampler.model_output(x_t, t, batch["embeds"])
        with method.base_model():
            v_base = sampler.model_output(x_t, t, batch["embeds"])
        trained = [p.detach().clone() for p in method.params]
        for p, q in zip(method.params, method.slow):
            p.copy_(q)
        v_slow = sampler.model_output(x_t, t, batch["embeds"])
        for p, q in zip(method.params, trained):
            p.copy_(q)
    ref = reference_loss(v, eps - x0, torch.tensor(sigma, dtype=torch.float64), batch["adv"], v_base, v_slow,
                         beta=0.5, ema_beta=2.0)
    assert torch.allclose(loss.detach(), ref, rtol=1e-6, atol=1e-9)
    assert info["kl"] > 0 and info["ema_kl"] > 0
    # the loss's value is -A + regularisers (ratio 1); its gradient's weight w at this sigma is reported as matching
    m = ((v.double() - (eps - x0).double()) ** 2).mean(dim=(1, 2, 3))
    w = ((m + 1e-10) ** 0.25 - 1e-10**0.25) * sigma / 0.25
    assert info["matching"] == pytest.approx(float(w.mean()), rel=1e-5)


# -- regularisation and the evaluated adapter -----------------------------------------------------------------------
def test_the_trailing_adapter_follows_their_linear_decay_and_evaluation_its_ema(flow):
    # T:1409-1419: tgt = tgt * decay + src * (1 - decay), decay = min(kl_ema_decay, 0.001 x global_step) ('linear');
    # ema.py EMAModuleWrapper(decay 0.99, update_step_interval 1) stepped with global_step s = 1, 2 (T:647, 1392).
    method = build(flow, lr=1e-2, ema_decay_slope=0.25, ema_decay_max=0.3)
    slow = [q.clone() for q in method.slow]
    ema = [p.detach().clone() for p in method.params]
    assert all(torch.equal(q, p.detach()) for q, p in zip(slow, method.params))  # T:655-659: a copy at the start
    for s, d in ((1, 0.25), (2, 0.3)):
        metrics = method.step()
        slow = [q * d + p.detach() * (1.0 - d) for q, p in zip(slow, method.params)]
        assert metrics["slow_decay"] == d and all(torch.allclose(a, b, atol=1e-7) for a, b in zip(method.slow, slow))
        e = min((1 + s) / (10 + s), 0.99)
        ema = [m + (1 - e) * (p.detach() - m) for m, p in zip(ema, method.params)]
    assert any(not torch.allclose(q, p) for q, p in zip(method.slow, method.params))
    with method.evaluation_weights():
        assert all(torch.allclose(p, m, atol=1e-7) for p, m in zip(method.params, ema))
    other = build(flow, lr=1e-2, ema_decay_slope=0.25, ema_decay_max=0.3, seed=5)
    other.load_state_dict(method.state_dict())
    assert other.updates == 2 and all(torch.equal(a, b) for a, b in zip(other.slow, method.slow))
    assert all(torch.equal(a, b) for a, b in zip(other.ema.shadow, method.ema.shadow))


# -- rollouts -----------------------------------------------------------------------------------------------------
def test_rollouts_are_stochastic_only_where_the_target_sigma_lies_in_0_3_0_9(flow):
    # sd3_pipeline_with_logprob.py:296: tau(t) = noise_level if 0.3 <= t <= 0.9 else 0, t the step's end.
    method = build(flow, steps=8)
    window = method.stochastic_steps()
    sigmas = method.sampler.chain.sigmas.tolist()
    assert window == [i for i in range(8) if 0.3 <= sigmas[i + 1] <= 0.9] and 0 < len(window) < 8
    with torch.no_grad():
        rollout = method.sampler.sample(["a cat"] * 2, generator=torch.Generator().manual_seed(0), stochastic=window)
    assert rollout.log_prob_steps == window
    ode = Sampler(method.pipe, AWMConfig(**{**SMALL, "steps": 8, "eta": 0.0}).sampler_config())  # pickscore: tau 0
    with torch.no_grad():
        flat = ode.sample(["a cat"] * 2, generator=torch.Generator().manual_seed(0), stochastic=window)
    assert flat.log_probs is None


def test_published_settings_are_their_geneval_config():
    pub = METHODS.get("awm").published
    assert (pub["batch_size"] * pub["grad_accum"], pub["group_size"], pub["train_batch_size"]) == (216, 24, 3)
    assert (pub["steps"], pub["eta"], pub["kl_weight"], pub["ema_kl_weight"], pub["ema_decay_max"]) == (
        14, 0.4, 1e-3, 1.0, 0.3)
    cfg = AWMConfig(**{k: v for k, v in pub.items()})
    assert cfg.time_type == "discrete_wo_init" and cfg.weighting == "ghuber" and cfg.guidance_scale == 1.0
    with pytest.raises(ValueError, match="train_batch_size 5 must divide"):
        AWMConfig(**{**SMALL, "train_batch_size": 5})
    with pytest.raises(ValueError, match="leaves no timestep"):
        AWMConfig(**{**SMALL, "steps": 1})
