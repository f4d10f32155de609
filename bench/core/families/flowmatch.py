"""The flow-matching chain the flow families share (``sd3``: SD 3/3.5, ``flux``: FLUX.1): sigmas from the family's
FlowMatchEulerDiscreteScheduler, the Euler ODE step or a flow SDE of ``bench.core.flow.SDE_STEPS``, x_0 prediction,
re-noising and the rectified-flow training target, all on the sampler's unpacked latents [B, C, h, w] in float32.

A family's subclass adds what differs: how the scheduler's sigmas are set (``schedule``: SD3's fixed shift, FLUX's
resolution-dependent one), the shift its training noise levels take (``train_shift``), prompt encoding and the
denoiser call.
"""

from __future__ import annotations

import torch

from bench.core.families.base import Chain
from bench.core.flow import SDE_STEPS, train_sigma


class FlowMatchChain(Chain):
    """Flow-matching Euler steps on x_sigma = sigma eps + (1 - sigma) x_0; the model output is the velocity
    eps - x_0."""

    sde = ""
    """Name of the flow SDE in ``SDE_STEPS`` used when eta > 0 (from ``SamplerConfig.sde``; empty: the ODE only)."""

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        self.t5_tokens = int(getattr(pipe, "t5_tokens", self.info.t5_default))
        self.sde = getattr(config, "sde", "") or ""
        if self.sde and self.sde not in SDE_STEPS:
            raise ValueError(f"unknown flow SDE {self.sde!r}; valid: {', '.join(sorted(SDE_STEPS))}")
        self.sigmas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        cfg = self.denoiser.config  # both families' transformers: text tokens of the joint dim, a pooled vector
        self.joint_dim, self.pooled_dim = cfg.joint_attention_dim, cfg.pooled_projection_dim
        if self.pooled_dim > self.joint_dim:
            raise ValueError(f"pooled_projection_dim {self.pooled_dim} > joint_attention_dim {self.joint_dim}: the "
                             "pooled projections cannot ride as a prompt-state token")

    def check_eta(self, eta: float) -> None:
        if eta > 0 and self.sde not in SDE_STEPS:
            raise ValueError(f"eta={eta}: the {self.family} family samples the deterministic flow ODE unless a flow "
                             f"SDE is selected (SamplerConfig.sde: {', '.join(sorted(SDE_STEPS))}); set eta=0 or an sde")

    def decode_scale(self, latents):
        return latents / self.vae.config.scaling_factor + (self.vae.config.shift_factor or 0.0)

    def split(self, states):
        """(encoder_hidden_states, pooled_projections) from the one prompt-state tensor (pooled: the last token)."""
        return states[:, :-1], states[:, -1, : self.pooled_dim]

    # -- the chain ------------------------------------------------------------------------------------------
    def schedule(self, steps: int) -> None:
        """Set the scheduler's T sigmas (the family's own rule)."""
        raise NotImplementedError

    @property
    def train_shift(self) -> float:
        """The shift s of the training noise levels sigma = s u / (1 + (s - 1) u)."""
        raise NotImplementedError

    def set_steps(self, steps: int) -> torch.Tensor:
        """The T timesteps (1000 sigma) of the family's schedule (``schedule``)."""
        self.schedule(steps)
        self.timesteps, self.sigmas = self.scheduler.timesteps, self.scheduler.sigmas.to(self.device)
        return self.timesteps

    def index(self, t) -> int:
        if self.timesteps is None:
            raise RuntimeError("set_steps must run before the chain is stepped")
        return int(torch.argmin((self.timesteps - torch.as_tensor(t, device=self.timesteps.device)).abs()))

    def sigma(self, t) -> torch.Tensor:
        return self.sigmas[self.index(t)]

    def step(self, out, t, x, eta: float):
        i = self.index(t)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        if eta > 0:
            self.check_eta(eta)
            return SDE_STEPS[self.sde](out, sigma, sigma_next, x, eta)
        return x + (sigma_next - sigma) * out, 0.0

    def step_length(self, t) -> float:
        """sigma - sigma_next of the step leaving ``t`` (the SDE's |dt|; Flow-GRPO's KL is per unit of it)."""
        i = self.index(t)
        return float(self.sigmas[i] - self.sigmas[i + 1])

    def predict_x0(self, out, t, x):
        return x - self.sigma(t) * out

    def renoise(self, x0, t, noise):
        sigma = self.sigma(t)
        return sigma * noise.to(x0.device, x0.dtype) + (1 - sigma) * x0

    def training_pair(self, x0, generator: torch.Generator):
        """(x_sigma, 1000 sigma, noise - x0) with sigma = shift(u), u = sigmoid(N(0, 1)), shift = ``train_shift``."""
        u = torch.sigmoid(torch.randn(len(x0), generator=generator)).to(x0.device)
        sigma = train_sigma(u, self.train_shift)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        s = sigma.view(-1, *([1] * (x0.ndim - 1)))
        return s * noise + (1 - s) * x0, sigma * self.scheduler.config.num_train_timesteps, noise - x0
