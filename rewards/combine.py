"""Weighted combinations of rewards, as the AlignProp paper mixes objectives: ``0.7*aesthetic+0.3*clip-score``.

Syntax: terms joined by ``+``, each ``[weight*]name`` where ``name`` is a registered reward or a plug-in
(``module:Name``) and ``weight`` a plain decimal number (default 1; negative weights subtract, e.g.
``aesthetic+-0.5*compressibility``; spaces around ``+`` and ``*`` are ignored). The combined score is
sum_i w_i * s_i where s_i is part i's score made higher-is-better; it is differentiable when every part is, and
otherwise gradient methods train on sum_i w_i * objective_i, using each part's surrogate where it has one.
Evaluation uses the parts' true scores. The parts keep their own scales (aesthetic about 5-6, clip-score about
0.2-0.3), so choose weights with that in mind.
"""

from __future__ import annotations

import math

import torch

from bench.core.errors import UsageError
from rewards.base import Reward, RewardNotDifferentiable


def parse_terms(spec: str) -> list[tuple[float, str]]:
    """``"0.7*aesthetic+0.3*clip-score"`` -> [(0.7, "aesthetic"), (0.3, "clip-score")]."""
    terms = []
    for raw in spec.split("+"):
        weight, star, name = raw.strip().rpartition("*")
        if not name.strip():
            raise UsageError(f"reward combination {spec!r} has an empty term; write e.g. 0.7*aesthetic+0.3*clip-score")
        try:
            value = float(weight) if star else 1.0
        except ValueError:
            raise UsageError(f"reward combination {spec!r}: {weight!r} is not a number") from None
        if not math.isfinite(value):
            raise UsageError(f"reward combination {spec!r}: weight {weight!r} must be a finite number")
        terms.append((value, name.strip()))
    return terms


class WeightedSum(Reward):
    """sum_i w_i * (higher-is-better score of part i)."""

    def __init__(self, parts: list[tuple[float, Reward]], spec: str):
        self.parts = parts
        self.name = spec
        self.differentiable = all(r.differentiable for _, r in parts)
        stand_ins = [r.stand_in for _, r in parts if r.stand_in]
        self.stand_in = "; ".join(stand_ins) or None
        surrogates = [f"{r.name}: {r.trained_on()}" for _, r in parts if not r.differentiable and r.has_surrogate]
        self.surrogate_name = "; ".join(surrogates) or None

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        total = 0
        for weight, reward in self.parts:
            s = reward(images, prompts)
            total = total + weight * (s if reward.higher_is_better else -s)
        return total

    def surrogate(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return sum(weight * reward.objective(images, prompts) for weight, reward in self.parts)

    def check_trainable(self) -> None:
        for _, reward in self.parts:
            if not (reward.differentiable or reward.has_surrogate):
                raise RewardNotDifferentiable(
                    f"reward {self.name!r}: part {reward.name!r} is not differentiable and has no surrogate; use a "
                    "method that needs no reward gradient (ddpo, rwr, rwr-sparse)"
                )

    def diversity_space(self):
        """The first part's own diversity space, if any names one (``rewards.diversity``)."""
        return next((space for _, r in self.parts if (space := r.diversity_space()) is not None), None)

    def to(self, device) -> "WeightedSum":
        for _, reward in self.parts:
            reward.to(device)
        return self
