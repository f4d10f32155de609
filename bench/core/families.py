"""Model families: the few static facts that differ between Stable Diffusion (``sd``) and SD 3 (``sd3``).

Everything that runs (timesteps, one step, x_0, re-noising, the denoiser call, prompt encoding, the training target)
lives in the family's chain (``bench.core.chain.DDIMChain``, ``bench.core.flow.FlowChain``), which the one sampler
drives. This module holds what the planner needs before any model is built: which pipeline class a family loads
with, its default LoRA targets, and whether its chain has stochastic transitions (an ``eta`` > 0 and
log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.registry import Registry


@dataclass(frozen=True)
class Family:
    """What is known about a model family without building a model."""

    name: str
    """Family name (``--list`` shows it)."""
    pipeline: str
    """diffusers pipeline class the family loads with."""
    denoiser: str
    """Attribute of the pipeline that is the denoiser LoRA trains."""
    lora_targets: tuple[str, ...]
    """Default LoRA target modules of the denoiser."""
    stochastic: bool
    """Whether the chain has stochastic transitions (eta > 0, log-probabilities); False: eta must be 0."""
    description: str
    """One line for listings."""
    scheduler: str
    """diffusers scheduler class the family samples with (an sd model's own is replaced by it on loading)."""
    sampler: str
    """The evaluation's sampler in words (model cards)."""


FAMILIES = {
    "sd": Family("sd", "StableDiffusionPipeline", "unet", ("to_q", "to_k", "to_v", "to_out.0"), True,
                 "UNet + DDIM, SD 1.x/2.x", "DDIMScheduler", "DDIM, eta 0"),
    # Joint attention: the text stream's own projections (add_*) as Flow-GRPO's SD3 LoRA configs.
    "sd3": Family("sd3", "StableDiffusion3Pipeline", "transformer",
                  ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"),
                  False, "MMDiT + flow-matching Euler ODE, SD 3/3.5", "FlowMatchEulerDiscreteScheduler",
                  "flow-matching Euler ODE"),
}
CHAINS = Registry("chain", {"sd": "bench.core.chain:DDIMChain", "sd3": "bench.core.flow:FlowChain"})


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_pipeline_class(class_name: str) -> Family:
    for fam in FAMILIES.values():
        if fam.pipeline == class_name:
            return fam
    raise ValueError(f"pipeline class {class_name!r} belongs to no model family; valid: "
                     f"{', '.join(f.pipeline for f in FAMILIES.values())}")


def family_of_pipe(pipe) -> Family:
    """The family of a built pipeline (by its denoiser attribute)."""
    for fam in FAMILIES.values():
        if getattr(pipe, fam.denoiser, None) is not None:
            return fam
    raise ValueError(f"{type(pipe).__name__} has none of the denoisers {', '.join(f.denoiser for f in FAMILIES.values())}")


def family_defaults(fam: Family, config_cls=None) -> dict:
    """Method-config values a family sets under the user's own (``--set``): its LoRA targets, and eta 0 where the
    chain is deterministic (methods whose SD default is a stochastic DDIM chain then sample the flow ODE), unless
    the method's config selects a flow SDE by default (``sde``: the flow policy gradients keep their noise level)."""
    out = {"lora_targets": ",".join(fam.lora_targets)}
    if not fam.stochastic and not getattr(config_cls, "sde", ""):
        out["eta"] = 0.0
    return out
