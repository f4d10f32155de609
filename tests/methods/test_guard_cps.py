"""CPS (coefficients-preserving sampling, ``bench.core.flow.cps_step``) and GRPO-Guard (``ratio_norm``,
``grad_reweight`` of ``methods.grpo``; ``flow-grpo-guard``), each formula recomputed here from the reference lines
written out in plain torch: flow_grpo @ 54809b5 ``sd3_sde_with_logprob.py:70-86`` (``sde_type='cps'``) for CPS,
Flow-Factory @ a0b2bc5 ``trainers/grpo.py:500-510`` and verl-omni ``GRPOGuardLoss`` for GRPO-Guard."""

import copy
import math

import pytest
import torch

from bench.core.ddim import gaussian_log_prob
from bench.core.flow import SDE_STEPS, cps_step
from bench.core.models import load_model
from bench.core.prompts import load_prompts
from methods import METHODS
from methods.grpo import guard_log_ratio
from rewards.toy import MeanBrightness

SIGMAS = torch.tensor([1.0, 0.96, 0.913, 0.79, 0.465, 0.009, 0.0])  # SD3's shift-3 sigmas (a subset), terminal 0
SMALL = dict(steps=4, batch_size=4, group_size=2, guidance_scale=3.0)


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)  # x, v


def reference_cps(v, sigma, sigma_prev, sample, noise_level):
    """flow_grpo ``sde_step_with_logprob`` with ``sde_type='cps'`` (lines 71-74), its own names and arithmetic."""
    std_dev_t = sigma_prev * math.sin(noise_level * math.pi / 2)  # sigma_t in paper
    pred_original_sample = sample - sigma * v  # predicted x_0
    noise_estimate = sample + v * (1 - sigma)  # predicted x_1
    prev_sample_mean = pred_original_sample * (1 - sigma_prev) + noise_estimate * torch.sqrt(sigma_prev**2 - std_dev_t**2)
    return prev_sample_mean, std_dev_t


@pytest.mark.parametrize("eta", [0.8, 0.7, 0.3, 1.0])
@pytest.mark.parametrize("i", range(len(SIGMAS) - 1))
def test_cps_mean_and_std_are_flow_grpos(i, eta):
    x, v = tensors(i)
    mean, std = cps_step(v, SIGMAS[i], SIGMAS[i + 1], x, eta)
    ref_mean, ref_std = reference_cps(v, SIGMAS[i], SIGMAS[i + 1], x, eta)
    assert isinstance(std, float) and math.isclose(std, float(ref_std), rel_tol=1e-6, abs_tol=1e-12)
    assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    assert SDE_STEPS["cps"] is cps_step


@pytest.mark.parametrize("i", range(len(SIGMAS) - 1))
def test_cps_at_zero_noise_is_the_euler_step_and_its_last_step_is_deterministic(i):
    x, v = tensors(20 + i)
    sigma, sigma_next = SIGMAS[i], SIGMAS[i + 1]
    mean, std = cps_step(v, sigma, sigma_next, x, 0.0)
    assert std == 0 and torch.allclose(mean, x + (sigma_next - sigma) * v, rtol=0, atol=1e-6)
    # the chain's last step (sigma_next = 0): std 0 whatever eta, the mean is the x0 prediction
    last, std_last = cps_step(v, sigma, torch.tensor(0.0), x, 0.8)
    assert std_last == 0 and torch.allclose(last, x - sigma * v, rtol=0, atol=1e-6)


