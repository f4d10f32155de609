"""The flow SDEs (``bench.core.flow.SDE_STEPS``): their means and stds are Flow-GRPO's, DanceGRPO's and SA-Solver's
(AWM's rollouts) formulas, a
noise level of 0 is the ODE step exactly, the sampler's log-probability is the Gaussian density of (mean, std) and
recomputing it for a sampled transition gives a ratio of exactly 1. Tensor arithmetic only; one tiny-flow-random
build checks the selection through the sampler."""

import math

import pytest
import torch

from bench.core.ddim import gaussian_log_prob
from bench.core.flow import SDE_STEPS, dance_grpo_step, flow_grpo_step, sa_solver_step

SIGMAS = torch.tensor([1.0, 0.9, 0.6, 0.25, 0.001, 0.0])  # a shifted flow schedule: 1 first, a terminal 0


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)  # x, v


def reference_flow_grpo(v, sigma, sigma_next, x, a, sigma_max):
    """flow_grpo's ``sde_type='sde'`` formulas written out in its own (x, v) form (arXiv:2505.05470)."""
    dt = float(sigma_next - sigma)
    s = float(sigma)
    g = a * math.sqrt(s / (1 - (sigma_max if s == 1 else s)))
    mean = x * (1 + g**2 / (2 * s) * dt) + v * (1 + g**2 * (1 - s) / (2 * s)) * dt
    return mean, g * math.sqrt(-dt)


def reference_dance_grpo(v, sigma, sigma_next, x, eta):
    """DanceGRPO's ``flux_step`` with ``sde_solver`` in its (x_0, score) form (arXiv:2505.07818)."""
    s, ds = float(sigma), float(sigma_next - sigma)
    x0 = x - s * v
    score = -(x - x0 * (1 - s)) / s**2
    return x + ds * v + (-0.5 * eta**2 * score) * ds, eta * math.sqrt(-ds)


@pytest.mark.parametrize("i", range(len(SIGMAS) - 1))
def test_means_and_stds_are_the_papers_formulas(i):
    x, v = tensors(i)
    sigma, sigma_next = SIGMAS[i], SIGMAS[i + 1]
    mean, std = flow_grpo_step(v, sigma, sigma_next, x, 0.7)
    ref_mean, ref_std = reference_flow_grpo(v, sigma, sigma_next, x, 0.7, float(SIGMAS[1]))
    assert isinstance(std, float) and std > 0 and math.isclose(std, ref_std, rel_tol=1e-6)
    assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-5)
    mean, std = dance_grpo_step(v, sigma, sigma_next, x, 0.3)
    ref_mean, ref_std = reference_dance_grpo(v, sigma, sigma_next, x, 0.3)
    assert isinstance(std, float) and math.isclose(std, ref_std, rel_tol=1e-6)
    assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-5)
    assert set(SDE_STEPS) == {"flow-grpo", "dance-grpo", "cps", "sa-solver", "memoryless"}  # cps: tests/methods/test_guard_cps.py


def reference_sa_solver(v, sigma, sigma_next, x, tau):
    """scxue/advantage_weighted_matching ``sa_solver.py`` at order 1 (data prediction): NoiseScheduleFlowMatching
    (:31-62: alpha = 1 - t, sigma = t, lambda = log(alpha) - log(sigma)), the order-0 coefficient of
    ``get_coefficients_exponential_positive`` (:146-151) and ``adams_bashforth_update`` (:259-289), in float64."""
    s, t = torch.tensor(float(sigma), dtype=torch.float64), torch.tensor(float(sigma_next), dtype=torch.float64)
    lam = lambda u: torch.log(1 - u) - torch.log(u)
    lambda_s, lambda_t = lam(s), lam(t)
    h = lambda_t - lambda_s
    end_cov, start_cov = (1 + tau**2) * lambda_t, (1 + tau**2) * lambda_s
    coefficient = torch.exp(end_cov) * (1 - torch.exp(-(end_cov - start_cov))) / (1 + tau**2)
    model_prev = x.double() - s * v.double()  # data_prediction_fn: x - t * model(x, t)
    gradient_part = (1 + tau**2) * t * torch.exp(-(tau**2) * lambda_t) * coefficient * model_prev
    noise_std = t * torch.sqrt(1 - torch.exp(-2 * tau**2 * h))
    return torch.exp(-(tau**2) * h) * (t / s) * x.double() + gradient_part, float(noise_std)


@pytest.mark.parametrize("tau", [0.4, 1.0])
def test_sa_solver_step_is_sa_solvers_order_one_update(tau):
    for i in range(1, len(SIGMAS) - 2):  # interior steps: lambda finite at both ends
        x, v = tensors(20 + i)
        mean, std = sa_solver_step(v, SIGMAS[i], SIGMAS[i + 1], x, tau)
        ref_mean, ref_std = reference_sa_solver(v, SIGMAS[i], SIGMAS[i + 1], x, tau)
        assert isinstance(std, float) and std > 0 and math.isclose(std, ref_std, rel_tol=1e-9)
        assert torch.allclose(mean.double(), ref_mean, rtol=1e-5, atol=1e-5)
    x, v = tensors(30)
    x0 = x - 0.001 * v
    mean, std = sa_solver_step(v, SIGMAS[-2], SIGMAS[-1], x, tau)  # to sigma 0: x_0 itself (denoise_to_zero)
    assert std == 0.0 and torch.allclose(mean, x0, atol=1e-6)
    mean, std = sa_solver_step(v, SIGMAS[0], SIGMAS[1], x, tau)  # from sigma 1: x forgotten, N((1 - s') x_0, s'^2)
    assert math.isclose(std, 0.9, rel_tol=1e-6) and torch.allclose(mean, 0.1 * (x - v), atol=1e-6)


