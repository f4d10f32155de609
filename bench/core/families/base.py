"""What every model family is: a ``Family`` (the static facts the planner needs before any model is built, its
built-in models, how a saved or hub model loads) and a ``Chain`` (what the one sampler, ``bench.core.sampler``, asks
of a built pipeline). Each family is one module beside this one (``sd``, ``sd3``) holding its ``Family``, its chain
subclass and its builders; ``bench.core.families`` collects them.

A chain knows its pipeline's denoiser and scheduler and answers, in float32 latent arithmetic:

- ``set_steps(T)``: the T timesteps in sampling order (and the chain's own schedule, e.g. flow sigmas);
- ``step(out, t, x, eta)``: (mean, std) of the transition x_i -> x_{i+1} given the guided model output at ``t``
  (std = 0: deterministic); the sampler adds ``std * noise`` and scores Gaussian log-probabilities;
- ``predict_x0(out, t, x)``: the clean latent the output implies; ``renoise(x0, t, noise)``: forward-diffuse to ``t``;
- ``forward(x, t, states)``: the unguided denoiser call at the sampler's precision (float32 out);
- ``encode(prompts)``: prompt states, ONE tensor [B, L, D] per prompt whatever the family (methods treat it as
  opaque: slice, repeat, concatenate); ``training_pair(x0, generator)``: (noisy latents, timesteps, regression
  target) of the family's pre-training loss (RWR's and ReFL's regulariser);
- ``decode(latents)``: images in [0, 1]; geometry: latent channels, native latent size, down-sampling factor.

Classifier-free guidance, gradient modes, checkpointing and randomness stay in the sampler, family-independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench.core import precision as mp
from bench.core.modules import device_of, dtype_of


@dataclass(frozen=True)
class BuiltIn:
    """A model the harness builds in-process (no download): from code with seeded weights, or shipped weights."""

    build: Callable
    """``build(seed=...)`` -> a diffusers pipeline."""
    stand_in: str | None = None
    """Why its weights are not a real pretrained model's (random weights), or None (trained, shipped)."""
    geometry: tuple[int, int] | None = None
    """(VAE factor, denoiser down-sampling factor) of a model built from code; a shipped one's are read from
    ``folder``."""
    folder: Path | None = None
    """The folder of shipped weights (its configs are read without loading them)."""


