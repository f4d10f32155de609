"""Rewards by name, weighted combinations, and user plug-ins.

``build_reward(spec)`` accepts a registered name (``aesthetic``), a weighted combination
(``0.7*aesthetic+0.3*clip-score``, see ``rewards.combine``) or a plug-in (``my.module:Name`` or
``path/to/file.py:Name``, where ``Name`` is a ``rewards.base.Reward`` subclass or a factory returning one).
Registered entries are ``"module:factory"`` strings, imported only when chosen.
"""

from __future__ import annotations

import inspect

from bench.errors import UsageError
from bench.registry import Registry, load_target
from rewards.base import Reward

REWARDS = Registry(
    "reward",
    {
        "mean-brightness": "rewards.toy:MeanBrightness",
        "jpeg-compressibility": "rewards.jpeg:JpegCompressibility",
        "jpeg-incompressibility": "rewards.jpeg:JpegIncompressibility",
        "compressibility": "rewards.compress:Compressibility",
        "incompressibility": "rewards.compress:Incompressibility",
        "aesthetic": "rewards.aesthetic:Aesthetic",
        "clip-score": "rewards.clip:ClipScore",
        "pickscore": "rewards.clip:PickScore",
        "hpsv2": "rewards.hps:HPSv2",
        "count": "rewards.shapeworld:ShapeCount",
        "prompt-match": "rewards.shapeworld:PromptMatch",
    },
)


def reward_names() -> list[str]:
    return REWARDS.names()


def make_reward(name: str, **kwargs) -> Reward:
    """Build the reward registered as ``name``, passing only the keyword arguments its factory accepts."""
    factory = REWARDS.get(name)
    accepted = inspect.signature(factory).parameters
    return _checked(factory(**{k: v for k, v in kwargs.items() if k in accepted}), name)


def is_plugin(spec: str) -> bool:
    return ":" in spec and "+" not in spec


def check_reward_spec(spec: str) -> None:
    """Validate a spec without building any model (names known, plug-in importable, combination well formed)."""
    from rewards.combine import parse_terms

    if not spec.strip():
        raise UsageError("--reward is empty; give a name such as mean-brightness (see --list)")
    if is_plugin(spec):
        load_target(spec)
    elif "+" in spec or "*" in spec:
        for _, name in parse_terms(spec):
            check_reward_spec(name)
    else:
        REWARDS.target(spec)


def build_reward(spec: str, *, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False,
                 device: str = "cpu") -> Reward:
    """The reward for ``spec`` on ``device``; missing weights fall back to a stand-in only when allowed."""
    from rewards.combine import WeightedSum, parse_terms

    check_reward_spec(spec)
    options = dict(weights=weights, allow_stand_in=allow_stand_in, strict=strict)
    if is_plugin(spec):
        obj = load_target(spec)
        reward = _checked(obj() if callable(obj) else obj, spec)
    elif "+" in spec or "*" in spec:
        if weights:
            raise UsageError("--reward-weights names one file: use it with a single reward, not a combination")
        reward = WeightedSum([(w, make_reward(name, **options)) for w, name in parse_terms(spec)], spec)
    else:
        reward = make_reward(spec, **options)
    return reward.to(device)


def _checked(reward, spec: str) -> Reward:
    if not isinstance(reward, Reward):
        raise UsageError(f"reward {spec!r} built a {type(reward).__name__}, not a rewards.base.Reward subclass")
    return reward
