"""Rewards by name, weighted combinations, and user plug-ins.

``build_reward(spec)`` accepts a registered name (``aesthetic``), a weighted combination
(``0.7*aesthetic+0.3*clip-score``, see ``rewards.combine``) or a plug-in (``my.module:Name`` or
``path/to/file.py:Name``, where ``Name`` is a ``rewards.base.Reward`` subclass or a factory returning one; see
``rewards.plugins``). Registered entries are ``"module:factory"`` strings, imported only when chosen, so a reward's
heavy dependencies (transformers, open-clip) load only when it is used.

Weights: rewards backed by a model take ``weights`` (the CLI's ``--reward-weights``), ``allow_stand_in`` and
``strict`` (``rewards.weights``); ``weights`` given to a reward without a weights file is a usage error.

What a name means can depend on the model: on a shape-world model ``aesthetic`` is ``shape-aesthetic``
(``rewards.resolve``, applied by the planner before anything else).
"""

from __future__ import annotations

from bench.core.errors import UsageError
from bench.core.registry import Registry
from rewards.base import Reward
from rewards.plugins import accepts, call_accepting, check_plugin, is_combination, is_plugin, load_plugin

REWARDS = Registry(
    "reward",
    {
        "mean-brightness": "rewards.toy:MeanBrightness",
        "jpeg-compressibility": "rewards.compress:Compressibility",
        "jpeg-incompressibility": "rewards.compress:Incompressibility",
        "aesthetic": "rewards.aesthetic:Aesthetic",
        "clip-score": "rewards.clip:ClipScore",
        "pickscore": "rewards.clip:PickScore",
        "hpsv2": "rewards.hps:HPSv2",
        "count": "rewards.shapeworld:ShapeCount",
        "prompt-match": "rewards.shapeworld:PromptMatch",
        "shape-aesthetic": "rewards.shape_aesthetic:ShapeAesthetic",
    },
    aliases={"compressibility": "jpeg-compressibility", "incompressibility": "jpeg-incompressibility",
             "laion-aesthetic": "aesthetic"},  # LAION's predictor on any model (rewards.resolve)
)

__all__ = ["REWARDS", "Reward", "build_reward", "check_reward_prompts", "check_reward_spec", "check_reward_weights",
           "higher_is_better", "is_plugin", "make_reward", "reward_names", "true_metrics"]


def higher_is_better(spec: str | None) -> bool:
    """A reward's direction from its registered class (``Reward.higher_is_better``); True for a name not registered
    here (a combination, a plug-in, a name from elsewhere), without building the reward."""
    try:
        return bool(getattr(REWARDS.get(spec), "higher_is_better", True))
    except Exception:
        return True


def true_metrics(spec: str) -> dict[str, bool]:
    """The true scores a reward's evaluation records (``Reward.true_metrics``: name -> higher is better), read from
    its class without building it; {} for a combination (its evaluation records none) or a factory that declares
    none. Raises ``UsageError`` for an unknown name or a plug-in that does not import."""
    check_reward_spec(spec)
    if is_combination(spec):
        return {}
    return dict(getattr(_factory(spec), "true_metrics", None) or {})


def reward_names() -> list[str]:
    """The registered reward names, sorted (combinations and plug-ins are accepted besides these)."""
    return REWARDS.names()


def make_reward(name: str, **kwargs) -> Reward:
    """Build the reward registered as ``name``, passing only the keyword arguments its factory accepts."""
    factory = REWARDS.get(name)
    return _checked(call_accepting(factory, kwargs, name), name)


def check_reward_spec(spec: str) -> None:
    """Validate a spec without building any model (names known, plug-in importable, combination well formed)."""
    from rewards.combine import parse_terms

    if not spec.strip():
        raise UsageError("--reward is empty; give a name such as mean-brightness (see --list)")
    if is_combination(spec):
        for _, term in parse_terms(spec):
            check_reward_spec(term)
    elif is_plugin(spec):
        check_plugin(spec)
    else:
        REWARDS.target(spec)


def _factory(term: str):
    from bench.core.registry import load_target

    return load_target(term) if is_plugin(term) else REWARDS.get(term)


def _terms(spec: str) -> list[str]:
    from rewards.combine import parse_terms

    return [term for _, term in parse_terms(spec)] if is_combination(spec) else [spec]


def check_reward_weights(spec: str, weights: str | None) -> None:
    """``--reward-weights`` must exist and go to a single reward that takes a weights file (builds nothing)."""
    import os

    if not weights:
        return
    if is_combination(spec):
        raise UsageError("--reward-weights names one file: use it with a single reward, not a combination")
    if not os.path.exists(weights):
        raise UsageError(f"--reward-weights {weights!r} does not exist; pass the path of the weights file or folder")
    if accepts(_factory(spec), "weights") is False:
        raise UsageError(f"reward {spec!r} takes no weights file; drop --reward-weights")


def check_reward_prompts(spec: str, prompts: list[str]) -> None:
    """Refuse prompts a reward cannot score (e.g. the shape-world rewards need shape-world captions)."""
    for term in _terms(spec):
        factory = _factory(term)
        if isinstance(factory, Reward) or (isinstance(factory, type) and issubclass(factory, Reward)):
            factory.check_prompts(list(prompts))


def build_reward(spec: str, *, weights: str | None = None, allow_stand_in: bool = False, strict: bool = False,
                 device: str = "cpu") -> Reward:
    """The reward for ``spec`` on ``device``; missing weights fall back to a stand-in only when allowed."""
    from rewards.combine import WeightedSum, parse_terms

    check_reward_spec(spec)
    options = dict(weights=weights, allow_stand_in=allow_stand_in, strict=strict)
    if is_combination(spec):
        if weights:
            raise UsageError("--reward-weights names one file: use it with a single reward, not a combination")
        reward = WeightedSum([(w, _build_term(term, options)) for w, term in parse_terms(spec)], spec)
    else:
        reward = _build_term(spec, options)
    return reward.to(device)


def _build_term(term: str, options: dict) -> Reward:
    return load_plugin(term, **options) if is_plugin(term) else make_reward(term, **options)


def _checked(reward, spec: str) -> Reward:
    if not isinstance(reward, Reward):
        raise UsageError(f"reward {spec!r} built a {type(reward).__name__}, not a rewards.base.Reward subclass")
    return reward
