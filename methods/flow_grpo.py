"""Flow-GRPO (Liu et al., arXiv 2505.05470; yifan123/flow_grpo @ ac4c86e ``scripts/train_sd3.py`` (T),
``config/grpo.py`` ``geneval_sd3``, ``flow_grpo/stat_tracking.py``, ``flow_grpo/ema.py``) on the shared sampler's flow
chain: ``grpo``'s group policy gradient with Flow-GRPO's SDE and settings.

Reference details (each pinned by ``tests/methods/test_flow_faithful.py`` or ``test_flow_pg.py``):

- Sampling round (one epoch, T:~560-780): ``num_batches_per_epoch`` batches sampled before any update, old
  log-probabilities recorded at sampling; the SDE of ``bench.core.flow.flow_grpo_step`` on every step
  (g = a sqrt(sigma / (1 - sigma)), a = ``eta`` = their ``noise_level`` 0.7), guidance 4.5; the diffusers pipeline's
  sigmas (``schedule`` = scheduler); the final SDE latent is decoded for the reward.
- Advantages: (r - mean of the round's rewards for that prompt) / (population std of ALL the round's rewards +
  1e-4) (``PerPromptStatTracker`` with ``global_std``, cleared every epoch), clipped to +-5.
- Samples whose advantage is exactly 0 are dropped, dropped ones re-added at random until the count divides into
  the round's minibatches (T:796-817; ``filter_zero_advantage``).
- Updates (T:820-955): the round's samples shuffled (``torch.randperm``), cut into ``num_batches_per_epoch``
  minibatches, gradients accumulated over half of them: 2 optimizer steps per epoch (``updates_per_batch`` 2,
  ``grad_accum`` = half the round's batches), the first on-policy, the second where the 1e-4 clip acts.
- Trained transitions: the first int(T x 0.99) of T in order (9 of 10), the last never (``drop_last_step``).
- Loss: PPO clip 1e-4 on the ratio to the sampling log-probability, the unconditional branch of guidance detached
  when log-probabilities are recomputed (T:190, ``detach_uncond``), plus beta = 0.04 times the KL to the base model
  (LoRA disabled) on their scale ||mu - mu_ref||^2 / (2 g^2), g without sqrt(|dt|) (``kl_per_time``).
- EMA (T:445, 954-955; ``ema.py``): decay 0.9 with the warm-up min((1+s)/(10+s), 0.9), updated every 8 optimizer
  steps, once per micro-batch (``eval_ema``, ``ema_interval``); evaluation and checkpoints use it (T:218-219, 328).
- LoRA rank 32, alpha 64 on the joint attention's ``attn.*`` projections (T:417-434), AdamW lr 3e-4, weight decay
  1e-4, max grad norm 1.0, constant lr.
- Denoising reduction: training rollouts take ``steps`` (10) while evaluation takes its own (40 there;
  ``--set steps=...`` for all methods).

CPS (``sde`` = cps; Wang & Yu, arXiv 2509.05952; ``bench.core.flow.cps_step``, flow_grpo @ 54809b5
``sd3_sde_with_logprob.py:70-83``): coefficients-preserving steps instead of the SDE, at eta 0.8 unless ``eta`` is given
(flow_grpo @ 31c71b9 ``config/grpo.py``: every cps config sets ``noise_level = 0.8``). Its log-probability here is the
exact Gaussian density; flow_grpo's cps branch scores -mean((x - mean)^2) (no 1 / (2 std^2), no constants), so its
log-ratio is 2 std^2 times ours. The chain's last CPS step is deterministic; ``drop_last_step`` then leaves out
x_2 -> x_1 (std 0.008 at 10 steps: its exact-likelihood gradient would dominate), which flow_grpo's first
int(10 x 0.99) steps train (``drop_last_step`` false). GRPO-Guard's switches: ``methods/grpo_guard.py``.

Deviations, each a setting or stated here:

- The unconditional branch: flow_grpo after ac4c86e (74db691) no longer detaches it; ``detach_uncond`` false
  follows that version. The whole flow GRPO family here uses the detached rule (one rule, no confound).
- Groups never span processes (theirs are gathered across 32 GPUs), so the round's std is over one process's
  round (``grad_accum`` x ``updates_per_batch`` rollout batches), not 1152 samples.
- Evaluation guidance and steps are the invocation's evaluation protocol (the preset's: the model's guidance), not
  a Flow-GRPO setting; 512 px, fp16 autocast and a 128-token T5 are the model's / run's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.families import FLOW_FAMILIES
from methods.grpo import GRPO, GRPOConfig


@dataclass
class FlowGRPOConfig(GRPOConfig):
    """Flow-GRPO's settings (flow_grpo ``config/base.py`` and ``config/grpo.py:geneval_sd3`` names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [train.learning_rate] (3e-4, LoRA)."""
    eta: float = 0.0
    """The SDE's noise level a [sample.noise_level]; 0: the chosen SDE's reference level (``SDE_NOISE_LEVELS``:
    flow-grpo 0.7, cps 0.8)."""
    sde: str = "flow-grpo"
    """The flow SDE (``bench.core.flow.SDE_STEPS``): Flow-GRPO's sigma-dependent noise; ``cps`` for
    coefficients-preserving sampling (flow_grpo's ``sample.sde_type``)."""
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
    """Guidance's unconditional branch detached when log-probabilities are recomputed (T@ac4c86e:190)."""
    filter_zero_advantage: bool = True
    """Samples whose advantage is exactly 0 are not trained on (T:796-817)."""
    eval_ema: float = 0.9
    """Evaluate and save an EMA of the adapter, decay cap 0.9 [train.ema = True; EMAModuleWrapper(decay=0.9)]."""
    ema_interval: int = 8
    """EMA updated every 8 optimizer steps [EMAModuleWrapper(update_step_interval=8)]."""
    updates_per_batch: int = 2
    """Optimizer updates per sampling round (``gradient_accumulation_steps = num_batches_per_epoch // 2``: 2)."""

    def __post_init__(self):
        if self.eta == 0:  # before GRPOConfig's check (eta > 0): the SDE's own level
            from bench.core.flow import SDE_NOISE_LEVELS

            self.eta = SDE_NOISE_LEVELS.get(self.sde, 0.7)  # an unknown sde: GRPOConfig's own check refuses it
        super().__post_init__()


