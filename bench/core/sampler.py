"""The one sampler every method uses; which steps carry gradient is a parameter (``GradMode``).

A rollout runs T denoising steps x_T -> x_0 with classifier-free guidance (the weight the chain names:
``guidance_scale``; ``true_cfg_scale`` on flux, whose ``guidance_scale`` is an embedding) over the model family's chain
(``bench.core.families``: DDIM with eta for ``sd``, the flow-matching Euler ODE for ``sd3`` and ``flux``), decodes x_0
with the VAE and returns images in [0, 1] plus what the policy-gradient and regression methods need: every latent, the
timesteps and the log-probability of each stochastic transition under the sampling policy. Gradient modes,
checkpointing, precision and the order randomness is drawn in are the same for every family ("UNet call" below
means a denoiser call: the UNet or the SD3 / FLUX transformer).

Gradient modes (``GradMode.mode``):

- ``none``      no graph anywhere (evaluation, DDPO/RWR sampling).
- ``full``      every UNet call and the decode carry gradient (AlignProp "full backprop").
- ``last-k``    only the last K steps carry gradient; earlier steps run without a graph (DRaFT-K; K=1 is
                AlignProp's / DRaFT's K=1).
- ``random-k``  K drawn uniformly from ``k_range`` once per rollout, then as ``last-k`` (the AlignProp paper's
                randomized truncation). Every allowed range gives at least one gradient step.
- ``alignprop-code``  the official AlignProp code (and trl's AlignPropTrainer): at *each* step i a threshold r_i is
                drawn from ``code_range`` and the UNet output is detached when i < r_i, while the latent path keeps
                its graph, so gradient still flows through the DDIM update of later detached steps. The UNet of a
                detached step runs without a graph here (its output is a constant either way: same gradient, less
                memory). Even within an allowed range a rollout can, by chance, carry no gradient at all, as in
                the original; ``Rollout.grad_steps`` says which steps carried gradient.

UNet calls and the decode under gradient use activation checkpointing unless ``GradMode.checkpoint`` is False;
``GradMode.keep`` lets the last ``keep`` gradient-carrying UNet calls of a rollout keep their activations instead
(AlignProp's ``checkpointing=auto`` sets it from a memory budget; ``activation_bytes`` measures one call's).

Precision (``SamplerConfig.precision``, see ``bench.core.precision``): latents, the DDIM arithmetic and the
log-probabilities are float32 whatever the precision; UNet, text-encoder and decode inputs are cast to their
module's dtype, run under autocast, and come back as float32. ``SamplerConfig.resolution`` draws images of that
height and width (0: the model's native size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from bench.core.ddim import gaussian_log_prob
from bench.core import precision as mp

GRAD_MODES = ("none", "full", "last-k", "random-k", "alignprop-code")
SCHEDULES, DECODES = ("scheduler", "shifted-linspace"), ("final", "last-x0")  # SamplerConfig.schedule and .decode


@dataclass
class SamplerConfig:
    """DDIM sampling settings shared by training rollouts and evaluation."""

    steps: int = 50
    """Number of DDIM denoising steps T (AlignProp and DDPO papers: 50)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance weight w; w <= 1 disables guidance (AlignProp code 7.5, DDPO 5.0). flux: the
    transformer's guidance embedding (FLUX.1-dev is guidance-distilled: one pass; FluxPipeline's default 3.5)."""
    true_cfg_scale: float = 1.0
    """flux: true classifier-free guidance weight with ``negative_prompt`` (FluxPipeline's); <= 1: none."""
    eta: float = 0.0
    """DDIM eta in [0, 1]: 0 is deterministic (AlignProp code), 1 is DDPM-like (DDPO); log-probs need eta > 0. On a
    flow chain with ``sde`` set: the SDE's noise level (Flow-GRPO's a, DanceGRPO's eta)."""
    sde: str = ""
    """Flow chains: the SDE of eta > 0 steps, a name in ``bench.core.flow.SDE_STEPS`` (flow-grpo, dance-grpo, cps,
    sa-solver, memoryless); empty: the flow ODE, eta must be 0. The sd family takes only ``memoryless`` (DDIM eta)."""
    schedule: str = "scheduler"
    """Flow chains only: ``scheduler`` = the pipeline's own sigmas (diffusers' FlowMatchEulerDiscreteScheduler with
    T steps: the shifted linspace from 1 to 1/1000, then 0; Flow-GRPO, MixGRPO, evaluation) or ``shifted-linspace`` =
    shift(linspace(1, 0, T + 1)) (DanceGRPO ``train_grpo_flux.py``: ``sd3_time_shift(3, linspace(1, 0, T + 1))``,
    whose last step leaves sigma = shift(1/T), e.g. 0.167 at T = 16, instead of 0.009)."""
    decode: str = "final"
    """What a rollout decodes into its images: ``final`` = the chain's last latent (Flow-GRPO, MixGRPO, every
    backprop method) or ``last-x0`` = the clean latent the last step's prediction implies, x - sigma v (DanceGRPO
    ``train_grpo_flux.py``: the last step's ``pred_original`` is decoded, so the untrained last step adds no noise)."""
    negative_prompt: str = ""
    """Unconditional prompt for guidance (both papers: empty string)."""
    precision: str = "fp32"
    """fp32, bf16 or fp16: autocast dtype of UNet, text-encoder and decode forwards (see bench.core.precision)."""
    vae_fp32: bool = False
    """Decode in float32 without autocast (the VAE's weights are then float32 too); fp16 VAEs are known to NaN."""
    resolution: int = 0
    """Image height = width in pixels; 0: the model's native size. Must be a multiple of the VAE's factor."""

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler steps must be an integer >= 1, got {self.steps!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"sampler eta must lie in [0, 1], got {self.eta}")
        if min(self.guidance_scale, self.true_cfg_scale) < 0:
            raise ValueError(f"sampler guidance_scale and true_cfg_scale must be >= 0, got {self.guidance_scale}, "
                             f"{self.true_cfg_scale}")
        mp.check(self.precision)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"sampler schedule {self.schedule!r} unknown; valid: {', '.join(SCHEDULES)}")
        if self.decode not in DECODES:
            raise ValueError(f"sampler decode {self.decode!r} unknown; valid: {', '.join(DECODES)}")
        if not isinstance(self.resolution, int) or self.resolution < 0:
            raise ValueError(f"sampler resolution must be an integer >= 0 (0: native), got {self.resolution!r}")


