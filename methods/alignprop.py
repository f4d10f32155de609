"""AlignProp (Prabhudesai et al., arXiv 2310.03739): backpropagate the reward gradient through the sampler.

Each rollout samples images with the shared sampler while keeping the graph of the steps selected by the gradient
mode, scores them with a differentiable reward (or a reward's differentiable surrogate), and backpropagates the
loss end to end into LoRA adapters of the UNet, with activation checkpointing on every gradient-carrying UNet call.

Defaults follow the paper and its official code (config/align_prop.py, aesthetic experiment): AdamW lr 1e-3,
weight decay 0.1, gradient clipping 5.0, loss scale 0.01, LoRA rank 4, guidance 7.5, 50 DDIM steps with eta 0,
randomized truncation. The official code's aesthetic loss is |10 - reward|; the default here is -reward (the
paper's objective); ``loss="target"`` with ``target=10`` reproduces the code.

Checkpointing (``checkpointing``): ``on`` recomputes every gradient-carrying UNet call in the backward pass, ``off``
keeps all their activations, and ``auto`` (default) keeps the activations of as many of them as fit a memory budget
and checkpoints only the rest, decided per rollout (randomized K changes how many carry gradient). The budget is
``memory_budget_mb`` if set, else ``max_memory_gb`` (``--max-memory-gb``) minus the memory in use, else the CUDA
device's free memory, else half the available RAM on a CPU (``bench.core.activations``). One UNet call's and the
decode's activation bytes are measured once, at the first step, by running each with a graph; the step's peak with
everything checkpointed is estimated as ``BASE_CALLS`` UNet calls' activations plus the decode's, and the rest of
the budget (90 %, the margin for allocator slack) buys kept calls. The decode stays checkpointed under ``auto``.

Named variants: ``alignprop`` (randomized truncation, K ~ U[k_min, k_max] per rollout), ``alignprop-full``
(backprop through every step) and ``alignprop-k1`` (last step only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from bench.core.activations import step_budget_bytes
from bench.core.sampler import GRAD_MODES, GradMode, activation_bytes
from bench.core.checks import ANY, above, at_least
from methods.base import Method, MethodConfig, batch_stats

TRAINING_MODES = tuple(m for m in GRAD_MODES if m != "none")
"""The sampler's gradient modes that train (``none`` carries no gradient)."""
CHECKPOINTING = {"auto": "auto", "on": "on", "true": "on", "1": "on", "off": "off", "false": "off", "0": "off"}
BUDGET_MARGIN = 0.9
"""Share of the memory budget auto checkpointing plans to fill (allocator slack, transient buffers)."""
BASE_CALLS = 3
"""The fully checkpointed step's peak, in one UNet call's activations (plus the decode's): the recomputed call, its
gradient buffers and the rest of the step. Rough, from the CPU ladder (tiny-random, batch 2): trl's fully
checkpointed step took 64 MB, about 3.7 calls of ~17 MB (the no-checkpointing row's per-call growth); an estimate
of 1 call overran a 1x budget there."""


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
    checkpointing: str = "auto"
    """Activation checkpointing of gradient-carrying UNet calls and the decode: on, off, or auto (as many calls keep
    their activations as fit the memory budget; the rest are checkpointed). Booleans mean on / off."""
    memory_budget_mb: float = 0.0
    """auto: memory (MB) one step may add to what is allocated when it starts; 0: from ``max_memory_gb``."""
    max_memory_gb: float = 0.0
    """auto: the process's memory cap (the run's ``--max-memory-gb``); 0: the device's free memory (CUDA) or half
    the available RAM (CPU)."""
    loss: str = "neg"
    """Loss form: 'neg' = -reward (paper), 'target' = |target - reward| (official code for aesthetic)."""
    target: float = 10.0
    """Target of the 'target' loss (official code: aesthetic_target 10)."""
    loss_scale: float = 0.01
    """Multiplier of the loss (official code: loss_coeff 0.01)."""

    RANGES = dict(k=at_least(1), k_min=at_least(1), k_max=at_least(0, "0: the step count"), code_min=at_least(0),
                  code_max=at_least(0, "0: the step count"), memory_budget_mb=at_least(0, "0: from max_memory_gb"),
                  max_memory_gb=at_least(0, "0: from the device"), target=ANY, loss_scale=above(0))

    def __post_init__(self):
        super().__post_init__()
        if self.truncation not in TRAINING_MODES:
            raise ValueError(f"truncation must be one of {', '.join(TRAINING_MODES)}, got {self.truncation!r}")
        if self.loss not in ("neg", "target"):
            raise ValueError(f"loss must be 'neg' or 'target', got {self.loss!r}")
        mode = CHECKPOINTING.get(str(self.checkpointing).lower())
        if mode is None:
            raise ValueError(f"checkpointing must be auto, on or off, got {self.checkpointing!r}")
        self.checkpointing = mode
        self.grad_mode().validate(self.steps)

    def grad_mode(self) -> GradMode:
        return GradMode(
            mode=self.truncation,
            k=self.k,
            k_range=(self.k_min, self.k_max or self.steps),
            code_range=(self.code_min, self.code_max or self.steps),
            checkpoint=self.checkpointing != "off",
        )


