"""Model families: each is one module beside ``base`` (``sd``: Stable Diffusion 1.x/2.x, ``sd3``: SD 3/3.5, ``flux``:
FLUX.1; the two flow families' chains share ``flowmatch.FlowMatchChain``) that
holds its ``Family`` (the static facts the planner needs before any model is built: pipeline class, denoiser, LoRA
targets, whether its chain is stochastic), its chain (timesteps, one step, x_0, re-noising, the denoiser call,
prompt encoding, the training target: what the one sampler drives) and its built-in models' builders. A model
resolves to its family once (``bench.core.models.family_of``); code asks the family or its chain, never its name.
"""

from __future__ import annotations

from bench.core.families.base import BuiltIn, Chain, Family
from bench.core.families.flowmatch import FlowMatchChain
from bench.core.families.flux import FLUX
from bench.core.families.sd import SD
from bench.core.families.sd3 import SD3

__all__ = ["BuiltIn", "Chain", "Family", "FAMILIES", "FLOW_FAMILIES", "family", "family_of_pipeline_class",
           "family_of_pipe", "family_defaults"]

FAMILIES = {fam.name: fam for fam in (SD, SD3, FLUX)}
FLOW_FAMILIES = tuple(name for name, fam in FAMILIES.items() if issubclass(fam.chain, FlowMatchChain))
"""The families whose chain is a flow-matching chain (flow SDEs, sigmas, step lengths): where the flow methods run."""


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
    """The family of a built pipeline: by its denoiser's class (sd3 and flux both call theirs ``transformer``), else
    by its denoiser attribute (a wrapper such as trl's pipeline)."""
    for fam in FAMILIES.values():
        if type(getattr(pipe, fam.denoiser, None)).__name__ == fam.denoiser_class:
            return fam
    for fam in FAMILIES.values():
        if getattr(pipe, fam.denoiser, None) is not None:
            return fam
    raise ValueError(f"{type(pipe).__name__} has none of the denoisers {', '.join(f.denoiser for f in FAMILIES.values())}")


def family_defaults(fam: Family, config_cls=None) -> dict:
    """Method-config values a family sets under the user's own (``--set``): its LoRA targets, eta 0 where the
    chain is deterministic (methods whose SD default is a stochastic DDIM chain then sample the flow ODE), unless
    the method's config selects a flow SDE by default (``sde``: the flow policy gradients keep their noise level),
    and ``guidance_scale`` where the family embeds it (``Family.embedded_guidance``: a method's classifier-free
    weight or CFG-free pin would otherwise become the embedding's value)."""
    out = {"lora_targets": ",".join(fam.lora_targets)}
    if not fam.stochastic and not getattr(config_cls, "sde", ""):
        out["eta"] = 0.0
    if fam.embedded_guidance is not None:
        out["guidance_scale"] = fam.embedded_guidance
    return out
