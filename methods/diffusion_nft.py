"""DiffusionNFT (Zheng et al., arXiv 2509.16117; NVlabs/DiffusionNFT @ 24af555 ``scripts/train_nft_sd3.py`` (T),
``config/nft.py`` ``sd3_geneval`` (N), ``flow_grpo/ema.py``): online reinforcement learning on the forward process.
No likelihoods, no SDE: the rollouts are the deterministic sampler's (here the flow ODE), and the policy is improved
by a flow-matching regression that contrasts a positive and a negative implicit policy.

One step (one epoch of theirs, one optimizer update; T:801, 983):

1. Sample ``batch_size * grad_accum`` images as whole groups of ``group_size`` per prompt with the *old* adapter
   (no graph, eta 0, CFG-free: N:64, ``Method.inference``; T:640) and score them with the true reward;
   A = (r - the round's mean for that prompt) / (population std of ALL the round's rewards + 1e-4) (their
   ``PerPromptStatTracker`` with ``global_std``, cleared every epoch, T:769), clipped to +-``adv_clip_max``; the
   optimality weight r = clamp(A / adv_clip_max / 2 + 1/2, 0, 1) in [0, 1] (T:910-929). The round's samples are
   shuffled before they are cut into rollout batches (T:806).
2. For each sample, a random ``timestep_fraction`` of the sampler's T timesteps (a permutation per sample; 9 of
   10 there, T:810-816): fresh noise eps, x_t = sigma eps + (1 - sigma) x_0 (the chain's re-noising), and the
   current, old and (for the KL) base velocities v, v_old, v_ref. The implicit policies are
   v+ = beta v + (1 - beta) v_old and v- = (1 + beta) v_old - beta v, with x_0 predictions x0+- = x_t - sigma v+-.
3. Loss, per sample: adv_clip_max (r L+ + (1 - r) L-) / beta, L+- = mean (x0+- - x_0)^2 / stopgrad(mean |x0+- -
   x_0|) (their adaptive weight in float64, floored at 1e-5), plus ``kl_weight`` mean (v - v_ref)^2 (base =
   adapter disabled) (T:894-970).
4. After the update the old adapter moves towards the current one: old <- d old + (1 - d) current with
   d = min(0.001 u, 0.5) after u updates (their ``decay_type`` 1, T:169-189, 1034-1039); an EMA of the adapter
   (decay 0.9, flow_grpo's warm-up, every update; T:565-567, 1024-1029) is what evaluation and the saved adapter
   use (T:220-221, 342-343; ``eval_ema``).

Velocities are the guided model output when ``guidance_scale`` > 1 (their code then concatenates the negative
prompt) and the plain conditional one otherwise; their published runs are CFG-free (guidance 1), which presets
never override (``Method.inference``; an explicit ``--set`` is announced).

Diagnostics per update: ``r_mean``, ``r_std``, ``r_extreme`` (fraction of r at 0 or 1), ``old_gap`` (||v - v_old|| /
||v_old||, the relative velocity gap between the current and the old adapter; theirs log the squared gap
``old_deviate``), ``old_decay``, the ``positive`` / ``negative`` terms and ``kl``.

Differences, on purpose: the rollouts use the harness's one sampler (flow-ODE Euler steps) instead of their
second-order DPM-Solver++ (deterministic either way; the training targets x_0 differ slightly); the old adapter is
a copy of the LoRA tensors swapped in for its forwards instead of a second peft adapter (the same function);
decay_type 2 (their OCR config) is absent; rounds are one process's (theirs gather 1152 images over 8 GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.checks import FRACTION, Range, above, at_least
from bench.core.families import FLOW_FAMILIES
from methods.base import Method, MethodConfig, batch_stats, swapped
from methods.rounds import (TrailingAdapter, check_group, masked_columns, random_subsets, round_batches,
                            sample_round)


@dataclass
class DiffusionNFTConfig(MethodConfig):
    """DiffusionNFT's settings (NVlabs/DiffusionNFT ``config/nft.py`` ``sd3_geneval`` names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate [train.learning_rate] (3e-4, LoRA)."""
    guidance_scale: float = 1.0
    """Guidance weight while sampling and training [sample.guidance_scale] (1.0: CFG-free)."""
    group_size: int = 0
    """Samples per prompt [sample.num_image_per_prompt] (24); 0 means batch_size (one prompt per rollout batch)."""
    nft_beta: float = 1.0
    """Guidance strength beta of the implicit policies [config.beta] (geneval, pickscore, hpsv2: 1.0; ocr: 0.1)."""
    adv_clip_max: float = 5.0
    """Advantage clip; r maps [-adv_clip_max, adv_clip_max] linearly onto [0, 1] [train.adv_clip_max] (5)."""
    adv_eps: float = 1e-4
    """Added to the advantage's std (their stat tracker: 1e-4)."""
    global_std: bool = True
    """Advantage std: the population std of all the round's rewards [sample.global_std] (True); False: each
    group's own unbiased std."""
    timestep_fraction: float = 0.99
    """Fraction of the T timesteps each sample trains on, drawn per sample [train.timestep_fraction] (0.99)."""
    kl_weight: float = 1e-4
    """Weight of mean (v - v_ref)^2 to the base model [train.beta] (1e-4)."""
    decay_slope: float = 0.001
    """Old-adapter decay d = min(decay_slope x updates, decay_max) [decay_type 1: 0.001]."""
    decay_max: float = 0.5
    """Cap of the old-adapter decay [decay_type 1: 0.5]."""
    eval_ema: float = 0.9
    """Evaluate (and save) an EMA of the adapter with this decay cap, flow_grpo's warm-up min((1+s)/(10+s), cap)
    [train.ema = True; EMAModuleWrapper(decay=0.9), train_nft_sd3.py:565-567, used for evaluation at :220-221 and
    checkpoints at :342-343]; 0: evaluate the trained weights."""

    RANGES = dict(group_size=at_least(0, "0: batch_size"), nft_beta=above(0), adv_clip_max=above(0),
                  adv_eps=above(0), timestep_fraction=FRACTION, kl_weight=at_least(0), decay_slope=at_least(0),
                  eval_ema=Range(0, 1, high_open=True, note="0: no EMA; 1 would freeze it"),
                  decay_max=Range(0, 1, high_open=True, note="1 would freeze the old adapter"))

    def __post_init__(self):
        super().__post_init__()
        if self.eta != 0:
            raise ValueError("diffusion-nft samples with the deterministic sampler; set eta=0")
        check_group(self.batch_size * self.grad_accum, self.group(), self.batch_size)

    def group(self) -> int:
        return self.group_size or self.batch_size

    def decay(self, updates: int) -> float:
        return min(self.decay_slope * updates, self.decay_max)


