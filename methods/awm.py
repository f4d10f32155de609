"""Advantage Weighted Matching, AWM (Xue et al., arXiv 2509.25050; scxue/advantage_weighted_matching @ be51372
``advantage_weighted_matching/scripts/train_sd3_awm.py`` (T), ``config/dgx_awm.py`` ``geneval_sd3_no_cfg_1node``
(D), ``config/base_awm.py`` (B), ``flow_grpo/stat_tracking.py``, ``flow_grpo/ema.py``,
``flow_grpo/diffusers_patch/sd3_pipeline_with_logprob.py`` (P)): policy improvement by the pre-training
flow-matching loss on the model's own samples, each sample's loss weighted by its advantage.

One step (one epoch of theirs, one optimizer update: ``gradient_accumulation_steps`` = the epoch's number of
training minibatches, D:52-53, T:1265, 1373-1389):

1. Rollouts with the *current* adapter (``off_policy`` False, D:69; T:883-904): ``grad_accum`` rollout batches of
   whole groups of ``group_size`` per prompt (D:45: 24), CFG-free (D:39), 14 steps (D:37; 40 for evaluation, D:38),
   their SA-Solver with stochasticity tau = ``eta`` (D:48 ``noise_level`` 0.4) where the step's target sigma lies in
   [0.3, 0.9] and 0 elsewhere (P:271-297; ``sde_low``, ``sde_high``).
2. Advantages over the round (T:1012-1048, ``PerPromptStatTracker`` with ``global_std``, D:72):
   A = (r - the round's mean for that prompt) / (population std of ALL the round's rewards + 1e-4), clipped to
   +-``adv_clip_max`` (5, B:91) and rescaled A / adv_clip_max x ``advantage_max`` (1, D:58; T:1293-1299): A in
   [-1, 1]. Nothing is filtered: the zero-advantage mask is computed but never applied (T:1055-1077).
3. The round's samples shuffled (T:1085-1087) and cut into training minibatches of ``train_batch_size`` (3, D:51;
   T:1102-1112). Per minibatch ``train_timesteps`` (6, D:56) indices into the rollout's timesteps, one per stratum
   of linspace(1, int(T x ``timestep_fraction``), 7) (``discrete_wo_init``, D:88, 60; T:1197-1205; with 14 steps
   the indices 1..11, never the pure-noise one), shared by the minibatch's samples; for each (sample, index) fresh
   noise eps and x_t = (1 - t) x_0 + t eps with x_0 the rollout's final latent and t its sigma (T:1209-1232).
4. Per (sample, t) the flow-matching log-likelihood surrogate in float64, lp = -w(mean (v - (eps - x_0))^2, t)
   with their generalized-Huber weight w(m, t) = ((m + 1e-10)^p - 1e-10^p) t / p, p = ``ghuber_power`` 0.25
   (D:63-64; T:234-252); the PPO form of their ``exp_first`` loss, -A clip(exp(lp - lp_old), 1 +- ``clip_range``)
   (clip 1, D:86; T:1301-1329), where lp_old is lp itself, detached: every minibatch of the on-policy round falls
   in the first accumulation window (T:1226-1229, 1282-1284), so the ratio is exactly 1, nothing is clipped and the
   gradient is A dw/dtheta: the advantage-weighted matching loss.
5. Regularisers (T:1272-1280, 1330-1352): ``kl_weight`` (train.beta 0.001, D:55) x mean (v - v_base)^2 (adapter
   disabled; ``kl_weight`` 'Uniform', D:57) plus ``ema_kl_weight`` (train.ema_beta 1, D:67) x mean (v - v_slow)^2
   ('Uniform', D:65), v_slow from a second adapter that trails the trained one: after each update
   slow <- d slow + (1 - d) current, d = min(0.001 u, ``ema_decay_max``) after u updates (``kl_ema_decay_type``
   'linear', 0.3; D:66, 68; T:649-659, 1409-1419). Per minibatch the mean over its (t, sample) pairs, divided by the
   number of minibatches (accelerate's accumulation), so the update's loss is the round's mean.
6. AdamW lr 3e-4 (D:62), weight decay 1e-4, eps 1e-8, betas (0.9, 0.999), max grad norm 1 (B:70-83); the cosine
   schedule's T_max is 1e10 steps (D:90; T:688-704): a constant lr. Evaluation and saved adapters use an EMA of the
   adapter, decay 0.99 with flow_grpo's warm-up, stepped after every update (D:59, 91-92; T:647, 1391-1392;
   ``eval_ema``; their eval logs both, T:277-484).

Diagnostics: ``matching`` (mean of w, the weighted flow-matching error), ``policy`` (the surrogate's value, -mean A),
``kl``, ``ema_kl``, ``slow_decay``, ``adv_abs`` (mean |A|), ``clipfrac`` (0 on-policy).

Deviations, each a setting or stated here:

- Rollout solver: theirs is the SA-Solver predictor-corrector of order 2 (PEC, P:294-297, sa_solver.py:442-559) on
  a grid whose first sigma is 0.999 and whose second-last is halved (P:272-274); here the harness's one sampler
  takes SA-Solver's order-1 step of the same SDE (``bench.core.flow.sa_solver_step``: the same tau window, noise per
  step sigma_next sqrt(1 - exp(-2 tau^2 h))) on the scheduler's sigmas, the last step landing on the x_0
  prediction as theirs does (``denoise_to_zero``). ``eta`` 0 gives the flow ODE (their pickscore config: tau 0).
- ``time_type`` covers their discrete choices (``discrete_wo_init``, ``discrete``, ``discrete_with_init``,
  T:1172-1205); ``logit_normal`` and ``uniform`` (T:1138-1170, used by no published config) are absent, as are
  ``off_policy`` sampling from the slow adapter (T:883-884, 1233-1240; False in every config) and the 'ELBO' KL
  weights (T:1334-1348; 'Uniform' everywhere).
- Their first two epochs sample nothing and train nothing (a data-loader warm-up, T:879-881, 936-937): not
  reproduced (no update, no query happens in them). Groups never span processes (theirs are spread over 8 GPUs), so
  the advantage's std is one process's round; the published protocol keeps their 216 images per process and update
  as 9 whole groups of 24.
- The slow adapter is a copy of the LoRA tensors swapped in for its forwards instead of a second peft adapter (the
  same function). Precision, resolution and the T5 length are the run's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.checks import FRACTION, Range, above, at_least
from bench.core.families import FLOW_FAMILIES
from methods.base import Method, MethodConfig, batch_stats, swapped
from methods.rounds import TrailingAdapter, check_group, round_batches, sample_round

TIME_TYPES = ("discrete_wo_init", "discrete", "discrete_with_init")
WEIGHTINGS = ("ghuber", "uniform", "t", "t2", "huber")


@dataclass
class AWMConfig(MethodConfig):
    """AWM's settings (scxue/advantage_weighted_matching ``config/dgx_awm.py`` ``geneval_sd3_no_cfg_1node`` names
    in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [train.learning_rate] (3e-4, LoRA)."""
    guidance_scale: float = 1.0
    """Guidance weight while sampling and training [sample.guidance_scale] (1.0: CFG-free; train.cfg False)."""
    eta: float = 0.4
    """SA-Solver stochasticity tau inside the window [sample.noise_level] (geneval, ocr: 0.4; pickscore: 0)."""
    sde: str = "sa-solver"
    """The flow SDE of the window's steps (``bench.core.flow.SDE_STEPS``): SA-Solver's step, order 1."""
    sde_low: float = 0.3
    """Steps whose target sigma is >= this (and <= ``sde_high``) are stochastic (pipeline: 0.3 <= t <= 0.9)."""
    sde_high: float = 0.9
    """Upper end of the stochastic window in sigma (0.9)."""
    group_size: int = 0
    """Samples per prompt [sample.num_image_per_prompt] (24); 0 means batch_size (one prompt per rollout batch)."""
    train_batch_size: int = 0
    """Samples per training minibatch, which share their timesteps [train.batch_size] (3); 0 means batch_size."""
    global_std: bool = True
    """Advantage std: the population std of all the round's rewards [sample.global_std] (True); False: each
    group's own unbiased std."""
    adv_eps: float = 1e-4
    """Added to the advantage's std (their stat tracker: 1e-4)."""
    adv_clip_max: float = 5.0
    """Advantages clipped to [-adv_clip_max, adv_clip_max] [train.adv_clip_max] (5)."""
    advantage_max: float = 1.0
    """Clipped advantages rescaled to [-advantage_max, advantage_max] [train.advantage_max] (1)."""
    clip_range: float = 1.0
    """PPO clip of the (on-policy, exactly 1) likelihood ratio [train.clip_range] (1)."""
    time_type: str = "discrete_wo_init"
    """Training-time sampling [time_type]: one index per stratum of the first int(T x timestep_fraction) steps,
    without step 0 (discrete_wo_init; pickscore: discrete, with it; discrete_with_init: step 0 always)."""
    train_timesteps: int = 6
    """Timesteps trained per sample and round [train.train_timesteps] (6)."""
    timestep_fraction: float = 0.9
    """Fraction of the T sampling steps the training timesteps are drawn from [train.timestep_fraction] (0.9)."""
    weighting: str = "ghuber"
    """Weight of the squared velocity error m at sigma t [train.weighting]: ghuber ((m+1e-10)^p - 1e-10^p) t / p,
    uniform m, t m, t2 t^2 m, huber (sqrt(m + 1e-10) - 1e-5) t."""
    ghuber_power: float = 0.25
    """The power p of the ghuber weighting [train.ghuber_power] (0.25)."""
    kl_weight: float = 1e-3
    """Weight of mean (v - v_base)^2 [train.beta] (geneval 0.001, ocr 0.003, pickscore 0.0001)."""
    ema_kl_weight: float = 1.0
    """Weight of mean (v - v_slow)^2 to the trailing adapter [train.ema_beta] (1)."""
    ema_decay_slope: float = 0.001
    """Trailing-adapter decay d = min(ema_decay_slope x updates, ema_decay_max) [kl_ema_decay_type linear: 0.001]."""
    ema_decay_max: float = 0.3
    """Cap of the trailing-adapter decay [train.kl_ema_decay] (0.3)."""
    eval_ema: float = 0.99
    """Evaluate (and save) an EMA of the adapter with this decay cap, flow_grpo's warm-up, every update
    [train.ema True, ema_decay 0.99, ema_update_step_interval 1]; 0: evaluate the trained weights."""

    RANGES = dict(sde_low=Range(0, 1), sde_high=Range(0, 1), group_size=at_least(0, "0: batch_size"),
                  train_batch_size=at_least(0, "0: batch_size"), adv_eps=above(0), adv_clip_max=above(0),
                  advantage_max=above(0), clip_range=above(0), train_timesteps=at_least(1),
                  timestep_fraction=FRACTION, ghuber_power=above(0), kl_weight=at_least(0),
                  ema_kl_weight=at_least(0), ema_decay_slope=at_least(0),
                  ema_decay_max=Range(0, 1, high_open=True, note="1 would freeze the trailing adapter"),
                  eval_ema=Range(0, 1, high_open=True, note="0: no EMA; 1 would freeze it"))

    def __post_init__(self):
        super().__post_init__()
        if self.time_type not in TIME_TYPES:
            raise ValueError(f"time_type {self.time_type!r} unknown; valid: {', '.join(TIME_TYPES)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {self.weighting!r} unknown; valid: {', '.join(WEIGHTINGS)}")
        if int(self.steps * self.timestep_fraction) <= (self.time_type != "discrete"):
            raise ValueError(f"int(steps x timestep_fraction) = {int(self.steps * self.timestep_fraction)} leaves no "
                             f"timestep to train with time_type {self.time_type}; raise steps or timestep_fraction")
        if self.sde_low > self.sde_high:
            raise ValueError(f"sde_low {self.sde_low} > sde_high {self.sde_high}: an empty window")
        from bench.core.flow import SDE_STEPS

        if self.sde not in SDE_STEPS:
            raise ValueError(f"sde {self.sde!r} unknown; valid: {', '.join(sorted(SDE_STEPS))}")
        round_size = self.batch_size * self.grad_accum
        check_group(round_size, self.group(), self.batch_size)
        if round_size % self.train_batch():
            raise ValueError(f"train_batch_size {self.train_batch()} must divide the round's {round_size} samples "
                             "(batch_size x grad_accum)")

    def group(self) -> int:
        return self.group_size or self.batch_size

    def train_batch(self) -> int:
        return self.train_batch_size or self.batch_size

    def slow_decay(self, updates: int) -> float:
        return min(self.ema_decay_slope * updates, self.ema_decay_max)

    def sampler_config(self):
        from bench.core.sampler import SamplerConfig

        return SamplerConfig(**{**vars(super().sampler_config()), "sde": self.sde})


