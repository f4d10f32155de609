"""HPS v2.1 (Human Preference Score): OpenCLIP ViT-H-14 fine-tuned on human preferences (``xswu/HPSv2``).

Score = diag(normalise(image features) . normalise(text features)), no logit scale (about 0.25-0.30 for SD 1.5
images), as the official ``hpsv2`` package and the AlignProp code compute it. The model is
``open_clip.create_model("ViT-H-14")`` with the checkpoint ``HPS_v2.1_compressed.pt`` (its ``state_dict`` entry)
loaded over it. Images are preprocessed as the official scorer's evaluation transform does (OpenCLIP
``ResizeMaxSize``: longest side to 224, black padding; ``clip_preprocess(fit="pad")``, the same as a centre crop
for square images) with CLIP's mean and std.

OpenCLIP is an optional extra: ``pip install -e '.[hps]'`` (open-clip-torch). The checkpoint comes from
``--reward-weights PATH``, the Hugging Face cache, or the hub when online. Without the extra or the file: a one-line
error naming what is missing, or (when the run allows a stand-in) the width-32 transformers CLIP of
``rewards.clip`` with seeded random weights, which needs neither.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from bench.core.errors import UsageError
from rewards.base import Reward
from rewards.clip import normalized_image_features, normalized_text_features, small_clip
from rewards.preprocess import clip_preprocess
from rewards.weights import WeightsMissing, hub_file, resolve

HPS_REPO, HPS_FILE = "xswu/HPSv2", "HPS_v2.1_compressed.pt"
EXTRA = "pip install -e '.[hps]'"
WHAT = f"hpsv2 ({HPS_REPO}/{HPS_FILE}, OpenCLIP ViT-H-14)"


def _missing_extra() -> bool:
    return importlib.util.find_spec("open_clip") is None


def _real(weights: str | None):
    if _missing_extra():
        raise WeightsMissing(f"open-clip-torch is not installed ({EXTRA})")
    import open_clip

    path = hub_file(HPS_REPO, HPS_FILE, weights)
    model = open_clip.create_model("ViT-H-14", pretrained=None)
    # The official checkpoint is a pickled dict {"state_dict": ...}; trusted source, hence weights_only=False.
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("state_dict", state))
    return model, open_clip.get_tokenizer("ViT-H-14")


class HPSv2(Reward):
    """HPS v2.1 preference score; differentiable."""

    name = "hpsv2"
    differentiable = True

    def __init__(self, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False):
        if not (allow_stand_in and not strict) and _missing_extra():
            raise UsageError(f"hpsv2 needs the optional extra open-clip-torch: {EXTRA}")
        (self.model, self.tokenizer), self.stand_in = resolve(
            lambda: _real(weights), small_clip, what=WHAT,
            how=f"download it (huggingface-cli download {HPS_REPO} {HPS_FILE}) or pass --reward-weights PATH",
            allow_stand_in=allow_stand_in, strict=strict)
        self.open_clip = self.stand_in is None
        self.model.eval().requires_grad_(False)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if not self.open_clip:  # the stand-in is a transformers CLIP
            image = normalized_image_features(self.model, images)
            text = normalized_text_features(self.model, self.tokenizer, prompts, image.device)
            return (image * text).sum(-1).float()
        pixels = clip_preprocess(images, size=224, fit="pad").to(next(self.model.parameters()).dtype)
        image = F.normalize(self.model.encode_image(pixels), dim=-1)
        with torch.no_grad():
            text = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(images.device)), dim=-1)
        return (image * text).sum(-1).float()

