"""Resolve command-line choices into run specifications, validating everything before any file is written."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.evaluate import EvalConfig


@dataclass
class Budget:
    """When a run stops: the first budget reached (checked in this order: steps, samples, seconds)."""

    max_steps: int | None = None
    """Optimizer steps."""
    max_seconds: float | None = None
    """Training wall-clock seconds (evaluation excluded)."""
    max_samples: int | None = None
    """Reward queries made for training."""
    max_memory_gb: float | None = None
    """Memory cap: CUDA per-process fraction; on CPU an overrun is only marked."""


@dataclass
class EvalSettings:
    """The fixed evaluation of every run of one invocation: prompts (in order) and sampler settings."""

    prompts: list[str]
    """Evaluation prompts; image i uses prompt i modulo their number."""
    config: EvalConfig
    """Number of images, noise seed, sampler settings."""

    def prompt_per_image(self) -> list[str]:
        return [self.prompts[i % len(self.prompts)] for i in range(self.config.n)]

    @classmethod
    def from_dict(cls, data: dict) -> "EvalSettings":
        """From a config.json's ``eval`` block; ``ValueError`` when it has no prompts."""
        data = dict(data or {})
        prompts = data.pop("prompts", None)
        if not prompts:
            raise ValueError("the eval settings hold no prompts")
        data.update(data.pop("config", None) or {})  # the fields nest under "config"
        names = {f.name for f in fields(EvalConfig)}
        return cls(prompts=list(prompts), config=EvalConfig(**{k: v for k, v in data.items() if k in names}))


@dataclass
class RunSpec:
    """Everything a worker process needs to make one (method, reward, seed) run."""

    run_id: str
    method: str
    reward: str
    model: str
    seed: int
    method_config: dict
    prompts: str
    eval_prompts: str
    eval: EvalSettings
    budget: Budget
    eval_every: int
    checkpoint_every: int
    allow_stand_in: bool
    reward_weights: str | None
    preset: str
    protocol: str = "matched"
    """matched (equal images per update) or published (each method's own code's settings)."""
    precision: str = "fp32"
    """fp32, bf16 or fp16 (also in ``method_config``)."""
    eval_every_samples: int = 0
    """Also evaluate each time the training reward queries cross a multiple of this (0: off), so methods with
    different images per step are evaluated at the same query counts."""
    eval_at: str = ""
    """Also evaluate each time the training reward queries cross a count of this ``--eval-at`` schedule
    (``bench.harness.schedule``; "": off)."""
    tracker: str = "none"
    """Experiment tracker the worker mirrors its rows to: none, tensorboard, wandb or trackio (``--tracker``)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "RunSpec":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        """From a config.json's (or the manifest's) spec; older folders lack later fields."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values.update(eval=EvalSettings.from_dict(data["eval"]), budget=Budget(**data["budget"]))
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def run_id(method: str, reward: str, seed: int) -> str:
    """``method__reward__s<seed>``; a plug-in (``path/file.py:Name``) is named by ``Name``."""

    def safe(text: str) -> str:
        if ":" in text and "*" not in text and "+" not in text:
            text = text.rpartition(":")[2]
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    return f"{safe(method)}__{safe(reward)}__s{seed}"


def parse_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise UsageError(f"--{what} {text!r} is empty or malformed; give a comma-separated list such as a,b")
    if len(set(items)) != len(items):
        raise UsageError(f"--{what} {text!r} repeats an entry; list each once")
    return items


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for item in parse_list(text, "seeds"):
        try:
            seeds.append(int(item))
        except ValueError:
            raise UsageError(f"--seeds: {item!r} is not an integer; give e.g. --seeds 0,1,2") from None
    if any(not 0 <= s < 2**32 for s in seeds):
        raise UsageError(f"--seeds must be integers from 0 to {2**32 - 1} (numpy's seed range)")
    return seeds


