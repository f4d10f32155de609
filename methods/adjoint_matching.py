"""Adjoint Matching (Domingo-Enrich, Drozdzal, Karrer, Chen, arXiv 2409.08861): reward fine-tuning as memoryless
stochastic optimal control, solved by regressing the control onto the "lean adjoint". As the first author's SD 1.5
code runs it (microsoft/soc-fine-tuning-sd @ 489f904: ``configs/multi_prompt.yaml`` (Y), ``src/trainers/am_trainer.py``
(A), ``src/trainers/soc_trainer.py`` (S), ``src/SOC_DDIM_scheduler.py`` (D), ``src/train.py`` (R), ``README.md``), on
both families through the shared sampler's chains.

One micro-batch (one Lightning ``training_step`` there; ``grad_accum`` of them per optimizer update, R:116):

1. Trajectories from the *fine-tuned* model with guidance 7.5 under the memoryless schedule (S:479-492): DDIM with
   eta = 1 on ``sd`` (README "Memoryless SOC schedules for DDIM"; Y:16), the memoryless flow SDE g^2 = 2 sigma /
   (1 - sigma) on ``sd3`` (``bench.core.flow.memoryless_step``, the paper's flow case). Both are the chains'
   ``sde = "memoryless"`` step at eta = 1; no graph.
2. Terminal adjoint a_T = -lambda grad_x r(decode(x_T)) (S:461-470, A:158-159), lambda = ``reward_multiplier``
   (Y:34: 100): one reward query per image.
3. Lean adjoint, backwards over every step k = T-1 .. 0 (A:161-170): a_k = a_{k+1} + grad_x <m_k(x_k) - x_k,
   a_{k+1}>, m_k the BASE model's (adapter disabled) noise-free transition mean at the stored x_k, unguided
   (A:64-108; ``guidance_in_adjoint`` false, Y:37). m_k - x_k = h b(x_k): the Euler step of da/dt = -a grad_x b.
4. Loss on ``loss_steps`` = 4 steps (Y:20): half drawn from the first round(0.6 T) steps, half from the rest, without
   replacement (A:204-225). Per image and step, with (mean, std) of the chain's step under the fine-tuned and base
   model, unguided (``guidance_in_control`` false, Y:38): || (mean_ft - mean_base) / std + std a_k ||^2 summed over
   the latent (A:320-328, S:424; D:231-253) = h || u + sigma(t) a ||^2, u the control: the paper's loss with the
   time step as weight. With probability ``prompt_dropout`` (Y:39: 0.2) a micro-batch takes the control with the
   empty prompt instead (S:308-324); the base means of step 3 are reused otherwise (A:304-307).
5. Clipping (A:343-365): the threshold is an EMA (decay 0.9, A:29-31, 178-187) of the 0.9-quantile (Y:41) of
   sqrt(loss) over all processes' images x steps (A:344); entries at or above it count 0 in the mean.
6. AdamW betas (0.9, 0.95), weight decay 0 (Y:8-9, S:163-168), no gradient clipping (Y:12, R:112), linear warm-up
   over 20 updates starting from 0 (Y:28-29, S:177-187).

Deviations, each a setting or stated here:

- LoRA (the harness's) instead of the full UNet; ``lr`` 3e-4, a LoRA rate (DDPO's / Flow-GRPO's), for the code's
  full-UNet 3e-6 (Y:7). ``tf32`` and ``precision`` are the run's.
- The model's own scheduler: the code's fine-tuning scheduler (beta 0.002-0.009, 'trailing' spacing, S:70-74) is
  not used, since evaluation and every other method sample with the model's; so neither is its terminal
  alpha (1 + alpha_last) / 2 (S:91-94), which keeps the last DDIM step stochastic there. Steps whose std is 0 (a
  deterministic last step, e.g. ``set_alpha_to_one``) have no control and are left out of step 4's draw.
- ``steps`` below 4 / 0.6 give one half fewer steps than ``loss_steps``: each half takes what it has.
- Flow family: no released code; the paper's memoryless flow SDE, Euler-Maruyama on the pipeline's sigmas, with
  Flow-GRPO's stand-in at sigma = 1 where g is infinite; the code's settings (lambda, steps in the loss, clipping)
  apply unchanged. Randomness comes from the method's generator (the code reseeds its global RNGs, S:515-516).
- Gradient smoothing (Y:45, off), the offset parameterisation (``learn_offset``, off) and the buffer variant are
  not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core import distributed
from bench.core.checks import Range, above, at_least
from bench.core.flow import MEMORYLESS
from methods.base import Method, MethodConfig, batch_stats


@dataclass
class AdjointMatchingConfig(MethodConfig):
    """Adjoint Matching's settings (soc-fine-tuning-sd ``configs/multi_prompt.yaml`` names in brackets)."""

    lr: float = 3e-4
    """AdamW learning rate; the code's [lr] 3e-6 fine-tunes the whole UNet, with LoRA a LoRA rate (3e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay (soc_trainer.py: weight_decay=0.0)."""
    adam_beta2: float = 0.95
    """AdamW beta2 [beta2] (0.95; beta1 0.9)."""
    max_grad_norm: float = 0.0
    """Gradient clipping [gradient_clip] (0.0: none)."""
    warmup_steps: int = 20
    """Linear learning-rate warm-up over this many updates, the first at lr 0 [warmup_steps] (20); 0: none."""
    guidance_scale: float = 7.5
    """Guidance weight of the fine-tuning trajectories [guidance_scale] (7.5)."""
    eta: float = 1.0
    """Noise scale of the memoryless step [eta] (1.0: memoryless; DDIM's eta on sd, g's factor on sd3)."""
    sde: str = MEMORYLESS
    """The chains' stochastic step: ``memoryless`` (DDIM's eta step on sd, ``memoryless_step`` on sd3)."""
    reward_multiplier: float = 100.0
    """lambda: a_T = -lambda grad r(x_T) [reward_multiplier] (100)."""
    loss_steps: int = 4
    """Steps per trajectory in the loss [num_timesteps_to_load_train] (4): half early, half late."""
    loss_split: float = 0.6
    """The early half is drawn from the first round(loss_split x T) steps (am_trainer.py: 0.6)."""
    clip_quantile: float = 0.9
    """Per-sample clipping at the EMA of this quantile of sqrt(loss) [per_sample_threshold_quantile] (0.9);
    negative: no clipping."""
    clip_ema: float = 0.9
    """Decay of the clipping threshold's EMA (am_trainer.py: EMA_decay 0.9)."""
    prompt_dropout: float = 0.2
    """Chance that a micro-batch's control takes the empty prompt [prompt_dropout] (0.2)."""
    guidance_in_adjoint: bool = False
    """The base drift of the lean adjoint is the guided one [guidance_in_adjoint_computation] (False)."""
    guidance_in_control: bool = False
    """The control is the difference of guided drifts [guidance_in_control_computation] (False)."""

    RANGES = dict(adam_beta2=Range(0, 1, high_open=True), warmup_steps=at_least(0, "0: no warm-up"),
                  reward_multiplier=above(0), loss_steps=at_least(1), loss_split=Range(0, 1, low_open=True),
                  clip_quantile=Range(high=1, note="negative: no clipping"), clip_ema=Range(0, 1, high_open=True),
                  prompt_dropout=Range(0, 1))

    def __post_init__(self):
        super().__post_init__()
        if self.eta <= 0:
            raise ValueError("adjoint-matching needs the memoryless (stochastic) schedule: set eta=1.0")
        if self.sde != MEMORYLESS:
            raise ValueError(f"adjoint-matching samples with the memoryless schedule: sde must be {MEMORYLESS!r}")

    def sampler_config(self):
        from bench.core.sampler import SamplerConfig

        return SamplerConfig(**{**vars(super().sampler_config()), "sde": self.sde})


