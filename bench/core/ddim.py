"""DDIM arithmetic in float32: one step's coefficients, x0 from a model output, the (stochastic) DDIM update and
the Gaussian log-probability of a transition. The sampler (``bench.core.sampler``) drives it."""

from __future__ import annotations

import math

import torch


def ddim_coefficients(scheduler, t: int) -> tuple[float, float]:
    """(alpha_bar_t, alpha_bar_prev) of the DDIM step leaving timestep ``t``, as diffusers' DDIMScheduler."""
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha_t = float(scheduler.alphas_cumprod[t])
    alpha_prev = float(scheduler.alphas_cumprod[prev_t]) if prev_t >= 0 else float(scheduler.final_alpha_cumprod)
    return alpha_t, alpha_prev


def predict_x0(scheduler, model_output, t: int, x):
    """(x0, eps): the clean latent and the noise the guided model output implies at timestep ``t``, as diffusers."""
    alpha_t = float(scheduler.alphas_cumprod[t])
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        eps = model_output
        x0 = (x - math.sqrt(1 - alpha_t) * eps) / math.sqrt(alpha_t)
    elif kind == "v_prediction":
        x0 = math.sqrt(alpha_t) * x - math.sqrt(1 - alpha_t) * model_output
        eps = math.sqrt(alpha_t) * model_output + math.sqrt(1 - alpha_t) * x
    else:
        raise ValueError(f"prediction_type {kind!r} is not supported; use an epsilon or v_prediction model")
    if getattr(scheduler.config, "thresholding", False):
        raise ValueError("scheduler thresholding is not supported by the sampler; set thresholding=False")
    if scheduler.config.clip_sample:  # as diffusers (use_clipped_model_output=False): eps keeps the model's value
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
    return x0, eps


def ddim_step(scheduler, model_output, t: int, x, eta: float):
    """Mean and standard deviation of the DDIM transition p(x_{t-1} | x_t) given the guided model output."""
    alpha_t, alpha_prev = ddim_coefficients(scheduler, t)
    x0, eps = predict_x0(scheduler, model_output, t, x)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = eta * math.sqrt(max(variance, 0.0))
    mean = math.sqrt(alpha_prev) * x0 + math.sqrt(max(1 - alpha_prev - std**2, 0.0)) * eps
    return mean, std


def gaussian_log_prob(x, mean, std: float) -> torch.Tensor:
    """log N(x; mean, std^2) in float32, averaged over all but the batch dimension (trl's and ddpo-pytorch's
    convention; flow_grpo and DanceGRPO average too). A deterministic transition (std <= 0) has no density."""
    if not std > 0:
        raise ValueError(f"a transition with std {float(std):g} has no Gaussian log-probability (deterministic step)")
    x, mean = x.float(), mean.float()
    lp = -((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.mean(dim=tuple(range(1, lp.ndim)))