class Given(str):
    """A config value as text that knows where it was given: ``--set rwr.lr=abc``, ``--config-from 'tuned.json' (key
    methods.rwr.chosen.lr)`` or ``--grid 'rwr.lr=abc'``. Every error about it names that source (``source_of``)."""

    source = ""

    def __new__(cls, text: str, source: str = "") -> "Given":
        value = super().__new__(cls, text)
        value.source = source
        return value


def source_of(value, key: str) -> str:
    """Where a config value given as text came from (a ``Given``'s source; else the ``--set key=value`` giving it)."""
    return getattr(value, "source", "") or f"--set {key}={value}"


def given_source(method: str, key: str, value, per_method: dict, global_sets: dict) -> str:
    """Where ``method``'s ``key`` was given (``source_of``); for a preset's or default value, the ``--set`` that
    would give ``value``."""
    raw = per_method.get(method, {}).get(key, global_sets.get(key))
    return source_of(raw, f"{method}.{key}") if raw is not None else f"--set {method}.{key}={value}"


def convert(value: str, current, key: str):
    """Parse a config value given as text to the type of the config field's default; a bad one is a ``UsageError``
    naming where it was given (``source_of``)."""
    source = source_of(value, key)
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"{source}: expected true or false, got {str(value)!r}")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            number = float(value)
            if not math.isfinite(number):
                raise UsageError(f"{source}: must be a finite number, got {str(value)!r}")
            return number
        return str(value)
    except UsageError:
        raise
    except ValueError:
        raise UsageError(f"{source}: expected a{'n' if isinstance(current, int) else ''} {type(current).__name__}, "
                         f"got {str(value)!r}") from None


def parse_sets(items: list[str], methods: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Split ``--set`` items into per-method (``method.key=value``) and global (``key=value``) overrides, each value a
    ``Given`` naming its source (the ``--set``, or an item's own ``source`` when it is a ``Given``: a grid's)."""
    per_method: dict[str, dict[str, str]] = {m: {} for m in methods}
    global_sets: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()  # "rwr.lr = 1e-3" is rwr.lr, not an unknown key 'lr '
        shown = getattr(item, "source", "") or f"--set {item!r}"
        if not eq or not key:
            raise UsageError(f"{shown} is malformed; write method.key=value or key=value")
        target, dot, field_name = key.rpartition(".")
        if dot and target not in methods:
            raise UsageError(f"{shown} names method {target!r}, which is not in --methods {','.join(methods)}")
        scope = per_method[target] if dot else global_sets
        if field_name in scope and scope[field_name] != value:  # the last would win unseen
            raise UsageError(f"{shown} contradicts {scope[field_name].source or '--set'} given before; give {key} "
                             "once")
        scope[field_name] = Given(value, getattr(item, "source", "") or f"--set {key}={value}")
    return per_method, global_sets


def config_fields(method_cls) -> dict:
    return {f.name: f.default for f in fields(method_cls.Config)}


def method_config(method_cls, method: str, overrides: dict, sets: dict[str, str], global_sets: dict[str, str]):
    """Build and validate a method's config: class defaults <- preset <- global --set <- method --set."""
    defaults = config_fields(method_cls)
    values = {k: v for k, v in overrides.items() if k in defaults}
    for key, raw in global_sets.items():
        if key in defaults:
            values[key] = convert(raw, defaults[key], key)
    for key, raw in sets.items():
        if key not in defaults:
            raise UsageError(f"{source_of(raw, f'{method}.{key}')}: unknown key for {method}; valid: "
                             f"{', '.join(sorted(defaults))}")
        values[key] = convert(raw, defaults[key], f"{method}.{key}")
    try:
        return method_cls.Config(**values)
    except (ValueError, TypeError) as exc:
        name = str(exc).split(" ", 1)[0]  # the range checks' errors begin with the field's name
        if name in sets or name in global_sets:
            raw = sets.get(name, global_sets.get(name))
            raise UsageError(f"{source_of(raw, f'{method}.{name}' if name in sets else name)}: {method}.{exc}") from None
        raise UsageError(f"{method} config: {exc} (set with --set {method}.KEY=VALUE)") from None
