"""HPS v2.1 (Human Preference Score): OpenCLIP ViT-H-14 fine-tuned on human preferences (``xswu/HPSv2``).

Score = diag(normalise(image features) . normalise(text features)) (about 0.25-0.30 for SD 1.5 images), as the
official ``hpsv2`` package and the AlignProp code compute it. Needs the optional extra ``pip install -e '.[hps]'``
(open-clip-torch) and the checkpoint ``HPS_v2.1_compressed.pt`` (``--reward-weights`` or the HF cache / hub).
Without them: a one-line error, or (when the run allows) a stand-in: the width-32 transformers CLIP of
``rewards.clip`` with seeded random weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rewards.base import Reward
from rewards.clip import ClipScore, small_clip
from rewards.preprocess import clip_preprocess
from rewards.weights import WeightsMissing, hub_file, resolve

HPS_REPO, HPS_FILE = "xswu/HPSv2", "HPS_v2.1_compressed.pt"


def _real(weights: str | None):
    try:
        import open_clip
    except ImportError:
        raise WeightsMissing("open-clip-torch is not installed (pip install -e '.[hps]')") from None
    path = hub_file(HPS_REPO, HPS_FILE, weights)
    model = open_clip.create_model("ViT-H-14", pretrained=None)
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("state_dict", state))
    return model, open_clip.get_tokenizer("ViT-H-14")


class HPSv2(Reward):
    """HPS v2.1 preference score; differentiable."""

    name = "hpsv2"
    differentiable = True

    def __init__(self, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False):
        (self.model, self.tokenizer), self.stand_in = resolve(
            lambda: _real(weights), small_clip, what=f"hpsv2 ({HPS_REPO}/{HPS_FILE}, OpenCLIP ViT-H-14)",
            how="pip install -e '.[hps]' and download it, or pass --reward-weights PATH",
            allow_stand_in=allow_stand_in, strict=strict)
        self.open_clip = self.stand_in is None
        self.model.eval().requires_grad_(False)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if not self.open_clip:  # the stand-in is a transformers CLIP
            return ClipScore.score(self, images, prompts)
        pixels = clip_preprocess(images, size=224)
        image = F.normalize(self.model.encode_image(pixels), dim=-1)
        with torch.no_grad():
            text = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(images.device)), dim=-1)
        return (image * text).sum(-1).float()
