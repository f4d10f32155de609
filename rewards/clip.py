"""CLIP-based text-image rewards: ``clip-score`` (cosine similarity) and ``pickscore`` (PickScore v1).

- ``clip-score``: cos(image, text) of a CLIP model (default ``openai/clip-vit-large-patch14``; ``model=`` changes it).
- ``pickscore``: ``yuvalkirstain/PickScore_v1`` (a CLIP ViT-H/14 fine-tuned on Pick-a-Pic) with the processor of
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: ``logit_scale.exp() * cos(text, image)``.

Images go through ``rewards.preprocess.clip_preprocess`` (differentiable), text through the model's tokenizer
(no gradient: only the images are trained). ``weights`` (``--reward-weights``) is a local folder written by
``CLIPModel.save_pretrained`` (a tokenizer saved beside it is used, else the default model's tokenizer); without
it the model loads from the Hugging Face cache, or the hub when online.
Missing weights: a one-line error, or (when the run allows) a random-weight stand-in: a CLIP of the same
architecture at width 32 with seeded weights and a locally written tokenizer.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from rewards.base import Reward
from rewards.preprocess import clip_preprocess
from rewards.weights import local_dir, pretrained, resolve

CLIP_L14 = "openai/clip-vit-large-patch14"
PICKSCORE = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def small_clip(projection_dim: int = 64, seed: int = 0):
    """(CLIPModel, tokenizer): CLIP's architecture at width 32, seeded random weights, 224x224 input."""
    from transformers import CLIPConfig, CLIPModel

    from bench.core.families.parts import load_tokenizer

    tokenizer = load_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval().requires_grad_(False), tokenizer


def real_clip(model_id: str, tokenizer_id: str | None = None, weights: str | None = None, what: str = "clip"):
    """(CLIPModel, tokenizer) from ``weights`` (a local folder) or ``model_id``; tokenizer from the folder if there."""
    from transformers import CLIPModel, CLIPTokenizer

    source = local_dir(weights, what) if weights else model_id
    model = pretrained(CLIPModel.from_pretrained, source)
    has_tokenizer = weights and os.path.isfile(os.path.join(weights, "vocab.json"))
    tokenizer = pretrained(CLIPTokenizer.from_pretrained, weights if has_tokenizer else tokenizer_id or model_id)
    return model.eval().requires_grad_(False), tokenizer


def normalized_image_features(model, images: torch.Tensor) -> torch.Tensor:
    size = model.config.vision_config.image_size
    pixels = clip_preprocess(images, size=size).to(next(model.parameters()).dtype)
    return F.normalize(model.get_image_features(pixel_values=pixels), dim=-1)


def normalized_text_features(model, tokenizer, prompts: list[str], device) -> torch.Tensor:
    tok = tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    return_tensors="pt")
    with torch.no_grad():
        return F.normalize(model.get_text_features(input_ids=tok.input_ids.to(device),
                                                   attention_mask=tok.attention_mask.to(device)), dim=-1)


class ClipScore(Reward):
    """cos(CLIP image embedding, CLIP text embedding); differentiable in the images."""

    name = "clip-score"
    differentiable = True

    def __init__(self, model: str = CLIP_L14, weights: str | None = None, allow_stand_in: bool = False,
                 strict: bool = False):
        (self.model, self.tokenizer), self.stand_in = resolve(
            lambda: real_clip(model, weights=weights, what="clip-score"), small_clip, what=f"clip-score ({model})",
            how=f"download it (huggingface-cli download {model}) or pass --reward-weights FOLDER",
            allow_stand_in=allow_stand_in, strict=strict)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        image = normalized_image_features(self.model, images)
        text = normalized_text_features(self.model, self.tokenizer, prompts, image.device)
        return (image * text).sum(-1).float()


class PickScore(ClipScore):
    """PickScore v1: logit_scale.exp() * cos(text, image) (about 20-23 for typical SD images)."""

    name = "pickscore"

    def __init__(self, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False):
        (self.model, self.tokenizer), self.stand_in = resolve(
            lambda: real_clip(PICKSCORE, PICKSCORE_PROCESSOR, weights, "pickscore"), small_clip,
            what=f"pickscore ({PICKSCORE})",
            how=f"download them (huggingface-cli download {PICKSCORE}; huggingface-cli download {PICKSCORE_PROCESSOR}) "
                "or pass --reward-weights FOLDER",
            allow_stand_in=allow_stand_in, strict=strict)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.model.logit_scale.exp() * super().score(images, prompts)
