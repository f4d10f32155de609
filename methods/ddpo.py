"""DDPO (Black et al., arXiv 2305.13301) through trl 0.23.1's ``DDPOTrainer``: policy gradient over the chain.

The harness does not re-implement DDPO: it builds trl's trainer around the harness's pipeline and LoRA settings,
adapts the reward and prompts to trl's ``reward_function`` / ``prompt_function``, and calls ``trainer.step``.

Mapping of one harness step: one trl epoch = ``sample_num_batches_per_epoch`` (1) batch of ``batch_size`` samples
(``batch_size`` reward queries), then one inner epoch over those samples with ``train_batch_size = batch_size``
and gradient accumulation over all ``steps * timestep_fraction`` timesteps, i.e. exactly one optimizer update.
Metrics come from trl's own ``accelerator.log`` calls (reward_mean, reward_std, loss, approx_kl, clipfrac).

Defaults follow the DDPO paper / trl: lr 3e-4, eta 1.0, guidance 5.0, clip range 1e-4, advantage clip 5,
per-prompt stat tracking off (option). Sampling uses trl's own sampler, not the harness's (this is the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.trl_driver import TrlMethod
from methods.base import MethodConfig


@dataclass
class DDPOConfig(MethodConfig):
    """DDPO settings (trl DDPOConfig names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [train_learning_rate] (DDPO paper: 3e-4)."""
    eta: float = 1.0
    """DDIM eta while sampling [sample_eta]; must be > 0 for the policy to have a density."""
    guidance_scale: float = 5.0
    """Guidance weight [sample_guidance_scale] (DDPO paper: 5.0)."""
    clip_range: float = 1e-4
    """PPO ratio clip range [train_clip_range]."""
    adv_clip_max: float = 5.0
    """Advantage clipping [train_adv_clip_max]."""
    timestep_fraction: float = 1.0
    """Fraction of the chain's timesteps trained on [train_timestep_fraction]."""
    per_prompt_stat_tracking: bool = False
    """Normalise advantages per prompt [per_prompt_stat_tracking]."""
    stat_buffer_size: int = 16
    """Per-prompt tracker buffer [per_prompt_stat_tracking_buffer_size]."""
    stat_min_count: int = 16
    """Per-prompt tracker minimum count [per_prompt_stat_tracking_min_count]."""

    def __post_init__(self):
        super().__post_init__()
        if self.eta <= 0:
            raise ValueError("ddpo needs eta > 0 (a stochastic sampler has log-probabilities); set eta=1.0")
        if self.grad_accum != 1:
            raise ValueError("ddpo: grad_accum must be 1 (one trl epoch = one optimizer step); raise batch_size")
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction must lie in (0, 1], got {self.timestep_fraction}")
        if int(self.steps * self.timestep_fraction) < 1:
            raise ValueError(f"timestep_fraction={self.timestep_fraction} of steps={self.steps} trains on no timestep "
                             "(trl would silently make no update); raise it")


class DDPO(TrlMethod):
    """trl's DDPOTrainer, one epoch per harness step."""

    name = "ddpo"
    Config = DDPOConfig

    def setup(self) -> None:
        from trl import DDPOConfig as TrlConfig
        from trl import DDPOTrainer

        cfg = self.config
        trl_config = TrlConfig(
            **self.common_trl_config(),
            sample_batch_size=cfg.batch_size,
            sample_num_batches_per_epoch=1,
            train_batch_size=cfg.batch_size,
            train_gradient_accumulation_steps=1,
            train_num_inner_epochs=1,
            train_clip_range=cfg.clip_range,
            train_adv_clip_max=cfg.adv_clip_max,
            train_timestep_fraction=cfg.timestep_fraction,
            per_prompt_stat_tracking=cfg.per_prompt_stat_tracking,
            per_prompt_stat_tracking_buffer_size=cfg.stat_buffer_size,
            per_prompt_stat_tracking_min_count=cfg.stat_min_count,
        )
        self.build_trainer(DDPOTrainer, trl_config)

    def _reward_fn(self, images, prompts, metadata):
        with torch.no_grad():
            scores = self.reward(images.float(), list(prompts)).float()
        self.queries += len(images)
        return (scores if self.reward.higher_is_better else -scores), {}

    def state_dict(self) -> dict:
        """Adds trl's per-prompt reward statistics (its advantage normalisation) to the resume state."""
        tracker = getattr(self.trainer, "stat_tracker", None)
        return {**super().state_dict(), "stat_tracker": None if tracker is None else dict(vars(tracker))}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("stat_tracker") is not None:
            vars(self.trainer.stat_tracker).update(state["stat_tracker"])

    def step(self) -> dict[str, float]:
        records = self.run_epoch()
        sample_log = next(r for r in records if "reward_mean" in r)
        train_logs = [r for r in records if "loss" in r]
        sign = 1.0 if self.reward.higher_is_better else -1.0
        metrics = {
            "reward_mean": sign * sample_log["reward_mean"],
            "reward_std": sample_log["reward_std"],
            "samples": float(self.queries),
            "optimizer_steps": float(len(train_logs)),
        }
        for key in ("loss", "approx_kl", "clipfrac"):
            metrics[key] = sum(r[key] for r in train_logs) / max(len(train_logs), 1)
        return metrics
