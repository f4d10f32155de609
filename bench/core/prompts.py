"""Prompt sets by name, or a plain text file with one prompt per line.

``simple-animals`` is the 45 common animals the DDPO and AlignProp papers train on; both papers use the bare
animal name as the prompt (template ``"{}"``). ``eval-animals`` is AlignProp's held-out set of 6 unseen animals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core.errors import UsageError

ASSETS = Path(__file__).parent / "assets"
# name -> (file of words, template); a registered set is a file under bench/assets plus a template.
PROMPT_SETS: dict[str, tuple[str, str]] = {
    "simple-animals": ("simple_animals.txt", "{}"),
    "eval-animals": ("eval_simple_animals.txt", "{}"),
    "shapes-train": ("shapes_train.txt", "{}"),  # shape world (bench/shapeworld.py): 90 training captions
    # The 30 captions whose count is held out for their colour and shape (bench/core/shapes.py ``eval_scenes``),
    # split by (colour, shape) pair: 20 report results, 10 tune hyper-parameters (every colour, shape, count).
    "shapes-eval": ("shapes_eval.txt", "{}"),
    "shapes-val": ("shapes_val.txt", "{}"),
}
VALIDATION_SETS: dict[str, str] = {"shapes-eval": "shapes-val"}
"""Evaluation prompt set -> its disjoint validation set of the same distribution (what ``bench.tune`` scores on)."""


@dataclass(frozen=True)
class PromptSet:
    """An ordered list of prompts with a seeded sampler over it."""

    name: str
    prompts: tuple[str, ...]

    def sample(self, n: int, generator: torch.Generator) -> list[str]:
        """``n`` prompts drawn uniformly with replacement (as both papers' prompt functions)."""
        idx = torch.randint(len(self.prompts), (n,), generator=generator)
        return [self.prompts[i] for i in idx.tolist()]

    def first(self, n: int) -> list[str]:
        """The first ``n`` prompts, cycling: the fixed evaluation prompts."""
        return [self.prompts[i % len(self.prompts)] for i in range(n)]


def register_prompt_set(name: str, path: str | Path, template: str = "{}") -> None:
    PROMPT_SETS[name] = (str(path), template)


def prompt_set_names() -> list[str]:
    return sorted(PROMPT_SETS)


def load_prompts(spec: str) -> PromptSet:
    """A registered prompt-set name, or a path to a text file with one prompt per line."""
    if spec in PROMPT_SETS:
        file, template = PROMPT_SETS[spec]
        path = ASSETS / file if not Path(file).is_absolute() else Path(file)
        words = _read_lines(path)
        return PromptSet(spec, tuple(template.format(w) for w in words))
    path = Path(spec)
    if path.is_file():
        return PromptSet(str(path), tuple(_read_lines(path)))
    raise UsageError(f"unknown prompt set {spec!r}; valid: {', '.join(prompt_set_names())}, or a text file path")


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"prompt file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8, one "
                         "prompt per line") from None
    if "\0" in text:
        raise UsageError(f"prompt file {str(path)!r} is a binary file; pass a UTF-8 text file, one prompt per line")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UsageError(f"prompt file {str(path)!r} is empty; write one prompt per line")
    return lines
