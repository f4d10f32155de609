"""Prompt fidelity of one evaluation, whatever the reward: on shape-world prompts, the world's classifiers' colour,
shape and exact-count accuracy (``color_accuracy``, ``shape_accuracy``, ``exact_count``: what
``rewards.shapeworld.PromptMatch.classifier_metrics`` measures). A reward that records them itself (``shape-aesthetic``,
``prompt-match``) keeps its own values; for the others (the JPEG rewards, ``mean-brightness`` ...) they are how a
reward-hacked model that stops drawing its prompt shows up. Other prompts: nothing (no classifier suits them)."""

from __future__ import annotations

import functools

import torch

from bench.core import shapes as world

FIDELITY = ("color_accuracy", "shape_accuracy", "exact_count")
"""The metric names, as the shape-world rewards record them."""


@functools.lru_cache(maxsize=1)
def _classifiers():
    from rewards.shapeworld import PromptMatch

    return PromptMatch()


@torch.no_grad()
def fidelity_metrics(images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """The classifiers' accuracies on ``images`` [n, 3, H, W] in [0, 1] against ``prompts``; {} unless every prompt
    is a shape-world caption."""
    if not prompts or any(world.parse_caption(p) is None for p in prompts):
        return {}
    return _classifiers().to(images.device).classifier_metrics(images, list(prompts))
