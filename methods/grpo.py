"""Group-relative policy gradient (GRPO) on the shared stochastic DDIM sampler, as DanceGRPO does for Stable
Diffusion (Xue et al., arXiv 2505.07818; XueZeyue/DanceGRPO fastvideo/train_grpo_sd.py, fastvideo/config_sd/).

A sampling round, then its updates (one ``step()`` = one optimizer update):

1. Sample (without a graph) a round of ``batch_size x grad_accum x updates_per_batch`` images as whole groups of G
   samples per prompt (``sampling_batch`` images at a time); with ``shared_noise`` the G samples of a prompt start
   from the same x_T (DanceGRPO draws one x_T for all samples of an epoch) and differ through the sampler's
   per-step noise (eta > 0). The sampler records every latent and the log-probability of every stochastic
   transition under the sampling weights.
2. Score them with the true reward and normalise over the round (``group_advantages``): each group's mean and
   unbiased std (+1e-8; DanceGRPO, MixGRPO), or, with ``global_std``, each prompt's mean and the population std of
   the whole round (+``adv_eps``; Flow-GRPO's and DiffusionNFT's stat tracker); clipped to +-``adv_clip_max``. A
   group whose rewards are all equal has advantage exactly 0 (float64). Optionally drop zero-advantage samples
   (``filter_zero_advantage``, Flow-GRPO), then cut the round into ``grad_accum x updates_per_batch`` rollout
   batches, in sampling order (a batch may hold part of a group: MixGRPO's 3 of 12) or shuffled
   (``shuffle_round``, Flow-GRPO).
3. Each update takes the next ``grad_accum`` rollout batches: for a random subset (``timestep_fraction``) of the
   stochastic transitions, recompute the log-probability under the current weights
   (``Sampler.transition_log_prob``), form the ratio to the sampling log-probability and the PPO-clipped loss
   max(-A r, -A clip(r, 1 +- clip_range)), plus optionally ``kl_weight`` times the KL of the transition to the base
   model's (adapter disabled; Flow-GRPO's form ||mu - mu_ref||^2 / (2 sigma^2)); gradients accumulate into ONE
   optimizer update. The first update of a round is on-policy (ratio exactly 1); from the second on the ratio
   leaves 1 and the clip acts (tests pin this). ``eval_ema`` keeps an EMA of the adapter for evaluation.

A rollout batch's reward queries are counted by the step that trains on it (``samples``), so a query budget is
spent on updates, never cut between the sampling of a round and its last update; ``sampled`` records the queries
each collection made (a budget that ends inside a round leaves its untrained batches made but uncounted: they cost
time, not budget, and teach nothing). Groups never span processes: with ``--processes N`` each process samples and
normalises whole groups, and gradients are averaged.

``drop_last_step`` (default, as DanceGRPO's ``[:, :-1]`` in train_grpo_sd.py) leaves the chain's last stochastic
transition out of training: its noise std is about 20x smaller than the others' on a 20-step DDIM chain, and the
log-probability's gradient scales like 1 / sigma, so it would dominate the update.

GRPO-Guard (arXiv 2510.22319; ``methods/grpo_guard.py``), off by default: ``ratio_norm`` replaces the log-ratio by
std (log r + mean((mu - mu_old)^2) / (2 std^2)) (``guard_log_ratio``, mu_old the sampling mean the round keeps), and
``grad_reweight`` divides each transition's clipped loss by its |dt| (flow SDEs).

Differences from DanceGRPO, on purpose: LoRA instead of the full UNet; one random subset of transitions per
rollout batch instead of one per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.checks import Range, above, at_least
from methods.base import EMA, PPO_RANGES, Method, MethodConfig, batch_stats
from methods.rounds import (check_group, group_advantages, group_prompts, masked_columns,  # noqa: F401 (re-exported)
                            nonzero_advantage_mask, random_subsets, round_batches)


@dataclass
class GRPOConfig(MethodConfig):
    """GRPO settings (DanceGRPO fastvideo/config_sd/base.py and dgx.py:hpsv2 names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate (DanceGRPO [train.learning_rate] 1e-5 is for the full UNet; LoRA: DDPO/trl's 3e-4)."""
    weight_decay: float = 1e-4
    """AdamW weight decay [train.adam_weight_decay] (1e-4)."""
    max_grad_norm: float = 1.0
    """Gradient clipping [train.max_grad_norm] (1.0)."""
    eta: float = 1.0
    """DDIM eta while sampling [sample.eta] (1.0); must be > 0 for the policy to have a density."""
    guidance_scale: float = 5.0
    """Guidance weight while sampling and training [sample.guidance_scale, train.cfg] (5.0)."""
    group_size: int = 0
    """Samples G per prompt [num_generations] (hpsv2: 16); 0 means batch_size (one prompt per rollout batch)."""
    shared_noise: bool = True
    """Same initial noise x_T within a group (train_grpo_sd.py: one global_input_latents; flux: --init_same_noise)."""
    clip_range: float = 1e-4
    """PPO ratio clip range [train.clip_range] (1e-4)."""
    adv_clip_max: float = 5.0
    """Advantage clipping [train.adv_clip_max] (5)."""
    timestep_fraction: float = 1.0
    """Fraction of the stochastic transitions trained on, drawn at random [train.timestep_fraction] (SD 1.0, flux 0.6)."""
    kl_weight: float = 0.0
    """Weight of the per-transition KL to the base model (DanceGRPO SD: none, 0; Flow-GRPO's beta)."""
    updates_per_batch: int = 1
    """Optimizer updates per sampled set (dgx.py:hpsv2: 2 per epoch); each update uses grad_accum rollout batches."""
    drop_last_step: bool = True
    """Leave the last stochastic transition out of training (train_grpo_sd.py: ``log_probs[:, :-1]``, and
    ``num_train_timesteps = (num_steps - 1) * timestep_fraction``)."""
    per_sample_timesteps: bool = False
    """Draw the trained subset of transitions for each sample (DanceGRPO flux: a permutation per sample) instead of
    one subset per rollout batch (train_grpo_sd.py). The number trained per sample is the same either way."""
    global_std: bool = False
    """Divide advantages by the population std of ALL the sampling round's rewards instead of the group's unbiased
    std, the mean staying the prompt's (Flow-GRPO / DiffusionNFT ``sample.global_std`` with their
    ``PerPromptStatTracker``: ``np.std`` of the epoch's gathered rewards)."""
    eval_ema: float = 0.0
    """Evaluate (and save) an EMA of the adapter with this decay cap (``methods.base.EMA``; Flow-GRPO 0.9); 0: the
    trained weights."""
    ema_interval: int = 1
    """Optimizer steps between EMA updates (Flow-GRPO ``update_step_interval`` 8); each update is applied once per
    rollout batch of the step (``grad_accum``), as their per-micro-batch ``ema.step`` call does."""
    filter_zero_advantage: bool = False
    """Drop the round's samples whose advantage is exactly 0 before training, re-adding dropped ones at random until
    the kept count divides into the round's rollout batches (Flow-GRPO train_sd3.py@ac4c86e:796-817); the updates
    per round stay, their batches shrink."""
    shuffle_round: bool = False
    """Shuffle the sampling round's samples before cutting them into the updates' rollout batches (Flow-GRPO
    ``train_sd3.py``: ``torch.randperm`` over the epoch's samples); False: updates take the batches in sampling
    order (DanceGRPO: sample by sample)."""
    adv_eps: float = 1e-8
    """Added to the std in the advantage's denominator (DanceGRPO 1e-8; Flow-GRPO's stat tracker 1e-4)."""
    detach_uncond: bool = False
    """No gradient through guidance's unconditional branch when log-probabilities are recomputed (Flow-GRPO
    ``compute_log_prob``)."""
    kl_per_time: bool = False
    """Flow chains: the KL over the SDE's squared diffusion coefficient g^2 instead of the transition's variance
    g^2 |dt|, i.e. the Gaussian KL times |dt| (Flow-GRPO's ``kl_loss`` divides by ``std_dev_t ** 2``, which has no
    sqrt(-dt)); its beta 0.04 is set on that scale."""
    sde: str = ""
    """Flow chains (sd3): the SDE of the stochastic steps, a name in ``bench.core.flow.SDE_STEPS`` (flow-grpo,
    dance-grpo, cps); empty on the sd family, whose stochastic step is DDIM's eta."""
    ratio_norm: bool = False
    """GRPO-Guard's RatioNorm (arXiv 2510.22319; ``guard_log_ratio``): the log-ratio recentred by the mean drift
    term and scaled by the transition's std, so that it is centred on 0 with a comparable spread at every step."""
    grad_reweight: bool = False
    """GRPO-Guard's gradient re-weighting: each transition's clipped policy loss divided by its step length |dt|
    (flow SDEs only; the KL term is not re-weighted)."""
    schedule: str = "scheduler"
    """Flow chains (sd3): the rollouts' sigma schedule, ``scheduler`` or ``shifted-linspace`` (DanceGRPO's;
    ``bench.core.sampler.SamplerConfig.schedule``). Evaluation always uses the pipeline's own."""
    decode: str = "final"
    """What a rollout decodes for its reward: ``final`` latent or the last step's x0 prediction ``last-x0``
    (DanceGRPO; ``bench.core.sampler.SamplerConfig.decode``)."""

    RANGES = dict(PPO_RANGES, group_size=at_least(0, "0: batch_size"), kl_weight=at_least(0),
                  updates_per_batch=at_least(1), adv_eps=above(0, "keeps a constant group's advantage at 0"),
                  eval_ema=Range(0, 1, high_open=True, note="0: no EMA; 1 would freeze it"), ema_interval=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.eta <= 0:
            raise ValueError("grpo needs eta > 0 (a stochastic sampler has log-probabilities); set eta=1.0")
        check_group(self.round_size(), self.group(), self.sampling_batch())
        if self.updates_per_batch < 1:
            raise ValueError(f"updates_per_batch must be >= 1, got {self.updates_per_batch}")
        for flag in ("kl_per_time", "grad_reweight"):
            if getattr(self, flag) and not self.sde:
                raise ValueError(f"{flag} needs a flow SDE (sde=flow-grpo, dance-grpo, cps): DDIM steps have no |dt|")
        if self.sde:
            from bench.core.flow import SDE_STEPS

            if self.sde not in SDE_STEPS:
                raise ValueError(f"sde {self.sde!r} unknown; valid: {', '.join(sorted(SDE_STEPS))} (empty: DDIM)")
        self.sampler_config()  # schedule and decode are checked where they are defined
        if self.drop_last_step and self.steps < 2:
            raise ValueError("drop_last_step leaves no transition to train on with steps=1; set steps >= 2 or "
                             "drop_last_step=false")

    def group(self) -> int:
        return self.group_size or self.batch_size

    def round_size(self) -> int:
        """Samples of one sampling round: ``updates_per_batch`` updates of ``grad_accum`` rollout batches each."""
        return self.batch_size * self.grad_accum * self.updates_per_batch

    def sampling_batch(self) -> int:
        """Images sampled at once: the rollout batch when it holds whole groups, else one group (MixGRPO trains
        3 samples of a group of 12 per update; the group is sampled whole first)."""
        return self.batch_size if self.batch_size % self.group() == 0 else self.group()

    def sampler_config(self):
        from bench.core.sampler import SamplerConfig

        cfg = super().sampler_config()
        return SamplerConfig(**{**vars(cfg), "sde": self.sde, "schedule": self.schedule, "decode": self.decode})


class GRPO(Method):
    """Group-normalised advantages, clipped importance ratio on random transitions of the stochastic sampler."""

    name = "grpo"
    Config = GRPOConfig
    families = ("sd",)  # the DDIM chain's eta; on sd3 the flow methods (flow-grpo, dance-grpo, mixgrpo) select an SDE
    preset_overrides = {"paper": {"batch_size": 16, "group_size": 16, "grad_accum": 1}}
    """DanceGRPO dgx.py:hpsv2: 16 samples per prompt."""
    published = dict(
        batch_size=16,  # dgx.py hpsv2(): num_generations = 16 samples of one prompt per rollout batch
        group_size=16,  # dgx.py hpsv2(): num_generations = chosen_number = 16
        grad_accum=1,
        updates_per_batch=2,  # dgx.py hpsv2(): "2 gradient updates per epoch"
        steps=50,  # base.py: sample.num_steps = 50
        eta=1.0,  # base.py: sample.eta = 1.0
        guidance_scale=5.0,  # base.py: sample.guidance_scale = 5.0 (train.cfg = True)
        weight_decay=1e-4,  # base.py: train.adam_weight_decay = 1e-4
        max_grad_norm=1.0,  # base.py: train.max_grad_norm = 1.0
        clip_range=1e-4,  # base.py: train.clip_range = 1e-4
        adv_clip_max=5.0,  # base.py: train.adv_clip_max = 5
        timestep_fraction=1.0,  # base.py: train.timestep_fraction = 1.0
        kl_weight=0.0,  # train_grpo_sd.py: no KL term
        drop_last_step=True,  # train_grpo_sd.py: log_probs[:, :-1]
    )
    """Published protocol: XueZeyue/DanceGRPO ``fastvideo/config_sd/base.py`` and ``dgx.py`` ``hpsv2()``. Its
    learning rate (base.py 1e-5) is for the full UNet; with LoRA the harness keeps its own default (DDPO's 3e-4)."""

    def setup(self) -> None:
        super().setup()
        self.buffer: list[dict] = []
        self.rounds = 0
        """Sampling rounds collected so far (MixGRPO's window moves in rounds)."""
        cfg = self.config
        if cfg.eval_ema > 0:
            self.ema = EMA(self.params, cfg.eval_ema, cfg.ema_interval, repeats=cfg.grad_accum)

    def stochastic_steps(self) -> range | None:
        """The sampling steps that are stochastic and trainable this round (None: all; MixGRPO: its window)."""
        return None

    def collect(self) -> list[dict]:
        """One sampling round, sampled before any update: ``round_size`` samples as whole groups (``sampling_batch``
        at a time), advantages normalised over the round (``group_advantages``), then cut into the updates'
        rollout batches of ``batch_size``, in sampling order or (``shuffle_round``, Flow-GRPO) shuffled."""
        cfg, g, size = self.config, self.config.group(), self.config.sampling_batch()
        sampled, prompts_all = [], []
        self.denoiser.eval()
        for _ in range(cfg.round_size() // size):
            prompts = group_prompts(self.prompts, size, g, self.generator)
            x_T = None
            if cfg.shared_noise:
                x_T = self.sampler.initial_noise(size // g, self.generator).repeat_interleave(g, dim=0)
            with torch.no_grad():
                rollout = self.sampler.sample(prompts, generator=self.generator, latents=x_T,
                                              stochastic=self.stochastic_steps())
                rewards = self.reward(rollout.images, prompts).float()
            prompts_all += prompts
            sampled.append(dict(
                latents=rollout.latents, timesteps=rollout.timesteps, log_probs=rollout.log_probs,
                steps=torch.tensor(rollout.log_prob_steps), embeds=rollout.prompt_embeds,
                chosen=self.choose(rollout.log_probs.shape[1], size), rewards=rewards,
                window=torch.full((size,), self.stochastic_steps_start(), dtype=torch.long),
                **({"means": rollout.means} if cfg.ratio_norm else {}),
            ))
        rewards = torch.cat([b["rewards"] for b in sampled])
        signed = rewards if self.reward.higher_is_better else -rewards
        adv = group_advantages(signed, g, global_std=cfg.global_std, eps=cfg.adv_eps, prompts=prompts_all)
        keep = None
        if cfg.filter_zero_advantage:
            keep = nonzero_advantage_mask(adv, cfg.grad_accum * cfg.updates_per_batch, self.generator)
        return round_batches(sampled, cfg.batch_size, self.generator if cfg.shuffle_round else None, keep,
                             advantages=adv)

    def stochastic_steps_start(self) -> int:
        """First step of ``stochastic_steps`` (0 when every step is stochastic), recorded with each sample."""
        steps = self.stochastic_steps()
        return steps.start if isinstance(steps, range) and len(steps) else 0

    def choose(self, n: int, batch: int) -> torch.Tensor:
        """[batch, n] mask of the trained transitions (columns of the rollout's log-probabilities): the same
        ``timestep_fraction`` of them, at random, for the whole sampled batch or (``per_sample_timesteps``) per
        sample."""
        cfg = self.config
        n_train = n - int(cfg.drop_last_step and n > 1)  # the last transition's std is the smallest (docstring)
        m = max(1, int(n_train * cfg.timestep_fraction))
        rows = batch if cfg.per_sample_timesteps else 1
        return random_subsets(rows, n, n_train, m, self.generator).expand(batch, n).clone()

    def transition_loss(self, batch: dict, c: int, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-sample clipped surrogate (+ KL) of transition column ``c`` for samples ``rows``, and diagnostics."""
        cfg = self.config
        j = int(batch["steps"][c])  # the sampling step of this column: x_j -> x_{j+1}
        x, x_prev, t = batch["latents"][rows, j], batch["latents"][rows, j + 1], batch["timesteps"][j]
        embeds, old = batch["embeds"][rows], batch["log_probs"][rows, c]
        log_prob, mean, std = self.sampler.transition_log_prob(x, t, embeds, x_prev, detach_uncond=cfg.detach_uncond)
        log_ratio = log_prob - old
        if cfg.ratio_norm:
            log_ratio = guard_log_ratio(log_ratio, mean, batch["means"][rows, c], std)
        ratio = torch.exp(log_ratio)
        adv = batch["advantages"][rows].clamp(-cfg.adv_clip_max, cfg.adv_clip_max).to(ratio)
        clipped = torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
        loss = torch.maximum(-adv * ratio, -adv * clipped)
        if cfg.grad_reweight:
            loss = loss / self.sampler.chain.step_length(t)
        kl = torch.zeros(len(rows))
        if cfg.kl_weight > 0:
            with torch.no_grad(), self.base_model():
                _, ref_mean, _ = self.sampler.transition_log_prob(x, t, embeds, x_prev)
            kl = ((mean - ref_mean) ** 2).mean(dim=tuple(range(1, mean.ndim))) / (2 * std**2)
            if cfg.kl_per_time:
                kl = kl * self.sampler.chain.step_length(t)
            loss = loss + cfg.kl_weight * kl
        diff = (log_prob - old).detach()
        info = dict(
            approx_kl=float(0.5 * (diff**2).mean()),
            clipfrac=float(((ratio.detach() - 1).abs() > cfg.clip_range).float().mean()),
            ratio_max_dev=float((ratio.detach() - 1).abs().max()),
            kl=float(kl.detach().mean()),
        )
        return loss, info

    def train_batch(self, batch: dict, scale: float) -> tuple[list[float], list[dict]]:
        """Backpropagate ``scale`` times the batch's loss: each sample's chosen transitions averaged, samples
        averaged (``masked_columns``)."""
        mask = batch["chosen"]
        per_sample = mask.sum(dim=1).clamp(min=1).to(torch.float32)
        losses, infos = [], []
        for c, rows in masked_columns(mask):
            loss, info = self.transition_loss(batch, c, rows)
            self.backward((loss / per_sample[rows].to(loss)).sum() * scale / len(mask))
            losses.append(float(loss.detach().mean()))
            infos.append(info)
        return losses, infos

    def step(self) -> dict[str, float]:
        cfg = self.config
        sampled = 0
        if not self.buffer:
            self.buffer = self.collect()
            self.rounds += 1
            sampled = cfg.batch_size * len(self.buffer)
        else:
            self.sampler.set_steps()  # a resumed buffer: the chain's schedule (flow sigmas) is not set up yet
        batches, self.buffer = self.buffer[: cfg.grad_accum], self.buffer[cfg.grad_accum:]
        queries = cfg.batch_size * len(batches)  # counted when trained on (module docstring)
        self.denoiser.train()
        losses, infos = [], []
        for batch in batches:
            more_losses, more_infos = self.train_batch(batch, 1.0 / cfg.grad_accum)
            losses += more_losses
            infos += more_infos
        grad_norm = self.clip_and_step()
        if self.ema is not None:
            self.ema.update(self.params)
        metrics = batch_stats(torch.cat([b["rewards"] for b in batches]))  # the rewards of the samples trained on
        metrics.update({k: sum(i[k] for i in infos) / len(infos) for k in ("approx_kl", "clipfrac", "kl")})
        metrics.update(
            ratio_max_dev=max(i["ratio_max_dev"] for i in infos),
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            grad_steps=float(sum(int(b["chosen"].sum()) for b in batches)) / (len(batches) * cfg.batch_size),
            samples=float(queries),
            sampled=float(sampled),  # reward queries made by this step's sampling (all U updates' batches)
        )
        if self.stochastic_steps() is not None:  # a window (MixGRPO): the one the trained-on data was sampled in
            metrics["window_start"] = float(torch.cat([b["window"] for b in batches]).float().mean())
        return metrics

    def state_dict(self) -> dict:
        """Adds the not yet trained-on rollout batches (``updates_per_batch`` > 1) to the resume state."""
        return {**super().state_dict(), "buffer": [dict(b) for b in self.buffer], "rounds": self.rounds,
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer = [dict(b) for b in state.get("buffer", [])]
        self.rounds = int(state.get("rounds", 0))
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


def guard_log_ratio(log_ratio: torch.Tensor, mean, old_mean, std: float) -> torch.Tensor:
    """GRPO-Guard's RatioNorm of a Gaussian transition's log-ratio: std (log r + mean((mu - mu_old)^2) / (2 std^2)).

    With x_next = mu_old + std eps (sampled by the old policy) the exact log r is mean(eps d) / std - mean(d^2) /
    (2 std^2), d = mu - mu_old: a negative drift (the ratio's mean below 1) and a spread ~ 1 / std that differs from
    step to step. Adding the drift back and multiplying by std leaves mean(eps d), centred on 0 whatever the step
    (means over the latent dimensions, as the log-probabilities)."""
    drift = ((mean.float() - old_mean.float()) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    return std * (log_ratio + drift / (2 * std**2))


@dataclass
class GRPOKLConfig(GRPOConfig):
    """GRPO with Flow-GRPO's KL regulariser on (the regularised configuration of the comparison)."""

    kl_weight: float = 0.04
    """Weight of the per-transition KL to the base model (Flow-GRPO ``config/grpo.py``: ``train.beta = 0.04``)."""


class GRPOKL(GRPO):
    """``grpo`` with ``kl_weight`` 0.04 by default: a run id of its own beside unregularised ``grpo``."""

    name = "grpo-kl"
    Config = GRPOKLConfig
