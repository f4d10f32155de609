"""DRaFT-LV (Clark et al., arXiv 2309.17400, method section, paragraph "DRaFT-LV", and Algorithm 1): low-variance K=1.

DRaFT-K backpropagates the reward through the last K sampling steps only; with K = 1 the gradient is cheap but
noisy. DRaFT-LV keeps K = 1 and lowers the variance by re-using the generated sample: the chain runs to its end
without a graph, giving the clean latent x_0 (held constant); then, ``draws`` times (the paper: n = 2), fresh
noise eps is drawn, x_0 is forward-diffused to the last sampling timestep t_1,
x_1 = sqrt(a_{t_1}) x_0 + sqrt(1 - a_{t_1}) eps (flow family: x_1 = sigma_1 eps + (1 - sigma_1) x_0, the last sigma of
the schedule), one gradient-carrying sampling step maps x_1 back to a clean
latent, it is decoded and scored, and the reward gradients of all draws are summed (averaged here, so the
loss scale does not depend on ``draws``). Each draw is one reward query, so a step makes
``batch_size * grad_accum * draws`` of them.

With ``draws = 1`` and the re-noised x_1 equal to the chain's own x_1, the gradient is exactly DRaFT-K / AlignProp
with K = 1 (``alignprop-k1``; tests pin this). DRaFT-K itself is ``alignprop-k1`` (the sampler's ``last-k``
gradient mode; ``--set alignprop-k1.k=K``), registered again as ``draft-k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.checks import at_least
from methods.alignprop import AlignProp, AlignPropConfig
from methods.base import batch_stats


@dataclass
class DraftLVConfig(AlignPropConfig):
    """DRaFT-LV settings (DRaFT paper, small-scale experiments, as quoted by public re-implementations)."""

    lr: float = 4e-4
    """AdamW learning rate (DRaFT small-scale: 4e-4)."""
    weight_decay: float = 0.1
    """AdamW weight decay (DRaFT: 0.1)."""
    guidance_scale: float = 7.5
    """Guidance weight while sampling (DRaFT: 7.5)."""
    truncation: str = "last-k"
    """Fixed: the re-noised final step is the only gradient-carrying step (K = 1)."""
    k: int = 1
    """Fixed at 1 (DRaFT-LV is defined for K = 1)."""
    loss_scale: float = 1.0
    """Multiplier of the loss (DRaFT's objective is the reward itself: 1)."""
    draws: int = 2
    """Noise draws n at the last step per sample (DRaFT paper, Algorithm 1 / section 4: n = 2)."""

    RANGES = dict(draws=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.truncation != "last-k" or self.k != 1:
            raise ValueError("draft-lv is defined for K = 1 (truncation='last-k', k=1); for K > 1 use draft-k")


class DraftLV(AlignProp):
    """Reward gradient through one re-noised last sampling step, averaged over several noise draws."""

    name = "draft-lv"
    Config = DraftLVConfig
    preset_overrides = {"paper": {"batch_size": 4, "grad_accum": 1}}
    """DRaFT small-scale runs: 4 images per optimizer step."""

    def last_step(self, x1, embeds, prompts: list[str], noise=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sign-corrected training reward, images) of one gradient-carrying sampling step from ``x1`` at t_1."""
        t_last = self.sampler.set_steps()[-1]
        x0, _ = self.sampler.transition(x1, t_last, embeds, noise, use_checkpoint=self.grad.checkpoint)
        images = self.sampler.decode(x0, use_checkpoint=self.grad.checkpoint)
        return self.reward.objective(images, prompts), images

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.denoiser.train()
        true_scores, losses = [], []
        for _ in range(cfg.grad_accum):
            prompts = self.prompts.sample(cfg.batch_size, self.generator)
            x0, embeds, timesteps = self.sampler.sample_until(prompts, cfg.steps, generator=self.generator)
            for _ in range(cfg.draws):
                eps = torch.randn(x0.shape, generator=self.generator)
                step_noise = torch.randn(x0.shape, generator=self.generator) if cfg.eta > 0 else None
                x1 = self.sampler.renoise(x0, timesteps[-1], eps)
                objective, images = self.last_step(x1, embeds, prompts, step_noise)
                loss = self.loss_fn(objective)
                if not loss.requires_grad:
                    raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is "
                                       "marked differentiable: it detaches its input (no_grad, .numpy(), ...)")
                self.backward(loss / (cfg.grad_accum * cfg.draws))
                losses.append(float(loss.detach()))
                if self.reward.differentiable:
                    true_scores.append(objective.detach() if self.reward.higher_is_better else -objective.detach())
                else:  # trained on the surrogate; report the true score of the same images
                    true_scores.append(self.reward(images.detach(), prompts))
        grad_norm = self.clip_and_step()
        metrics = batch_stats(torch.cat(true_scores))  # the re-noised samples' rewards (what was trained on)
        metrics.update(
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            grad_steps=1.0,
            samples=float(cfg.batch_size * cfg.grad_accum * cfg.draws),
        )
        return metrics
