"""Sample diversity of one evaluation: per-prompt mean pairwise distance between samples from different noise.

Reward fine-tuning's best-known failure is mode collapse: every seed of a prompt (or every prompt) drawn as the same
texture. The standard measure is the mean pairwise perceptual distance between samples of one prompt from different
initial noise; the evaluation's images fit it when each prompt has at least two (``--eval-n`` at least twice the
number of evaluation prompts: prompts cycle, image i has prompt i modulo their number and noise seed ``seed + i``).

- ``diversity``: for each prompt with two or more samples, the mean over its unordered pairs (i < j) of the distance
  between their features; then the mean over those prompts (each prompt weighs the same whatever its count). Images
  of different prompts are never paired: across prompts images differ because the prompts do, which says nothing
  about collapse. Identical samples give exactly 0.
- ``outcome_diversity``: the same grouping over discrete outcomes (the shape world's predicted colour, shape and
  count): per prompt (distinct outcomes - 1) / (samples - 1), 0 when every sample reads the same, 1 when all differ
  (rather than distinct / samples, whose floor 1/k moves with the number of samples); mean over prompts.

A ``FeatureSpace`` says how images are compared and is recorded by name beside the value
(``diversity[<name>]``), so a stand-in is never read as a perceptual metric. This layer holds the arithmetic and
the model-free stand-in (``PixelSpace``); the learned spaces live with their networks (``rewards.shapeworld``'s
classifier features, ``rewards.diversity``'s LPIPS) and ``rewards.diversity`` picks one per evaluation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F


class FeatureSpace:
    """How two images of one prompt are compared: ``features`` (one vector per image, compared by Euclidean
    distance) or, for a learned pairwise metric such as LPIPS, ``distances`` itself."""

    name: str = "features"
    """Recorded in the metric's name, ``diversity[<name>]``."""
    outcome_metric: str = "outcome_diversity"
    """The metric name of ``outcome_diversity`` over ``outcomes``, where a space defines them."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[k, d] features of images [k, 3, H, W] in [0, 1]."""
        raise NotImplementedError

    def distances(self, images: torch.Tensor) -> torch.Tensor:
        """[k, k] pairwise distances between images [k, 3, H, W]."""
        return pairwise_distances(self.features(images))

    def outcomes(self, images: torch.Tensor) -> list[Hashable] | None:
        """A discrete outcome per image (e.g. predicted attributes) for ``outcome_diversity``; None: not defined."""
        return None


class PixelSpace(FeatureSpace):
    """The model-free stand-in: images area-averaged to ``size`` x ``size`` (layout and colours kept, fine texture
    averaged away), compared by root-mean-square difference per value, so the distance is in [0, 1]. Not
    perceptual: it weighs every change of layout or colour alike and misses texture; recorded as
    ``pixel16-stand-in``."""

    def __init__(self, size: int = 16):
        self.size = size
        self.name = f"pixel{size}-stand-in"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(images.float(), self.size)
        return small.flatten(1) / small[0].numel() ** 0.5  # Euclidean distance = RMS difference


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """[k, k] Euclidean distances between the rows of ``features`` [k, d], exactly 0 between equal rows (the
    explicit difference, not ``torch.cdist``'s matrix-product form, which leaves ~1e-4 on the diagonal)."""
    f = features.double()
    return (f[:, None, :] - f[None, :, :]).pow(2).sum(-1).sqrt()


def prompt_groups(prompts: Sequence[str], min_size: int = 2) -> list[list[int]]:
    """The image indices of each prompt that has at least ``min_size`` images, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    return [idx for idx in groups.values() if len(idx) >= min_size]


def mean_pair_distance(distances: torch.Tensor) -> float:
    """Mean of the distances over unordered pairs i < j of a [k, k] matrix (k >= 2)."""
    k = len(distances)
    i, j = torch.triu_indices(k, k, offset=1)
    return float(distances[i, j].mean())


def diversity(images: torch.Tensor, prompts: Sequence[str], space: FeatureSpace) -> float | None:
    """Mean over prompts with two or more samples of the mean pairwise distance between that prompt's samples in
    ``space``; None when no prompt has two samples."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    groups = prompt_groups(prompts)
    if not groups:
        return None
    return sum(mean_pair_distance(space.distances(images[idx])) for idx in groups) / len(groups)


def outcome_diversity(outcomes: Sequence[Hashable], prompts: Sequence[str]) -> float | None:
    """Mean over prompts with two or more samples of (distinct outcomes - 1) / (samples - 1); None when no prompt
    has two samples."""
    if len(outcomes) != len(prompts):
        raise ValueError(f"{len(outcomes)} outcomes but {len(prompts)} prompts")
    groups = prompt_groups(prompts)
    if not groups:
        return None
    return sum((len({outcomes[i] for i in idx}) - 1) / (len(idx) - 1) for idx in groups) / len(groups)
