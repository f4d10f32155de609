"""MixGRPO (Li et al., arXiv 2507.21802; Tencent-Hunyuan/MixGRPO @ e5cdd6a ``fastvideo/train_grpo_flux.py`` (TGF) with
``--training_strategy part``, ``fastvideo/utils/grpo_states.py`` (GS), ``fastvideo/utils/sampling_utils.py`` (SU),
``scripts/finetune/finetune_flux_grpo_MixGRPO.sh`` (SH)): group policy gradient whose SDE and training are confined to
a sliding window of steps, with the deterministic flow ODE everywhere else.

Reference details (each pinned by ``tests/methods/test_flow_faithful.py``):

- Sampling round (TGF:352-368, 936-965): per GPU one prompt x 12 samples from one shared initial noise
  (TGF:210-215), no graph; SDE steps (Flow-GRPO's, their ``--flow_grpo_sampling``, eta 0.7; SU:157-210) inside the
  window, Euler ODE steps elsewhere; the final latent is decoded (SU:149-152).
- Sigmas: shift 3 on linspace(1, 0, T + 1) (TGF:187-189, SU:9-10; ``schedule`` = shifted-linspace), T = 25.
- Advantages (TGF:428-456): per group, (r - mean) / (unbiased std + 1e-8), clipped to +-5 in the loss; not gathered.
- Updates (TGF:543-610): samples outside, the window's steps inside (all of them, in order), ``optimizer.step()``
  every ``gradient_accumulation_steps`` = 3 samples: 4 updates per round of 12, on the group's samples in sampling
  order; the first update is on-policy, the next three one, two and three updates stale, where the 1e-4 clip acts.
  Here ``batch_size`` 3, ``updates_per_batch`` 4: the group of 12 is sampled whole, then cut into 4 rollout batches.
- Window (GS:85-148, TGF:919, 945-947): it moves ``window_stride`` = 1 step every ``shift_interval`` = 25 sampling
  ROUNDS (their ``iters_per_group``; a round is 4 updates), from the noisiest step; window = [s, min(s + 4, T - 2)),
  so steps T - 2 and T - 1 are never in it, and near the end it shrinks; ``roll_back`` returns it to 0.
- No KL (``--kl_coeff 0``), PPO clip 1e-4, advantage clip 5, max grad norm 1.0, AdamW weight decay 1e-4, constant lr.

Deviations, each a setting or stated here:

- Guidance: FLUX is guidance-distilled (guidance embedding 3.5, no CFG branch; ``--cfg`` is a caption-dropout
  probability). SD3-architecture models need classifier-free guidance, so the harness keeps it on
  (``guidance_scale``) with the flow GRPO family's one rule: the unconditional branch detached when
  log-probabilities are recomputed (``detach_uncond``, Flow-GRPO's ``compute_log_prob``). On flux the harness
  samples as TGF: the family's guidance embedding 3.5 (``Family.embedded_guidance``), no CFG branch.
- Learning rate: MixGRPO fine-tunes the full FLUX transformer at 1e-5 and publishes no LoRA setting. The harness
  trains LoRA; its ``published`` protocol takes DanceGRPO's LoRA script's consistent triple (rank 128, alpha 256,
  lr 3e-4; MixGRPO's code is DanceGRPO's), and the ``matched`` protocol's rank-4 learning rate is a tuned value.
- The reference's window reaches an empty position (start T - 2) and crashes there (TGF:612); here the positions
  are the starts below T - 2 and the window rolls back (or, without ``roll_back``, stays at the last one).
- The published run averages three rewards' advantages (HPS, ImageReward, PickScore); here one reward. The model's
  timestep is the float 1000 sigma (theirs ``int(1000 sigma) / 1000``). MixGRPO-Flash's DPM-Solver++ is absent.

Its claim (nearly 50 % less training time than DanceGRPO) comes from the training: 4 window transitions per sample
against DanceGRPO's 60 % of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.checks import at_least
from bench.core.families import FLOW_FAMILIES
from methods.grpo import GRPO, GRPOConfig


@dataclass
class MixGRPOConfig(GRPOConfig):
    """MixGRPO's settings (``finetune_flux_grpo_MixGRPO.sh`` flags in brackets)."""

    steps: int = 25
    """Sampling steps T of the training rollouts [--sampling_steps] (25)."""
    eta: float = 0.7
    """Flow-GRPO's SDE noise level a inside the window [--eta] (0.7)."""
    sde: str = "flow-grpo"
    """The flow SDE inside the window [--flow_grpo_sampling]."""
    schedule: str = "shifted-linspace"
    """Sigmas shift(linspace(1, 0, T + 1)) [--shift 3; SU ``sd3_time_shift``]."""
    guidance_scale: float = 4.5
    """Classifier-free guidance weight while sampling and training on sd3 (SD 3.5's default 4.5); on flux the
    family's guidance embedding, 3.5 (FLUX: distilled, no CFG branch)."""
    detach_uncond: bool = True
    """The flow GRPO family's one rule for guidance: unconditional branch detached in recomputed log-probs."""
    group_size: int = 12
    """Samples per prompt [--num_generations] (12); sampled whole, trained ``batch_size`` at a time."""
    batch_size: int = 3
    """Samples per update [--gradient_accumulation_steps 3 samples of the group]."""
    updates_per_batch: int = 4
    """Updates per sampling round [12 samples / 3 per update]."""
    window_size: int = 4
    """Steps in the SDE window, all trained [--group_size] (4)."""
    shift_interval: int = 25
    """Sampling rounds between two moves of the window [--iters_per_group] (25; GS counts training iterations,
    each one sampling round)."""
    window_stride: int = 1
    """Steps the window moves each time [--prog_overlap_step] (1)."""
    roll_back: bool = True
    """Back to the noisiest position after the last [--roll_back]."""
    drop_last_step: bool = False
    """The window never holds the last two steps, so nothing is dropped from it."""

    RANGES = dict(window_size=at_least(1), shift_interval=at_least(1), window_stride=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.window_size > self.steps - 2:
            raise ValueError(f"window_size {self.window_size} must be <= steps - 2 = {self.steps - 2} (the window "
                             "never holds the last two steps); lower window_size or raise steps")
        if self.drop_last_step:
            raise ValueError("mixgrpo trains every step of its window (which never holds the last step); set "
                             "drop_last_step=false")

    def window(self, rounds: int) -> range:
        """The window of the sampling round after ``rounds`` rounds: [s, min(s + window_size, T - 2)) with
        s = (rounds // shift_interval) x window_stride, over the starts below T - 2 (GS:85-148)."""
        last = self.steps - 2  # steps T - 2 and T - 1 are never in the window
        positions = -(-last // self.window_stride)  # starts 0, stride, ... below T - 2
        move = rounds // self.shift_interval
        start = (move % positions if self.roll_back else min(move, positions - 1)) * self.window_stride
        return range(start, min(start + self.window_size, last))


class MixGRPO(GRPO):
    """GRPO with the SDE and the training inside a window that slides from noisy to clean; ODE elsewhere."""

    name = "mixgrpo"
    Config = MixGRPOConfig
    families = FLOW_FAMILIES  # every family with a flow-matching chain (sd3, flux)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 3, "group_size": 12, "grad_accum": 1},
                                         "default": {"group_size": 8},
                                         "smoke": {"window_size": 2, "group_size": 2, "updates_per_batch": 1}}
    """finetune_flux_grpo_MixGRPO.sh: 12 images per prompt, 3 per update. The default preset's 4 images per update:
    groups of 8, each trained in 2 updates (a group spans updates, as theirs); the smoke preset's 4 steps hold a
    window of 2 and its batches of 2 one group."""
    published = dict(
        batch_size=3,  # --gradient_accumulation_steps 3 samples per optimizer step
        group_size=12,  # --num_generations 12 with --use_group
        grad_accum=1,
        updates_per_batch=4,  # 12 samples per round / 3 per update
        steps=25,  # --sampling_steps 25
        eta=0.7,  # --eta 0.7
        window_size=4,  # --group_size 4
        shift_interval=25,  # --iters_per_group 25 (rounds)
        window_stride=1,  # --prog_overlap_step 1
        lr=3e-4,  # DanceGRPO's LoRA script (MixGRPO: full fine-tune, 1e-5): with its rank and alpha
        lora_rank=128,
        lora_alpha=256.0,
        lora_targets="to_q,to_k,to_v,to_out.0",
        weight_decay=1e-4,
        max_grad_norm=1.0,  # --max_grad_norm 1.0
        clip_range=1e-4,  # --clip_range 1e-4
        adv_clip_max=5.0,  # --adv_clip_max 5.0
        kl_weight=0.0,  # --kl_coeff 0.0
    )
    """Published protocol: MixGRPO ``scripts/finetune/finetune_flux_grpo_MixGRPO.sh``; LoRA triple from DanceGRPO's
    LoRA script (module docstring)."""

    def stochastic_steps(self) -> range:
        return self.config.window(self.rounds)