def time_indices(cfg: AWMConfig, steps: int, generator: torch.Generator) -> torch.Tensor:
    """``train_timesteps`` indices into the rollout's T timesteps, one per stratum (T:1172-1205): with bounds
    linspace(low, int(T x timestep_fraction), n + 1) truncated to integers, lower + floor(u (upper - lower)),
    u ~ U[0, 1); low 1 (discrete_wo_init) or 0 (discrete); discrete_with_init: index 0, then n - 1 strata from 1."""
    n, top = cfg.train_timesteps, int(steps * cfg.timestep_fraction)
    first = torch.zeros(1, dtype=torch.long) if cfg.time_type == "discrete_with_init" else None
    n = n - 1 if first is not None else n
    bounds = torch.linspace(0 if cfg.time_type == "discrete" else 1, top, n + 1)
    lower, upper = bounds[:-1].long(), bounds[1:].long()
    drawn = lower + (torch.rand(n, generator=generator) * (upper - lower)).long()
    return drawn if first is None else torch.cat([first, drawn])


def matching_weight(sq: torch.Tensor, t: torch.Tensor, weighting: str, power: float) -> torch.Tensor:
    """-lp: their ``compute_log_prob_awm`` weighting of the mean squared velocity error ``sq`` at sigma ``t``
    (T:238-251), as a positive loss."""
    if weighting == "ghuber":
        return ((sq + 1e-10) ** power - torch.tensor(1e-10, dtype=sq.dtype) ** power) * t / power
    if weighting == "huber":
        return (torch.sqrt(sq + 1e-10) - 1e-5) * t
    return sq * {"uniform": 1.0, "t": t, "t2": t**2}[weighting]


