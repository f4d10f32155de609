"""The built-in models of the ``sd3`` family (rectified-flow transformers), assembled in-process from configs.

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

from bench.core.builders import fill_seeded, load_tokenizer
from bench.core.errors import UsageError

FLOW_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
"""SD 3 / 3.5's scheduler_config.json (FlowMatchEulerDiscreteScheduler, shift 3)."""
T5_TOKENS = 0
"""Zero T5 tokens the toy models' prompt states carry (none: the CLIP tokens alone condition them)."""
SHAPES_FLOW_ASSET = Path(__file__).resolve().parent / "assets" / "tiny_shapes_flow"


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
    ``fast_init`` as ``bench.core.builders.build_sd15_random``."""
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
        generator = torch.Generator().manual_seed(seed)
        for module in (transformer, vae, text_encoder, text_encoder_2):
            fill_seeded(module, generator)
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
