"""LAION aesthetic predictor v2 (``sac+logos+ava1-l14-linearMSE.pth``), the reward of the DDPO and AlignProp papers.

Score = MLP(normalise(CLIP ViT-L/14 image embedding)), with CLIP ``openai/clip-vit-large-patch14`` and the MLP
768 -> 1024 -> 128 -> 64 -> 16 -> 1 (dropouts 0.2, 0.2, 0.1 between the first layers, no activations), whose
state-dict keys are ``layers.{0,2,4,6,7}.{weight,bias}``. The MLP file is read from ``--reward-weights`` or from
the hub repo ``trl-lib/ddpo-aesthetic-predictor`` (``aesthetic-model.pth``, the file trl's examples use). Typical
scores lie around 5-6 for SD 1.5 images.

Missing weights: one-line error, or (when the run allows) a stand-in: the width-32 CLIP of ``rewards.clip`` with the
full-size MLP, all seeded random weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rewards.base import Reward
from rewards.clip import CLIP_L14, small_clip
from rewards.preprocess import clip_preprocess
from rewards.weights import hub_file, pretrained, resolve

MLP_REPO, MLP_FILE = "trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth"


class AestheticMLP(nn.Module):
    """The predictor head; index layout matches the released state dict."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


def _real(weights: str | None):
    from transformers import CLIPVisionModelWithProjection

    mlp_path = hub_file(MLP_REPO, MLP_FILE, weights)  # first: a wrong --reward-weights path is a usage error
    vision = pretrained(CLIPVisionModelWithProjection.from_pretrained, CLIP_L14)
    mlp = AestheticMLP()
    mlp.load_state_dict(torch.load(mlp_path, map_location="cpu", weights_only=True))
    return vision, mlp


def _stand_in():
    model, _ = small_clip(projection_dim=768)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mlp = AestheticMLP()
    return model, mlp


class Aesthetic(Reward):
    """LAION aesthetic score (higher is more aesthetic); differentiable."""

    name = "aesthetic"
    differentiable = True

    def __init__(self, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False):
        (self.clip, self.mlp), self.stand_in = resolve(
            lambda: _real(weights), _stand_in, what="aesthetic (CLIP ViT-L/14 + LAION predictor v2)",
            how=f"download them (huggingface-cli download {MLP_REPO} {MLP_FILE}; huggingface-cli download {CLIP_L14}) "
                "or pass --reward-weights PATH_TO_MLP.pth",
            allow_stand_in=allow_stand_in, strict=strict)
        self.clip.eval().requires_grad_(False)
        self.mlp.eval().requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP image embedding; ``self.clip`` is a CLIPVisionModelWithProjection or (stand-in) CLIPModel."""
        pixels = clip_preprocess(images, size=224).to(next(self.clip.parameters()).dtype)
        if hasattr(self.clip, "get_image_features"):
            features = self.clip.get_image_features(pixel_values=pixels)
        else:
            features = self.clip(pixel_values=pixels).image_embeds
        return F.normalize(features.float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.mlp(self.embed(images).to(next(self.mlp.parameters()).dtype))[:, 0].float()
