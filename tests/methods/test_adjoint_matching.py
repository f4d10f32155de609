"""Adjoint Matching (methods/adjoint_matching.py): each formula recomputed here with plain torch from the paper
(arXiv 2409.08861) or the cited lines of microsoft/soc-fine-tuning-sd, then the method on both tiny families."""

import copy
import math

import pytest
import torch

from bench.core.flow import memoryless_step
from bench.core.models import load_model
from bench.core.prompts import load_prompts
from bench.core.sampler import Sampler
from methods import METHODS
from methods.adjoint_matching import (AdjointMatchingConfig, ema_threshold, lean_adjoint, loss_step_indices,
                                      matching_terms)
from rewards.toy import MeanBrightness

SMALL = dict(steps=4, batch_size=2, guidance_scale=3.0)


@pytest.fixture(scope="module")
def flow():
    return load_model("tiny-flow-random")


def build(model, seed=0, **overrides):
    cls = METHODS.get("adjoint-matching")
    return cls(copy.deepcopy(model).pipe, MeanBrightness(), load_prompts("simple-animals"),
               cls.Config(**{**SMALL, **overrides}), seed=seed)


# -- (a) the memoryless schedule -----------------------------------------------------------------------------------
def test_ddim_eta_one_is_the_ddpm_posterior(tiny):
    # Memoryless on DDIM = eta 1 (paper, Prop. 1 / soc-fine-tuning-sd README): the DDPM ancestral step, written
    # here from Ho et al.: x0 = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t), mean = sqrt(ab_p) b_t / (1 - ab_t) x0 +
    # sqrt(a_t) (1 - ab_p) / (1 - ab_t) x, var = (1 - ab_p) / (1 - ab_t) b_t, with a_t = ab_t / ab_p, b_t = 1 - a_t.
    cfg = AdjointMatchingConfig(steps=10)  # the method's own sampling settings: eta 1, sde memoryless
    sampler = Sampler(tiny.pipe, cfg.sampler_config())
    sched, gen = tiny.pipe.scheduler, torch.Generator().manual_seed(0)
    timesteps = sampler.set_steps()
    for i, t in enumerate(timesteps):
        x, eps = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
        ab_t = float(sched.alphas_cumprod[int(t)])
        ab_p = float(sched.alphas_cumprod[int(timesteps[i + 1])]) if i + 1 < len(timesteps) else float(
            sched.final_alpha_cumprod)
        a_t, b_t = ab_t / ab_p, 1 - ab_t / ab_p
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        mean = math.sqrt(ab_p) * b_t / (1 - ab_t) * x0 + math.sqrt(a_t) * (1 - ab_p) / (1 - ab_t) * x
        got_mean, got_std = sampler.chain.step(eps, t, x, cfg.eta)
        assert got_std == pytest.approx(math.sqrt((1 - ab_p) / (1 - ab_t) * b_t), rel=1e-6)
        torch.testing.assert_close(got_mean, mean, rtol=1e-4, atol=1e-5)


