"""The reward interface every method and the evaluator use.

A reward maps images ``[B, 3, H, W]`` in [0, 1] (a tensor) and their prompts to scores ``[B]``. It declares
whether that *true* score is differentiable and whether higher is better. A reward whose true score is not
differentiable (JPEG size) may offer a differentiable ``surrogate`` for gradient methods; evaluation always uses
the true score.
"""

from __future__ import annotations

import torch

from bench.core.diversity import FeatureSpace


class RewardNotDifferentiable(ValueError):
    """A gradient method was given a reward with neither a differentiable score nor a surrogate."""


class Reward:
    """Base class: subclasses set the class attributes and implement ``score``."""

    name: str = "reward"
    differentiable: bool = False
    """Whether ``score`` is differentiable with respect to the images."""
    higher_is_better: bool = True
    """Whether methods should increase this score (False: they decrease it)."""
    stand_in: str | None = None
    """Set when the weights behind this reward are a random-weight stand-in; names what it stands in for."""
    surrogate_name: str | None = None
    """Names the differentiable ``surrogate`` (recorded in a gradient method's results); None without one."""
    true_metrics: dict[str, bool] = {}
    """The true scores ``eval_metrics`` records beside this reward (the quantity it stands for, computed without the
    reward's own model or surrogate), each with whether higher is better; a task names one (``bench.suite.tasks``)."""

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The true score, shape [B]."""
        raise NotImplementedError

    def surrogate(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """A differentiable training score correlated with ``score``; only for non-differentiable rewards."""
        raise RewardNotDifferentiable(
            f"reward {self.name!r} is not differentiable and has no surrogate: use a method that needs no "
            "reward gradient (ddpo, rwr, rwr-sparse) or a differentiable reward"
        )

    @property
    def has_surrogate(self) -> bool:
        return type(self).surrogate is not Reward.surrogate

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        scores = self.score(images, list(prompts))
        if scores.shape != (len(images),):
            raise ValueError(f"reward {self.name!r} returned shape {tuple(scores.shape)}, expected ({len(images)},)")
        return scores

    def objective(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """What gradient methods maximise: the true score if differentiable, else the surrogate; sign-corrected."""
        if self.differentiable:
            values = self(images, prompts)
        else:
            values = self.surrogate(images, list(prompts))
        return values if self.higher_is_better else -values

    def trained_on(self) -> str:
        """What gradient methods train on: "" for the true score, else the surrogate's name."""
        if self.differentiable:
            return ""
        return self.surrogate_name or (f"{self.name} surrogate" if self.has_surrogate else "")

    def check_trainable(self) -> None:
        """Raise ``RewardNotDifferentiable`` when no gradient can be had from this reward."""
        if not (self.differentiable or self.has_surrogate):
            self.surrogate(torch.zeros(0), [])

    @classmethod
    def check_prompts(cls, prompts: list[str]) -> None:
        """Raise ``UsageError`` when this reward cannot score these prompts (checked before any run starts)."""

    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """Extra evaluation numbers (e.g. an accuracy) recorded beside the reward; none by default."""
        return {}

    def diversity_space(self) -> FeatureSpace | None:
        """The feature space the diversity of this reward's images is measured in (``rewards.diversity``); None:
        chosen from the prompts (the shape world's classifiers on its captions, else LPIPS or a pixel stand-in)."""
        return None

    def to(self, device) -> "Reward":
        """Move any weights to ``device``; rewards without weights return themselves."""
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        return self

    def describe(self) -> dict:
        return {
            "name": self.name,
            "differentiable": self.differentiable,
            "higher_is_better": self.higher_is_better,
            "surrogate": self.has_surrogate,
            "surrogate_name": self.surrogate_name,
            "stand_in": self.stand_in,
        }