def test_cps_log_prob_is_the_exact_gaussian_density_not_flow_grpos_surrogate():
    """Ours: log N(x; mean, std^2) averaged over the latent; flow_grpo's cps branch (line 86): -mean((x - mean)^2).
    Constants cancel in a ratio; the 1 / (2 std^2) does not: our log-ratio is theirs / (2 std^2)."""
    x, v = tensors(3)
    mean, std = cps_step(v, SIGMAS[3], SIGMAS[4], x, 0.8)
    x_next = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    lp = gaussian_log_prob(x_next, mean, std)
    exact = (-((x_next.double() - mean.double()) ** 2) / (2 * std**2) - math.log(std)
             - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2, 3))
    assert torch.allclose(lp.double(), exact, rtol=1e-6, atol=1e-6)
    moved = mean + 0.01 * v  # another policy's mean
    ours = gaussian_log_prob(x_next, moved, std) - lp
    theirs = -((x_next - moved) ** 2).mean(dim=(1, 2, 3)) + ((x_next - mean) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(ours, theirs / (2 * std**2), rtol=1e-4, atol=1e-6)
    recomputed, std2 = cps_step(v.clone(), SIGMAS[3], SIGMAS[4], x.clone(), 0.8)  # the same policy again
    assert std2 == std and torch.equal(torch.exp(gaussian_log_prob(x_next, recomputed, std2) - lp), torch.ones(3))


def reference_guard_ratio(log_prob, old_log_prob, mean, old_mean, std):
    """Flow-Factory ``GRPOGuardTrainer.optimize`` (grpo.py:501-504): scale_factor = sqrt(-dt) std_dev_t (the
    transition's std), mse = latent-mean of (mu - mu_old)^2, ratio = exp((lp - old) scale + mse / (2 scale))."""
    mse = (mean - old_mean).flatten(1).pow(2).mean(dim=1)
    return torch.exp((log_prob - old_log_prob) * std + mse / (2 * std))


def test_guard_ratio_norm_on_a_toy_case():
    g = torch.Generator().manual_seed(0)
    old_mean, std = torch.randn(5, 2, 3, 3, generator=g), 0.3
    eps = torch.randn(old_mean.shape, generator=g)
    x_next = old_mean + std * eps
    drift = 0.05 * torch.randn(old_mean.shape, generator=g)
    mean = old_mean + drift
    lp, old = gaussian_log_prob(x_next, mean, std), gaussian_log_prob(x_next, old_mean, std)
    normed = guard_log_ratio(lp - old, mean, old_mean, std)
    assert torch.allclose(torch.exp(normed), reference_guard_ratio(lp, old, mean, old_mean, std), rtol=1e-5)
    # what it leaves: mean(eps (mu - mu_old)), no drift term, no 1 / std
    assert torch.allclose(normed, (eps * drift).mean(dim=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    # the raw log-ratio is shifted below 0 by mean(d^2) / (2 std^2); the normalised one is not
    raw_shift = (lp - old - (eps * drift).mean(dim=(1, 2, 3)) / std)
    assert torch.allclose(raw_shift, -(drift**2).mean(dim=(1, 2, 3)) / (2 * std**2), rtol=1e-4, atol=1e-6)
    assert torch.equal(guard_log_ratio(torch.zeros(5), old_mean, old_mean, std), torch.zeros(5))  # on-policy: 1


@pytest.fixture(scope="module")
def flow():
    return load_model("tiny-flow-random")


def build(name, flow, **overrides):
    cls = METHODS.get(name)
    config = cls.Config(**{**SMALL, **overrides})
    return cls(copy.deepcopy(flow).pipe, MeanBrightness(), load_prompts("simple-animals"), config, seed=0)


def test_flow_grpo_with_cps_samples_cps_at_its_noise_level_and_is_on_policy_first(flow):
    method = build("flow-grpo", flow, sde="cps", updates_per_batch=2, lr=1e-2, clip_range=1e-6, max_grad_norm=0.0)
    assert method.config.eta == 0.8 and method.sampler.chain.sde == "cps"  # the reference's cps noise level
    assert METHODS.get("flow-grpo").Config().eta == 0.7 and METHODS.get("flow-grpo").Config(sde="cps", eta=0.5).eta == 0.5
    first = method.step()  # on-policy: every recomputed log-probability equals the recorded one, ratio exactly 1
    assert first["approx_kl"] == 0.0 and first["clipfrac"] == 0.0 and first["ratio_max_dev"] == 0.0
    batch = method.buffer[0]  # the round's second batch, sampled before the first update
    assert batch["log_probs"].shape == (4, 3) and batch["steps"].tolist() == [0, 1, 2]  # the last step: std 0
    assert not batch["chosen"][:, -1].any() and batch["chosen"][:, :2].all()  # drop_last_step: the last column
    assert "means" not in batch  # the sampling means are kept only for RatioNorm
    second = method.step()
    assert second["ratio_max_dev"] > 1e-6 and second["clipfrac"] > 0


def test_flow_grpo_cps_is_flow_grpo_with_cps():
    cps, plain = METHODS.get("flow-grpo-cps").Config(), METHODS.get("flow-grpo").Config()
    assert (cps.sde, cps.eta) == ("cps", 0.8) and plain.sde == "flow-grpo"
    assert {k: v for k, v in vars(cps).items() if k not in ("sde", "eta")} == \
        {k: v for k, v in vars(plain).items() if k not in ("sde", "eta")}
    assert METHODS.get("flow-grpo-cps").families == ("sd3", "flux")


def test_guard_loss_is_the_normalised_ratio_clipped_and_divided_by_dt(flow):
    method = build("flow-grpo", flow, ratio_norm=True, grad_reweight=True, kl_weight=0.0, lr=1e-2, clip_range=0.5,
                   updates_per_batch=2)
    method.step()  # the weights move off the sampling ones
    batch = method.buffer[0]  # sampled before that update
    assert batch["means"].shape == (*batch["log_probs"].shape, *batch["latents"].shape[2:])
    rows, cfg = torch.arange(4), method.config
    for c in (0, 2):
        j = int(batch["steps"][c])
        t = batch["timesteps"][j]
        loss, info = method.transition_loss(batch, c, rows)
        with torch.no_grad():
            lp, mean, std = method.sampler.transition_log_prob(batch["latents"][:, j], t, batch["embeds"],
                                                               batch["latents"][:, j + 1])
            ratio = reference_guard_ratio(lp, batch["log_probs"][:, c], mean, batch["means"][:, c], std)
            adv = batch["advantages"].clamp(-cfg.adv_clip_max, cfg.adv_clip_max).float()
            ref = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
            dt = float(method.sampler.chain.sigmas[j] - method.sampler.chain.sigmas[j + 1])  # verl-omni: / sqrt_dt^2
        assert torch.allclose(loss.detach(), ref / dt, rtol=1e-4, atol=1e-7)
        assert info["ratio_max_dev"] == pytest.approx(float((ratio - 1).abs().max()), rel=1e-4, abs=1e-7)
        assert float((ratio - 1).abs().max()) > 0  # off-policy: the check has something to compare


def test_flow_grpo_guard_is_flow_grpo_with_the_two_switches_and_runs(flow):
    guard, plain = METHODS.get("flow-grpo-guard").Config(), METHODS.get("flow-grpo").Config()
    assert guard.ratio_norm and guard.grad_reweight and not plain.ratio_norm and not plain.grad_reweight
    switches = ("ratio_norm", "grad_reweight")
    assert {k: v for k, v in vars(guard).items() if k not in switches} == \
        {k: v for k, v in vars(plain).items() if k not in switches}
    method = build("flow-grpo-guard", flow, updates_per_batch=2)
    first = method.step()
    assert first["ratio_max_dev"] == 0.0 and first["clipfrac"] == 0.0 and math.isfinite(first["loss"])
    with pytest.raises(ValueError, match="grad_reweight needs a flow SDE"):
        METHODS.get("grpo").Config(grad_reweight=True, batch_size=2, steps=3)
