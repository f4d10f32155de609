"""Flow-GRPO (Liu et al., arXiv 2505.05470; yifan123/flow_grpo ``scripts/train_sd3.py``, ``config/grpo.py``) on the
shared sampler's flow chain: ``grpo``'s group policy gradient with Flow-GRPO's SDE and settings.

- Rollouts: the flow SDE of ``bench.core.flow.flow_grpo_step`` (g = a sqrt(sigma / (1 - sigma)), a = ``eta`` =
  their ``noise_level`` 0.7) on every step, with classifier-free guidance; exact Gaussian log-probabilities.
- Advantages: (r - prompt mean) / (std of the whole batch + 1e-4) (their ``PerPromptStatTracker`` with
  ``global_std``), clipped to +-5.
- Trained transitions: the first T - 1 of T in sampling order (their ``int(num_steps * timestep_fraction)`` with
  0.99: 9 of 10, the last step never), i.e. ``drop_last_step`` with ``timestep_fraction`` 1.
- Loss: PPO clip 1e-4 on the ratio to the sampling log-probability, with the unconditional branch of guidance
  detached (their ``compute_log_prob``), plus beta = 0.04 times the KL to the base model (LoRA disabled) on their
  scale: ||mu - mu_ref||^2 / (2 g^2), the SDE's g without sqrt(|dt|) (``kl_per_time``).
- Denoising reduction: training rollouts take ``steps`` (10 in their configs) while evaluation takes its own
  (``--set steps=...`` for all methods, 40 in their configs): ``--set flow-grpo.steps=10 --set steps=40``.

Differences, on purpose: groups never span rollout batches or processes (theirs are gathered across 32 GPUs), so
a group's mean is always over the whole group; samples whose advantage is 0 everywhere are trained on (they add 0
to the surrogate; Flow-GRPO filters them out of its batches); no EMA of the weights for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.grpo import GRPO, GRPOConfig


@dataclass
class FlowGRPOConfig(GRPOConfig):
    """Flow-GRPO's settings (flow_grpo ``config/base.py`` and ``config/grpo.py:geneval_sd3`` names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [train.learning_rate] (3e-4, LoRA)."""
    eta: float = 0.7
    """The SDE's noise level a [sample.noise_level] (0.7)."""
    sde: str = "flow-grpo"
    """The flow SDE (``bench.core.flow.SDE_STEPS``): Flow-GRPO's sigma-dependent noise."""
    guidance_scale: float = 4.5
    """Guidance weight while sampling and training [sample.guidance_scale] (4.5)."""
    shared_noise: bool = False
    """Same initial noise within a group [sample.same_latent] (False)."""
    clip_range: float = 1e-4
    """PPO ratio clip range [train.clip_range] (1e-4)."""
    kl_weight: float = 0.04
    """KL weight beta [train.beta] (geneval_sd3, general_ocr_sd3: 0.04; pickscore_sd3: 0.01)."""
    kl_per_time: bool = True
    """The KL on Flow-GRPO's scale (divided by g^2, not the transition variance)."""
    global_std: bool = True
    """Advantage std over the whole batch [sample.global_std] (True in every sd3 config)."""
    adv_eps: float = 1e-4
    """Added to the advantage's std (their ``PerPromptStatTracker``: 1e-4)."""
    shuffle_round: bool = True
    """The round's samples shuffled before they are cut into the updates' batches (train_sd3.py ``torch.randperm``)."""
    detach_uncond: bool = True
    """Guidance's unconditional branch detached when log-probabilities are recomputed (their ``compute_log_prob``)."""


class FlowGRPO(GRPO):
    """Group-relative PPO over Flow-GRPO's SDE on the flow chain, with its KL to the base model."""

    name = "flow-grpo"
    Config = FlowGRPOConfig
    families = ("sd3",)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 24, "group_size": 24, "grad_accum": 1}}
    """geneval_sd3: 24 images per prompt."""
    published = dict(
        batch_size=24,  # grpo.py:geneval_sd3 num_image_per_prompt = 24: one group per rollout batch
        group_size=24,
        grad_accum=2,  # gradient_accumulation_steps = num_batches_per_epoch // 2: 2 optimizer steps per epoch ...
        updates_per_batch=2,  # ... each on its own half of the epoch's samples, sampled before either update
        steps=10,  # sample.num_steps = 10 (sample.eval_num_steps = 40: give --set steps=40 for evaluation)
        eta=0.7,  # base.py sample.noise_level = 0.7
        guidance_scale=4.5,  # sample.guidance_scale = 4.5 (train.cfg = True)
        lr=3e-4,  # base.py train.learning_rate = 3e-4
        weight_decay=1e-4,  # base.py train.adam_weight_decay = 1e-4
        max_grad_norm=1.0,  # base.py train.max_grad_norm = 1.0
        clip_range=1e-4,  # base.py train.clip_range = 1e-4
        adv_clip_max=5.0,  # base.py train.adv_clip_max = 5
        kl_weight=0.04,  # geneval_sd3 train.beta = 0.04
        timestep_fraction=1.0,  # with drop_last_step: int(10 * 0.99) = 9 first steps of 10
        drop_last_step=True,
        lora_rank=32,  # train_sd3.py LoraConfig(r=32, lora_alpha=64)
        lora_alpha=64.0,
    )
    """Published protocol: flow_grpo ``config/grpo.py`` ``geneval_sd3`` over ``config/base.py`` (32 GPUs there: 48
    prompts x 24 images per epoch; here one process's share of whole groups)."""