def lean_adjoint(latents: torch.Tensor, a_final: torch.Tensor, base_mean, keep) -> dict[int, torch.Tensor]:
    """The lean adjoint at the steps in ``keep``: a_T = ``a_final``, then for k = T-1 .. 0, a_k = a_{k+1} +
    grad_x <m_k(x) - x, a_{k+1}> at x = ``latents[:, k]``, with ``base_mean(k, x)`` the base model's noise-free
    transition mean (am_trainer.py ``compute_adjoints`` / ``grad_inner_product``)."""
    a, kept = a_final.detach().float(), {}
    for k in range(latents.shape[1] - 2, -1, -1):
        with torch.enable_grad():
            x = latents[:, k].detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(((base_mean(k, x) - x) * a).sum(), x)
        a = a + grad.detach()
        if k in keep:
            kept[k] = a
    return kept


def matching_terms(mean, base_mean, std: float, adjoint) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (|| (mean - base_mean) / std + std a ||^2, || control x sqrt(h) ||^2, || std a ||^2), sums over
    the latent (am_trainer.py ``compute_loss``: control_times_sqrt_dt = prev_sample_diff / std_dev_t)."""
    control = (mean - base_mean) / std
    target = std * adjoint
    dims = tuple(range(1, mean.ndim))
    return ((control + target) ** 2).sum(dim=dims), (control.detach() ** 2).sum(dim=dims), (target ** 2).sum(dim=dims)


def ema_threshold(value: float, previous: float, updates: int, decay: float) -> float:
    """The code's ``EMA_update``: the first value, then the running mean while updates < 1 / decay, then the EMA."""
    if updates == 0:
        return value
    if updates < 1 / decay:
        return value / (updates + 1) + (1 - 1 / (updates + 1)) * previous
    return decay * previous + (1 - decay) * value


