"""DanceGRPO on a flow model (Xue et al., arXiv 2505.07818; XueZeyue/DanceGRPO @ 15cc71d ``fastvideo/train_grpo_flux.py``
(TGF) with the LoRA script ``scripts/finetune/finetune_flux_grpo_8gpus_lora.sh`` (SHL)): ``grpo``'s group policy
gradient with DanceGRPO's flow SDE.

Reference details (each pinned by ``tests/methods/test_flow_faithful.py``):

- Sampling round (TGF:450-620): per GPU ``train_batch_size`` = 2 prompts x ``num_generations`` = 12 samples, all of
  a prompt's samples from one initial noise (TGF:333-350, ``--init_same_noise``), no graph. Here: rollout batch = one
  group of 12, ``updates_per_batch`` = 2 rollout batches per round.
- Advantages (TGF:533-545): per group, (r - mean) / (unbiased std + 1e-8), clipped to +-5 in the loss; rewards are not
  gathered across GPUs (``global_std`` False).
- Updates (TGF:571-613): samples outside, their timesteps inside, ``optimizer.step()`` after every
  ``gradient_accumulation_steps`` = 12 samples: 2 updates per round (SHL), the first on prompt A's group with ratio 1,
  the second on prompt B's group one update stale, where the 1e-4 clip acts. Here ``updates_per_batch`` = 2 in order
  (``shuffle_round`` False). The full fine-tune script (4 accumulated samples of a group of 12: 3 updates) is
  ``batch_size`` 4, ``updates_per_batch`` 3 (a group sampled whole, then cut, as ``mixgrpo`` does).
- Trained transitions (TGF:511-586): the last always dropped (``[:, :-1]``), then a permutation per sample and its
  first int((T - 1) x 0.6) (6 of 11 at SHL's 12 steps); the loss is their mean (TGF:603).
- Sigmas (TGF:127, 311-313): ``sd3_time_shift(3, linspace(1, 0, T + 1))`` (``schedule`` = shifted-linspace); T = 12.
- SDE (TGF:131-170): constant g = ``eta`` 0.3 (``bench.core.flow.dance_grpo_step``), float32 Gaussian log-prob
  averaged over the latent dimensions.
- Reward image (TGF:254, 380-384): the last step's x0 prediction is decoded (``decode`` = last-x0), so the untrained
  last transition adds no noise to the image.
- No KL; LoRA rank 128, alpha 256 on to_q, to_k, to_v, to_out.0 (``train_grpo_flux_lora.py``:659-664) with lr 3e-4
  (SHL:33); AdamW weight decay 1e-4, max grad norm 1.0, constant lr.

Deviations, each a setting:

- Guidance: FLUX is guidance-distilled (its guidance embedding 3.5, no CFG branch; TGF's ``--cfg`` is the probability
  of dropping the prompt, not a scale). SD3-architecture models need classifier-free guidance, so the harness keeps
  it on while sampling and training (``guidance_scale``) with the one rule of the flow GRPO family: the unconditional
  branch detached when log-probabilities are recomputed (``detach_uncond``, Flow-GRPO's ``compute_log_prob``, the
  one reference that trains SD3 with CFG). On flux the harness samples as TGF: the family's guidance embedding 3.5
  (``Family.embedded_guidance``, the planner's default there), no CFG branch.
- The model's timestep is the float 1000 sigma (TGF passes ``int(1000 sigma) / 1000``).
- The ``matched`` protocol trains the harness's LoRA (rank 4 on the family's targets) instead of rank 128: its
  learning rate is then a tuned value, not the published 3e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.families import FLOW_FAMILIES
from methods.grpo import GRPO, GRPOConfig


@dataclass
class DanceGRPOConfig(GRPOConfig):
    """DanceGRPO's LoRA settings (``finetune_flux_grpo_8gpus_lora.sh`` flags in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [--learning_rate] (3e-4 with LoRA rank 128; tune it for another rank)."""
    steps: int = 12
    """Sampling steps T of the training rollouts [--sampling_steps] (12)."""
    eta: float = 0.3
    """The SDE's constant noise level [--eta] (0.3)."""
    sde: str = "dance-grpo"
    """The flow SDE (``bench.core.flow.SDE_STEPS``): DanceGRPO's constant noise."""
    schedule: str = "shifted-linspace"
    """Sigmas shift(linspace(1, 0, T + 1)) [--shift 3, TGF ``sd3_time_shift``]."""
    decode: str = "last-x0"
    """The reward image is the last step's x0 prediction (TGF: ``latents = pred_original``)."""
    guidance_scale: float = 4.5
    """Classifier-free guidance weight while sampling and training on sd3 (SD 3.5's default 4.5); on flux the
    family's guidance embedding, 3.5 (FLUX: distilled, no CFG branch)."""
    detach_uncond: bool = True
    """The flow GRPO family's one rule for guidance: unconditional branch detached in recomputed log-probs."""
    timestep_fraction: float = 0.6
    """Fraction of the non-last transitions each sample trains on [--timestep_fraction] (0.6)."""
    per_sample_timesteps: bool = True
    """A random subset of transitions per sample (their per-sample ``torch.randperm``)."""
    updates_per_batch: int = 2
    """Optimizer updates per sampling round, one group each [2 prompts x 12 / --gradient_accumulation_steps 12]."""


class DanceGRPO(GRPO):
    """Group-relative PPO over DanceGRPO's constant-noise flow SDE, shared noise in a group, random timesteps."""

    name = "dance-grpo"
    Config = DanceGRPOConfig
    families = FLOW_FAMILIES  # every family with a flow-matching chain (sd3, flux)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 12, "group_size": 12, "grad_accum": 1}}
    """finetune_flux_grpo_8gpus_lora.sh: 12 images per prompt."""
    published = dict(
        batch_size=12,  # --num_generations 12 with --use_group: one group per rollout batch
        group_size=12,
        grad_accum=1,
        updates_per_batch=2,  # --train_batch_size 2 prompts, --gradient_accumulation_steps 12: 2 updates per round
        steps=12,  # --sampling_steps 12
        eta=0.3,  # --eta 0.3
        lr=3e-4,  # --learning_rate 3e-4 (LoRA rank 128)
        lora_rank=128,  # train_grpo_flux_lora.py: LoraConfig(r=128, lora_alpha=256)
        lora_alpha=256.0,
        lora_targets="to_q,to_k,to_v,to_out.0",  # train_grpo_flux_lora.py target_modules
        weight_decay=1e-4,  # --weight_decay 1e-4
        max_grad_norm=1.0,  # --max_grad_norm 1.0
        clip_range=1e-4,  # --clip_range 1e-4
        adv_clip_max=5.0,  # --adv_clip_max 5.0
        timestep_fraction=0.6,  # --timestep_fraction 0.6
        kl_weight=0.0,  # no KL term in train_grpo_flux.py
        drop_last_step=True,  # timesteps[:, :-1], unconditionally
    )
    """Published protocol: DanceGRPO ``scripts/finetune/finetune_flux_grpo_8gpus_lora.sh`` with
    ``train_grpo_flux_lora.py``'s LoRA: learning rate and rank from the same script."""
