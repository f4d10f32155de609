"""What every method shares: its config fields, LoRA set-up, optimizer, seeding, and the ``step()`` contract.

A method is built from (pipeline, reward, prompts, config, seed). ``step()`` performs one optimizer update (or, for
methods whose own code samples a batch and then updates several times from it, one such round: DDPO's trl epoch,
``Config.updates_per_step()``) and returns a dict of floats; it never prints or writes files. ``samples`` in that
dict is the number of reward queries the step made for training (what ``--max-samples`` counts).

Precision (``config.precision``, ``bench.core.precision``): ``setup`` casts the frozen weights, adapters and the
optimizer stay float32, ``backward`` and ``clip_and_step`` go through a gradient scaler (enabled for fp16 only),
and ``autocast()`` wraps reward forwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from bench.core import distributed
from bench.core import precision as mp
from bench.core.checks import FRACTION, Range, above, at_least, check_ranges
from bench.core.families import FAMILIES
from bench.core.lora import LoraSettings, add_lora, adapter_state_dict, lora_parameters
from bench.core.modules import device_of, set_adapters
from bench.core.prompts import PromptSet
from bench.core.sampler import Sampler, SamplerConfig


PPO_RANGES = dict(clip_range=above(0, "the PPO ratio clip; <= 0 clips every ratio"),
                  adv_clip_max=above(0, "advantages are clipped to [-value, value]"), timestep_fraction=FRACTION)
"""The policy-gradient fields DDPO and GRPO share, checked by one rule."""


@dataclass
class MethodConfig:
    """Settings shared by every method (sampling, batch, optimizer, LoRA)."""

    steps: int = 50
    """Sampling steps T per rollout (DDIM steps for the sd family, flow-ODE Euler steps for sd3)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance weight while sampling (flux: the transformer's guidance embedding, one pass)."""
    true_cfg_scale: float = 1.0
    """flux: true classifier-free guidance weight against the empty prompt (FluxPipeline's); <= 1: none."""
    eta: float = 0.0
    """DDIM eta while sampling (0 deterministic, 1 DDPM-like); 0 on the sd3 family (its chain is the flow ODE)."""
    batch_size: int = 2
    """Images per rollout batch."""
    grad_accum: int = 1
    """Rollout batches accumulated into one optimizer step (images per step = batch_size * grad_accum)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold (0 disables clipping)."""
    lora_rank: int = 4
    """LoRA rank on the denoiser's attention projections."""
    lora_alpha: float = 4.0
    """LoRA alpha (update scaled by alpha / rank)."""
    lora_targets: str = ""
    """Comma-separated denoiser module names that get LoRA adapters; empty: the model family's default
    (``bench.core.families``: sd to_q,to_k,to_v,to_out.0; sd3 adds joint attention's add_q_proj,add_k_proj,
    add_v_proj,to_add_out). The planner writes the family's names into every run's config."""
    precision: str = "fp32"
    """fp32, bf16 or fp16: frozen weights' dtype and autocast (``--precision``; LoRA and optimizer stay fp32)."""
    vae_fp32: bool = False
    """Keep the VAE and its decode in float32 under bf16/fp16 (fp16 VAEs are known to give NaNs)."""
    resolution: int = 0
    """Image height = width for sampling and training (``--resolution``); 0: the model's native size."""

    RANGES = dict(steps=at_least(1), guidance_scale=at_least(0), true_cfg_scale=at_least(0), eta=Range(0, 1),
                  batch_size=at_least(1), grad_accum=at_least(1), lr=above(0), weight_decay=at_least(0),
                  max_grad_norm=at_least(0, "0 disables clipping"), lora_rank=at_least(1), lora_alpha=above(0),
                  resolution=at_least(0, "0: the model's native size"))
    """The range of every numeric field (``bench.core.checks``); each subclass declares its own fields' ranges."""

    def __post_init__(self):
        check_ranges(self)  # every numeric field, subclasses' included, before any rule that combines them
        SamplerConfig(steps=self.steps, guidance_scale=self.guidance_scale, eta=self.eta)
        self.lora_settings()
        mp.check(self.precision)

    def images_per_step(self) -> int:
        """Reward queries one step makes for training."""
        return self.batch_size * self.grad_accum

    def updates_per_step(self) -> int:
        """Optimizer updates one step makes."""
        return 1

    def lora_settings(self, default: tuple[str, ...] = FAMILIES["sd"].lora_targets) -> LoraSettings:
        """The LoRA settings; ``default``: the family's targets, used when ``lora_targets`` is empty."""
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, target_modules=self.lora_targets or default)

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(steps=self.steps, guidance_scale=self.guidance_scale, eta=self.eta,
                             true_cfg_scale=self.true_cfg_scale, precision=self.precision, vae_fp32=self.vae_fp32,
                             resolution=self.resolution)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Method:
    """Base class. Subclasses set ``name``, ``Config`` and ``needs_reward_gradient`` and implement ``step``."""

    name = "method"
    Config = MethodConfig
    needs_reward_gradient = False
    """True for methods that backpropagate through the reward (refused for non-differentiable rewards)."""
    families: tuple[str, ...] = tuple(FAMILIES)
    """Model families (``bench.core.families``) the method runs on (default: every one; ``FLOW_FAMILIES``: those with a
    flow-matching chain); the planner refuses others before any run."""
    supports_processes = True
    """Whether the method keeps its adapter synchronised across data-parallel processes (``--processes N``)."""
    preset_overrides: dict[str, dict] = {}
    """Config values this method takes in a preset, by preset name, applied after the preset's own settings
    (e.g. ``{"paper": {"batch_size": 2, "grad_accum": 4}}``): a new method declares them here, nowhere else."""
    inference: dict = {}
    """Inference settings that define the method as published (DiffusionNFT: CFG-free, ``guidance_scale`` 1.0). A
    preset never overrides them; an explicit ``--set`` does, and the plan says what it changes. The method is
    evaluated at its effective value of each (its own start is the base model's evaluation at that setting). On a
    family whose ``guidance_scale`` is an embedding (flux, ``Family.embedded_guidance``) the family's value replaces a
    guidance pin; the pin's CFG-free meaning holds there as ``true_cfg_scale`` 1 (the plan names a ``--set`` of it)."""
    published: dict = {}
    """Config values of the ``published`` protocol: the method's own code's settings (batch, accumulation, updates
    per round, optimizer), each cited in the class docstring. Applied after the preset's settings instead of
    ``preset_overrides``; the ``matched`` protocol (equal images per update) uses ``preset_overrides``."""

    def __init__(self, pipe, reward, prompts: PromptSet, config: MethodConfig, seed: int):
        if self.needs_reward_gradient:
            reward.check_trainable()
        self.pipe, self.reward, self.prompts, self.config, self.seed = pipe, reward, prompts, config, seed
        # Prompts and noise differ between data-parallel processes; the adapter initialisation (``seed``) does not.
        self.generator = torch.Generator().manual_seed(seed + 100_003 * distributed.rank())
        torch.manual_seed(seed)
        self.setup()

    # -- set-up shared by the methods that use the harness's own sampler and optimizer ------------------------
    def setup(self) -> None:
        cfg = self.config
        mp.cast_frozen(self.pipe, cfg.precision, cfg.vae_fp32)
        self.sampler = Sampler(self.pipe, cfg.sampler_config())
        self.denoiser = self.sampler.denoiser
        """The module LoRA trains: the UNet (sd) or the transformer (sd3)."""
        settings = cfg.lora_settings(self.sampler.chain.lora_targets)
        settings.init_seed = self.seed
        self.params = add_lora(self.denoiser, settings)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = mp.grad_scaler(device_of(self.denoiser), cfg.precision)

    @contextmanager
    def base_model(self):
        """The denoiser with its adapter disabled (the base model: KL references), re-enabled on exit (diffusers'
        ``disable_adapters`` / ``enable_adapters`` without their module-tree walk: ``bench.core.modules``)."""
        set_adapters(self.denoiser, False)
        try:
            yield
        finally:
            set_adapters(self.denoiser, True)

    ema: "EMA | None" = None
    """An EMA of the adapter that evaluation and the saved adapter use (Flow-GRPO, DiffusionNFT); None: the
    trained weights."""

    @contextmanager
    def evaluation_weights(self):
        """The adapter weights evaluation and the saved adapter use: the EMA (``self.ema``) swapped in for the
        duration where the method keeps one, else the trained ones."""
        if self.ema is None:
            yield
        else:
            with swapped(self.params, self.ema.shadow):
                yield

    def autocast(self):
        """Autocast at the method's precision (no cast cache), for reward forwards; a no-op in fp32."""
        return mp.autocast(device_of(self.denoiser), self.config.precision)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` through the gradient scaler (a pass-through except in fp16)."""
        self.scaler.scale(loss).backward()

    def clip_and_step(self) -> float:
        """Average gradients over processes, unscale, clip, step, zero them; return the pre-clip gradient norm."""
        distributed.average_gradients(self.params)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm or float("inf"))
        self.scaler.step(self.optimizer)  # skipped by fp16's scaler when a gradient is not finite
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # -- the contract ---------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return lora_parameters(self.denoiser)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return adapter_state_dict(self.denoiser)

    def state_dict(self) -> dict:
        """Everything needed to resume: adapter, optimizer and random-number states."""
        return {
            "adapter": self.adapter_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # trl's samplers draw noise from the device's global generator
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "scaler": self.scaler.state_dict() if getattr(self, "scaler", None) else None,
        }

    def load_state_dict(self, state: dict) -> None:
        from bench.core.lora import load_adapter_state_dict

        load_adapter_state_dict(self.denoiser, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if state.get("scaler") and getattr(self, "scaler", None):
            self.scaler.load_state_dict(state["scaler"])


@contextmanager
def swapped(params: list[torch.Tensor], others: list[torch.Tensor]):
    """``others``' values in place of ``params``' (tensor swap, no copy) for the duration; for no-graph forwards."""
    def swap():
        for p, q in zip(params, others):
            p.data, q.data = q.data, p.data
    swap()
    try:
        yield
    finally:
        swap()


class EMA:
    """An exponential moving average of parameters as flow_grpo's ``EMAModuleWrapper`` (``flow_grpo/ema.py``; also
    DiffusionNFT's): after the optimizer step that makes ``global_step`` s (1 first), when (s + 1) % ``interval`` == 0,
    ``repeats`` times ema <- ema + (1 - d) (p - ema) with d = min((1 + s) / (10 + s), ``decay``), starting from the
    initial weights. ``repeats``: Flow-GRPO calls ``ema.step`` after every micro-batch, so the update is applied once
    per micro-batch of an accumulation window at unchanged weights (train_sd3.py@ac4c86e:954-955)."""

    def __init__(self, params: list[torch.Tensor], decay: float, interval: int = 1, repeats: int = 1):
        self.decay, self.interval, self.repeats, self.steps = decay, interval, repeats, 0
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> float:
        """After one optimizer step; returns the decay d of this step (applied or not)."""
        self.steps += 1
        d = min((1 + self.steps) / (10 + self.steps), self.decay)
        if (self.steps + 1) % self.interval == 0:
            for _ in range(self.repeats):
                for e, p in zip(self.shadow, params):
                    e.add_((1 - d) * (p.detach() - e))
        return d

    def state_dict(self) -> dict:
        return {"shadow": [e.clone() for e in self.shadow], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for e, saved in zip(self.shadow, state["shadow"]):
                e.copy_(saved)
        self.steps = int(state["steps"])


def batch_stats(values: torch.Tensor) -> dict[str, float]:
    values = values.detach().float()
    return {"reward_mean": float(values.mean()), "reward_std": float(values.std(unbiased=False))}


def denoising_loss(sampler, x0, embeds, weights, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Weighted pre-training loss of the sampler's denoiser (at its precision, ``Sampler.denoiser_forward``) at
    random noise levels, ``draws`` per sample: the family's own regression target (``Chain.training_pair``: epsilon
    or v for sd, the flow velocity noise - x0 for sd3).

    RWR's regression target and ReFL's pre-training regulariser.
    """
    x0, embeds, weights = (t.repeat_interleave(draws, dim=0) for t in (x0, embeds, weights))
    noisy, t, target = sampler.chain.training_pair(x0, generator)
    pred = sampler.denoiser_forward(noisy, t, embeds)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (weights * per_sample).mean()