@dataclass(frozen=True)
class GradMode:
    """Which denoising steps carry gradient, and whether those steps use activation checkpointing."""

    mode: str = "none"
    """One of none, full, last-k, random-k, alignprop-code (see the module docstring)."""
    k: int = 1
    """last-k: number of final steps that carry gradient (1 <= k <= T)."""
    k_range: tuple[int, int] = (1, 50)
    """random-k: K is drawn uniformly from [lo, hi] per rollout (1 <= lo <= hi <= T)."""
    code_range: tuple[int, int] = (0, 50)
    """alignprop-code: per-step threshold range [lo, hi] (official code and trl: (0, 50) for T = 50); hi <= T."""
    checkpoint: bool = True
    """Recompute activations of gradient-carrying UNet calls and the decode in the backward pass."""
    keep: int = 0
    """With checkpointing: the last ``keep`` gradient-carrying UNet calls keep their activations (not recomputed)."""

    def validate(self, steps: int) -> None:
        """Raise ``ValueError`` naming the setting when this mode cannot work with ``steps`` sampling steps."""
        if self.mode not in GRAD_MODES:
            raise ValueError(f"grad mode {self.mode!r} unknown; valid: {', '.join(GRAD_MODES)}")
        if self.mode == "last-k" and not 1 <= self.k <= steps:
            raise ValueError(f"last-k needs 1 <= k <= steps, got k={self.k} with steps={steps}")
        if self.mode == "random-k":
            lo, hi = self.k_range
            if not 1 <= lo <= hi <= steps:
                raise ValueError(
                    f"random-k needs 1 <= k_range[0] <= k_range[1] <= steps, got k_range={self.k_range} with "
                    f"steps={steps}; a range beyond the step count would silently train nothing"
                )
        if self.mode == "alignprop-code":
            lo, hi = self.code_range
            if not 0 <= lo <= hi <= steps:
                raise ValueError(
                    f"alignprop-code needs 0 <= code_range[0] <= code_range[1] <= steps, got code_range="
                    f"{self.code_range} with steps={steps}; a range beyond the step count detaches (nearly) every "
                    "step (trl's AlignProp then trains nothing, silently)"
                )

    def draw(self, steps: int, generator: torch.Generator | None) -> list[bool]:
        """Which of the ``steps`` steps (in sampling order) carry gradient for one rollout."""
        self.validate(steps)
        if self.mode == "none":
            return [False] * steps
        if self.mode == "full":
            return [True] * steps
        if self.mode in ("last-k", "random-k"):
            k = self.k
            if self.mode == "random-k":
                lo, hi = self.k_range
                k = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            return [i >= steps - k for i in range(steps)]
        lo, hi = self.code_range
        thresholds = torch.randint(lo, hi + 1, (steps,), generator=generator)
        return [i >= int(r) for i, r in enumerate(thresholds)]


