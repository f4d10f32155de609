"""Flow-matching arithmetic in float32, what a flow family's chain (``bench.core.families.flowmatch.FlowMatchChain``
under sd3's ``FlowChain`` and flux's ``FluxChain``: a rectified-flow transformer sampled by the flow-matching Euler
ODE, as diffusers' ``StableDiffusion3Pipeline`` / ``FluxPipeline`` with ``FlowMatchEulerDiscreteScheduler``) steps
with: the flow SDEs and the training noise levels. The notes below are sd3's; flux's differences (the resolution's
shift, packed latents, its prompt states): ``bench.core.families.flux``.

- Schedule: sigmas from 1 down to 1/1000 (T of them, the scheduler's ``shift`` applied: s' = shift s / (1 +
  (shift - 1) s)) plus a terminal 0; timestep t = 1000 sigma. The state is x_sigma = sigma eps + (1 - sigma) x_0.
- Model output: the velocity v = eps - x_0 (classifier-free guidance as SD3's pipeline, in the sampler).
- One step: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v; x_0 prediction x - sigma v; re-noising
  sigma eps + (1 - sigma) x_0; training target (rectified flow): noise - x_0 at sigma = shift(u), u logit-normal
  (SD3 paper's default weighting, diffusers' train_dreambooth_sd3 ``logit_normal``).
- Prompt states: both CLIP encoders' penultimate hidden states side by side, zero-padded to the transformer's
  ``joint_attention_dim``, then the T5 part (zeros when the T5 encoder is absent, as the pipeline does; the
  pipeline's ``t5_tokens`` attribute says how many, default 256 as diffusers), then, as ONE extra last token, the
  two pooled projections (zero-padded): one tensor per prompt, like the SD family's.

The ODE is deterministic: its transitions have no density. Stochastic transitions come from a flow SDE named by
``SamplerConfig.sde`` (``SDE_STEPS``: name -> function(v, sigma, sigma_next, x, eta) -> (mean, std); ``flow-grpo``,
``dance-grpo``, ``cps``, ``sa-solver`` and Adjoint Matching's ``memoryless`` below); the chain's ``step`` then hands the
sampler a Gaussian transition N(mean, std^2 I) whose log-probability the sampler scores exactly as for DDIM's
eta > 0 (``bench.core.ddim.gaussian_log_prob``: float32,
averaged over the non-batch latent dimensions, as flow_grpo and DanceGRPO do). eta = 0, or no SDE selected, is the
ODE step itself; with no SDE selected eta > 0 is refused.
"""

from __future__ import annotations

import math

import torch

SDE_STEPS: dict = {}
"""Stochastic flow transitions by name: function(v, sigma, sigma_next, x, eta) -> (mean, std float)."""


def sde_mean(v, sigma, sigma_next, x, g: float):
    """Euler-Maruyama mean of the reverse-time SDE with the flow ODE's marginals and diffusion coefficient g:

        x + [v + g^2 / (2 sigma) (x + (1 - sigma) v)] dt,    dt = sigma_next - sigma < 0.

    For x_sigma = sigma eps + (1 - sigma) x_0 the score is -(x - (1 - sigma) x_0) / sigma^2 = -(x + (1 - sigma) v) /
    sigma (x_0 = x - sigma v), so the bracket is v - g^2 / 2 score: Flow-GRPO (arXiv:2505.05470, the ODE-to-SDE
    conversion; flow_grpo ``sd3_sde_with_logprob.py``, ``sde_type='sde'``) and DanceGRPO (arXiv:2505.07818;
    DanceGRPO ``train_grpo_flux.py::flux_step`` with ``sde_solver``) share it and differ only in g. g = 0 is the
    ODE step x + dt v exactly (same float32 arithmetic).
    """
    dt = sigma_next - sigma
    return x + (v + (g * g / (2 * sigma)) * (x + (1 - sigma) * v)) * dt


def flow_grpo_step(v, sigma, sigma_next, x, eta: float):
    """Flow-GRPO (arXiv:2505.05470): g = a sqrt(sigma / (1 - sigma)) with a = ``eta`` (their ``noise_level``, 0.7 by
    default); std = g sqrt(-dt). At sigma = 1 the denominator uses the next-lower sigma, as flow_grpo does
    (its ``sigma_max = sigmas[1]``, which is ``sigma_next`` on the one step that starts at sigma = 1)."""
    s, s_next = float(sigma), float(sigma_next)
    g = eta * math.sqrt(s / (1 - (s_next if s == 1 else s)))
    return sde_mean(v, sigma, sigma_next, x, g), g * math.sqrt(s - s_next)


def dance_grpo_step(v, sigma, sigma_next, x, eta: float):
    """DanceGRPO (arXiv:2505.07818; ``flux_step`` with ``sde_solver``): a constant g = eta (0.3 in their flux script) in
    place of Flow-GRPO's sigma-dependent factor; std = eta sqrt(sigma - sigma_next)."""
    return sde_mean(v, sigma, sigma_next, x, eta), eta * math.sqrt(float(sigma) - float(sigma_next))


