"""DanceGRPO on a flow model (Xue et al., arXiv 2505.07818; XueZeyue/DanceGRPO ``fastvideo/train_grpo_flux.py``,
``scripts/finetune/finetune_flux_grpo.sh``): ``grpo``'s group policy gradient with DanceGRPO's flow SDE.

- Rollouts: ``bench.core.flow.dance_grpo_step``, a constant noise level g = ``eta`` (0.3 in their FLUX script) on
  every step; all G samples of a prompt start from the same initial noise (``--init_same_noise``).
- Advantages: (r - group mean) / (group std + 1e-8), clipped to +-5; no KL term.
- Trained transitions: the last step is always dropped (``[:, :-1]``), then each sample trains its own random
  ``timestep_fraction`` = 0.6 of the rest (a permutation per sample: int(15 x 0.6) = 9 of 16 steps there).
- Loss: PPO clip 1e-4; gradients of every chosen transition of every sample accumulate into one update.

FLUX is guidance-distilled (their ``--cfg 0``); SD3-architecture models are not, so the harness keeps guidance on
(``guidance_scale``, SD 3.5's 4.5 by default) while sampling and training, as ``flow-grpo`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.grpo import GRPO, GRPOConfig


@dataclass
class DanceGRPOConfig(GRPOConfig):
    """DanceGRPO's FLUX settings (``finetune_flux_grpo.sh`` flags in brackets)."""

    eta: float = 0.3
    """The SDE's constant noise level [--eta] (0.3)."""
    sde: str = "dance-grpo"
    """The flow SDE (``bench.core.flow.SDE_STEPS``): DanceGRPO's constant noise."""
    guidance_scale: float = 4.5
    """Guidance weight while sampling and training (FLUX: none, distilled; SD 3.5's default 4.5)."""
    timestep_fraction: float = 0.6
    """Fraction of the non-last transitions each sample trains on [--timestep_fraction] (0.6)."""
    per_sample_timesteps: bool = True
    """A random subset of transitions per sample (their per-sample ``torch.randperm``)."""


class DanceGRPO(GRPO):
    """Group-relative PPO over DanceGRPO's constant-noise flow SDE, shared noise in a group, random timesteps."""

    name = "dance-grpo"
    Config = DanceGRPOConfig
    families = ("sd3",)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 12, "group_size": 12, "grad_accum": 1}}
    """finetune_flux_grpo.sh: 12 images per prompt."""
    published = dict(
        batch_size=12,  # --num_generations 12 with --use_group: one group per rollout batch
        group_size=12,
        grad_accum=1,
        steps=16,  # --sampling_steps 16
        eta=0.3,  # --eta 0.3
        lr=3e-4,  # finetune_flux_grpo_8gpus_lora.sh: 3e-4 for LoRA (1e-5 for the full model)
        weight_decay=1e-4,  # train_grpo_flux.py AdamW weight_decay 1e-4
        max_grad_norm=1.0,  # --max_grad_norm 1.0
        clip_range=1e-4,  # --clip_range 1e-4
        adv_clip_max=5.0,  # --adv_clip_max 5.0
        timestep_fraction=0.6,  # --timestep_fraction 0.6
        kl_weight=0.0,  # no KL term in train_grpo_flux.py
        drop_last_step=True,  # timesteps[:, :-1], unconditionally
    )
    """Published protocol: DanceGRPO ``scripts/finetune/finetune_flux_grpo.sh`` (LoRA lr from the 8-GPU LoRA script)."""