class AlignProp(Method):
    """Reward backpropagation through the sampling chain into LoRA weights."""

    name = "alignprop"
    preset_overrides = {"paper": dict(batch_size=2, grad_accum=4)}
    """Paper preset, matched protocol: 8 images per optimizer step (every method's), as 2 x 4 accumulated."""
    published = dict(
        batch_size=4,  # per_gpu_capacity=4 (set_config_batch in aesthetic())
        grad_accum=32,  # total_batch_size=128 images per update / 4 per pass (gradient_accumulation_steps)
        steps=50,  # config.steps = 50
        guidance_scale=7.5,  # config.sd_guidance_scale = 7.5
        eta=0.0,  # main.py: pipeline.scheduler.step(noise_pred, t, latent), DDIMScheduler's default eta=0.0
        lr=1e-3,  # config.train.learning_rate = 1e-3 (aesthetic)
        weight_decay=0.1,  # config.train.adam_weight_decay = 0.1 (aesthetic)
        max_grad_norm=5.0,  # config.train.max_grad_norm = 5.0 (aesthetic)
        loss_scale=0.01,  # config.train.loss_coeff = 0.01 (aesthetic)
    )
    """Published protocol: the official code's ``config/align_prop.py`` (mihirp1998/AlignProp, ``aesthetic()``, on one
    GPU): 128 images per update as 4 per pass x 32 accumulated; its ``total_samples_per_epoch=256`` makes two such
    updates per epoch, i.e. two harness steps. Truncation: ``truncated_backprop_rand=True`` with
    ``truncated_backprop_minmax=(0, 50)`` is our ``random-k`` over all T steps (the default); ``mixed_precision='fp16'``
    is the run's ``--precision`` (the harness default is bf16 on a GPU)."""
    Config = AlignPropConfig
    needs_reward_gradient = True

    def setup(self) -> None:
        super().setup()
        self.grad = self.config.grad_mode()
        self.activations: tuple[int, int] | None = None  # (one UNet call, the decode), measured at the first step
        self.kept = 0

    def rollout_grad(self) -> GradMode:
        """The gradient mode of the next rollout: under ``checkpointing=auto``, how many calls keep activations."""
        cfg = self.config
        if cfg.checkpointing != "auto":
            return self.grad
        if self.activations is None:
            self.activations = activation_bytes(self.sampler, cfg.batch_size)
        unet, decode = self.activations
        budget = BUDGET_MARGIN * step_budget_bytes(self.sampler.device, cfg.memory_budget_mb, cfg.max_memory_gb)
        self.kept = max(0, int((budget - BASE_CALLS * unet - decode) // max(unet, 1)))
        return replace(self.grad, checkpoint=True, keep=self.kept)

    def loss_fn(self, objective: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        per_image = -objective if cfg.loss == "neg" else (cfg.target - objective).abs()
        return per_image.mean() * cfg.loss_scale

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.denoiser.train()
        true_scores, losses, grad_steps = [], [], []
        for _ in range(cfg.grad_accum):
            prompts = self.prompts.sample(cfg.batch_size, self.generator)
            rollout = self.sampler.sample(prompts, generator=self.generator, grad=self.rollout_grad())
            with self.autocast():
                objective = self.reward.objective(rollout.images, prompts).float()
            loss = self.loss_fn(objective)
            if loss.requires_grad:
                self.backward(loss / cfg.grad_accum)
            elif any(rollout.grad_steps):
                raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is "
                                   "marked differentiable: it detaches its input (no_grad, .numpy(), ...)")
            # else: alignprop-code detached every step of this rollout by chance; there is nothing to learn from it
            losses.append(float(loss.detach()))
            grad_steps.append(sum(rollout.grad_steps))
            if self.reward.differentiable:
                true_scores.append(objective.detach() if self.reward.higher_is_better else -objective.detach())
            else:
                with torch.no_grad(), self.autocast():
                    true_scores.append(self.reward(rollout.images.detach(), prompts).float())
        grad_norm = self.clip_and_step()
        metrics = batch_stats(torch.cat(true_scores))
        metrics.update(
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            grad_steps=sum(grad_steps) / len(grad_steps),
            samples=float(cfg.batch_size * cfg.grad_accum),
        )
        if cfg.checkpointing == "auto":
            metrics["kept_steps"] = float(min(self.kept, max(grad_steps)))  # calls that kept their activations
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