def cps_step(v, sigma, sigma_next, x, eta: float):
    """Coefficients-preserving sampling (Wang & Yu, arXiv:2509.05952; IamCreateAI/FlowCPS @ 814c359 and
    yifan123/flow_grpo @ 54809b5 ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py:70-83``, ``sde_type='cps'``):
    the next state is re-noised from the predictions x0 = x - sigma v and x1 = x + (1 - sigma) v so that its signal
    and noise coefficients stay those of the flow's marginal, 1 - sigma_next and sigma_next:

        mean = (1 - sigma_next) x0 + sqrt(sigma_next^2 - std^2) x1,    std = sigma_next sin(eta pi / 2),

    eta in [0, 1] their ``noise_level``. eta = 0 is the Euler ODE step x + (sigma_next - sigma) v (up to float
    rounding); the last step (sigma_next = 0) is deterministic (std 0, mean x0) and so has no log-probability.

    Log-probability: the sampler scores N(mean, std^2 I) exactly (``gaussian_log_prob``). flow_grpo's cps branch
    (line 86, "remove all constants") uses -mean((x_next - mean)^2) instead: no 1 / (2 std^2) and no -log std -
    log sqrt(2 pi). The constants cancel in the ratio, the missing 1 / (2 std^2) does not: their log-ratio is 2 std^2
    times the exact one, so a PPO clip range means a different trust region here than there."""
    s_next = float(sigma_next)
    std = s_next * math.sin(eta * math.pi / 2)
    keep = math.sqrt(max(s_next * s_next - std * std, 0.0))  # = s_next cos(eta pi / 2) for eta in [0, 1]
    x0, x1 = x - sigma * v, x + (1 - sigma) * v
    return x0 * (1 - sigma_next) + x1 * keep, std


def sa_solver_step(v, sigma, sigma_next, x, eta: float):
    """SA-Solver's stochastic step (Xue et al., arXiv 2309.05019; AWM's rollouts, scxue/advantage_weighted_matching
    ``flow_grpo/diffusers_patch/sa_solver.py``) at order 1, data-prediction form, on the flow (alpha = 1 - sigma),
    with tau = ``eta`` (their ``noise_level``). With r = exp(-h) = (1 - sigma) sigma_next / (sigma (1 - sigma_next))
    (h: the step in log-SNR lambda = log(alpha / sigma)) and x_0 = x - sigma v:

        mean = r^(tau^2) (sigma_next / sigma) x + (1 - sigma_next) (1 - r^(1 + tau^2)) x_0,
        std = sigma_next sqrt(1 - r^(2 tau^2))

    (sa_solver.py:274-285 with its order-0 coefficient :149-151). tau = 0 is the ODE step exactly; at sigma = 1 or
    sigma_next = 0, r = 0 (a fresh draw of x_sigma_next given x_0; x_0 itself at the end)."""
    if eta == 0:
        return x + (sigma_next - sigma) * v, 0.0
    s, t, tau2 = float(sigma), float(sigma_next), float(eta) ** 2
    r = (1 - s) * t / (s * (1 - t))
    x0 = x - sigma * v
    mean = (r**tau2 * t / s) * x + ((1 - t) * (1 - r ** (1 + tau2))) * x0
    return mean, t * math.sqrt(max(1 - r ** (2 * tau2), 0.0))


def memoryless_step(v, sigma, sigma_next, x, eta: float):
    """Adjoint Matching's memoryless noise schedule for flows (Domingo-Enrich et al., arXiv 2409.08861, the Flow
    Matching case): in the paper's time t = 1 - sigma (alpha_t = t, beta_t = 1 - t) the memoryless diffusion
    coefficient is sigma(t)^2 = 2 beta_t (alpha_t'/alpha_t beta_t - beta_t') = 2 (1 - t) / t, i.e. g^2 = 2 sigma /
    (1 - sigma), under which the drift is 2 v_t - x / t (v_t = -v, ``sde_mean``); ``eta`` scales g (1: memoryless).
    This is Flow-GRPO's g with a = sqrt(2) eta, including its stand-in at sigma = 1, where the memoryless g is
    infinite: the next-lower sigma in the denominator (the first step then has std sqrt(2) eta)."""
    return flow_grpo_step(v, sigma, sigma_next, x, math.sqrt(2) * eta)


MEMORYLESS = "memoryless"
"""The ``SamplerConfig.sde`` whose eta = 1 step is memoryless on every chain: ``memoryless_step`` on flow chains,
DDIM's own eta step on the sd family (Adjoint Matching: DDIM with eta = 1 is the memoryless schedule)."""
SDE_STEPS.update({"flow-grpo": flow_grpo_step, "dance-grpo": dance_grpo_step, "cps": cps_step,
                  "sa-solver": sa_solver_step, MEMORYLESS: memoryless_step})
SDE_NOISE_LEVELS = {"flow-grpo": 0.7, "dance-grpo": 0.3, "cps": 0.8, "sa-solver": 0.4, MEMORYLESS: 1.0}
"""Each SDE's reference noise level (eta): Flow-GRPO ``config/base.py`` ``sample.noise_level = 0.7``; DanceGRPO's
flux script ``--eta 0.3``; CPS 0.8, what every flow_grpo @ 31c71b9 ``config/grpo.py`` config that selects
``sde_type = "cps"`` sets (``geneval_sd3_fast_nocfg``, ``pickscore_sd3_fast_nocfg``; FlowCPS's own ``geneval_sd3``
runs CPS at its base.py's 0.7); SA-Solver 0.4 (AWM's ``sample.noise_level``, ``methods/awm.py``); memoryless 1 (the
memoryless schedule itself)."""


def train_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The scheduler's shift applied to training noise levels u in (0, 1)."""
    return shift * u / (1 + (shift - 1) * u)
