"""ReFL, reward feedback learning (ImageReward, Xu et al., arXiv 2304.05977, section 4 and THUDM/ImageReward ReFL.py).

Each rollout runs the sampler without a graph up to a step index s drawn uniformly from the late part of the chain
(the released code: ``random.randint(30, 39)`` of 40 steps, i.e. the last quarter), makes ONE gradient-carrying
(guided) UNet call at that step's timestep, turns its output into the predicted clean latent x0_hat (the
scheduler's ``pred_original_sample``), decodes it and trains on the reward of that image. Exactly one UNet call per
rollout carries gradient (tests pin this). The paper's optional regulariser, the pre-training (denoising) loss
L_pre, is ``pretrain_weight`` (0 = the released code, which has none); the harness has no pre-training image set,
so L_pre is the denoising loss on the batch's own detached x0_hat, a stand-in for the paper's data.

On the flow family (``sd3``) the same step is x0_hat = x - sigma v from one gradient-carrying velocity call at a
late sigma: the core step of Direct-Align (SRPO, Shen et al., arXiv 2509.06942), which recovers the clean image in
one step from a noisy state and backpropagates the reward through it (its noise-injection interpolation and
reward-discounting are not reproduced here).

Differences from the released code, on purpose: the code passes the step *index* (30-39) to the UNet as the
timestep and takes the step's alphas from the previous timestep; here both use the timestep of step s, as the
paper describes. The code samples and trains without guidance; here the sampler's guidance (what evaluation uses)
applies to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.checks import ANY, Range, above, at_least
from methods.base import Method, MethodConfig, batch_stats, denoising_loss


@dataclass
class ReFLConfig(MethodConfig):
    """ReFL settings (ImageReward ReFL.py / scripts/train_refl.sh defaults where they carry over to LoRA)."""

    lr: float = 1e-3
    """AdamW learning rate (ReFL.py: 1e-5 for the full UNet; with LoRA the AlignProp code's LoRA rate 1e-3)."""
    weight_decay: float = 1e-2
    """AdamW weight decay (ReFL.py --adam_weight_decay: 1e-2)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (ReFL.py --max_grad_norm: 1.0)."""
    eta: float = 1.0
    """DDIM eta of the no-graph part (ReFL.py samples with diffusers' DDPMScheduler, i.e. ancestral: eta 1)."""
    stop_from: float = 0.75
    """The gradient step s is drawn uniformly from [floor(stop_from * T), T - 1] (ReFL.py: randint(30, 39) of T=40)."""
    loss: str = "neg"
    """'neg' = -reward; 'hinge' = relu(hinge_target - reward) (ReFL.py: F.relu(-rewards + 2))."""
    hinge_target: float = 2.0
    """Target of the 'hinge' loss (ReFL.py: 2, in ImageReward units; above it an image gives no gradient)."""
    loss_scale: float = 1.0
    """Multiplier of the reward loss. ReFL.py --grad_scale is 1e-3 (full UNet, lr 1e-5); AdamW ignores the scale
    except against its eps 1e-8, and with LoRA on tiny-shapes 1e-3 put whole-adapter gradient norms at 1e-10..1e-7,
    below eps: no learning (measured, README). Hence 1."""
    pretrain_weight: float = 0.0
    """Weight of the pre-training (denoising) loss regulariser L_pre (paper section 4; ReFL.py: none, 0)."""
    checkpointing: bool = True
    """Activation checkpointing on the gradient-carrying UNet call and the decode."""

    RANGES = dict(stop_from=Range(0, 1, high_open=True), hinge_target=ANY, loss_scale=above(0),
                  pretrain_weight=at_least(0))

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in ("neg", "hinge"):
            raise ValueError(f"loss must be 'neg' or 'hinge', got {self.loss!r}")

    def stop_range(self) -> tuple[int, int]:
        """Inclusive range of the gradient step index s."""
        return min(int(self.stop_from * self.steps), self.steps - 1), self.steps - 1


class ReFL(Method):
    """Reward of the one-step x0 prediction from a random late step, backpropagated through that one UNet call."""

    name = "refl"
    Config = ReFLConfig
    needs_reward_gradient = True
    preset_overrides = {"paper": {"batch_size": 2, "grad_accum": 4}}
    """ReFL.py: --train_batch_size 2, --gradient_accumulation_steps 4."""

    def loss_fn(self, objective: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        per_image = -objective if cfg.loss == "neg" else torch.relu(cfg.hinge_target - objective)
        return per_image.mean() * cfg.loss_scale

    def predicted_images(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(images from x0_hat, x0_hat, prompt states, s): no graph before step s, one UNet call with it at s."""
        cfg = self.config
        lo, hi = cfg.stop_range()
        s = int(torch.randint(lo, hi + 1, (1,), generator=self.generator))
        x, embeds, timesteps = self.sampler.sample_until(prompts, s, generator=self.generator)
        t = timesteps[s]
        out = self.sampler.model_output(x, t, embeds, use_checkpoint=cfg.checkpointing)
        x0 = self.sampler.predict_x0(out, t, x)  # DDIM: pred_original_sample; flow: x - sigma v
        return self.sampler.decode(x0, use_checkpoint=cfg.checkpointing), x0, embeds, s

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.denoiser.train()
        true_scores, losses, stops = [], [], []
        for _ in range(cfg.grad_accum):
            prompts = self.prompts.sample(cfg.batch_size, self.generator)
            images, x0, embeds, s = self.predicted_images(prompts)
            objective = self.reward.objective(images, prompts)
            loss = self.loss_fn(objective)
            if cfg.pretrain_weight > 0:
                ones = torch.ones(len(x0), device=x0.device)
                loss = loss + cfg.pretrain_weight * denoising_loss(self.sampler, x0.detach(), embeds, ones, 1,
                                                                   self.generator)
            if not loss.requires_grad:
                raise RuntimeError(f"reward {self.reward.name!r} returned scores without a graph although it is "
                                   "marked differentiable: it detaches its input (no_grad, .numpy(), ...)")
            self.backward(loss / cfg.grad_accum)
            losses.append(float(loss.detach()))
            stops.append(s)
            if self.reward.differentiable:
                true_scores.append(objective.detach() if self.reward.higher_is_better else -objective.detach())
            else:
                true_scores.append(self.reward(images.detach(), prompts))
        grad_norm = self.clip_and_step()
        metrics = batch_stats(torch.cat(true_scores))  # rewards of the one-step predictions trained on
        metrics.update(
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            stop_step=sum(stops) / len(stops),
            grad_steps=1.0,
            samples=float(cfg.batch_size * cfg.grad_accum),
        )
        return metrics