@dataclass(frozen=True)
class Family:
    """A model family: what is known without building a model, and how its models are built and sampled."""

    name: str
    """Family name (``--list`` shows it)."""
    pipeline: str
    """diffusers pipeline class the family loads with."""
    denoiser: str
    """Attribute of the pipeline that is the denoiser LoRA trains."""
    denoiser_class: str
    """diffusers class of the denoiser (built without weights to read its module names)."""
    lora_targets: tuple[str, ...]
    """Default LoRA target modules of the denoiser."""
    stochastic: bool
    """Whether the chain has stochastic transitions (eta > 0, log-probabilities); False: eta must be 0."""
    description: str
    """One line for listings."""
    scheduler: str
    """diffusers scheduler class the family samples with."""
    own_scheduler: bool
    """Whether a loaded model keeps its own scheduler; False: it is replaced by ``scheduler`` on loading."""
    sampler: str
    """The evaluation's sampler in words (model cards)."""
    chain: type
    """The family's ``Chain`` subclass (its ``info`` is set to this family)."""
    down_factor: Callable
    """The denoiser's down-sampling factor from its config (a dict): UNet levels or the transformer's patch."""
    load: Callable
    """``load(source, absent)``: the family's pipeline from a diffusers folder or hub id, the components
    ``absent`` lists (``bench.core.models.absent_components``) passed as None; raises OSError / ValueError."""
    tiny: str
    """The family's tiny random built-in model (whose denoiser's module names stand for every built-in one's)."""
    models: dict[str, BuiltIn] = field(default_factory=dict)
    """Its built-in models by name."""
    hub: dict[str, str] = field(default_factory=dict)
    """Short names of its hub checkpoints -> hub ids."""
    t5_encoder: str = ""
    """The pipeline component that is its T5 encoder where its prompt states have a T5 part (the pipeline's
    ``t5_tokens`` of them; diffusers' ``max_sequence_length``), else empty."""
    t5_default: int = 0
    """diffusers' default ``max_sequence_length`` (sd3: 256, flux: 512): the T5 tokens of a pipeline that sets none."""
    facts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Integer pipeline attributes a saved folder records (``bench.core.models.MODEL_FACTS``) to sample as the
    harness did, each with its valid (low, high): sd3's ``t5_tokens``; flux's also ``default_sample_size``."""
    embedded_guidance: float | None = None
    """The guidance-embedding value the family's models are distilled for; set: ``guidance_scale`` is that embedding
    on this family (one pass; classifier-free guidance only from ``true_cfg_scale``) and the planner gives it to every
    method and the evaluation under the user's ``--set`` (``family_defaults``); None: ``guidance_scale`` is the
    classifier-free weight (sd, sd3)."""

    def __post_init__(self):
        self.chain.info = self


class Chain:
    """Base: the pieces every family shares (precision, decode, geometry)."""

    info: Family

    def __init__(self, pipe, config):
        self.pipe, self.config = pipe, config
        self.scheduler, self.vae = pipe.scheduler, pipe.vae
        self.denoiser = getattr(pipe, self.info.denoiser)

    @property
    def family(self) -> str:
        return self.info.name

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return self.info.lora_targets

    @property
    def device(self) -> torch.device:
        return device_of(self.denoiser)  # diffusers' .device, remembered (bench.core.modules)

    def autocast(self, enabled: bool = True):
        return mp.autocast(self.device, self.config.precision, enabled)

    @property
    def latent_channels(self) -> int:
        return self.denoiser.config.in_channels

    @property
    def native_latent_size(self) -> int:
        """Latent height = width at the model's native resolution (the UNet's and SD3 transformer's
        ``sample_size``)."""
        return self.denoiser.config.sample_size

    @property
    def latent_size(self) -> int:
        """Latent height = width the sampler draws: the native size, or ``config.resolution``'s (checked)."""
        resolution = getattr(self.config, "resolution", 0)
        if not resolution:
            return self.native_latent_size
        return check_resolution(resolution, self.vae_factor, self.down_factor)

    @property
    def cfg_scale(self) -> float:
        """The classifier-free guidance weight the sampler applies (<= 1: one unguided pass): ``guidance_scale``."""
        return self.config.guidance_scale

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE blocks - 1), as diffusers' ``vae_scale_factor``."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def check_eta(self, eta: float) -> None:
        """Raise ``ValueError`` where the chain has no transition for this eta."""

    init_sigma = 1.0

    @property
    def down_factor(self) -> int:
        return self.info.down_factor(self.denoiser.config)

    def decode_scale(self, latents):
        return latents / self.vae.config.scaling_factor

    def decode(self, latents):
        """Images in [0, 1] from final latents (float32 out; autocast unless ``vae_fp32``)."""
        vae = self.vae
        with self.autocast(enabled=not self.config.vae_fp32):
            image = vae.decode(self.decode_scale(latents).to(dtype_of(vae)), return_dict=False)[0].float()
        return (image / 2 + 0.5).clamp(0, 1)

    def clip_states(self, tokenizer, encoder, prompts, **kwargs):
        tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt")
        return encoder(tok.input_ids.to(self.device), **kwargs)


def check_resolution(resolution: int, vae: int, unet_down: int) -> int:
    """The latent size of a ``resolution``-pixel image, or ``ValueError`` where the model cannot draw it."""
    step = vae * unet_down
    if resolution < step or resolution % step:
        raise ValueError(f"resolution {resolution} is not a positive multiple of {step} (VAE factor {vae} x denoiser "
                         f"down-sampling {unet_down}); pick e.g. {max(step, resolution // step * step)}")
    return resolution // vae
