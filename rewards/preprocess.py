"""Differentiable CLIP image preprocessing: tensors in, tensors out, matching ``CLIPImageProcessor``.

The transformers processor converts to PIL, resizes the shortest side to 224 with bicubic resampling (PIL filters
with antialiasing when it shrinks), centre-crops 224x224, rescales to [0, 1] and normalises with CLIP's mean
(0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711). Here the same steps run on a
float tensor with ``F.interpolate(mode="bicubic", antialias=True)`` (PIL's bicubic kernel, a = -0.5), so gradients
reach the images. It differs from the processor only by PIL's rounding to uint8 after resizing (tests bound the
difference). The official AlignProp code instead resizes to 224 *without* cropping (``Resize(224)`` then normalise),
which sees the whole image for square inputs only; for square images both agree, and the crop here is what the
reward models were trained with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resized_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """Output size with the shortest side at ``shortest``, the other scaled and truncated as transformers does."""
    if height <= width:
        return shortest, int(shortest * width / height)
    return int(shortest * height / width), shortest


def clip_preprocess(images: torch.Tensor, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> normalised [B, 3, size, size], differentiable."""
    h, w = images.shape[-2:]
    new_h, new_w = resized_size(h, w, size)
    x = F.interpolate(images.float(), size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0, 1)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
