"""Evaluation on fixed prompts and fixed initial noise, with the *true* reward; identical for every method."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.sampler import Sampler, SamplerConfig


@dataclass
class EvalConfig:
    """What evaluation samples: the same prompts, noise and sampler settings for every method and seed."""

    n: int = 8
    """Number of evaluation images (prompts cycle when fewer than n)."""
    seed: int = 1234
    """Seed of the fixed initial noise (and of the DDIM noise when eta > 0)."""
    batch_size: int = 8
    """Images per sampler call during evaluation (memory only; results do not depend on it)."""
    steps: int = 50
    """DDIM steps used for evaluation."""
    guidance_scale: float = 7.5
    """Guidance weight used for evaluation (flux: the guidance embedding's value, ``Family.embedded_guidance``)."""
    true_cfg_scale: float = 1.0
    """flux: true classifier-free guidance weight of the evaluation (a global ``--set true_cfg_scale``); <= 1: none."""
    eta: float = 0.0
    """DDIM eta used for evaluation (0: deterministic given the noise)."""
    precision: str = "fp32"
    """Autocast dtype of the evaluation's forwards (the run's ``--precision``)."""
    resolution: int = 0
    """Image height = width (the run's ``--resolution``); 0: the model's native size."""
    vae_fp32: bool = False
    """Decode in float32 (a global ``--set vae_fp32=true``)."""

    def __post_init__(self):
        if self.n < 1 or self.batch_size < 1:
            raise ValueError(f"eval n and batch_size must be >= 1, got n={self.n}, batch_size={self.batch_size}")
        self.sampler_config()  # validates

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(steps=self.steps, guidance_scale=self.guidance_scale, eta=self.eta,
                             true_cfg_scale=self.true_cfg_scale, precision=self.precision, resolution=self.resolution,
                             vae_fp32=self.vae_fp32)


def eval_sampler(pipe, config: EvalConfig) -> Sampler:
    return Sampler(pipe, config.sampler_config())


@torch.no_grad()
def evaluate(pipe, reward, prompts: list[str], config: EvalConfig, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """True reward [n] and images [n, 3, H, W] for ``prompts`` from the fixed evaluation noise.

    Image i starts from noise drawn with seed ``seed + i`` alone, so with eta = 0 the results do not depend on the
    batch size. ``progress``, if given, is called with the number of images done after each batch.
    """
    sampler = eval_sampler(pipe, config)
    was_training = sampler.denoiser.training
    sampler.denoiser.eval()
    scores, images = [], []
    try:
        for start in range(0, len(prompts), config.batch_size):
            chunk = list(prompts[start : start + config.batch_size])
            noise = torch.cat(
                [sampler.initial_noise(1, torch.Generator().manual_seed(config.seed + start + i)) for i in range(len(chunk))]
            )
            rollout = sampler.sample(chunk, latents=noise, generator=torch.Generator().manual_seed(config.seed + start))
            with sampler.autocast():
                scores.append(reward(rollout.images, chunk).float().cpu())
            images.append(rollout.images.float().cpu())
            if progress is not None:
                progress(start + len(chunk))
    finally:
        sampler.denoiser.train(was_training)
    return torch.cat(scores), torch.cat(images)
