"""The ``flux`` family (FLUX.1: a rectified-flow transformer with double- and single-stream blocks on packed 2x2
latent patches, a T5 + CLIP text stack, the scheduler's resolution-dependent shift, and guidance as an embedding):
its ``Family`` (``FLUX``), its chain (``FluxChain``, on the flow families' shared ``FlowMatchChain``) and its
built-in models, assembled in-process from configs.

- ``tiny-flux-random``: FLUX.1's component classes (FluxTransformer2DModel with a guidance embedding, one double- and
  one single-stream block at toy width as diffusers' Flux pipeline tests; FlowMatchEulerDiscreteScheduler with
  dynamic shifting; AutoencoderKL with FLUX's shift and scaling factors; CLIPTextModel; a T5EncoderModel) with
  seeded random weights and tokenizers written locally (CLIP byte-level BPE, T5 unigram): 32x32 images, 4x16x16
  latents (16 channels once packed). A stand-in.
- ``flux1-dev-random``: FLUX.1-dev's transformer (19 double- and 38 single-stream blocks, 24 heads of 128, joint
  dim 4096, pooled 768, guidance embedding), its VAE (16 latent channels) and CLIP-L at full size with seeded random
  weights, for GPU memory and speed. No T5-XXL: the transformer gets FLUX.1-dev's 512 T5 tokens as zeros (as
  ``sd35m-random`` does for SD 3.5), so its compute and memory are the real model's but for the frozen T5.

The chain keeps the sampler's latents UNPACKED ([B, C, h, w], C = the transformer's ``in_channels`` / 4): it packs
2x2 patches inside ``forward``, passes FluxPipeline's position ids and timestep / 1000, and unpacks the velocity, so
every flow step, SDE, noise draw and method works on flux as on sd3 (FluxPipeline's ``prepare_latents`` draws its
noise in the unpacked shape: the same generator gives the same x_T). Guidance: ``SamplerConfig.guidance_scale`` is the
guidance embedding's value (FLUX.1-dev is guidance-distilled: one forward pass, as FluxPipeline); true
classifier-free guidance only with ``true_cfg_scale`` > 1 (FluxPipeline's, against ``negative_prompt``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.core.families.base import BuiltIn, Family
from bench.core.families.flowmatch import FlowMatchChain
from bench.core.families.parts import clip_vit_l_text, fill_all_seeded, load_tokenizer
from bench.core.modules import dtype_of

FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)
"""FLUX.1-dev's scheduler_config.json (FlowMatchEulerDiscreteScheduler, resolution-dependent shift)."""
TINY_T5_TOKENS = 16
"""The T5 context of ``tiny-flux-random`` (its prompts are a few words)."""


def t5_tokenizer(words: list[str] = (), max_length: int = TINY_T5_TOKENS):
    """A ``T5TokenizerFast`` built in code (no download): a unigram model over printable ASCII characters and the
    listed words, SentencePiece's metaspace, ``</s>`` appended as T5 does; ids 0-2 are pad, eos, unk as T5's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"] + [chr(c) for c in range(33, 127)]
    pieces += [f"\u2581{w}" for w in dict.fromkeys(w.lower() for w in words if w)]
    scores = [0.0] * 3 + [-2.0 if len(p) == 1 else -1.0 for p in pieces[3:]]  # a listed word beats its letters
    tok = Tokenizer(models.Unigram(list(zip(pieces, scores)), unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=max_length)


def tiny_flux_components(seed: int = 0, words: list[str] = ()):
    """(transformer, vae, (tokenizer, text_encoder), (tokenizer_2, text_encoder_2)) of a toy FLUX.1 model."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = load_tokenizer(words, max_length=16), t5_tokenizer(words)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(  # diffusers' Flux pipeline tests' widths, 4 latent channels packed
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        )  # fmt: skip
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=32,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        )  # fmt: skip
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))  # fmt: skip
        torch.manual_seed(seed + 3)
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        ))  # fmt: skip
    return transformer, vae, (tokenizer, text_encoder), (tokenizer_2, text_encoder_2)


def build_tiny_flux_random(seed: int = 0, words: list[str] = ()):
    """A FLUX.1-architecture pipeline with seeded random weights: 32x32 images, 4x16x16 latents."""
    transformer, vae, first, second = tiny_flux_components(seed, words)
    return assemble_flux(transformer, vae, first, second, t5_tokens=TINY_T5_TOKENS, sample_size=16)


