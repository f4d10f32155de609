"""Sampling rounds of the group policy gradients (``grpo``, ``flow-grpo``, ``dance-grpo``, ``mixgrpo``,
``diffusion-nft``, ``awm``): whole groups of samples per prompt, advantages normalised over the round, the round cut
into the updates' rollout batches; and the trailing adapter of ``awm`` and ``diffusion-nft``. Shared machinery, not a
method: each function cites the reference lines it follows."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from methods.base import EMA


def check_group(round_size: int, group: int, sampling_batch: int | None = None) -> None:
    """``ValueError`` unless ``group`` (>= 2) divides the round's samples and the sampling batch holds whole groups."""
    if group < 2 or round_size % group or (sampling_batch and (sampling_batch % group or round_size % sampling_batch)):
        raise ValueError(f"group_size must be >= 2 and divide the sampling round's {round_size} samples (batch_size x "
                         f"grad_accum x updates_per_batch) and a batch_size that is not a multiple of it must divide "
                         f"it, got group_size {group}; a group of one has no relative advantage")


def group_prompts(prompts, batch_size: int, group: int, generator: torch.Generator) -> list[str]:
    """``batch_size / group`` prompts drawn from the set, each repeated ``group`` times in a row (one group each)."""
    return [p for p in prompts.sample(batch_size // group, generator) for _ in range(group)]


def random_subsets(rows: int, n: int, candidates: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, n] boolean mask: in each row, ``m`` of the first ``candidates`` columns drawn at random."""
    mask = torch.zeros(rows, n, dtype=torch.bool)
    for r in range(rows):
        mask[r, torch.randperm(candidates, generator=generator)[:m]] = True
    return mask


def masked_columns(mask: torch.Tensor):
    """(column, rows that chose it) for each column of ``mask`` some row chose: a column's forward runs on those
    rows only, so per-sample subsets cost what one subset for the whole batch costs."""
    for c in torch.nonzero(mask.any(dim=0)).flatten().tolist():
        yield c, torch.nonzero(mask[:, c]).flatten()


def group_advantages(rewards: torch.Tensor, group_size: int, *, global_std: bool = False, eps: float = 1e-8,
                     prompts: list[str] | None = None) -> torch.Tensor:
    """Advantages of one sampling round's rewards (consecutive groups of ``group_size``), in float64:

    - ``global_std`` False (DanceGRPO ``train_grpo_flux.py``, MixGRPO): (r - group mean) / (group std + eps), the
      group's unbiased std (``torch.std``); exactly 0 where a group's rewards are all equal;
    - ``global_std`` True (Flow-GRPO and DiffusionNFT ``PerPromptStatTracker`` with ``global_std``): (r - mean of
      the round's rewards for the same prompt) / (std of ALL the round's rewards + eps), the population std
      (``np.std``, ddof 0). ``prompts`` (one per reward) key the means, as their tracker does; without them each
      group is its own prompt."""
    r = rewards.detach().double().flatten()
    if global_std:
        keys = prompts if prompts is not None else [i // group_size for i in range(len(r))]
        means = {k: r[[i for i, q in enumerate(keys) if q == k]].mean() for k in dict.fromkeys(keys)}
        centred = r - torch.stack([means[k] for k in keys])
        std = r.std(unbiased=False) if len(r) > 1 else r.new_zeros(())
        return centred / (std + eps)
    g = r.view(-1, group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    adv = centred / (g.std(dim=1, keepdim=True) + eps)
    constant = (g.max(dim=1, keepdim=True).values == g.min(dim=1, keepdim=True).values)
    return torch.where(constant, torch.zeros_like(adv), adv).flatten()


SHARED_KEYS = ("timesteps", "steps")
"""Rollout-batch entries every sample shares (the chain's timesteps, the log-prob columns' steps)."""


def nonzero_advantage_mask(advantages: torch.Tensor, parts: int, generator: torch.Generator) -> torch.Tensor:
    """Flow-GRPO's filter (train_sd3.py@ac4c86e:796-817): keep the samples whose advantage is not exactly 0, then
    re-add dropped ones at random until the kept count divides into ``parts`` minibatches. A round with no
    non-zero advantage keeps every sample (theirs would train on an empty batch)."""
    keep = advantages != 0
    if not keep.any():
        return torch.ones_like(keep)
    short = (-int(keep.sum())) % parts
    dropped = torch.nonzero(~keep).flatten()
    if short and len(dropped) >= short:
        keep[dropped[torch.randperm(len(dropped), generator=generator)[:short]]] = True
    return keep


def round_batches(batches: list[dict], size: int, generator: torch.Generator | None,
                  keep: torch.Tensor | None = None, **round_values: torch.Tensor) -> list[dict]:
    """The round's samples cut into training batches of ``size``: in sampling order, or shuffled first when a
    ``generator`` is given (Flow-GRPO and DiffusionNFT shuffle the epoch's samples before splitting them into
    minibatches: ``torch.randperm`` over the epoch). Every entry but ``SHARED_KEYS`` holds one row per sample;
    ``round_values`` are more such entries given for the whole round at once (its advantages). ``keep``: a mask of
    the samples to train on (``nonzero_advantage_mask``); the batches then shrink so that their number stays the
    round's."""
    merged = {k: torch.cat([b[k] for b in batches]) for k in batches[0] if k not in SHARED_KEYS}
    merged.update(round_values)
    parts = len(merged["rewards"]) // size
    if keep is not None:
        merged = {k: v[keep] for k, v in merged.items()}
    n = len(merged["rewards"])
    if generator is not None:
        order = torch.randperm(n, generator=generator)
        merged = {k: v[order] for k, v in merged.items()}
    shared = {k: batches[0][k] for k in SHARED_KEYS if k in batches[0]}
    return [{**shared, **{k: v[rows] for k, v in merged.items()}} for rows in torch.arange(n).tensor_split(parts)]


def sample_round(method, weights=nullcontext, **sample_kwargs) -> tuple[list[dict], torch.Tensor]:
    """One sampling round of ``awm`` and ``diffusion-nft`` (AWM train_sd3_awm.py:883-1048, DiffusionNFT
    train_nft_sd3.py:640-769): ``grad_accum`` rollout batches of whole groups of ``config.group()`` per prompt,
    sampled and scored without a graph inside ``weights()`` (the adapter to sample with; ``sample_kwargs`` go to
    the sampler), then the advantages of the whole round (``group_advantages`` keyed by the prompts, with the
    config's ``global_std`` and ``adv_eps``; rewards negated where lower is better). Returns the rollout batches
    (``x0`` the final latents, ``embeds``, ``timesteps``, ``rewards``) and the round's float64 advantages."""
    cfg, g = method.config, method.config.group()
    batches, prompts_all = [], []
    method.denoiser.eval()
    for _ in range(cfg.grad_accum):
        prompts = group_prompts(method.prompts, cfg.batch_size, g, method.generator)
        with torch.no_grad(), weights():
            rollout = method.sampler.sample(prompts, generator=method.generator, **sample_kwargs)
            rewards = method.reward(rollout.images, prompts).float()
        prompts_all += prompts
        batches.append(dict(x0=rollout.latents[:, -1], embeds=rollout.prompt_embeds, timesteps=rollout.timesteps,
                            rewards=rewards))
    rewards = torch.cat([b["rewards"] for b in batches])
    signed = rewards if method.reward.higher_is_better else -rewards
    return batches, group_advantages(signed, g, global_std=cfg.global_std, eps=cfg.adv_eps, prompts=prompts_all)


class TrailingAdapter:
    """Mixin of a ``Method`` whose adapter has a copy that trails it (AWM's slow adapter, DiffusionNFT's old one),
    in the attribute ``trailing`` names, with the count of updates that sets the copy's decay and an EMA of the
    adapter for evaluation (decay ``config.eval_ema``; 0: none): their setup and their part of the resume state,
    under the keys ``trailing``, ``updates`` and ``ema``. Each method blends the copy itself after its update (the
    two differ in float order)."""

    trailing: str
    """The copy's attribute and resume-state key ("slow", "old")."""

    def setup(self) -> None:
        super().setup()
        setattr(self, self.trailing, [p.detach().clone() for p in self.params])
        self.updates = 0
        self.ema = EMA(self.params, self.config.eval_ema) if self.config.eval_ema > 0 else None

    def state_dict(self) -> dict:
        """Adds the trailing copy, the update count (its decay) and the EMA to the resume state."""
        return {**super().state_dict(), self.trailing: [q.clone() for q in getattr(self, self.trailing)],
                "updates": self.updates, "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for q, saved in zip(getattr(self, self.trailing), state[self.trailing]):
                q.copy_(saved)
        self.updates = int(state["updates"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
