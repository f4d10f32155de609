"""GRPO-Guard (Wang et al., arXiv 2510.22319, "Mitigating Implicit Over-Optimization in Flow Matching via Regulated
Clipping"): ``flow-grpo`` with the importance ratio normalised per transition (RatioNorm) and the policy loss
re-weighted by 1 / |dt|. No authors' code is public; the formulas follow the paper's description (ratio normalised
back to mean 1 with a step-consistent spread, "1/dt" gradient re-weighting) as two public implementations write
them, which agree on the ratio:

- X-GenGroup/Flow-Factory @ a0b2bc5 ``src/flow_factory/trainers/grpo.py:500-510`` (``GRPOGuardTrainer.optimize``):
  ``scale = sqrt(-dt) std_dev_t`` (the transition's std), ``mse`` the latent-mean of (mu - mu_old)^2, ratio
  ``exp((log_prob - old_log_prob) scale + mse / (2 scale))``; mu_old stored at sampling (``next_latents_mean``).
- verl-omni ``verl_omni/trainer/diffusion/diffusion_algos.py`` ``GRPOGuardLoss.compute_loss``: the same ratio,
  ``exp((log_ratio + mse / (2 scale^2)) scale)``, and the clipped loss divided by ``sqrt_dt^2`` = |dt|.

Here (``methods.grpo``): ``ratio_norm`` gives log r_hat = std (log r + mean((mu - mu_old)^2) / (2 std^2))
(``guard_log_ratio``; = mean(eps (mu - mu_old)) for x_next = mu_old + std eps, so centred on 0 at every step), with
mu_old the sampling mean the sampler records (``Rollout.means``); ``grad_reweight`` divides each transition's clipped
policy loss by its |dt| (``FlowChain.step_length``), the KL term not. Everything else is ``flow-grpo``'s
(``methods/flow_grpo.py``: its rounds, advantages, 1e-4 clip, KL 0.04 on its scale, EMA, LoRA, 10 steps).

Deviations and differences, each stated:

- The paper's own hyperparameters (clip range, KL weight, learning rate) could not be read here (its text is not in
  the stored corpora; the project page and summaries give none), so ``published`` is Flow-GRPO's with the two
  switches on. Note that RatioNorm shrinks the log-ratio by the transition's std (0.2-0.7 over flow-grpo's trained steps at 10 steps), so
  the same ``clip_range`` is a looser trust region than flow-grpo's; verl-omni's example uses 2e-6
  (``--set flow-grpo-guard.clip_range=2e-6``).
- Against Flow-Factory: it has no 1 / |dt| factor (its only re-weighting is the std scaling inside the ratio); its
  GRPO-Guard runs only with its Flow-SDE dynamics (its CPS log-probability is not a Gaussian density, so the
  normalisation would be wrong there), ours with any SDE of ``bench.core.flow.SDE_STEPS`` (``--set
  flow-grpo-guard.sde=cps``), since our log-probabilities are exact Gaussian densities; its KL is on the velocity or
  the mean without Flow-GRPO's 1 / (2 g^2) scale, ours is flow-grpo's.
- Against verl-omni: it takes std and |dt| as batch means; ours are the transition's own (one timestep per column,
  so the same values).
- Metrics: ``clipfrac`` and ``ratio_max_dev`` describe the normalised ratio (the one clipped); ``approx_kl`` stays
  0.5 (log r)^2 of the raw log-ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.flow_grpo import FlowGRPO, FlowGRPOConfig


@dataclass
class FlowGRPOGuardConfig(FlowGRPOConfig):
    """``flow-grpo``'s settings with GRPO-Guard's two switches on."""

    ratio_norm: bool = True
    """RatioNorm: the log-ratio recentred and scaled by the transition's std (arXiv 2510.22319; Flow-Factory
    grpo.py:500-504)."""
    grad_reweight: bool = True
    """The clipped policy loss divided by the step's |dt| (the paper's "1/dt" re-weighting; verl-omni
    ``GRPOGuardLoss``; Flow-Factory has none)."""


class FlowGRPOGuard(FlowGRPO):
    """Flow-GRPO with GRPO-Guard's regulated clipping: normalised per-step ratios, 1 / |dt| loss weights."""

    name = "flow-grpo-guard"
    Config = FlowGRPOGuardConfig
    published = dict(FlowGRPO.published, ratio_norm=True, grad_reweight=True)
    """Flow-GRPO's published protocol (``methods/flow_grpo.py``) with both GRPO-Guard switches on; the paper's own
    hyperparameters are not available here (module docstring)."""
