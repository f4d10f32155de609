"""The ``sd3`` family's chain: a rectified-flow transformer (SD3Transformer2DModel) sampled by the flow-matching
Euler ODE, as diffusers' ``StableDiffusion3Pipeline`` with ``FlowMatchEulerDiscreteScheduler``.

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
``dance-grpo``, ``cps``, ``sa-solver`` and Adjoint Matching's ``memoryless`` below); ``step`` then hands the
sampler a Gaussian transition N(mean, std^2 I) whose log-probability the sampler scores exactly as for DDIM's
eta > 0 (``bench.core.ddim.gaussian_log_prob``: float32,
averaged over the non-batch latent dimensions, as flow_grpo and DanceGRPO do). eta = 0, or no SDE selected, is the
ODE step itself; with no SDE selected eta > 0 is refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.core.chain import Chain
from bench.core.families import FAMILIES
from bench.core.modules import dtype_of

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


class FlowChain(Chain):
    """SD 3 / 3.5: MMDiT with joint attention and pooled projections; flow-matching Euler steps."""

    info = FAMILIES["sd3"]
    sde = ""
    """Name of the flow SDE in ``SDE_STEPS`` used when eta > 0 (from ``SamplerConfig.sde``; empty: the ODE only)."""

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        cfg = self.denoiser.config
        self.joint_dim, self.pooled_dim = cfg.joint_attention_dim, cfg.pooled_projection_dim
        if self.pooled_dim > self.joint_dim:
            raise ValueError(f"pooled_projection_dim {self.pooled_dim} > joint_attention_dim {self.joint_dim}: the "
                             "pooled projections cannot ride as a prompt-state token")
        if self.scheduler.config.get("use_dynamic_shifting"):
            raise ValueError("a flow scheduler with use_dynamic_shifting (resolution-dependent shift) is not "
                             "supported; use a fixed shift (SD 3 / 3.5: shift=3.0)")
        self.t5_tokens = int(getattr(pipe, "t5_tokens", 256))
        self.sde = getattr(config, "sde", "") or ""
        if self.sde and self.sde not in SDE_STEPS:
            raise ValueError(f"unknown flow SDE {self.sde!r}; valid: {', '.join(sorted(SDE_STEPS))}")
        self.sigmas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None

    def check_eta(self, eta: float) -> None:
        if eta > 0 and self.sde not in SDE_STEPS:
            raise ValueError(f"eta={eta}: the sd3 family samples the deterministic flow ODE unless a flow SDE is "
                             f"selected (SamplerConfig.sde: {', '.join(sorted(SDE_STEPS))}); set eta=0 or an sde")

    # -- geometry ------------------------------------------------------------------------------------------
    @property
    def down_factor(self) -> int:
        return self.denoiser.config.patch_size

    def decode_scale(self, latents):
        return latents / self.vae.config.scaling_factor + (self.vae.config.shift_factor or 0.0)

    # -- prompts and the denoiser -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[B, 2 x CLIP length + T5 tokens + 1, joint_attention_dim] prompt states (no graph)."""
        pipe, n = self.pipe, len(prompts)
        hidden, pooled = [], []
        with self.autocast():
            for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
                out = self.clip_states(tok, enc, prompts, output_hidden_states=True)
                hidden.append(out.hidden_states[-2].float())
                pooled.append(out[0].float())
            clip = F.pad(torch.cat(hidden, dim=-1), (0, self.joint_dim - sum(h.shape[-1] for h in hidden)))
            if pipe.text_encoder_3 is not None:
                ids = pipe.tokenizer_3(list(prompts), padding="max_length", max_length=self.t5_tokens,
                                       truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
                t5 = pipe.text_encoder_3(ids.to(self.device))[0].float()
            else:
                t5 = torch.zeros(n, self.t5_tokens, self.joint_dim, device=self.device)
        pooled = F.pad(torch.cat(pooled, dim=-1), (0, self.joint_dim - self.pooled_dim)).unsqueeze(1)
        return torch.cat([clip, t5, pooled], dim=1)

    def split(self, states):
        """(encoder_hidden_states, pooled_projections) from the one prompt-state tensor."""
        return states[:, :-1], states[:, -1, : self.pooled_dim]

    def forward(self, x, t, states):
        """The transformer's velocity (float32) at the sampler's precision."""
        dt = dtype_of(self.denoiser)
        embeds, pooled = self.split(states)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = t.expand(len(x)) if t.ndim == 0 else t
        with self.autocast():
            return self.denoiser(hidden_states=x.to(dt), timestep=t.to(dt), encoder_hidden_states=embeds.to(dt),
                                 pooled_projections=pooled.to(dt), return_dict=False)[0].float()

    # -- the chain ------------------------------------------------------------------------------------------
    def set_steps(self, steps: int) -> torch.Tensor:
        """The T timesteps; sigmas per ``SamplerConfig.schedule`` (the scheduler's own, or DanceGRPO's shifted
        linspace, which diffusers shifts and ends with 0 when given the unshifted linspace as ``sigmas``)."""
        if getattr(self.config, "schedule", "scheduler") == "shifted-linspace":
            import numpy as np

            self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=self.device)
        else:
            self.scheduler.set_timesteps(steps, device=self.device)
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
        """(x_sigma, 1000 sigma, noise - x0) with sigma = shift(u), u = sigmoid(N(0, 1))."""
        u = torch.sigmoid(torch.randn(len(x0), generator=generator)).to(x0.device)
        sigma = train_sigma(u, float(self.scheduler.config.shift))
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        s = sigma.view(-1, *([1] * (x0.ndim - 1)))
        return s * noise + (1 - s) * x0, sigma * self.scheduler.config.num_train_timesteps, noise - x0


def train_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The scheduler's shift applied to training noise levels u in (0, 1)."""
    return shift * u / (1 + (shift - 1) * u)