def build_flux1_dev_random(seed: int = 0, fast_init: bool = False):
    """FLUX.1-dev's transformer, VAE and CLIP-L at full size with seeded random weights, no T5 (``flux1-dev-random``);
    ``fast_init`` as ``bench.core.families.sd.build_sd15_random``."""
    import contextlib

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    tokenizer = load_tokenizer()
    with torch.random.fork_rng(devices=[]), (init_empty_weights() if fast_init else contextlib.nullcontext()):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(  # FLUX.1-dev transformer/config.json
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )  # fmt: skip
        vae = AutoencoderKL(  # FLUX.1-dev vae/config.json
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2, sample_size=1024,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        )  # fmt: skip
        text_encoder = clip_vit_l_text(tokenizer)  # FLUX.1-dev's text_encoder
    if fast_init:
        fill_all_seeded((transformer, vae, text_encoder), seed)
    return assemble_flux(transformer, vae, (tokenizer, text_encoder), (None, None), t5_tokens=512, sample_size=128)


def assemble_flux(transformer, vae, first, second, t5_tokens: int, sample_size: int):
    """A FluxPipeline from its components (``second``: the T5 tokenizer and encoder, or Nones), FLUX.1-dev's
    scheduler, its T5 context ``t5_tokens`` and native latent size ``sample_size`` (diffusers' attribute
    ``default_sample_size``, which the transformer's config does not hold)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    (tokenizer, text_encoder), (tokenizer_2, text_encoder_2) = first, second
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.t5_tokens, pipe.default_sample_size = t5_tokens, sample_size
    for module in (transformer, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval()  # as from_pretrained leaves them: T5's dropout (0.1) off
    pipe.set_progress_bar_config(disable=True)
    return pipe


def from_pretrained(source: str, absent=()):
    """A FLUX.1 pipeline from a diffusers folder or hub id, the ``absent`` components passed as None."""
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(source, **{name: None for name in absent})


def pack(x):
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: each 2x2 patch one token, channels outermost (FluxPipeline's order)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens, h: int, w: int):
    """The inverse of ``pack`` for an [h, w] latent."""
    b, _, d = tokens.shape
    return tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype):
    """[(h/2)(w/2), 3] position ids of the packed tokens: (0, row, column), as FluxPipeline's."""
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