def test_flow_step_is_the_memoryless_sde(flow):
    # Paper, flow case (alpha_t = t, beta_t = 1 - t, t = 1 - sigma): sigma(t)^2 = 2 beta_t (alpha'/alpha beta_t -
    # beta') = 2 (1 - t) / t; drift b = v_t + sigma(t)^2 / (2 beta_t (alpha'/alpha beta_t - beta')) (v_t - alpha'/alpha
    # x) = 2 v_t - x / t with v_t = -v (the harness's v points towards noise); Euler-Maruyama with h = sigma - sigma'.
    cfg = AdjointMatchingConfig(steps=6)
    sampler = Sampler(flow.pipe, cfg.sampler_config())
    sampler.set_steps()
    sigmas, gen = sampler.chain.sigmas, torch.Generator().manual_seed(1)
    assert float(sigmas[0]) == 1.0
    for i, t in enumerate(sampler.chain.timesteps):
        x, v = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        mean, std = sampler.chain.step(v, t, x, cfg.eta)
        h, tt = s - s_next, 1 - s
        if s == 1.0:  # sigma(0) is infinite: the next time stands in (Flow-GRPO's rule), g^2 = 2 / (1 - s_next), in
            # the drift v_t + g^2 / 2 score, the score at t = 0 being -x (N(0, I))
            g2 = 2 / (1 - s_next)
            assert std == pytest.approx(math.sqrt(g2 * h), rel=1e-6)
            torch.testing.assert_close(mean, x + h * (-v + g2 / 2 * -x), rtol=1e-5, atol=1e-5)
            continue
        assert std == pytest.approx(math.sqrt(2 * (1 - tt) / tt) * math.sqrt(h), rel=1e-6)
        torch.testing.assert_close(mean, x + h * (2 * -v - x / tt), rtol=1e-5, atol=1e-5)


def test_memoryless_flow_sde_forgets_its_noise():
    # Memorylessness itself: for 1-D Gaussian data N(m, s^2) the velocity is exact, v_t(x) = m + (t s^2 - (1 - t))
    # / (t^2 s^2 + (1 - t)^2) (x - t m); under the memoryless SDE X_1 is independent of X_0 (and still ~ N(m, s^2)),
    # under the ODE or a quarter of the noise it is not. (Most of the forgetting is the first step's: at sigma = 1
    # the stand-in g^2 = 2 / h makes its mean x (1 - eta^2) - h v.)
    m, s, n, steps = 1.0, 0.5, 4000, 400
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)

    def run(eta):
        gen = torch.Generator().manual_seed(0)
        x0 = torch.randn(n, generator=gen, dtype=torch.float64)
        x = x0.clone()
        for i in range(steps):
            t = 1 - float(sigmas[i])
            v = -(m + (t * s * s - (1 - t)) / (t * t * s * s + (1 - t) ** 2) * (x - t * m))
            mean, std = memoryless_step(v, float(sigmas[i]), float(sigmas[i + 1]), x, eta)
            x = mean + std * torch.randn(n, generator=gen, dtype=torch.float64)
        return float(torch.corrcoef(torch.stack([x0, x]))[0, 1]), x

    corr, x1 = run(1.0)
    assert abs(corr) < 0.05 and abs(float(x1.mean()) - m) < 0.05 and abs(float(x1.std()) - s) < 0.05
    assert run(0.0)[0] > 0.99 and run(0.25)[0] > 0.3