def loss_step_indices(pool: list[int], steps: int, count: int, split: float, generator) -> list[int]:
    """``count`` // 2 indices from the pool's steps before round(split x steps), the rest after, without
    replacement, sorted (am_trainer.py ``sample_time_indices``); a half with fewer steps takes all it has."""
    middle = round(steps * split)
    parts = ([i for i in pool if i < middle], [i for i in pool if i >= middle])
    chosen = []
    for part, n in zip(parts, (count // 2, count - count // 2)):
        order = torch.randperm(len(part), generator=generator)[: min(n, len(part))]
        chosen += [part[int(j)] for j in order]
    return sorted(chosen)


class AdjointMatching(Method):
    """Regress the control (fine-tuned minus base drift) onto the lean adjoint of the reward, memoryless sampling."""

    name = "adjoint-matching"
    Config = AdjointMatchingConfig
    needs_reward_gradient = True
    preset_overrides = {"paper": {"batch_size": 4, "grad_accum": 2}}
    """Matched protocol: 8 images per update as 4 x 2 (the code's micro-batch is 5; 4 images x 4 loss steps keep
    their graphs at once)."""
    published = dict(
        batch_size=5,  # Y:10 batch_size: 5 (per GPU)
        grad_accum=25,  # Y:11 accum_grad_steps: 25 (R:116 accumulate_grad_batches)
        steps=50,  # Y:3 num_inference_steps: 50
        guidance_scale=7.5,  # Y:36 guidance_scale: 7.5
        eta=1.0,  # Y:16 eta: 1.0
        lr=3e-4,  # Y:7 lr: 3e-6 for the full UNet; with LoRA a LoRA rate (DDPO's, Flow-GRPO's 3e-4)
        adam_beta2=0.95,  # Y:9 beta2: 0.95
        weight_decay=0.0,  # S:163-168 weight_decay=0.0
        max_grad_norm=0.0,  # Y:12 gradient_clip: 0.0
        warmup_steps=20,  # Y:28-29 linear_warmup, warmup_steps: 20
        reward_multiplier=100.0,  # Y:34 reward_multiplier: 100.0
        loss_steps=4,  # Y:20 num_timesteps_to_load_train: 4
        clip_quantile=0.9,  # Y:41 per_sample_threshold_quantile: 0.9
        prompt_dropout=0.2,  # Y:39 prompt_dropout: 0.2 (the README's table: 0.0)
    )
    """Published protocol: soc-fine-tuning-sd ``configs/multi_prompt.yaml`` on one GPU (125 trajectories per update);
    on sd3 the same values (the paper's flow runs have no released code)."""

    def setup(self) -> None:
        super().setup()
        cfg = self.config
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        self.updates, self.clip_updates, self.threshold = 0, 0, -1.0

    def prediction(self, x, t, embeds, guided: bool):
        """The denoiser's output for the drift: guided (``Sampler.model_output``) or the plain conditional one."""
        return self.sampler.model_output(x, t, embeds) if guided else self.sampler.denoiser_forward(x, t, embeds)

    def transition(self, x, t, embeds, guided: bool):
        """(mean, std) of the memoryless step from ``x`` at ``t`` (no noise added: the code's zero variance_noise)."""
        return self.sampler.chain.step(self.prediction(x, t, embeds, guided), t, x, self.config.eta)

    def terminal_adjoint(self, x_final, prompts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a_T = -lambda grad_x r(decode(x_T)), the training objective, the images): one query per image."""
        with torch.enable_grad():
            x = x_final.detach().requires_grad_(True)
            images = self.sampler.decode(x)
            with self.autocast():
                objective = self.reward.objective(images, prompts).float()
            if not objective.requires_grad:
                raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is "
                                   "marked differentiable: it detaches its input (no_grad, .numpy(), ...)")
            (grad,) = torch.autograd.grad(objective.sum(), x)
        return -self.config.reward_multiplier * grad.float(), objective.detach(), images.detach()

    def clip(self, losses: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Per-sample clipping mask (1 keeps) against the EMA of the quantile over every process's losses."""
        cfg = self.config
        if cfg.clip_quantile < 0:
            return torch.ones_like(losses), 0.0  # no threshold (reported as 0)
        every, _ = distributed.gather_cat(losses.detach().flatten())
        value = float(torch.quantile(every.float().sqrt(), cfg.clip_quantile))
        self.threshold = ema_threshold(value, self.threshold, self.clip_updates, cfg.clip_ema)
        self.clip_updates += 1
        return (losses.detach().sqrt() < self.threshold).to(losses.dtype), self.threshold

    def adjoint_states(self, latents, timesteps, embeds, a_final, keep) -> tuple[dict, dict]:
        """The lean adjoint at the steps in ``keep`` and the base model's transition means there (the code reuses
        them for the control), from the base model with its adapter disabled."""
        means = {}

        def base_mean(k, x):
            with self.base_model():
                mean, _ = self.transition(x, timesteps[k], embeds, self.config.guidance_in_adjoint)
            if k in keep:
                means[k] = mean.detach()
            return mean

        return lean_adjoint(latents, a_final, base_mean, set(keep)), means

    def micro_batch(self) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        cfg = self.config
        prompts = self.prompts.sample(cfg.batch_size, self.generator)
        with torch.no_grad():
            rollout = self.sampler.sample(prompts, generator=self.generator)
        latents, timesteps, embeds = rollout.latents, rollout.timesteps, rollout.prompt_embeds
        chosen = loss_step_indices(rollout.log_prob_steps, cfg.steps, cfg.loss_steps, cfg.loss_split, self.generator)
        drop = (cfg.prompt_dropout > 0 and not cfg.guidance_in_control
                and float(torch.rand(1, generator=self.generator)) < cfg.prompt_dropout)
        a_final, objective, images = self.terminal_adjoint(latents[:, -1], prompts)
        adjoints, base_means = self.adjoint_states(latents, timesteps, embeds, a_final, chosen)
        if cfg.guidance_in_adjoint != cfg.guidance_in_control or drop:
            base_means = {}  # the control's base drift differs from the adjoint's: recomputed below
        control_embeds = self.sampler.negative_embeds(len(prompts)) if drop else embeds
        terms = []
        for k in chosen:
            x, t = latents[:, k], timesteps[k]
            mean, std = self.transition(x, t, control_embeds, cfg.guidance_in_control)
            if k not in base_means:
                with torch.no_grad(), self.base_model():
                    base_means[k] = self.transition(x, t, control_embeds, cfg.guidance_in_control)[0]
            terms.append(matching_terms(mean, base_means[k], float(std), adjoints[k]))
        losses, control, target = (torch.stack(parts, dim=1) for parts in zip(*terms))  # [B, steps in the loss]
        mask, threshold = self.clip(losses)
        loss = (losses * mask).mean()
        info = dict(control_norm=float((control * mask).mean()), target_norm=float((target * mask).mean()),
                    clipped=float(1 - mask.mean()), threshold=threshold, loss_steps=float(len(chosen)),
                    prompt_dropped=float(drop))
        if self.reward.differentiable:
            scores = objective if self.reward.higher_is_better else -objective
        else:
            with torch.no_grad(), self.autocast():
                scores = self.reward(images, prompts).float()
        return loss, info, scores

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.denoiser.train()
        losses, infos, scores = [], [], []
        for _ in range(cfg.grad_accum):
            loss, info, score = self.micro_batch()
            self.backward(loss / cfg.grad_accum)
            losses.append(float(loss.detach()))
            infos.append(info)
            scores.append(score)
        warmup = min(self.updates / cfg.warmup_steps, 1.0) if cfg.warmup_steps > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * warmup  # LambdaLR's factor at the completed-update count (soc_trainer.py)
        grad_norm = self.clip_and_step()
        self.updates += 1
        metrics = batch_stats(torch.cat(scores))  # the trajectories' final images (whose gradients were taken)
        metrics.update({k: sum(i[k] for i in infos) / len(infos) for k in infos[0]})
        metrics.update(loss=sum(losses) / len(losses), grad_norm=grad_norm, lr_factor=warmup,
                       samples=float(cfg.batch_size * cfg.grad_accum))
        return metrics

    def state_dict(self) -> dict:
        """Adds the update count (warm-up) and the clipping threshold's EMA to the resume state."""
        return {**super().state_dict(), "updates": self.updates, "clip_updates": self.clip_updates,
                "threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates, self.clip_updates = int(state["updates"]), int(state["clip_updates"])
        self.threshold = float(state["threshold"])
