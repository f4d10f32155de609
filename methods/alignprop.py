"""AlignProp (Prabhudesai et al., arXiv 2310.03739): backpropagate the reward gradient through the sampler.

Each rollout samples images with the shared sampler while keeping the graph of the steps selected by the gradient
mode, scores them with a differentiable reward (or a reward's differentiable surrogate), and backpropagates the
loss end to end into LoRA adapters of the UNet, with activation checkpointing on every gradient-carrying UNet call.

Defaults follow the paper and its official code (config/align_prop.py, aesthetic experiment): AdamW lr 1e-3,
weight decay 0.1, gradient clipping 5.0, loss scale 0.01, LoRA rank 4, guidance 7.5, 50 DDIM steps with eta 0,
randomized truncation. The official code's aesthetic loss is |10 - reward|; the default here is -reward (the
paper's objective); ``loss="target"`` with ``target=10`` reproduces the code.

Named variants: ``alignprop`` (randomized truncation, K ~ U[k_min, k_max] per rollout), ``alignprop-full``
(backprop through every step) and ``alignprop-k1`` (last step only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.sampler import GRAD_MODES, GradMode
from methods.base import Method, MethodConfig, batch_stats

TRAINING_MODES = tuple(m for m in GRAD_MODES if m != "none")
"""The sampler's gradient modes that train (``none`` carries no gradient)."""


@dataclass
class AlignPropConfig(MethodConfig):
    """AlignProp settings (paper / official-code defaults)."""

    lr: float = 1e-3
    """AdamW learning rate (official code, aesthetic: 1e-3)."""
    weight_decay: float = 0.1
    """AdamW weight decay (official code, aesthetic: 0.1)."""
    max_grad_norm: float = 5.0
    """Gradient clipping (official code, aesthetic: 5.0)."""
    truncation: str = "random-k"
    """Gradient mode of the sampler: full, last-k, random-k or alignprop-code."""
    k: int = 1
    """last-k: number of final steps that carry gradient."""
    k_min: int = 1
    """random-k: smallest K drawn per rollout."""
    k_max: int = 0
    """random-k: largest K drawn per rollout; 0 means the number of sampling steps (paper: K ~ U[0, 50])."""
    code_min: int = 0
    """alignprop-code: low end of the per-step threshold range (official code: 0)."""
    code_max: int = 0
    """alignprop-code: high end of the per-step threshold range; 0 means the step count (official code: 50 of 50)."""
    checkpointing: bool = True
    """Activation checkpointing on gradient-carrying UNet calls and the decode."""
    loss: str = "neg"
    """Loss form: 'neg' = -reward (paper), 'target' = |target - reward| (official code for aesthetic)."""
    target: float = 10.0
    """Target of the 'target' loss (official code: aesthetic_target 10)."""
    loss_scale: float = 0.01
    """Multiplier of the loss (official code: loss_coeff 0.01)."""

    def __post_init__(self):
        super().__post_init__()
        if self.truncation not in TRAINING_MODES:
            raise ValueError(f"truncation must be one of {', '.join(TRAINING_MODES)}, got {self.truncation!r}")
        if self.loss not in ("neg", "target"):
            raise ValueError(f"loss must be 'neg' or 'target', got {self.loss!r}")
        if self.loss_scale <= 0:
            raise ValueError(f"loss_scale must be > 0, got {self.loss_scale}")
        self.grad_mode().validate(self.steps)

    def grad_mode(self) -> GradMode:
        return GradMode(
            mode=self.truncation,
            k=self.k,
            k_range=(self.k_min, self.k_max or self.steps),
            code_range=(self.code_min, self.code_max or self.steps),
            checkpoint=self.checkpointing,
        )


class AlignProp(Method):
    """Reward backpropagation through the sampling chain into LoRA weights."""

    name = "alignprop"
    preset_overrides = {"paper": dict(batch_size=2, grad_accum=4)}
    """Paper preset: 8 images per optimizer step as 2 per GPU x 4 accumulated (official code, config/align_prop.py,
    aesthetic)."""
    Config = AlignPropConfig
    needs_reward_gradient = True

    def setup(self) -> None:
        super().setup()
        self.grad = self.config.grad_mode()

    def loss_fn(self, objective: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        per_image = -objective if cfg.loss == "neg" else (cfg.target - objective).abs()
        return per_image.mean() * cfg.loss_scale

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.pipe.unet.train()
        true_scores, losses, grad_steps = [], [], []
        for _ in range(cfg.grad_accum):
            prompts = self.prompts.sample(cfg.batch_size, self.generator)
            rollout = self.sampler.sample(prompts, generator=self.generator, grad=self.grad)
            objective = self.reward.objective(rollout.images, prompts)
            loss = self.loss_fn(objective)
            if loss.requires_grad:
                (loss / cfg.grad_accum).backward()
            elif any(rollout.grad_steps):
                raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is "
                                   "marked differentiable: it detaches its input (no_grad, .numpy(), ...)")
            # else: alignprop-code detached every step of this rollout by chance; there is nothing to learn from it
            losses.append(float(loss.detach()))
            grad_steps.append(sum(rollout.grad_steps))
            if self.reward.differentiable:
                true_scores.append(objective.detach() if self.reward.higher_is_better else -objective.detach())
            else:
                true_scores.append(self.reward(rollout.images.detach(), prompts))
        grad_norm = self.clip_and_step()
        metrics = batch_stats(torch.cat(true_scores))
        metrics.update(
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            grad_steps=sum(grad_steps) / len(grad_steps),
            samples=float(cfg.batch_size * cfg.grad_accum),
        )
        return metrics


@dataclass
class AlignPropFullConfig(AlignPropConfig):
    """AlignProp with backpropagation through every sampling step."""

    truncation: str = "full"
    """Gradient mode of the sampler: every step carries gradient."""


class AlignPropFull(AlignProp):
    name = "alignprop-full"
    Config = AlignPropFullConfig


@dataclass
class AlignPropK1Config(AlignPropConfig):
    """AlignProp with gradient through the last sampling step only (K = 1)."""

    truncation: str = "last-k"
    """Gradient mode of the sampler: only the last k steps carry gradient."""
    k: int = 1
    """Number of final steps that carry gradient."""


class AlignPropK1(AlignProp):
    name = "alignprop-k1"
    Config = AlignPropK1Config