def awm_loss(v, target, t, adv, cfg: AWMConfig, v_base=None, v_slow=None) -> tuple[torch.Tensor, dict]:
    """Per-sample loss at one training time: the on-policy PPO surrogate of lp = -w (T:1301-1329), plus the two
    velocity regularisers (T:1330-1352); all in float64 as their ``model_output.double()``."""
    dims = tuple(range(1, v.ndim))
    v = v.double()
    w = matching_weight(((v - target.double()) ** 2).mean(dim=dims), t, cfg.weighting, cfg.ghuber_power)
    lp = -w
    ratio = torch.exp(lp - lp.detach())
    adv = adv.to(v.device, torch.float64)
    policy = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range))
    loss, info = policy, dict(matching=float(w.detach().mean()), policy=float(policy.detach().mean()),
                              clipfrac=float(((ratio.detach() - 1).abs() > cfg.clip_range).double().mean()))
    for name, weight, other in (("kl", cfg.kl_weight, v_base), ("ema_kl", cfg.ema_kl_weight, v_slow)):
        term = torch.zeros_like(w) if other is None else ((v - other.double()) ** 2).mean(dim=dims)
        loss = loss + weight * term
        info[name] = float(term.detach().mean())
    return loss, info


class AWM(TrailingAdapter, Method):
    """Advantage-weighted flow matching on the model's own samples, regularised to the base and a trailing adapter."""

    name = "awm"
    Config = AWMConfig
    families = FLOW_FAMILIES  # every family with a flow-matching chain (sd3, flux)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 24, "group_size": 24, "grad_accum": 1,
                                                   "train_batch_size": 3}}
    """geneval: 24 images per prompt, minibatches of 3."""
    inference = {"guidance_scale": 1.0}
    """CFG-free sampling and evaluation, as published (dgx_awm.py: ``sample.guidance_scale = 1.0``): presets leave
    it alone; an explicit ``--set`` is announced in the plan."""
    published = dict(
        batch_size=24,  # D:45 num_image_per_prompt = 24: one group per rollout batch
        group_size=24,
        grad_accum=9,  # D:44-46: 36 batches of 6 per GPU per epoch = 216 images = 9 groups of 24, one update
        train_batch_size=3,  # D:51 train.batch_size = 3 (72 minibatches accumulated, D:52-53)
        steps=14,  # D:37 sample.num_steps = 14 (eval_num_steps = 40)
        guidance_scale=1.0,  # D:39, CFG-free
        eta=0.4,  # D:48 sample.noise_level = 0.4 (SA-Solver tau in 0.3 <= t <= 0.9, P:296)
        lr=3e-4,  # D:62
        weight_decay=1e-4,  # B:76
        max_grad_norm=1.0,  # B:83
        adv_clip_max=5.0,  # B:91
        advantage_max=1.0,  # D:58
        clip_range=1.0,  # D:86
        train_timesteps=6,  # D:56
        timestep_fraction=0.9,  # D:60
        weighting="ghuber",  # D:63
        ghuber_power=0.25,  # D:64
        kl_weight=1e-3,  # D:55 train.beta = 0.001
        ema_kl_weight=1.0,  # D:67 train.ema_beta = 1
        ema_decay_max=0.3,  # D:66 kl_ema_decay = 0.3, linear (D:68)
        eval_ema=0.99,  # D:91
        lora_rank=32,  # T:632-637 LoraConfig(r=32, lora_alpha=64), lora_type attn (D:87)
        lora_alpha=64.0,
        lora_targets="attn.add_k_proj,attn.add_q_proj,attn.add_v_proj,attn.to_add_out,attn.to_k,attn.to_out.0,"
                     "attn.to_q,attn.to_v",  # T:612-622
    )
    """Published protocol: ``config/dgx_awm.py`` ``geneval_sd3_no_cfg_1node`` over ``config/base_awm.py`` (8 GPUs
    there: 1728 images, 72 prompts per epoch; here one process's 216)."""
    trailing = "slow"
    """The trailing adapter of the ``ema_kl`` term (``TrailingAdapter``)."""

    def stochastic_steps(self) -> list[int]:
        """Steps whose target sigma lies in [sde_low, sde_high] (their tau(t) at the step's end, P:296)."""
        cfg = self.config
        self.sampler.set_steps()
        sigmas = self.sampler.chain.sigmas.tolist()
        return [i for i in range(cfg.steps) if cfg.sde_low <= sigmas[i + 1] <= cfg.sde_high]

    def collect(self) -> list[dict]:
        """One round: ``grad_accum`` rollout batches of whole groups with the current adapter, advantages over the
        whole round, the samples shuffled and cut into training minibatches (T:844-1112)."""
        cfg = self.config
        batches, adv = sample_round(self, stochastic=self.stochastic_steps())
        adv = adv.clamp(-cfg.adv_clip_max, cfg.adv_clip_max) / cfg.adv_clip_max * cfg.advantage_max
        return round_batches(batches, cfg.train_batch(), self.generator, adv=adv)

    def time_loss(self, batch: dict, j: int) -> tuple[torch.Tensor, dict]:
        """Per-sample AWM loss of a minibatch at the rollout's timestep index ``j`` (T:1209-1352)."""
        cfg, x0, embeds, t = self.config, batch["x0"], batch["embeds"], batch["timesteps"][j]
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        sigma = self.sampler.chain.sigma(t)
        x_t = (1 - sigma) * x0 + sigma * noise
        v = self.sampler.model_output(x_t, t, embeds)
        v_base = v_slow = None
        with torch.no_grad():
            if cfg.kl_weight > 0:
                with self.base_model():
                    v_base = self.sampler.model_output(x_t, t, embeds)
            if cfg.ema_kl_weight > 0:
                with swapped(self.params, self.slow):
                    v_slow = self.sampler.model_output(x_t, t, embeds)
        return awm_loss(v, noise - x0, sigma.double(), batch["adv"], cfg, v_base, v_slow)

    def step(self) -> dict[str, float]:
        cfg = self.config
        batches = self.collect()
        self.denoiser.train()
        infos, losses = [], []
        for batch in batches:
            n, steps = len(batch["adv"]), len(batch["timesteps"])
            for j in time_indices(cfg, steps, self.generator).tolist():
                loss, info = self.time_loss(batch, j)
                self.backward((loss.sum() / (cfg.train_timesteps * n * len(batches))).float())
                losses.append(float(loss.detach().mean()))
                infos.append(info)
        grad_norm = self.clip_and_step()
        self.updates += 1
        decay = cfg.slow_decay(self.updates)
        with torch.no_grad():
            for p, q in zip(self.params, self.slow):
                q.copy_(q * decay + p.detach() * (1.0 - decay))
        if self.ema is not None:
            self.ema.update(self.params)
        metrics = batch_stats(torch.cat([b["rewards"] for b in batches]))
        metrics.update({k: sum(i[k] for i in infos) / len(infos) for k in infos[0]})
        adv = torch.cat([b["adv"] for b in batches])
        metrics.update(loss=sum(losses) / len(losses), grad_norm=grad_norm, slow_decay=decay,
                       adv_abs=float(adv.abs().mean()), samples=float(cfg.batch_size * cfg.grad_accum))
        return metrics
