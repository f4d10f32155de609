"""trl 0.23.1's ``AlignPropTrainer`` at the harness's settings: the reference our ``alignprop`` is measured against.

trl keeps the official AlignProp code's truncation semantics (a threshold drawn per denoising step, UNet output
detached below it) and its loss ``10 - mean(reward)`` (same gradient as ``-mean(reward)``). The reward handed to trl
is multiplied by ``loss_scale`` (0.01, our ``alignprop``'s loss scale), so gradient clipping acts on gradients of the
same size in both; the rewards trl logs are divided back. One harness step is one trl epoch = ``grad_accum`` rollout
batches of ``batch_size`` and one optimizer update; with ``grad_accum > 1`` the ``reward_std`` metric is trl's mean
of the per-batch standard deviations.

trl silently trains nothing when the random range starts beyond the last step index (every UNet output is
detached); this wrapper refuses a range wider than the step count before trl is built. Inside an allowed range a
rollout can still, by chance, detach every step (likely only for few steps); trl's backward would then fail, so
such a rollout gets a zero-gradient loss and is counted in the ``no_grad_batches`` metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.sampler import GradMode
from methods.alignprop import AlignProp
from methods.trl_driver import TrlMethod
from bench.core.checks import above, at_least
from methods.base import MethodConfig


@dataclass
class AlignPropTrlConfig(MethodConfig):
    """Settings passed to trl's AlignPropConfig (trl names in brackets); defaults as our ``alignprop``."""

    lr: float = 1e-3
    """AdamW learning rate [train_learning_rate]."""
    weight_decay: float = 0.1
    """AdamW weight decay [train_adam_weight_decay]."""
    max_grad_norm: float = 5.0
    """Gradient clipping [train_max_grad_norm]."""
    random_truncation: bool = True
    """Per-step random truncation [truncated_backprop_rand]; False uses the fixed ``truncation_step``."""
    code_min: int = 0
    """Low end of the per-step threshold range [truncated_rand_backprop_minmax[0]]."""
    code_max: int = 0
    """High end of the per-step threshold range [truncated_rand_backprop_minmax[1]]; 0 means the step count."""
    truncation_step: int = 49
    """Fixed truncation: steps with index below this are detached [truncated_backprop_timestep]."""
    checkpointing: bool = True
    """Activation checkpointing of UNet calls [gradient_checkpoint argument of trl's sampler]."""
    loss_scale: float = 0.01
    """Multiplier of the reward handed to trl (trl's loss is 10 - mean(reward), unscaled); 0.01 matches our
    ``alignprop``'s loss_scale, so gradient clipping at ``max_grad_norm`` bites at the same point."""

    def code_range(self) -> tuple[int, int]:
        return (self.code_min, self.code_max or self.steps)

    RANGES = dict(code_min=at_least(0), code_max=at_least(0, "0: the step count"), truncation_step=at_least(0),
                  loss_scale=above(0))

    def __post_init__(self):
        super().__post_init__()
        if self.random_truncation:
            GradMode(mode="alignprop-code", code_range=self.code_range()).validate(self.steps)
        elif not 0 <= self.truncation_step <= self.steps - 1:
            raise ValueError(
                f"truncation_step={self.truncation_step} must lie in [0, steps-1={self.steps - 1}]: beyond it trl "
                "detaches every step and silently trains nothing"
            )


class AlignPropTrl(TrlMethod):
    """trl's AlignPropTrainer, one epoch per harness step."""

    name = "alignprop-trl"
    preset_overrides = {"paper": dict(batch_size=2, grad_accum=4)}
    """Paper preset: as ``alignprop`` (the reference runs at our settings)."""
    published = {k: v for k, v in AlignProp.published.items() if k != "loss_scale"}
    """Published protocol: as ``alignprop`` (the official code's settings; see ``methods.alignprop``)."""
    Config = AlignPropTrlConfig
    needs_reward_gradient = True

    def setup(self) -> None:
        from trl import AlignPropConfig, AlignPropTrainer

        cfg = self.config
        trl_config = AlignPropConfig(
            **self.common_trl_config(),
            train_batch_size=cfg.batch_size,
            train_gradient_accumulation_steps=cfg.grad_accum,
            truncated_backprop_rand=cfg.random_truncation,
            truncated_backprop_timestep=cfg.truncation_step,
            truncated_rand_backprop_minmax=cfg.code_range(),
        )
        self.build_trainer(AlignPropTrainer, trl_config)
        self.pipe.unet.train()
        self._patch_checkpointing(cfg.checkpointing)

    def _patch_checkpointing(self, enabled: bool) -> None:
        """trl's trainer never passes ``gradient_checkpoint``; forward our setting to its sampler."""
        rgb_with_grad = self.trl_pipe.rgb_with_grad

        def with_setting(*args, **kwargs):
            kwargs.setdefault("gradient_checkpoint", enabled)
            return rgb_with_grad(*args, **kwargs)

        self.trl_pipe.rgb_with_grad = with_setting

    def _reward_fn(self, images, prompts, metadata):
        self.queries += len(images)
        if not self.reward.differentiable:
            with torch.no_grad(), self.autocast():
                self.true_scores.append(self.reward(images.detach().float(), list(prompts)).float())
        with self.autocast():
            objective = self.reward.objective(images.float(), list(prompts)).float() * self.config.loss_scale
        if images.requires_grad and not objective.requires_grad:
            raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is marked "
                               "differentiable: it detaches its input (no_grad, .numpy(), ...)")
        if not objective.requires_grad:
            # trl detached every UNet call of this rollout (per-step random truncation): its backward would fail.
            # Count it and hand trl a zero-gradient loss, which is what that rollout teaches.
            self.no_grad_batches += 1
            objective = objective + 0.0 * sum(p.sum() for p in self.pipe.unet.parameters() if p.requires_grad)
        return objective, {}

    def step(self) -> dict[str, float]:
        self.true_scores, self.no_grad_batches = [], 0
        log = self.run_epoch()[-1]
        sign = 1.0 if self.reward.higher_is_better else -1.0
        scale = self.config.loss_scale  # trl logs the scaled rewards it was given
        metrics = {
            "reward_mean": sign * log["reward_mean"] / scale,
            "reward_std": log["reward_std"] / scale,
            "loss": log["loss"],
            "samples": float(self.queries),
            "no_grad_batches": float(self.no_grad_batches),
        }
        if not self.reward.differentiable:
            true = torch.cat(self.true_scores)
            metrics.update(reward_mean=float(true.mean()), reward_std=float(true.std(unbiased=False)))
        return metrics
