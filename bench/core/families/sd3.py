"""The ``sd3`` family (Stable Diffusion 3/3.5: a rectified-flow MMDiT sampled by the flow-matching Euler ODE, or a flow
SDE): its ``Family`` (``SD3``), its chain (``FlowChain``, on the flow families' shared ``FlowMatchChain`` over
``bench.core.flow``'s SDE arithmetic) and its built-in models, assembled in-process from configs.

- ``tiny-flow-random``: Stable Diffusion 3's component classes (SD3Transformer2DModel with joint attention,
  FlowMatchEulerDiscreteScheduler, AutoencoderKL with shift and scaling factors, two CLIPTextModelWithProjection
  encoders) at toy width with seeded random weights: 32x32 images, 4x16x16 latents, patch size 2. A stand-in.
- ``sd35m-random``: Stable Diffusion 3.5 Medium's transformer (24 MMDiT layers of width 1536, dual attention in
  layers 0-12, RMS QK-norm), VAE (16 latent channels) and two CLIP encoders (ViT-L and ViT-bigG sizes) at full size
  with seeded random weights, for GPU memory and speed. The tokenizers are the locally written byte-level ones.
- ``tiny-shapes-flow``: the shape world trained as a rectified-flow model (``python -m bench.shapeworld.train_flow``);
  its weights ship in ``bench/core/assets/tiny_shapes_flow``.

No T5 encoder (``text_encoder_3=None``), by choice: diffusers' StableDiffusion3Pipeline accepts it absent and then
feeds the transformer zeros in the T5 part of the prompt states. The toy models' prompts are a few words that CLIP
encodes fully, and a T5-XXL (4.7B parameters) would dwarf them; ``T5_TOKENS`` zero tokens are used there (the
``t5_tokens`` attribute of the pipeline, read by the chain). ``sd35m-random`` keeps the pipeline's 256 zero
tokens, so its transformer sees SD 3.5's full 333-token context (its compute and memory are the real model's; only
the frozen T5's weights and its one forward per prompt are missing).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core.errors import UsageError
from bench.core.families.base import BuiltIn, Family
from bench.core.families.flowmatch import FlowMatchChain
from bench.core.families.parts import fill_all_seeded, load_tokenizer
from bench.core.modules import dtype_of

FLOW_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
"""SD 3 / 3.5's scheduler_config.json (FlowMatchEulerDiscreteScheduler, shift 3)."""
T5_TOKENS = 0
"""Zero T5 tokens the toy models' prompt states carry (none: the CLIP tokens alone condition them)."""
SHAPES_FLOW_ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny_shapes_flow"


def clip_with_projection(tokenizer, hidden: int, layers: int, heads: int, projection: int, seed: int, **extra):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=extra.pop("intermediate", 2 * hidden),
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **extra,
    ))  # fmt: skip


def tiny_flow_components(seed: int = 0, words: list[str] = (), width: int = 32, layers: int = 2, clip: int = 32,
                         max_length: int = 16):
    """(transformer, vae, (tokenizer, text_encoder), (tokenizer_2, text_encoder_2)) of a toy SD3 model."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    tokenizer = load_tokenizer(words, max_length=max_length)
    tokenizer_2 = load_tokenizer(words, max_length=max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=layers,
            attention_head_dim=8, num_attention_heads=width // 8, caption_projection_dim=width,
            joint_attention_dim=2 * clip, pooled_projection_dim=2 * clip, pos_embed_max_size=16,
        )  # fmt: skip
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4, norm_num_groups=4, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,  # diffusers' SD3 test components
        )  # fmt: skip
        text_encoder = clip_with_projection(tokenizer, clip, 2, 4, clip, seed + 2)
        text_encoder_2 = clip_with_projection(tokenizer_2, clip, 2, 4, clip, seed + 3)
    return transformer, vae, (tokenizer, text_encoder), (tokenizer_2, text_encoder_2)


def build_tiny_flow_random(seed: int = 0, words: list[str] = ()):
    """An SD3-architecture pipeline with seeded random weights: 32x32 images, 4x16x16 latents."""
    transformer, vae, first, second = tiny_flow_components(seed, words)
    return assemble_flow(transformer, vae, first, second, t5_tokens=T5_TOKENS)


def build_sd35m_random(seed: int = 0, fast_init: bool = False):
    """SD 3.5 Medium's transformer, VAE and CLIP encoders at full size with seeded random weights (``sd35m-random``);
    ``fast_init`` as ``bench.core.families.sd.build_sd15_random``."""
    import contextlib

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    tokenizer, tokenizer_2 = load_tokenizer(), load_tokenizer()
    with torch.random.fork_rng(devices=[]), (init_empty_weights() if fast_init else contextlib.nullcontext()):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, pos_embed_max_size=384, dual_attention_layers=tuple(range(13)),
            qk_norm="rms_norm",
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2, sample_size=1024,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305,
        )  # fmt: skip
        text_encoder = clip_with_projection(tokenizer, 768, 12, 12, 768, seed + 2, intermediate=3072,
                                            hidden_act="quick_gelu")
        text_encoder_2 = clip_with_projection(tokenizer_2, 1280, 32, 20, 1280, seed + 3, intermediate=5120,
                                              hidden_act="gelu")
    if fast_init:
        fill_all_seeded((transformer, vae, text_encoder, text_encoder_2), seed)
    return assemble_flow(transformer, vae, (tokenizer, text_encoder), (tokenizer_2, text_encoder_2), t5_tokens=256)


def load_tiny_shapes_flow(seed: int = 0):
    """The shipped ``tiny-shapes-flow`` pipeline (``python -m bench.shapeworld.train_flow``); ``seed`` is unused."""
    from diffusers import StableDiffusion3Pipeline

    if not (SHAPES_FLOW_ASSET / "model_index.json").is_file():
        raise UsageError(f"tiny-shapes-flow weights are missing at {SHAPES_FLOW_ASSET}; train them: "
                         "python -m bench.shapeworld.train_flow")
    pipe = StableDiffusion3Pipeline.from_pretrained(SHAPES_FLOW_ASSET, text_encoder_3=None, tokenizer_3=None)
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        tok.model_max_length = 16
    pipe.tokenizer_max_length = 16
    pipe.t5_tokens = T5_TOKENS
    return pipe


def assemble_flow(transformer, vae, first, second, t5_tokens: int = 256):
    """A StableDiffusion3Pipeline from its components (no T5), with SD 3's flow-matching Euler schedule."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    (tokenizer, text_encoder), (tokenizer_2, text_encoder_2) = first, second
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.t5_tokens = t5_tokens
    pipe.set_progress_bar_config(disable=True)
    return pipe


