"""MixGRPO (Li et al., arXiv 2507.21802; Tencent-Hunyuan/MixGRPO ``fastvideo/train_grpo_flux.py`` with
``--training_strategy part``, ``scripts/finetune/finetune_flux_grpo_MixGRPO.sh``): group policy gradient whose
SDE and training are confined to a sliding window of steps, with the deterministic flow ODE everywhere else.

- Rollouts: Flow-GRPO's SDE (``bench.core.flow.flow_grpo_step``, their ``--flow_grpo_sampling``, eta = 0.7) on the
  ``window_size`` = 4 steps of the window, first-order Euler ODE steps before and after it (their ``determistic``
  flags); only the window's transitions have log-probabilities, and all of them are trained, in order.
- The window starts at the noisiest step and moves ``window_stride`` = 1 step towards the clean end every
  ``shift_interval`` = 25 optimizer updates (their ``iters_per_group``, ``prog_overlap_step``); it never holds the
  chain's last step (DanceGRPO's drop of the last transition), and with ``roll_back`` it returns to the start when
  it would (their ``roll_back``; 300 updates of 25 steps never get there).
- Advantages: (r - group mean) / (group std + 1e-8), clipped to +-5; all G samples of a prompt share the initial
  noise; PPO clip 1e-4; no KL (``kl_coeff`` 0).

Its claim (nearly 50 % less training time than DanceGRPO) comes from the training: 4 window transitions per sample
against DanceGRPO's 60 % of all of them. MixGRPO-Flash's DPM-Solver++ after the window is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.checks import at_least
from methods.grpo import GRPO, GRPOConfig


@dataclass
class MixGRPOConfig(GRPOConfig):
    """MixGRPO's settings (``finetune_flux_grpo_MixGRPO.sh`` flags in brackets)."""

    eta: float = 0.7
    """Flow-GRPO's SDE noise level a inside the window [--eta] (0.7)."""
    sde: str = "flow-grpo"
    """The flow SDE inside the window [--flow_grpo_sampling]."""
    guidance_scale: float = 4.5
    """Guidance weight while sampling and training (FLUX: none, distilled; SD 3.5's default 4.5)."""
    window_size: int = 4
    """Steps in the SDE window, all trained [--group_size] (4)."""
    shift_interval: int = 25
    """Optimizer updates between two moves of the window [--iters_per_group] (25)."""
    window_stride: int = 1
    """Steps the window moves each time [--prog_overlap_step] (1)."""
    roll_back: bool = True
    """Back to the noisiest position when the window would reach the chain's last step [--roll_back]."""
    drop_last_step: bool = False
    """The window never holds the last step, so nothing is dropped from it."""

    RANGES = dict(window_size=at_least(1), shift_interval=at_least(1), window_stride=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.window_size > self.steps - 1:
            raise ValueError(f"window_size {self.window_size} must be <= steps - 1 = {self.steps - 1} (the window "
                             "never holds the last step); lower window_size or raise steps")
        if self.drop_last_step:
            raise ValueError("mixgrpo trains every step of its window (which never holds the last step); set "
                             "drop_last_step=false")

    def window_start(self, updates: int) -> int:
        """First step of the window after ``updates`` optimizer updates."""
        positions = self.steps - self.window_size  # starts 0 .. steps - 1 - window_size
        start = (updates // self.shift_interval) * self.window_stride
        return start % positions if self.roll_back else min(start, positions - 1)


class MixGRPO(GRPO):
    """GRPO with the SDE and the training inside a window that slides from noisy to clean; ODE elsewhere."""

    name = "mixgrpo"
    Config = MixGRPOConfig
    families = ("sd3",)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 12, "group_size": 12, "grad_accum": 1},
                                         "smoke": {"window_size": 2}}
    """finetune_flux_grpo_MixGRPO.sh: 12 images per prompt; the smoke preset's 4 steps hold a window of 2."""
    published = dict(
        batch_size=12,  # --num_generations 12 with --use_group
        group_size=12,
        grad_accum=1,
        steps=25,  # --sampling_steps 25
        eta=0.7,  # --eta 0.7
        window_size=4,  # --group_size 4
        shift_interval=25,  # --iters_per_group 25
        window_stride=1,  # --prog_overlap_step 1
        lr=3e-4,  # LoRA (their script: 1e-5 for the full model; DanceGRPO's LoRA script: 3e-4)
        weight_decay=1e-4,
        max_grad_norm=1.0,  # --max_grad_norm 1.0
        clip_range=1e-4,  # --clip_range 1e-4
        adv_clip_max=5.0,  # --adv_clip_max 5.0
        kl_weight=0.0,  # --kl_coeff 0.0
    )
    """Published protocol: MixGRPO ``scripts/finetune/finetune_flux_grpo_MixGRPO.sh`` (LoRA lr as DanceGRPO's)."""

    def setup(self) -> None:
        super().setup()
        self.updates = 0

    def stochastic_steps(self) -> range:
        start = self.config.window_start(self.updates)
        return range(start, start + self.config.window_size)

    def step(self) -> dict[str, float]:
        window = self.stochastic_steps()  # the window of the set this step trains on (sampled now or before)
        metrics = super().step()
        self.updates += 1
        metrics["window_start"] = float(window.start)
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])