def test_flow_grpo_noise_level_guard_at_sigma_one():
    x, v = tensors()
    _, std = flow_grpo_step(v, SIGMAS[0], SIGMAS[1], x, 0.7)  # 1 / (1 - sigma) would divide by 0: next sigma
    assert math.isfinite(std) and math.isclose(std, 0.7 * math.sqrt(1 / (1 - 0.9)) * math.sqrt(0.1), rel_tol=1e-6)
    _, one_step = flow_grpo_step(v, torch.tensor(1.0), torch.tensor(0.0), x, 0.5)  # T = 1: as flow_grpo, 1 / (1 - 0)
    assert math.isclose(one_step, 0.5, rel_tol=1e-6)


@pytest.mark.parametrize("name", sorted(SDE_STEPS))
@pytest.mark.parametrize("i", range(len(SIGMAS) - 1))
def test_zero_noise_is_the_ode_step_and_has_no_log_prob(name, i):
    x, v = tensors(i)
    sigma, sigma_next = SIGMAS[i], SIGMAS[i + 1]
    mean, std = SDE_STEPS[name](v, sigma, sigma_next, x, 0.0)
    ode = x + (sigma_next - sigma) * v
    # cps re-noises x0 and x1 (other float arithmetic, the same step): equal up to rounding
    assert std == 0 and (torch.allclose(mean, ode, atol=1e-6) if name == "cps" else torch.equal(mean, ode))
    with pytest.raises(ValueError, match="no Gaussian log-probability"):
        gaussian_log_prob(mean, mean, std)


@pytest.mark.parametrize("name, eta", [("flow-grpo", 0.7), ("dance-grpo", 0.3), ("flow-grpo", 1.0)])
def test_log_prob_is_the_gaussian_density_and_its_ratio_is_one(name, eta):
    for i in range(len(SIGMAS) - 1):
        x, v = tensors(10 + i)
        mean, std = SDE_STEPS[name](v, SIGMAS[i], SIGMAS[i + 1], x, eta)
        x_next = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(i))
        lp = gaussian_log_prob(x_next, mean, std)
        dist = torch.distributions.Normal(mean.double(), std)
        assert lp.dtype == torch.float32 and lp.shape == (3,)
        assert torch.allclose(lp.double(), dist.log_prob(x_next.double()).mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-5)
        # half precision inputs are scored in float32
        assert gaussian_log_prob(x_next.bfloat16(), mean.bfloat16(), std).dtype == torch.float32
        mean2, std2 = SDE_STEPS[name](v.clone(), SIGMAS[i], SIGMAS[i + 1], x.clone(), eta)  # recomputed (old policy)
        ratio = torch.exp(lp - gaussian_log_prob(x_next, mean2, std2))
        assert std2 == std and torch.equal(ratio, torch.ones_like(ratio))


@pytest.fixture(scope="module")
def flow():
    from bench.core.models import load_model

    return load_model("tiny-flow-random")


def test_sampler_selects_the_sde_and_scores_its_transitions(flow):
    from bench.core.sampler import Sampler, SamplerConfig

    prompts = ["a cat", "a red dog"]
    with pytest.raises(ValueError, match="flow ODE"):
        Sampler(flow.pipe, SamplerConfig(steps=2, eta=0.7))  # no SDE selected: eta > 0 is still refused
    with pytest.raises(ValueError, match="unknown flow SDE 'nope'; valid: cps, dance-grpo, flow-grpo"):
        Sampler(flow.pipe, SamplerConfig(steps=2, eta=0.7, sde="nope"))
    ode = Sampler(flow.pipe, SamplerConfig(steps=2, guidance_scale=3.0)).sample(
        prompts, generator=torch.Generator().manual_seed(0))
    zero = Sampler(flow.pipe, SamplerConfig(steps=2, guidance_scale=3.0, sde="flow-grpo")).sample(
        prompts, generator=torch.Generator().manual_seed(0))
    assert zero.log_probs is None and torch.equal(zero.latents, ode.latents)  # eta 0: the ODE exactly
    sampler = Sampler(flow.pipe, SamplerConfig(steps=2, guidance_scale=3.0, eta=0.7, sde="flow-grpo"))
    with torch.no_grad():
        out = sampler.sample(prompts, generator=torch.Generator().manual_seed(0))
        assert out.log_probs.shape == (2, 2) and bool(torch.isfinite(out.log_probs).all())
        assert not torch.equal(out.latents[:, -1], ode.latents[:, -1])
        for i, t in enumerate(out.timesteps):
            lp, _, _ = sampler.transition_log_prob(out.latents[:, i], t, out.prompt_embeds, out.latents[:, i + 1])
            assert torch.allclose(torch.exp(lp - out.log_probs[:, i]), torch.ones(2), atol=1e-5)


def test_the_sd_family_refuses_a_flow_sde(tiny):
    from bench.core.sampler import Sampler, SamplerConfig

    with pytest.raises(ValueError, match="sde='flow-grpo' selects a flow SDE"):
        Sampler(tiny.pipe, SamplerConfig(steps=2, eta=1.0, sde="flow-grpo"))