def from_pretrained(source: str, absent=()):
    """A Stable Diffusion 3 pipeline from a diffusers folder or hub id, the ``absent`` components passed as None."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(source, **{name: None for name in absent})


class FlowChain(FlowMatchChain):
    """SD 3 / 3.5: MMDiT with joint attention and pooled projections; flow-matching Euler steps at a fixed shift."""

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        if self.scheduler.config.get("use_dynamic_shifting"):
            raise ValueError("a flow scheduler with use_dynamic_shifting (resolution-dependent shift) is not "
                             "supported; use a fixed shift (SD 3 / 3.5: shift=3.0)")

    # -- prompts and the denoiser -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[B, 2 x CLIP length + T5 tokens + 1, joint_attention_dim] prompt states (no graph)."""
        pipe, n = self.pipe, len(prompts)
        hidden, pooled = [], []
        with self.autocast():
            for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
                out = self.clip_states(tok, enc, prompts, output_hidden_states=True)
                hidden.append(out.hidden_states[-2].float())
                pooled.append(out[0].float())
            clip = F.pad(torch.cat(hidden, dim=-1), (0, self.joint_dim - sum(h.shape[-1] for h in hidden)))
            if pipe.text_encoder_3 is not None:
                ids = pipe.tokenizer_3(list(prompts), padding="max_length", max_length=self.t5_tokens,
                                       truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
                t5 = pipe.text_encoder_3(ids.to(self.device))[0].float()
            else:
                t5 = torch.zeros(n, self.t5_tokens, self.joint_dim, device=self.device)
        pooled = F.pad(torch.cat(pooled, dim=-1), (0, self.joint_dim - self.pooled_dim)).unsqueeze(1)
        return torch.cat([clip, t5, pooled], dim=1)

    def forward(self, x, t, states):
        """The transformer's velocity (float32) at the sampler's precision."""
        dt = dtype_of(self.denoiser)
        embeds, pooled = self.split(states)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = t.expand(len(x)) if t.ndim == 0 else t
        with self.autocast():
            return self.denoiser(hidden_states=x.to(dt), timestep=t.to(dt), encoder_hidden_states=embeds.to(dt),
                                 pooled_projections=pooled.to(dt), return_dict=False)[0].float()

    # -- the schedule ---------------------------------------------------------------------------------------
    def schedule(self, steps: int) -> None:
        """Sigmas per ``SamplerConfig.schedule`` (the scheduler's own, or DanceGRPO's shifted linspace, which
        diffusers shifts and ends with 0 when given the unshifted linspace as ``sigmas``)."""
        if getattr(self.config, "schedule", "scheduler") == "shifted-linspace":
            import numpy as np

            self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=self.device)
        else:
            self.scheduler.set_timesteps(steps, device=self.device)

    @property
    def train_shift(self) -> float:
        """The scheduler's fixed ``shift`` (SD 3 / 3.5: 3)."""
        return float(self.scheduler.config.shift)


SD3 = Family(
    "sd3", "StableDiffusion3Pipeline", "transformer", "SD3Transformer2DModel",
    # Joint attention: the text stream's own projections (add_*) as Flow-GRPO's SD3 LoRA configs.
    ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"), False,
    "MMDiT + flow-matching Euler ODE, SD 3/3.5", "FlowMatchEulerDiscreteScheduler", True, "flow-matching Euler ODE",
    chain=FlowChain, down_factor=lambda transformer: transformer["patch_size"], load=from_pretrained,
    tiny="tiny-flow-random",
    models={
        "tiny-flow-random": BuiltIn(build_tiny_flow_random,
                                    "random weights (tiny-flow-random: SD3 architecture at toy width)", (2, 2)),
        # shape world as a rectified flow
        "tiny-shapes-flow": BuiltIn(load_tiny_shapes_flow, folder=SHAPES_FLOW_ASSET),
        # SD 3.5 Medium architecture, random weights
        "sd35m-random": BuiltIn(build_sd35m_random, "random weights (sd35m-random: SD 3.5 Medium architecture at "
                                "full size, no T5)", (8, 2)),
    },
    hub={"sd35m": "stabilityai/stable-diffusion-3.5-medium"},
    t5_encoder="text_encoder_3", t5_default=256, facts={"t5_tokens": (0, 4096)},
)