class DiffusionNFT(TrailingAdapter, Method):
    """Negative-aware fine-tuning on the forward process: reward-weighted contrast of two implicit policies."""

    name = "diffusion-nft"
    Config = DiffusionNFTConfig
    families = FLOW_FAMILIES  # every family with a flow-matching chain (sd3, flux)
    preset_overrides: dict[str, dict] = {"paper": {"batch_size": 24, "group_size": 24, "grad_accum": 1}}
    """sd3_geneval: 24 images per prompt."""
    inference = {"guidance_scale": 1.0}
    """CFG-free sampling and evaluation, as published (config/nft.py: ``sample.guidance_scale = 1.0``): presets
    leave it alone; an explicit ``--set`` is announced in the plan."""
    published = dict(
        batch_size=24,  # num_image_per_prompt = 24: one group per rollout batch
        group_size=24,
        grad_accum=2,
        steps=10,  # sample.num_steps = 10 (eval_num_steps = 40)
        guidance_scale=1.0,  # CFG-free
        lr=3e-4,
        weight_decay=1e-4,
        max_grad_norm=1.0,
        nft_beta=1.0,
        adv_clip_max=5.0,
        timestep_fraction=0.99,
        kl_weight=1e-4,
        lora_rank=32,  # train_nft_sd3.py LoraConfig(r=32, lora_alpha=64)
        lora_alpha=64.0,
    )
    """Published protocol: DiffusionNFT ``config/nft.py`` ``sd3_geneval`` (8 GPUs there, 1152 images per epoch)."""
    trailing = "old"
    """The old adapter that samples the rounds and anchors the implicit policies (``TrailingAdapter``)."""

    def old_weights(self):
        """The old adapter in place of the current one (tensor swap, no copy), for no-graph forwards."""
        return swapped(self.params, self.old)

    def collect(self) -> list[dict]:
        """One round (theirs: one epoch): ``grad_accum`` rollout batches of whole groups sampled with the old
        adapter, advantages over the whole round (``group_advantages``: prompt means, the round's population std),
        the samples shuffled across the round (their ``torch.randperm`` before the training minibatches)."""
        cfg = self.config
        batches, adv = sample_round(self, self.old_weights)
        r = (adv.clamp(-cfg.adv_clip_max, cfg.adv_clip_max) / cfg.adv_clip_max / 2 + 0.5).clamp(0, 1).float()
        return round_batches(batches, cfg.batch_size, self.generator, r=r)

    def velocity(self, x, t, embeds):
        return self.sampler.model_output(x, t, embeds)

    def timestep_loss(self, batch: dict, j: int, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-sample NFT loss at the chain's timestep ``j`` for samples ``rows``."""
        cfg, beta = self.config, self.config.nft_beta
        x0, embeds, r, t = batch["x0"][rows], batch["embeds"][rows], batch["r"][rows], batch["timesteps"][j]
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        x_t = self.sampler.renoise(x0, t, noise)
        sigma = float(self.sampler.chain.sigma(t))
        v = self.velocity(x_t, t, embeds)
        with torch.no_grad():
            with self.old_weights():
                v_old = self.velocity(x_t, t, embeds)
            v_ref = None
            if cfg.kl_weight > 0:
                with self.base_model():
                    v_ref = self.velocity(x_t, t, embeds)
        dims = tuple(range(1, x0.ndim))
        terms = []
        for v_implicit in (beta * v + (1 - beta) * v_old, (1 + beta) * v_old - beta * v):
            err = x_t - sigma * v_implicit - x0
            weight = err.detach().abs().double().mean(dim=dims).clamp(min=1e-5).to(err)
            terms.append((err**2).mean(dim=dims) / weight)
        positive, negative = terms
        loss = cfg.adv_clip_max * (r * positive + (1 - r) * negative) / beta
        kl = torch.zeros(len(rows))
        if v_ref is not None:
            kl = ((v - v_ref) ** 2).mean(dim=dims)
            loss = loss + cfg.kl_weight * kl
        gap = ((v.detach() - v_old).flatten(1).norm(dim=1) / v_old.flatten(1).norm(dim=1).clamp(min=1e-12))
        return loss, dict(positive=float(positive.detach().mean()), negative=float(negative.detach().mean()),
                          kl=float(kl.detach().mean()), old_gap=float(gap.mean()))

    def step(self) -> dict[str, float]:
        cfg = self.config
        batches = self.collect()
        self.denoiser.train()
        infos, losses = [], []
        for batch in batches:
            n, steps = len(batch["r"]), len(batch["timesteps"])
            m = max(1, int(steps * cfg.timestep_fraction))
            mask = random_subsets(n, steps, steps, m, self.generator)  # a permutation of the timesteps per sample
            for j, rows in masked_columns(mask):
                loss, info = self.timestep_loss(batch, j, rows)
                self.backward(loss.sum() / (m * n * cfg.grad_accum))
                losses.append(float(loss.detach().mean()))
                infos.append(info)
        grad_norm = self.clip_and_step()
        self.updates += 1
        decay = cfg.decay(self.updates)
        with torch.no_grad():
            for p, q in zip(self.params, self.old):
                q.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if self.ema is not None:
            self.ema.update(self.params)
        metrics = batch_stats(torch.cat([b["rewards"] for b in batches]))
        metrics.update({k: sum(i[k] for i in infos) / len(infos) for k in ("positive", "negative", "kl", "old_gap")})
        r = torch.cat([b["r"] for b in batches])
        metrics.update(loss=sum(losses) / len(losses), grad_norm=grad_norm, old_decay=decay,
                       r_mean=float(r.mean()), r_std=float(r.std(unbiased=False)),
                       r_extreme=float(((r == 0) | (r == 1)).float().mean()),
                       samples=float(cfg.batch_size * len(batches)))
        return metrics
