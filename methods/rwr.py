"""Reward-weighted regression, the baseline of the DDPO paper (Black et al., arXiv 2305.13301, section 5).

Each step samples a batch without gradient, scores it with the true reward, and minimises the standard denoising
(epsilon-prediction) loss on the model's own final latents, each sample weighted by its exponentiated reward
normalised over all N images of the optimizer step (every rollout batch of ``grad_accum`` and every data-parallel
process): w_i = N * softmax(r / temperature)_i (mean weight 1). ``rwr-sparse`` keeps only the top ``top_fraction``
of those N images (at least one) and trains on them unweighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.core import distributed
from bench.core.checks import FRACTION, above, at_least
from methods.base import Method, MethodConfig, batch_stats, denoising_loss


@dataclass
class RWRConfig(MethodConfig):
    """Reward-weighted regression settings."""

    lr: float = 3e-4
    """AdamW learning rate (DDPO paper: 3e-4)."""
    eta: float = 1.0
    """DDIM eta while sampling (DDPO paper: 1.0)."""
    guidance_scale: float = 5.0
    """Guidance weight while sampling (DDPO paper: 5.0)."""
    temperature: float = 1.0
    """Temperature of exp(reward / temperature), in reward units (weighted variant)."""
    top_fraction: float = 1.0
    """Fraction of the batch kept by reward rank; below 1 the kept samples are trained unweighted (sparse)."""
    noise_draws: int = 1
    """Random (timestep, noise) pairs per sample in the denoising loss."""

    RANGES = dict(temperature=above(0), top_fraction=FRACTION, noise_draws=at_least(1))


class RWR(Method):
    """Denoising loss on own samples, weighted by exponentiated rewards."""

    name = "rwr"
    Config = RWRConfig
    published = dict(
        batch_size=8,  # ddpo-pytorch config/dgx.py: sample.batch_size = 8
        grad_accum=32,  # 256 samples per round (dgx.py: 8 GPUs x 8 x num_batches_per_epoch 4), one update per round
        steps=50,  # base.py: sample.num_steps = 50
        eta=1.0,  # base.py: sample.eta = 1.0
        guidance_scale=5.0,  # base.py: sample.guidance_scale = 5.0
        lr=3e-4,  # base.py: train.learning_rate = 3e-4
        weight_decay=1e-4,  # base.py: train.adam_weight_decay = 1e-4
        max_grad_norm=1.0,  # base.py: train.max_grad_norm = 1.0
    )
    """Published protocol: the DDPO paper (arXiv 2305.13301) trains its RWR baseline on the same sampling, model and
    optimizer as DDPO, so these are ddpo-pytorch's (kvablack/ddpo-pytorch ``config/base.py`` and ``config/dgx.py``,
    aesthetic) on one GPU: 256 samples per round, weighted over the whole round. One update per round is this
    harness's reading; the paper's count of RWR updates per round was not checked here (no copy of its appendix)."""

    def weights(self, rewards: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.top_fraction < 1:
            keep = max(1, math.ceil(cfg.top_fraction * len(rewards)))
            w = torch.zeros_like(rewards)
            w[torch.topk(rewards, keep).indices] = 1.0
            return w * len(rewards) / keep
        return torch.softmax(rewards / cfg.temperature, dim=0) * len(rewards)

    def denoising_loss(self, x0, embeds, weights) -> torch.Tensor:
        """Weighted epsilon-prediction loss at random training timesteps (one draw per sample and repeat)."""
        return denoising_loss(self.sampler, x0, embeds, weights, self.config.noise_draws, self.generator)

    def step(self) -> dict[str, float]:
        cfg = self.config
        # Sample and score every rollout batch of the step first: the weights are normalised over all images of
        # the optimizer step (on every process), not per batch, so batch_size x grad_accum acts as one batch.
        batches = []
        self.denoiser.eval()
        for _ in range(cfg.grad_accum):
            prompts = self.prompts.sample(cfg.batch_size, self.generator)
            with torch.no_grad():
                rollout = self.sampler.sample(prompts, generator=self.generator)
                with self.autocast():
                    rewards = self.reward(rollout.images, prompts).float()
            batches.append((rollout.latents[:, -1], rollout.prompt_embeds, rewards))
        rewards = torch.cat([r for _, _, r in batches])
        signed = rewards if self.reward.higher_is_better else -rewards
        everywhere, offset = distributed.gather_cat(signed)
        weights = self.weights(everywhere)[offset : offset + len(signed)].to(rewards)
        self.denoiser.train()
        losses = []
        for j, (x0, embeds, _) in enumerate(batches):
            w = weights[j * cfg.batch_size : (j + 1) * cfg.batch_size]
            loss = self.denoising_loss(x0, embeds, w)
            self.backward(loss / cfg.grad_accum)
            losses.append(float(loss.detach()))
        grad_norm = self.clip_and_step()
        metrics = batch_stats(rewards)
        metrics.update(loss=sum(losses) / len(losses), grad_norm=grad_norm, samples=float(cfg.batch_size * cfg.grad_accum))
        return metrics


@dataclass
class RWRSparseConfig(RWRConfig):
    """Sparse reward-weighted regression: train unweighted on the top fraction of each batch."""

    top_fraction: float = 0.1
    """Fraction of the batch kept by reward rank (at least one sample)."""


class RWRSparse(RWR):
    name = "rwr-sparse"
    Config = RWRSparseConfig