class FlowGRPO(GRPO):
    """Group-relative PPO over Flow-GRPO's SDE on the flow chain, with its KL to the base model."""

    name = "flow-grpo"
    Config = FlowGRPOConfig
    families = FLOW_FAMILIES  # every family with a flow-matching chain (sd3, flux)
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
        lora_targets="attn.add_k_proj,attn.add_q_proj,attn.add_v_proj,attn.to_add_out,attn.to_k,attn.to_out.0,"
                     "attn.to_q,attn.to_v",  # train_sd3.py target_modules (not attn2)
    )
    """Published protocol: flow_grpo ``config/grpo.py`` ``geneval_sd3`` over ``config/base.py`` (32 GPUs there: 48
    prompts x 24 images per epoch; here one process's share of whole groups)."""


@dataclass
class FlowGRPOCPSConfig(FlowGRPOConfig):
    """``flow-grpo`` with the CPS SDE (``docs/methods/flow-grpo.md`` "CPS")."""

    sde: str = "cps"
    """The flow SDE: coefficients-preserving sampling (arXiv 2509.05952; ``bench.core.flow.cps_step``); eta left at
    0 resolves to its reference level 0.8 (flow_grpo @ 31c71b9's cps configs)."""


class FlowGRPOCPS(FlowGRPO):
    """Flow-GRPO sampling and scoring CPS transitions (exact Gaussian log-probabilities): ``flow-grpo --set
    flow-grpo.sde=cps`` under its own name, so that a comparison or the suite lists it beside ``flow-grpo``."""

    name = "flow-grpo-cps"
    Config = FlowGRPOCPSConfig
    published = dict(FlowGRPO.published, sde="cps", eta=0.8)
    """Flow-GRPO's published protocol with flow_grpo's cps noise level (``geneval_sd3_fast_nocfg``,
    ``pickscore_sd3_fast_nocfg``: ``sample.noise_level = 0.8``); their cps configs' SDE window and CFG-free
    sampling are not taken (docs/methods/flow-grpo.md)."""