# -- (b) the lean adjoint ------------------------------------------------------------------------------------------
def toy_chain(seed=0, steps=6):
    """An MLP drift b(x, t) with base means m_k(x) = x + h b(x, t_k), a stored noisy trajectory, a toy reward."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    hs = torch.rand(steps) * 0.2 + 0.05

    def mean(k, x):
        flat = x.flatten(1)
        return x + hs[k] * net(torch.cat([flat, torch.full((len(x), 1), float(k))], dim=1)).view_as(x)

    xs = [torch.randn(2, 3)]
    for k in range(steps):
        xs.append((mean(k, xs[-1]) + 0.3 * torch.randn(2, 3)).detach())
    return mean, torch.stack(xs, dim=1), lambda x: (torch.sin(x) * x).sum(dim=1)


def test_lean_adjoint_is_the_vjp_chain_of_the_noise_free_base_steps():
    # The discrete lean adjoint a_k = (dm_k/dx (x_k))^T a_{k+1}, a_T = -lambda grad r(x_T): autograd through the base
    # steps without their noise, evaluated along the stored trajectory (each step's input is the stored x_k; the
    # straight-through z_{k+1} = x_{k+1} + m_k(z_k) - m_k(z_k).detach() keeps the values and carries the Jacobian).
    mean, latents, reward = toy_chain()
    lam, steps = 7.0, latents.shape[1] - 1
    x_t = latents[:, -1].clone().requires_grad_(True)
    (grad_r,) = torch.autograd.grad(reward(x_t).sum(), x_t)
    got = lean_adjoint(latents, -lam * grad_r, mean, keep=set(range(steps)))
    for k in range(steps):
        start = latents[:, k].clone().requires_grad_(True)
        z = start
        for j in range(k, steps):
            y = mean(j, z)
            z = latents[:, j + 1] + y - y.detach()
        (expected,) = torch.autograd.grad(-lam * reward(z).sum(), start)
        torch.testing.assert_close(got[k], expected, rtol=1e-5, atol=1e-6)
    assert set(lean_adjoint(latents, -lam * grad_r, mean, keep={1, 4})) == {1, 4}


def test_lean_adjoint_of_a_linear_drift_is_the_matrix_power():
    # b(x) = A x: da/dt = -A^T a, Euler backwards a_k = (I + h A)^T a_{k+1} = ((I + h A)^T)^(T - k) a_T.
    A, h, steps = torch.tensor([[0.0, 1.0], [-2.0, 0.5]]), 0.1, 5
    latents = torch.randn(3, steps + 1, 2)
    a_T = torch.randn(3, 2)
    got = lean_adjoint(latents, a_T, lambda k, x: x + h * x @ A.T, keep={0, 2})
    step = (torch.eye(2) + h * A).T
    for k in (0, 2):
        torch.testing.assert_close(got[k], a_T @ torch.linalg.matrix_power(step, steps - k).T)


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_the_adjoint_uses_the_base_model_whatever_the_adapter(tiny, flow, family):
    method = build(tiny if family == "sd" else flow)
    prompts = ["a cat", "a dog"]
    with torch.no_grad():
        rollout = method.sampler.sample(prompts, generator=torch.Generator().manual_seed(3))
    a_T = torch.randn(rollout.latents[:, -1].shape, generator=torch.Generator().manual_seed(4))
    args = (rollout.latents, rollout.timesteps, rollout.prompt_embeds, a_T, [0, 2])
    before, _ = method.adjoint_states(*args)
    with torch.no_grad():
        for p in method.params:
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    after, base = method.adjoint_states(*args)
    for k in (0, 2):
        torch.testing.assert_close(after[k], before[k])
    x, t = rollout.latents[:, 0], rollout.timesteps[0]
    with torch.no_grad():
        tuned, _ = method.sampler.chain.step(method.sampler.denoiser_forward(x, t, rollout.prompt_embeds), t, x, 1.0)
    assert not torch.allclose(tuned, base[0])  # the adapter does change the drift; the adjoint ignores it


# -- (c) the loss, its steps and its clipping -----------------------------------------------------------------------
def test_matching_loss_is_h_times_the_paper_regression():
    # Paper, flow case: L = h || u + sigma(t) a ||^2 with u = (b_ft - b_base) / sigma(t), b = 2 v_t - x / t.
    gen = torch.Generator().manual_seed(2)
    x, v_ft, v_base, a = (torch.randn(3, 4, 5, 5, generator=gen) for _ in range(4))
    s, s_next = 0.7, 0.55
    h, t = s - s_next, 1 - s
    sig = math.sqrt(2 * (1 - t) / t)
    mean, std = memoryless_step(v_ft, s, s_next, x, 1.0)
    base, _ = memoryless_step(v_base, s, s_next, x, 1.0)
    loss, control, target = matching_terms(mean, base, std, a)
    u = ((2 * -v_ft - x / t) - (2 * -v_base - x / t)) / sig
    expected = h * ((u + sig * a) ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(control, h * (u ** 2).sum(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(target, h * ((sig * a) ** 2).sum(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)


def test_clipping_threshold_and_mask(tiny):
    # am_trainer.py EMA_update with decay 0.9: first value, the mean of two (1 < 1/0.9), then 0.9 prev + 0.1 value.
    assert ema_threshold(1.0, -1.0, 0, 0.9) == 1.0
    assert ema_threshold(3.0, 1.0, 1, 0.9) == pytest.approx(2.0)
    assert ema_threshold(5.0, 2.0, 2, 0.9) == pytest.approx(2.3)
    # The mask keeps sqrt(loss) < threshold; the loss is the mean over all entries (clipped ones count 0).
    method = build(tiny)
    losses = torch.tensor([[1.0, 4.0], [9.0, 16.0], [25.0, 100.0]])  # sqrt: 1, 2, 3, 4, 5, 10
    mask, threshold = method.clip(losses)
    assert threshold == pytest.approx(7.5)  # the 0.9 quantile of six values, interpolated: 5 + 0.5 (10 - 5)
    assert mask.tolist() == [[1, 1], [1, 1], [1, 0]] and float((losses * mask).mean()) == pytest.approx(55 / 6)
    mask, threshold = method.clip(losses / 4)  # sqrt halves: the quantile 3.75, the threshold (7.5 + 3.75) / 2
    assert threshold == pytest.approx(5.625) and mask.tolist() == [[1, 1], [1, 1], [1, 1]]


def test_loss_steps_are_half_early_half_late():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # am_trainer.py: 2 of the first round(0.6 x 50) = 30 steps, 2 of the last 20
        chosen = loss_step_indices(list(range(50)), 50, 4, 0.6, gen)
        assert chosen == sorted(set(chosen)) and sum(i < 30 for i in chosen) == 2 and len(chosen) == 4
    assert loss_step_indices([0, 1, 2], 3, 4, 0.6, gen) == [0, 1, 2]  # round(1.8) = 2: two early, one late
    assert loss_step_indices([0, 1, 2], 4, 4, 0.6, gen) == [0, 1, 2]  # a deterministic last step is not in the pool


# -- the method on both families -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_only_adapters_train_and_queries_are_counted(tiny, flow, family):
    method = build(tiny if family == "sd" else flow, warmup_steps=0, grad_accum=2)
    base = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_B" in n}
    metrics = method.step()
    after = dict(method.denoiser.named_parameters())
    assert all(torch.equal(base[n], after[n]) for n in base), "a base weight changed"
    assert any(not torch.equal(lora[n], after[n]) for n in lora), "no adapter weight changed"
    assert metrics["samples"] == 4.0 and metrics["loss_steps"] == 4.0 and all(isinstance(v, float) for v in
                                                                              metrics.values())


def test_warm_up_starts_at_lr_zero(tiny):
    method = build(tiny, warmup_steps=20)
    lora = [p.detach().clone() for p in method.params]
    first = method.step()
    assert first["lr_factor"] == 0.0 and all(torch.equal(a, b) for a, b in zip(lora, method.params))
    assert method.step()["lr_factor"] == pytest.approx(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_state_round_trip_continues_the_same_run(tiny, flow, family):
    model = tiny if family == "sd" else flow
    a = build(model, seed=5, prompt_dropout=0.5)
    a.step()
    state = copy.deepcopy(a.state_dict())
    ref = [a.step(), a.step()]
    b = build(model, seed=5, prompt_dropout=0.5)
    b.load_state_dict(state)
    assert [b.step(), b.step()] == ref


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_learns_in_the_rewarded_direction(tiny, flow, family):
    from bench.core.evaluate import EvalConfig, evaluate

    def brightness(pipe):
        scores, _ = evaluate(pipe, MeanBrightness(), load_prompts("eval-animals").first(4),
                             EvalConfig(n=4, steps=4, guidance_scale=3.0))
        return float(scores.mean())

    method = build(tiny if family == "sd" else flow, lr=3e-2, warmup_steps=0, batch_size=4)
    before = brightness(method.pipe)
    for _ in range(4):
        method.step()
    assert brightness(method.pipe) - before > 5e-5
