"""A family's sampling chain: what the one sampler (``bench.core.sampler``) asks of a model family.

A chain knows its pipeline's denoiser and scheduler and answers, in float32 latent arithmetic:

- ``set_steps(T)``: the T timesteps in sampling order (and the chain's own schedule, e.g. flow sigmas);
- ``step(out, t, x, eta)``: (mean, std) of the transition x_i -> x_{i+1} given the guided model output at ``t``
  (std = 0: deterministic); the sampler adds ``std * noise`` and scores Gaussian log-probabilities;
- ``predict_x0(out, t, x)``: the clean latent the output implies; ``renoise(x0, t, noise)``: forward-diffuse to ``t``;
- ``forward(x, t, states)``: the unguided denoiser call at the sampler's precision (float32 out);
- ``encode(prompts)``: prompt states, ONE tensor [B, L, D] per prompt whatever the family (methods treat it as
  opaque: slice, repeat, concatenate); ``training_pair(x0, generator)``: (noisy latents, timesteps, regression
  target) of the family's pre-training loss (RWR's and ReFL's regulariser);
- ``decode(latents)``: images in [0, 1]; geometry: latent channels, native latent size, down-sampling factor.

Classifier-free guidance, gradient modes, checkpointing and randomness stay in the sampler, family-independent.
"""

from __future__ import annotations

import math

import torch

from bench.core import precision as mp
from bench.core.ddim import ddim_step, predict_x0
from bench.core.families import FAMILIES, Family
from bench.core.modules import device_of, dtype_of


class Chain:
    """Base: the pieces both families share (precision, decode, geometry)."""

    info: Family

    def __init__(self, pipe, config):
        self.pipe, self.config = pipe, config
        self.scheduler, self.vae = pipe.scheduler, pipe.vae
        self.denoiser = getattr(pipe, self.info.denoiser)

    @property
    def family(self) -> str:
        return self.info.name

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return self.info.lora_targets

    @property
    def device(self) -> torch.device:
        return device_of(self.denoiser)  # diffusers' .device, remembered (bench.core.modules)

    def autocast(self, enabled: bool = True):
        return mp.autocast(self.device, self.config.precision, enabled)

    @property
    def latent_channels(self) -> int:
        return self.denoiser.config.in_channels

    @property
    def native_latent_size(self) -> int:
        """Latent height = width at the model's native resolution (both denoisers' ``sample_size``)."""
        return self.denoiser.config.sample_size

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE blocks - 1), as diffusers' ``vae_scale_factor``."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def check_eta(self, eta: float) -> None:
        """Raise ``ValueError`` where the chain has no transition for this eta."""

    init_sigma = 1.0

    def decode_scale(self, latents):
        return latents / self.vae.config.scaling_factor

    def decode(self, latents):
        """Images in [0, 1] from final latents (float32 out; autocast unless ``vae_fp32``)."""
        vae = self.vae
        with self.autocast(enabled=not self.config.vae_fp32):
            image = vae.decode(self.decode_scale(latents).to(dtype_of(vae)), return_dict=False)[0].float()
        return (image / 2 + 0.5).clamp(0, 1)

    def clip_states(self, tokenizer, encoder, prompts, **kwargs):
        tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt")
        return encoder(tok.input_ids.to(self.device), **kwargs)


class DDIMChain(Chain):
    """Stable Diffusion: UNet with cross-attention on CLIP states, DDIM steps with eta (``bench.core.ddim``)."""

    info = FAMILIES["sd"]

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        if getattr(config, "sde", "") not in ("", "memoryless"):  # bench.core.flow.MEMORYLESS: DDIM's eta = 1
            raise ValueError(f"sde={config.sde!r} selects a flow SDE; the sd family's stochastic step is DDIM's eta")
        if getattr(config, "schedule", "scheduler") != "scheduler":
            raise ValueError(f"schedule={config.schedule!r} is a flow chain's sigma schedule; the sd family's DDIM "
                             "chain has the scheduler's timesteps only")

    @property
    def down_factor(self) -> int:
        return 2 ** (len(self.denoiser.config.down_block_types) - 1)

    @property
    def init_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states [B, L, D] (the text encoder is frozen: no graph)."""
        with self.autocast():
            return self.clip_states(self.pipe.tokenizer, self.pipe.text_encoder, prompts)[0].float()

    def forward(self, x, t, states):
        """The UNet's prediction (float32) at the sampler's precision: inputs in the UNet's dtype, autocast on."""
        dt = dtype_of(self.denoiser)
        x = self.scheduler.scale_model_input(x, t)
        with self.autocast():
            return self.denoiser(x.to(dt), t, encoder_hidden_states=states.to(dt), return_dict=False)[0].float()

    def set_steps(self, steps: int) -> torch.Tensor:
        self.scheduler.set_timesteps(steps, device=self.device)
        return self.scheduler.timesteps

    def step(self, out, t, x, eta: float):
        return ddim_step(self.scheduler, out, int(t), x, eta)

    def predict_x0(self, out, t, x):
        return predict_x0(self.scheduler, out, int(t), x)[0]

    def renoise(self, x0, t, noise):
        """sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        a = float(self.scheduler.alphas_cumprod[int(t)])
        return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise.to(x0.device, x0.dtype)

    def training_pair(self, x0, generator: torch.Generator):
        """(noisy, t, target): t ~ U{0..999}, the epsilon (or v) target of the scheduler's prediction type."""
        sched = self.scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        noisy = sched.add_noise(x0, noise, t)
        if sched.config.prediction_type == "v_prediction":
            noise = sched.get_velocity(x0, noise, t)
        return noisy, t, noise