class FluxChain(FlowMatchChain):
    """FLUX.1: packed 2x2 latent patches with position ids, T5 + pooled CLIP prompt states, guidance embedding,
    flow-matching Euler steps at the resolution's shift."""

    def __init__(self, pipe, config):
        super().__init__(pipe, config)
        self._ids: dict = {}

    # -- geometry and guidance ------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.denoiser.config.in_channels // 4

    @property
    def native_latent_size(self) -> int:
        """The pipeline's ``default_sample_size`` (FluxPipeline: 128, 1024 px; recorded per model)."""
        return int(self.pipe.default_sample_size)

    @property
    def cfg_scale(self) -> float:
        """True classifier-free guidance only where asked (``true_cfg_scale``); ``guidance_scale`` is embedded."""
        return getattr(self.config, "true_cfg_scale", 1.0)

    @property
    def mu(self) -> float:
        """The scheduler's dynamic shift at this resolution: linear in the packed sequence length between
        (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), FluxPipeline's ``calculate_shift``."""
        cfg, tokens = self.scheduler.config, (self.latent_size // 2) ** 2
        lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        base, top = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
        return base + (top - base) * (tokens - lo) / (hi - lo)

    # -- prompts and the denoiser -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[B, T5 tokens + 1, joint_attention_dim]: T5's last hidden states (zeros without a T5 encoder), then CLIP's
        pooled output zero-padded as one last token (no graph)."""
        pipe, n = self.pipe, len(prompts)
        with self.autocast():
            pooled = self.clip_states(pipe.tokenizer, pipe.text_encoder, prompts).pooler_output.float()
            if pipe.text_encoder_2 is not None and self.t5_tokens > 0:
                ids = pipe.tokenizer_2(list(prompts), padding="max_length", max_length=self.t5_tokens,
                                       truncation=True, return_tensors="pt").input_ids
                t5 = pipe.text_encoder_2(ids.to(self.device))[0].float()
            else:
                t5 = torch.zeros(n, self.t5_tokens, self.joint_dim, device=self.device)
        return torch.cat([t5, F.pad(pooled, (0, self.joint_dim - self.pooled_dim)).unsqueeze(1)], dim=1)

    def forward(self, x, t, states):
        """The transformer's velocity (float32, unpacked) at the sampler's precision: FluxPipeline's call."""
        dt, (b, _, h, w) = dtype_of(self.denoiser), x.shape
        embeds, pooled = self.split(states)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = t.expand(b) if t.ndim == 0 else t
        key = (h, w, embeds.shape[1], x.device, dt)
        if key not in self._ids:  # (txt_ids, img_ids), as FluxPipeline's: built once per shape
            txt = torch.zeros(embeds.shape[1], 3, device=x.device, dtype=dt)
            self._ids = {key: (txt, image_ids(h, w, x.device, dt))}
        txt, img = self._ids[key]
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((b,), float(self.config.guidance_scale), device=x.device, dtype=torch.float32)
        with self.autocast():
            out = self.denoiser(
                hidden_states=pack(x.to(dt)), timestep=t.to(dt) / 1000, guidance=guidance,
                pooled_projections=pooled.to(dt), encoder_hidden_states=embeds.to(dt),
                txt_ids=txt, img_ids=img, return_dict=False,
            )[0]  # fmt: skip
        return unpack(out.float(), h, w)

    # -- the schedule ---------------------------------------------------------------------------------------
    def schedule(self, steps: int) -> None:
        """FluxPipeline's sigmas, linspace(1, 1/T, T) at the resolution's shift ``mu`` (then 0); ``shifted-linspace``:
        DanceGRPO's linspace(1, 0, T + 1)[:-1], shifted by the same ``mu`` (DanceGRPO's flux script: a fixed shift
        3; exp(mu) = 3.16 at 1024 px)."""
        import numpy as np

        if getattr(self.config, "schedule", "scheduler") == "shifted-linspace":
            sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
        else:
            sigmas = np.linspace(1.0, 1 / steps, steps)
        self.scheduler.set_timesteps(sigmas=sigmas, mu=self.mu, device=self.device)

    @property
    def train_shift(self) -> float:
        """The sampling schedule's shift at this resolution, exp(mu) (diffusers' exponential time shift with sigma 1
        is the SD3 shift s u / (1 + (s - 1) u) with s = exp(mu)); the fixed ``shift`` without dynamic shifting."""
        if self.scheduler.config.get("use_dynamic_shifting"):
            return math.exp(self.mu)
        return float(self.scheduler.config.shift)


FLUX = Family(
    "flux", "FluxPipeline", "transformer", "FluxTransformer2DModel",
    # The attention projections of both streams (double blocks' add_* and to_add_out; single blocks' to_q/k/v): the
    # attention entries of diffusers' train_dreambooth_lora_flux.py default target_modules, the same names as sd3's.
    ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"), False,
    "DiT on packed latents + flow-matching Euler ODE, FLUX.1", "FlowMatchEulerDiscreteScheduler", True,
    "flow-matching Euler ODE, resolution shift", chain=FluxChain,
    down_factor=lambda transformer: 2 * transformer["patch_size"],  # 2x2 packing of the latent
    load=from_pretrained, tiny="tiny-flux-random",
    models={
        "tiny-flux-random": BuiltIn(build_tiny_flux_random,
                                    "random weights (tiny-flux-random: FLUX.1 architecture at toy width)", (2, 2)),
        # FLUX.1-dev architecture, random weights, no T5: GPU measurements
        "flux1-dev-random": BuiltIn(build_flux1_dev_random, "random weights (flux1-dev-random: FLUX.1-dev "
                                    "architecture at full size, no T5)", (8, 2)),
    },
    hub={"flux1-dev": "black-forest-labs/FLUX.1-dev"},
    t5_encoder="text_encoder_2", t5_default=512, facts={"t5_tokens": (0, 512), "default_sample_size": (1, 4096)},
    # FluxPipeline.__call__'s default guidance_scale (diffusers 0.39 pipeline_flux.py:665), FLUX.1-dev's distilled
    # value; DanceGRPO's and MixGRPO's flux trainers pass the same constant (train_grpo_flux.py guidance=[3.5]).
    embedded_guidance=3.5,
)
