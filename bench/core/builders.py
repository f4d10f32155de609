"""The built-in models, assembled in-process from configs: no download, seeded weights (or shipped ones).

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

import json
import tempfile
from pathlib import Path

import torch

from bench.core.errors import UsageError

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


def write_clip_tokenizer(directory: str | Path, words: list[str] = ()) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a byte-level CLIP BPE tokenizer into ``directory``.

    The vocabulary holds every byte symbol (alone and word-final), the two CLIP special tokens, and each word of
    ``words`` as one token (merges build it up from the left), so any text tokenizes and listed words stay short.
    """
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in sorted({w.lower() for w in words if w}):
        chars = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = chars[0]
        for nxt in chars[1:]:
            rule = f"{prefix} {nxt}"
            if rule not in merges:
                merges.append(rule)
            prefix += nxt
            vocab.setdefault(prefix, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
    return directory


def load_tokenizer(words: list[str] = (), max_length: int = 77):
    """A ``CLIPTokenizer`` (max length 77 as Stable Diffusion) from files written to a temporary directory."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(tmp, words)
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=max_length)


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
    from transformers import CLIPTextConfig, CLIPTextModel

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
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))  # fmt: skip
    if fast_init:
        generator = torch.Generator().manual_seed(seed)
        for module in (unet, vae, text_encoder):
            fill_seeded(module, generator)
    return assemble(vae, text_encoder, tokenizer, unet)


def fill_seeded(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Materialise a meta-device module on the CPU with seeded values: matrices and kernels ~ N(0, 1/fan-in),
    1-d parameters (biases, norm shifts) 0 except norm scales 1; buffers (e.g. position ids) are rebuilt by
    their modules' own code where it exists, else zero."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
            else:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
        for sub in module.modules():
            if hasattr(sub, "position_ids") and isinstance(sub.position_ids, torch.Tensor):
                sub.position_ids.copy_(torch.arange(sub.position_ids.shape[-1]).expand_as(sub.position_ids))


ASSET = Path(__file__).resolve().parent / "assets" / "tiny_shapes"


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