@dataclass
class Rollout:
    """What one call of ``Sampler.sample`` returns."""

    images: torch.Tensor
    """Decoded images [B, 3, H, W] in [0, 1]; they carry a graph when any step carried gradient."""
    latents: torch.Tensor
    """Detached latents [B, T+1, C, h, w]: x_T (the initial noise) first, x_0 last."""
    timesteps: torch.Tensor
    """Training-schedule timestep of each step [T], in sampling order."""
    log_probs: torch.Tensor | None
    """Detached log-probability of each stochastic transition [B, S] (mean over latent dimensions), in sampling
    order; None when no step was stochastic (eta = 0)."""
    log_prob_steps: list[int]
    """The step index (0 = the first, from x_T) of each column of ``log_probs``: steps with std > 0 that ``sample``'s
    ``stochastic`` allowed (DDIM's last step with a final alpha of 1 is deterministic; MixGRPO's window)."""
    prompt_embeds: torch.Tensor
    """Detached text-encoder states of the prompts [B, L, D]."""
    grad_steps: list[bool]
    """Which steps carried gradient in this rollout."""
    means: torch.Tensor | None = None
    """Detached mean of each stochastic transition [B, S, ...], columns as ``log_probs`` (GRPO-Guard's RatioNorm)."""


class Sampler:
    """Sampling with classifier-free guidance over a model family's chain (``bench.core.families``): DDIM for
    Stable Diffusion pipelines, the flow-matching Euler ODE (or the flow SDE ``SamplerConfig.sde`` names) for Stable
    Diffusion 3 and FLUX.1 pipelines."""

    def __init__(self, pipe, config: SamplerConfig):
        from bench.core.families import family_of_pipe

        self.pipe = pipe
        self.config = config
        self.chain = family_of_pipe(pipe).chain(pipe, config)
        self.chain.check_eta(config.eta)
        self.denoiser, self.vae = self.chain.denoiser, pipe.vae
        self.scheduler = pipe.scheduler
        self._negative: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.chain.device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.chain.latent_channels, self.chain.latent_size, self.chain.latent_size)

    @property
    def image_size(self) -> int:
        return self.latent_shape[-1] * self.chain.vae_factor

    def autocast(self, enabled: bool = True):
        return mp.autocast(self.device, self.config.precision, enabled)

    def initial_noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """x_T ~ N(0, I) for ``n`` samples (float32), drawn on the CPU so a seed gives the same noise everywhere."""
        noise = torch.randn((n, *self.latent_shape), generator=generator)
        return noise.to(self.device, torch.float32) * self.chain.init_sigma

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The chain's prompt states [B, L, D] (text encoders are frozen: no graph)."""
        return self.chain.encode(prompts)

    def negative_embeds(self, n: int) -> torch.Tensor:
        if self._negative is None:
            self._negative = self.encode([self.config.negative_prompt])
        return self._negative.expand(n, -1, -1)

    @property
    def guided(self) -> bool:
        return self.chain.cfg_scale > 1.0

    def model_output(self, x, t, embeds, *, use_checkpoint: bool = False, detach_uncond: bool = False):
        """Guided denoiser prediction at timestep ``t`` for latents ``x`` and prompt states ``embeds``;
        ``detach_uncond``: no gradient through the unconditional branch (Flow-GRPO's ``compute_log_prob``)."""
        if self.guided:
            x_in = torch.cat([x, x])
            emb = torch.cat([self.negative_embeds(len(x)), embeds])
        else:
            x_in, emb = x, embeds
        if use_checkpoint:
            out = checkpoint(self._denoise, x_in, t, emb, use_reentrant=False)
        else:
            out = self._denoise(x_in, t, emb)
        if self.guided:
            uncond, cond = out.chunk(2)
            uncond = uncond.detach() if detach_uncond else uncond
            out = uncond + self.chain.cfg_scale * (cond - uncond)
        return out

    def denoiser_forward(self, x, t, emb):
        """The denoiser's unguided prediction (float32) at the sampler's precision (``Chain.forward``)."""
        return self.chain.forward(x, t, emb)

    _denoise = denoiser_forward

    def decode(self, latents, *, use_checkpoint: bool = False):
        """Images in [0, 1] from final latents."""
        return checkpoint(self.chain.decode, latents, use_reentrant=False) if use_checkpoint else self.chain.decode(latents)

    def set_steps(self) -> torch.Tensor:
        return self.chain.set_steps(self.config.steps)

    # -- pieces for methods that leave the chain early or re-score its transitions (ReFL, DRaFT-LV, GRPO) ------
    @torch.no_grad()
    def sample_until(self, prompts: list[str], stop: int, *, generator: torch.Generator | None = None):
        """Run the first ``stop`` of the T steps without a graph: (x after them, prompt states, all T timesteps).

        Randomness is drawn in ``sample``'s order (x_T, then one noise per step), so ``stop = T`` ends on the
        latent ``sample`` would decode for the same generator state.
        """
        if not 0 <= stop <= self.config.steps:
            raise ValueError(f"stop must lie in [0, steps={self.config.steps}], got {stop}")
        embeds = self.encode(prompts)
        x = self.initial_noise(len(prompts), generator)
        noise = [torch.randn(x.shape, generator=generator) for _ in range(self.config.steps)] if self.config.eta > 0 else None
        timesteps = self.set_steps()
        for i, t in enumerate(timesteps[:stop]):
            x, _ = self.transition(x, t, embeds, None if noise is None else noise[i])
        return x, embeds, timesteps

    def transition(self, x, t, embeds, noise=None, *, use_checkpoint: bool = False):
        """One step of the chain from ``x`` at timestep ``t``: (x_next, mean); ``noise`` is used when eta > 0."""
        out = self.model_output(x, t, embeds, use_checkpoint=use_checkpoint)
        mean, std = self.chain.step(out, t, x, self.config.eta)
        if std > 0 and noise is not None:
            return mean + std * noise.to(mean.device, mean.dtype), mean
        return mean, mean

    def transition_log_prob(self, x, t, embeds, x_prev, *, detach_uncond: bool = False):
        """(log p(x_prev | x), mean, std) under the current weights, computed as ``sample`` does (policy gradient)."""
        out = self.model_output(x, t, embeds, detach_uncond=detach_uncond)
        mean, std = self.chain.step(out, t, x, self.config.eta)
        if std <= 0:
            raise ValueError(f"the transition at timestep {float(t):g} is deterministic (eta=0, a final alpha of 1, "
                             "or a family whose chain is an ODE)")
        return gaussian_log_prob(x_prev, mean, std), mean, std

    def predict_x0(self, out, t, x) -> torch.Tensor:
        """The clean latent the guided output ``out`` implies at timestep ``t`` (ReFL; Direct-Align's core step)."""
        return self.chain.predict_x0(out, t, x)

    def renoise(self, x0, t, noise) -> torch.Tensor:
        """Forward-diffuse clean latents to timestep ``t`` (DDIM: sqrt(a_t) x0 + sqrt(1 - a_t) noise; flow:
        sigma noise + (1 - sigma) x0) (DRaFT-LV)."""
        return self.chain.renoise(x0, t, noise)

    def sample(
        self,
        prompts: list[str],
        *,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        grad: GradMode = GradMode(),
        stochastic: range | list[int] | None = None,
    ) -> Rollout:
        """One batch of rollouts, one per prompt; ``latents`` fixes x_T, ``generator`` seeds everything random.

        ``stochastic``: the step indices that take the stochastic step (eta > 0; MixGRPO's SDE window); the others
        take the deterministic one (DDIM eta 0, the flow ODE). None: every step. The step noises are drawn for all
        T steps either way, so a window changes no other step's noise.
        """
        cfg, steps = self.config, self.config.steps
        grad.validate(steps)
        embeds = self.encode(prompts)
        # All randomness is drawn up front in a fixed order (x_T, step noises, then the truncation), so a seed gives
        # the same images whatever the gradient mode.
        x = self.initial_noise(len(prompts), generator) if latents is None else latents.to(self.device, torch.float32)
        step_noise = [torch.randn(x.shape, generator=generator) for _ in range(steps)] if cfg.eta > 0 else None
        carries = grad.draw(steps, generator)
        kept = set([i for i, c in enumerate(carries) if c][::-1][: max(grad.keep, 0)])
        timesteps = self.set_steps()
        trace, log_probs, scored, means, x0_hat = [x.detach()], [], [], [], None
        noisy = set(range(steps)) if stochastic is None else set(stochastic)
        if not noisy <= set(range(steps)):
            raise ValueError(f"stochastic steps {sorted(noisy - set(range(steps)))} lie outside 0..{steps - 1}")
        any_grad = any(carries)
        with torch.set_grad_enabled(any_grad and torch.is_grad_enabled()):
            for i, t in enumerate(timesteps):
                with torch.set_grad_enabled(carries[i] and torch.is_grad_enabled()):
                    ckpt = carries[i] and grad.checkpoint and i not in kept
                    out = self.model_output(x, t, embeds, use_checkpoint=ckpt)
                if cfg.decode == "last-x0" and i == steps - 1:
                    x0_hat = self.chain.predict_x0(out, t, x)
                mean, std = self.chain.step(out, t, x, cfg.eta if i in noisy else 0.0)
                if std > 0:
                    x = mean + std * step_noise[i].to(mean.device, mean.dtype)
                    log_probs.append(gaussian_log_prob(x.detach(), mean.detach(), std))
                    means.append(mean.detach())
                    scored.append(i)
                else:
                    x = mean
                trace.append(x.detach())
            images = self.decode(x if x0_hat is None else x0_hat, use_checkpoint=any_grad and grad.checkpoint)
        return Rollout(
            images=images,
            latents=torch.stack(trace, dim=1),
            timesteps=timesteps.detach().clone(),
            log_probs=torch.stack(log_probs, dim=1) if log_probs else None,
            log_prob_steps=scored,
            prompt_embeds=embeds,
            grad_steps=carries,
            means=torch.stack(means, dim=1) if means else None,
        )


def latent_size(pipe, resolution: int) -> int:
    """The latent size of a ``resolution``-pixel image on ``pipe`` (its chain's ``latent_size``), or ``ValueError``
    where the model cannot draw it."""
    from bench.core.families import family_of_pipe

    return family_of_pipe(pipe).chain(pipe, SamplerConfig(resolution=resolution)).latent_size


def activation_bytes(sampler: Sampler, batch: int) -> tuple[int, int]:
    """Bytes one gradient-carrying UNet call and one decode keep for the backward without checkpointing, at
    ``batch`` images (measured by running each once with a graph; the results are discarded)."""
    from bench.core.activations import saved_bytes

    params = [p for m in (sampler.denoiser, sampler.vae) for p in m.parameters()]
    x = sampler.initial_noise(batch, torch.Generator().manual_seed(0))
    embeds = sampler.negative_embeds(batch).clone()
    t = sampler.set_steps()[0]
    with torch.enable_grad():
        out, unet = saved_bytes(lambda: sampler.model_output(x, t, embeds), exclude=params)
        del out
        image, decode = saved_bytes(lambda: sampler.decode(x.requires_grad_()), exclude=params)
        del image
    return unet, decode
