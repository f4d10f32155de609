"""Presets fix the model, sampling steps, batch sizes, evaluation and budgets; explicit flags override them.

- ``smoke``: tiny-random, seconds per run, for CI.
- ``default``: the embedded default model (``tiny-shapes`` when its weights ship, else ``tiny-random``), minutes
  per run on a CPU.
- ``paper``: Stable Diffusion 1.5 with the papers' hyper-parameters (GPU; needs the SD 1.5 weights).

Protocols (``--protocol``): ``matched`` gives every method the preset's settings plus its own ``preset_overrides``
(equal images per update); ``published`` gives each method its own code's settings (``Method.published``). The
``paper`` preset uses ``published`` unless told otherwise; the others ``matched``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.core.errors import UsageError


@dataclass
class Preset:
    """Defaults of one preset; every field can be overridden on the command line."""

    model: str
    """Model spec (registry name, directory or hub id)."""
    prompts: str
    """Training prompt set."""
    eval_prompts: str
    """Held-out evaluation prompt set."""
    max_steps: int | None
    """Optimizer-step budget per run."""
    max_seconds: float | None
    """Training wall-clock budget per run (evaluation excluded)."""
    eval_every: int
    """Evaluate every N optimizer steps (0: only at the start and the end)."""
    eval_n: int
    """Number of evaluation images."""
    checkpoint_every: int
    """Checkpoint every N optimizer steps (0: never) for --resume."""
    allow_stand_in: bool
    """Whether rewards whose weights are missing may fall back to a random-weight stand-in without
    ``--allow-stand-in`` (smoke only)."""
    name: str = ""
    """The preset's name (what a method's ``preset_overrides`` are keyed by)."""
    method: dict = field(default_factory=dict)
    """Method-config overrides applied to every method (keys every method config has)."""
    protocol: str = "matched"
    """The protocol this preset uses unless ``--protocol`` says otherwise."""
    max_samples: int | None = None
    """Reward-query budget per run (equal across methods whatever their images per step)."""

    def method_overrides(self, method_cls, protocol: str = "matched") -> dict:
        """The preset's settings for every method, then the method's own: its ``preset_overrides`` for this preset
        (matched) or its ``published`` settings (published). The preset's values never replace the method's pinned
        ``inference`` settings (DiffusionNFT's CFG-free sampling), whose config defaults then stand."""
        pinned = getattr(method_cls, "inference", {})
        preset = {k: v for k, v in self.method.items() if k not in pinned}
        if protocol == "published":
            return {**preset, **getattr(method_cls, "published", {})}
        return {**preset, **getattr(method_cls, "preset_overrides", {}).get(self.name, {})}


def default_model() -> str:
    """``tiny-shapes`` when its trained weights are present, else ``tiny-random``."""
    from bench.core.families.sd import ASSET

    return "tiny-shapes" if (ASSET / "model_index.json").is_file() else "tiny-random"


def _presets() -> dict[str, Preset]:
    default = default_model()
    shapes = default == "tiny-shapes"
    return {
        "smoke": Preset(
            model="tiny-random", prompts="simple-animals", eval_prompts="eval-animals",
            max_steps=3, max_seconds=120.0, eval_every=0, eval_n=4, checkpoint_every=1, allow_stand_in=True,
            method=dict(steps=4, batch_size=2, grad_accum=1),
        ),
        "default": Preset(
            model=default,
            prompts="shapes-train" if shapes else "simple-animals",
            eval_prompts="shapes-eval" if shapes else "eval-animals",
            max_steps=40, max_seconds=300.0, eval_every=10, eval_n=60 if shapes else 8, checkpoint_every=10,
            allow_stand_in=False,  # a random-weight stand-in for a real reward model only with --allow-stand-in
            # tiny-shapes draws the prompt near-perfectly at guidance 5 (exact count 0.975); at guidance 2 the base
            # model leaves room for reward fine-tuning (colour 0.83, shape 0.91, count 0.88; bench.shapeworld --check)
            method=dict(steps=20, batch_size=4, grad_accum=1, **(dict(guidance_scale=2.0) if shapes else {})),
        ),
        "paper": Preset(
            model="sd15", prompts="simple-animals", eval_prompts="eval-animals",
            # budget in reward queries, equal for every method: ddpo-pytorch's aesthetic run, 200 DDPO epochs of 256
            # samples (config/dgx.py aesthetic(): num_epochs = 200; 8 GPUs x 8 x 4 = 256 samples per epoch)
            max_steps=None, max_samples=51_200, max_seconds=None, eval_every=10, eval_n=12, checkpoint_every=10,
            allow_stand_in=False,
            # 8 images per optimizer step for every method; methods that split them differently say so in their
            # own ``preset_overrides`` (AlignProp: 2 per GPU x 4 accumulated).
            method=dict(steps=50, batch_size=8, grad_accum=1), protocol="published",
        ),
    }


PRESET_NAMES = ("smoke", "default", "paper")
PROTOCOLS = ("matched", "published")


def get_preset(name: str) -> Preset:
    presets = _presets()
    if name not in presets:
        raise UsageError(f"unknown preset {name!r}; valid: {', '.join(PRESET_NAMES)}")
    presets[name].name = name
    return presets[name]
