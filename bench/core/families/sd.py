"""The ``sd`` family (Stable Diffusion 1.x/2.x: a UNet with cross-attention on CLIP states, sampled by DDIM): its
``Family`` (``SD``), its chain (``DDIMChain``, over ``bench.core.ddim``'s arithmetic) and its built-in models,
assembled in-process from configs: no download, seeded weights (or shipped ones).

- ``tiny-random`` has the exact component classes of Stable Diffusion 1.x (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, CLIPTokenizer, DDIMScheduler) at toy width, so every code path of the bench runs on a CPU in
seconds. Its weights are random: it is a *stand-in* and every output that uses it says so.
- ``sd15-random``: Stable Diffusion 1.5's architecture at full size (860M-parameter UNet, 512x512 images, 4x64x64
  latents, 77-token CLIP ViT-L/14 text encoder) with seeded random weights, for GPU memory and speed measurements
  without a download. The tokenizer is the locally written byte-level one (vocabulary 514 instead of 49408: the text
  encoder's embedding table is the only smaller piece). A stand-in too.
- ``tiny-shapes``: the tiny architecture trained on the shape world (``bench.core.shapes``); its weights ship in
  ``bench/core/assets/tiny_shapes`` (``python -m bench.shapeworld.train`` reproduces them).

Every builder returns its components to ``assemble``, the one place a ``StableDiffusionPipeline`` is put together.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from bench.core.ddim import ddim_step, predict_x0
from bench.core.errors import UsageError
from bench.core.families.base import BuiltIn, Chain, Family
from bench.core.families.parts import clip_vit_l_text, fill_all_seeded, load_tokenizer
from bench.core.modules import dtype_of

# Stable Diffusion 1.x noise schedule (the scheduler_config.json of SD 1.5), used by every tiny model.
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
"""``tiny-random``'s UNet (also the calibration workload of ``bench.core.calibrate``)."""


def build_tiny_random(seed: int = 0, words: list[str] = ()):
    """A Stable-Diffusion-architecture pipeline with seeded random weights: 32x32 images, 16x16x4 latents."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = load_tokenizer(words)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=4,  # few groups: per-channel means stay free, so image statistics respond to latents
            sample_size=32,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    return assemble(vae, text_encoder, tokenizer, unet)


def build_sd15_random(seed: int = 0, fast_init: bool = False):
    """SD 1.5's UNet, VAE and text encoder at full size with seeded random weights (``sd15-random``).

    ``fast_init``: build on the meta device and fill every weight with one seeded normal draw (std 1/sqrt(fan-in),
    biases 0, norm scales 1) instead of the modules' own initialisers: the same architecture in seconds instead of
    a minute on a CPU (tests); the registry's ``sd15-random`` uses the modules' own initialisation."""
    import contextlib

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tokenizer = load_tokenizer()
    with torch.random.fork_rng(devices=[]), (init_empty_weights() if fast_init else contextlib.nullcontext()):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8,
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
        )  # fmt: skip
        text_encoder = clip_vit_l_text(tokenizer)
    if fast_init:
        fill_all_seeded((unet, vae, text_encoder), seed)
    return assemble(vae, text_encoder, tokenizer, unet)


ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny_shapes"


def load_tiny_shapes(seed: int = 0):
    """The shipped ``tiny-shapes`` pipeline (trained by ``python -m bench.shapeworld.train``); ``seed`` is unused."""
    from diffusers import StableDiffusionPipeline

    if not (ASSET / "model_index.json").is_file():
        raise UsageError(f"tiny-shapes weights are missing at {ASSET}; train them: python -m bench.shapeworld.train")
    pipe = StableDiffusionPipeline.from_pretrained(ASSET, safety_checker=None, requires_safety_checker=False)
    pipe.tokenizer.model_max_length = 16
    return pipe


def assemble(vae, text_encoder, tokenizer, unet):
    """A Stable Diffusion pipeline from its components, with SD 1.x's DDIM schedule and no safety checker."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def from_pretrained(source: str, absent=()):
    """A Stable Diffusion pipeline from a diffusers folder or hub id, without its safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False)


class DDIMChain(Chain):
    """Stable Diffusion: UNet with cross-attention on CLIP states, DDIM steps with eta (``bench.core.ddim``)."""

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        if getattr(config, "sde", "") not in ("", "memoryless"):  # bench.core.flow.MEMORYLESS: DDIM's eta = 1
            raise ValueError(f"sde={config.sde!r} selects a flow SDE; the sd family's stochastic step is DDIM's eta")
        if getattr(config, "schedule", "scheduler") != "scheduler":
            raise ValueError(f"schedule={config.schedule!r} is a flow chain's sigma schedule; the sd family's DDIM "
                             "chain has the scheduler's timesteps only")

    @property
    def init_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states [B, L, D] (the text encoder is frozen: no graph)."""
        with self.autocast():
            return self.clip_states(self.pipe.tokenizer, self.pipe.text_encoder, prompts)[0].float()

    def forward(self, x, t, states):
        """The UNet's prediction (float32) at the sampler's precision: inputs in the UNet's dtype, autocast on."""
        dt = dtype_of(self.denoiser)
        x = self.scheduler.scale_model_input(x, t)
        with self.autocast():
            return self.denoiser(x.to(dt), t, encoder_hidden_states=states.to(dt), return_dict=False)[0].float()

    def set_steps(self, steps: int) -> torch.Tensor:
        self.scheduler.set_timesteps(steps, device=self.device)
        return self.scheduler.timesteps

    def step(self, out, t, x, eta: float):
        return ddim_step(self.scheduler, out, int(t), x, eta)

    def predict_x0(self, out, t, x):
        return predict_x0(self.scheduler, out, int(t), x)[0]

    def renoise(self, x0, t, noise):
        """sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        a = float(self.scheduler.alphas_cumprod[int(t)])
        return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise.to(x0.device, x0.dtype)

    def training_pair(self, x0, generator: torch.Generator):
        """(noisy, t, target): t ~ U{0..999}, the epsilon (or v) target of the scheduler's prediction type."""
        sched = self.scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        noisy = sched.add_noise(x0, noise, t)
        if sched.config.prediction_type == "v_prediction":
            noise = sched.get_velocity(x0, noise, t)
        return noisy, t, noise


SD = Family(
    "sd", "StableDiffusionPipeline", "unet", "UNet2DConditionModel", ("to_q", "to_k", "to_v", "to_out.0"), True,
    "UNet + DDIM, SD 1.x/2.x", "DDIMScheduler", False, "DDIM, eta 0", chain=DDIMChain,
    down_factor=lambda unet: 2 ** (len(unet["down_block_types"]) - 1), load=from_pretrained, tiny="tiny-random",
    models={
        "tiny-random": BuiltIn(build_tiny_random, "random weights (tiny-random: SD architecture at toy width)", (2, 2)),
        # trained on the shape world, weights ship in the repo
        "tiny-shapes": BuiltIn(load_tiny_shapes, folder=ASSET),
        # SD 1.5 architecture, random weights: GPU measurements
        "sd15-random": BuiltIn(build_sd15_random, "random weights (sd15-random: SD 1.5 architecture at full size)",
                               (8, 8)),
    },
    hub={"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
)
