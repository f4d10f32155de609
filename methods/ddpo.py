"""DDPO (Black et al., arXiv 2305.13301) through trl 0.23.1's ``DDPOTrainer``: policy gradient over the chain.

The harness does not re-implement DDPO: it builds trl's trainer around the harness's pipeline and LoRA settings,
adapts the reward and prompts to trl's ``reward_function`` / ``prompt_function``, and calls ``trainer.step``.

Mapping of one harness step: one trl epoch = ``sample_batches`` batches of ``batch_size`` samples (that many reward
queries), then ``inner_epochs`` passes over them in micro-batches of ``train_batch_size``, with one optimizer update
per ``train_grad_accum`` micro-batches (trl accumulates over all ``steps * timestep_fraction`` timesteps too). The
defaults (1 batch, train batch = batch, 1 inner epoch) make exactly one update per step (the ``matched`` protocol);
the ``published`` protocol makes several, as ddpo-pytorch does (``updates_per_step()``; metric
``optimizer_steps``). Metrics come from trl's own ``accelerator.log`` calls (reward_mean, reward_std, loss,
approx_kl, clipfrac; loss and the others averaged over the epoch's updates).

Defaults follow the DDPO paper / trl: lr 3e-4, eta 1.0, guidance 5.0, clip range 1e-4, advantage clip 5,
per-prompt stat tracking off (option). Sampling uses trl's own sampler, not the harness's (this is the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.trl_driver import TrlMethod
from bench.core.checks import at_least
from methods.base import PPO_RANGES, MethodConfig


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
    sample_batches: int = 1
    """Sampling batches of ``batch_size`` per epoch [sample_num_batches_per_epoch]."""
    train_batch_size: int = 0
    """Samples per training micro-batch [train_batch_size]; 0 means ``batch_size``. Must divide ``batch_size``."""
    train_grad_accum: int = 1
    """Micro-batches accumulated into one optimizer update [train_gradient_accumulation_steps]."""
    inner_epochs: int = 1
    """Passes over each epoch's samples [train_num_inner_epochs]."""

    def micro_batch(self) -> int:
        return self.train_batch_size or self.batch_size

    def images_per_step(self) -> int:
        return self.batch_size * self.sample_batches

    def updates_per_step(self) -> int:
        return self.images_per_step() // (self.micro_batch() * self.train_grad_accum) * self.inner_epochs

    RANGES = dict(PPO_RANGES, stat_buffer_size=at_least(1), stat_min_count=at_least(0), sample_batches=at_least(1),
                  train_batch_size=at_least(0, "0: batch_size"), train_grad_accum=at_least(1), inner_epochs=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size % self.micro_batch():
            raise ValueError(f"train_batch_size={self.train_batch_size} must divide batch_size={self.batch_size} "
                             "(trl's rule)")
        if self.images_per_step() % (self.micro_batch() * self.train_grad_accum):
            raise ValueError(f"samples per epoch ({self.batch_size} x {self.sample_batches}) must be a multiple of the "
                             f"samples per update ({self.micro_batch()} x {self.train_grad_accum}) (trl's rule)")
        if self.eta <= 0:
            raise ValueError("ddpo needs eta > 0 (a stochastic sampler has log-probabilities); set eta=1.0")
        if self.grad_accum != 1:
            raise ValueError("ddpo: grad_accum must be 1 (one trl epoch = one step); use sample_batches and "
                             "train_grad_accum")
        if int(self.steps * self.timestep_fraction) < 1:
            raise ValueError(f"timestep_fraction={self.timestep_fraction} of steps={self.steps} trains on no timestep "
                             "(trl would silently make no update); raise it")


class DDPO(TrlMethod):
    """trl's DDPOTrainer, one epoch per harness step."""

    name = "ddpo"
    Config = DDPOConfig
    published = dict(
        batch_size=8,  # config/dgx.py: sample.batch_size = 8 (per GPU)
        sample_batches=32,  # 256 samples per epoch: dgx.py's 8 GPUs x 8 x sample.num_batches_per_epoch 4, on one GPU
        train_batch_size=4,  # dgx.py: train.batch_size = 4
        train_grad_accum=32,  # 128 samples per update: dgx.py aesthetic() 8 GPUs x 4 x gradient_accumulation_steps 4
        inner_epochs=1,  # base.py: train.num_inner_epochs = 1
        steps=50,  # base.py: sample.num_steps = 50
        eta=1.0,  # base.py: sample.eta = 1.0
        guidance_scale=5.0,  # base.py: sample.guidance_scale = 5.0
        lr=3e-4,  # base.py: train.learning_rate = 3e-4
        weight_decay=1e-4,  # base.py: train.adam_weight_decay = 1e-4
        max_grad_norm=1.0,  # base.py: train.max_grad_norm = 1.0
        clip_range=1e-4,  # base.py: train.clip_range = 1e-4
        adv_clip_max=5.0,  # base.py: train.adv_clip_max = 5
        timestep_fraction=1.0,  # base.py: train.timestep_fraction = 1.0
        per_prompt_stat_tracking=True,  # dgx.py aesthetic(): per_prompt_stat_tracking = {buffer_size 32, min_count 16}
        stat_buffer_size=32,
        stat_min_count=16,
    )
    """Published protocol: kvablack/ddpo-pytorch ``config/base.py`` and ``config/dgx.py`` (``aesthetic()``), its
    per-GPU batches kept and its 8 GPUs folded into one: 256 samples per epoch, 2 optimizer updates per epoch
    ("I used 2 gradient updates per epoch"). trl 0.23.1's ``DDPOConfig`` names the same five fields
    (sample_batch_size, sample_num_batches_per_epoch, train_batch_size, train_gradient_accumulation_steps,
    train_num_inner_epochs; its defaults 1, 2, 1, 1, 1 also make 2 updates per epoch). ``mixed_precision='fp16'``
    is the run's ``--precision``."""

    def setup(self) -> None:
        from trl import DDPOConfig as TrlConfig
        from trl import DDPOTrainer

        cfg = self.config
        trl_config = TrlConfig(
            **self.common_trl_config(),
            sample_batch_size=cfg.batch_size,
            sample_num_batches_per_epoch=cfg.sample_batches,
            train_batch_size=cfg.micro_batch(),
            train_gradient_accumulation_steps=cfg.train_grad_accum,
            train_num_inner_epochs=cfg.inner_epochs,
            train_clip_range=cfg.clip_range,
            train_adv_clip_max=cfg.adv_clip_max,
            train_timestep_fraction=cfg.timestep_fraction,
            per_prompt_stat_tracking=cfg.per_prompt_stat_tracking,
            per_prompt_stat_tracking_buffer_size=cfg.stat_buffer_size,
            per_prompt_stat_tracking_min_count=cfg.stat_min_count,
        )
        self.build_trainer(DDPOTrainer, trl_config)

    def _reward_fn(self, images, prompts, metadata):
        with torch.no_grad(), self.autocast():
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
