"""Model registry: built-in tiny models by name, any diffusers Stable Diffusion (1.x/2.x or 3/3.5) directory, or a
hub id. Each model belongs to a family (``bench.core.families``: ``sd`` or ``sd3``), which decides its chain."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.registry import Registry

# Built-in models, constructed in-process (no download).
BUILDERS = Registry("model", {
    "tiny-random": "bench.core.builders:build_tiny_random",
    "tiny-shapes": "bench.core.builders:load_tiny_shapes",  # trained on the shape world, weights ship in the repo
    "sd15-random": "bench.core.builders:build_sd15_random",  # SD 1.5 architecture, random weights: GPU measurements
    "tiny-flow-random": "bench.core.builders_flow:build_tiny_flow_random",
    "tiny-shapes-flow": "bench.core.builders_flow:load_tiny_shapes_flow",  # shape world as a rectified flow
    "sd35m-random": "bench.core.builders_flow:build_sd35m_random",  # SD 3.5 Medium architecture, random weights
})
# Short names for hub checkpoints (need the weights in the Hugging Face cache, or a connection).
HUB_ALIASES = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
               "sd35m": "stabilityai/stable-diffusion-3.5-medium"}
# The family of every built-in model and hub alias (directories and other hub ids: read from model_index.json).
FAMILY_OF = {"tiny-random": "sd", "tiny-shapes": "sd", "sd15-random": "sd", "sd15": "sd",
             "tiny-flow-random": "sd3", "tiny-shapes-flow": "sd3", "sd35m-random": "sd3", "sd35m": "sd3"}
# Models whose weights are random: every output that uses them is labelled.
STAND_INS = {
    "tiny-random": "random weights (tiny-random: SD architecture at toy width)",
    "sd15-random": "random weights (sd15-random: SD 1.5 architecture at full size)",
    "tiny-flow-random": "random weights (tiny-flow-random: SD3 architecture at toy width)",
    "sd35m-random": "random weights (sd35m-random: SD 3.5 Medium architecture at full size, no T5)",
}
STAND_IN_MARKER = "BENCH_STAND_IN.txt"
MODEL_FACTS = "bench_model.json"
"""What a saved pipeline folder needs beyond diffusers' files to sample as the harness did: an sd3 model's T5
context length (``{"t5_tokens": N}``: zero T5 tokens on the toy models, which have no T5 encoder, where diffusers
defaults to 256). ``save_model`` writes it, ``load_model`` reads it."""


@dataclass
class LoadedModel:
    """A diffusers pipeline with the facts the recorder needs about where it came from."""

    pipe: object
    name: str
    """What the user asked for (registry name, directory or hub id)."""
    stand_in: str | None
    """Why this model is not a real pretrained model (random weights), or None."""


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE set to anything but 0/false/empty)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def model_names() -> list[str]:
    return BUILDERS.names() + sorted(HUB_ALIASES)


def check_model(spec: str) -> None:
    """Fail fast (before any run starts) on a model name that can never load."""
    if spec in BUILDERS or spec in HUB_ALIASES:
        return
    if Path(spec).is_dir():
        if not (Path(spec) / "model_index.json").is_file():
            raise UsageError(f"{spec!r} has no model_index.json; pass a diffusers pipeline directory (save_pretrained)")
        return
    if _looks_like_path(spec):
        raise UsageError(f"model directory {spec!r} does not exist; pass a diffusers pipeline directory")
    if "/" not in spec:
        raise UsageError(f"unknown model {spec!r}; valid: {', '.join(model_names())}, a directory, or a hub id")


def _looks_like_path(spec: str) -> bool:
    """Hub ids are ``org/name``; anything rooted, relative-dotted or deeper is meant as a directory."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1


GEOMETRY = {"tiny-random": (2, 2), "sd15-random": (8, 8), "tiny-flow-random": (2, 2), "sd35m-random": (8, 2)}
"""Built-in models built from code: (VAE factor, denoiser down-sampling factor: UNet levels or the transformer's
patch size); the shipped models' are read from their files."""


def model_family(spec: str) -> str:
    """The family (``sd`` or ``sd3``) of a model spec, read without loading weights; a hub id whose
    model_index.json is not on this machine counts as ``sd``."""
    import json

    if spec in FAMILY_OF:
        return FAMILY_OF[spec]
    index = _config_folder(spec)
    try:
        name = json.loads((index / "model_index.json").read_text()).get("_class_name", "") if index else ""
    except (OSError, ValueError):
        name = ""
    from bench.core.families import family_of_pipeline_class

    try:
        return family_of_pipeline_class(name).name
    except ValueError:
        return "sd"


def _config_folder(spec: str) -> Path | None:
    """The folder holding the model's configs (a directory, a shipped asset or the hub cache), or None."""
    from bench.core.builders import ASSET
    from bench.core.builders_flow import SHAPES_FLOW_ASSET

    if spec in ("tiny-shapes", "tiny-shapes-flow"):
        return ASSET if spec == "tiny-shapes" else SHAPES_FLOW_ASSET
    if Path(spec).is_dir():
        return Path(spec)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(HUB_ALIASES.get(spec, spec), "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


def model_geometry(spec: str) -> tuple[int, int] | None:
    """(pixels per latent cell, UNet down-sampling factor) read from the model's configs without loading weights;
    None where they cannot be read here (a hub id not in the cache)."""
    import json

    if spec in GEOMETRY:
        return GEOMETRY[spec]
    folder = _config_folder(spec)
    if folder is None:
        return None
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        if model_family(spec) == "sd3":
            return 2 ** (len(vae["block_out_channels"]) - 1), json.loads(
                (folder / "transformer" / "config.json").read_text())["patch_size"]
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    return 2 ** (len(vae["block_out_channels"]) - 1), 2 ** (len(unet["down_block_types"]) - 1)


def load_model(spec: str, *, seed: int = 0, device: str = "cpu") -> LoadedModel:
    """Load ``spec`` (a registry name, a diffusers directory or a hub id) on ``device``; an ``sd`` pipeline gets a
    DDIM scheduler, an ``sd3`` one keeps its flow-matching Euler scheduler."""
    import torch

    check_model(spec)
    if spec in BUILDERS:
        pipe, stand_in = BUILDERS.get(spec)(seed=seed), STAND_INS.get(spec)
    else:
        source = HUB_ALIASES.get(spec, spec)
        pipe = _from_pretrained(source, model_family(spec), absent_components(_config_folder(spec)))
        marker = Path(source) / STAND_IN_MARKER
        stand_in = marker.read_text().strip() if marker.is_file() else None
        tokens = saved_t5_tokens(spec)
        if tokens is not None:
            pipe.t5_tokens = tokens  # else the chain's default, diffusers' 256 (``model_notes`` says so)
    if model_family(spec) == "sd":
        _use_ddim(pipe)
    pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe=pipe, name=spec, stand_in=stand_in)


def unet_module_names(spec: str) -> set[str] | None:
    """Module names of the model's denoiser (UNet or SD3 transformer), built without weights where it can be (what
    LoRA targets are matched against); the built-in models of a family share its blocks, so the family's tiny
    random model stands for them. None when the denoiser's config is not on this machine (a hub id not in the
    cache)."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    from bench.core.families import family

    fam = family(model_family(spec))
    if spec in BUILDERS:
        tiny = BUILDERS.get("tiny-random" if fam.name == "sd" else "tiny-flow-random")(seed=0)
        return {name for name, _ in getattr(tiny, fam.denoiser).named_modules()}
    source = HUB_ALIASES.get(spec, spec)
    config = Path(source) / fam.denoiser / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, f"{fam.denoiser}/config.json")
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    from accelerate import init_empty_weights

    cls = UNet2DConditionModel if fam.name == "sd" else SD3Transformer2DModel
    with init_empty_weights():
        module = cls.from_config(cls.load_config(str(config)))
    return {name for name, _ in module.named_modules()}


def save_model(model: LoadedModel, directory: str | Path) -> Path:
    """``save_pretrained`` plus a marker file that keeps a stand-in labelled when loaded back."""
    directory = Path(directory)
    model.pipe.save_pretrained(directory)
    if model.stand_in:
        (directory / STAND_IN_MARKER).write_text(model.stand_in + "\n")
    if getattr(model.pipe, "t5_tokens", None) is not None:
        from bench.core.files import write_json

        write_json(directory / MODEL_FACTS, {"t5_tokens": int(model.pipe.t5_tokens)})
    return directory


def absent_components(folder) -> list[str]:
    """Components a saved pipeline folder holds as ``[null, null]`` in ``model_index.json`` that its pipeline class
    does not declare optional (an SD3 model without its T5 encoder: ``text_encoder_3``, ``tokenizer_3``): diffusers'
    ``from_pretrained`` refuses such a folder unless each is passed as None."""
    index = Path(folder) / "model_index.json" if folder else None
    if index is None or not index.is_file():
        return []
    import diffusers

    from bench.core.files import read_json

    config = read_json(index, "save the pipeline again", {"*": None})
    optional = set(getattr(getattr(diffusers, str(config.get("_class_name")), None), "_optional_components", ()))
    return sorted(k for k, v in config.items() if not k.startswith("_") and isinstance(v, list) and v[:1] == [None]
                  and k not in optional)


def saved_t5_tokens(spec: str) -> int | None:
    """The T5 context length a saved sd3 folder records (``MODEL_FACTS``), or None where it records none."""
    folder = _config_folder(spec) if spec not in BUILDERS else None
    path = folder / MODEL_FACTS if folder else None
    if path is None or not path.is_file():
        return None
    from bench.core.files import read_json

    tokens = read_json(path, "save the model again (bench.export --merge) or delete the file", {"t5_tokens": int},
                       )["t5_tokens"]
    if not 0 <= tokens <= 4096:
        raise UsageError(f"{str(path)!r} (key t5_tokens): expected 0..4096 T5 tokens, got {tokens}; save the model "
                         "again (bench.export --merge) or delete the file")
    return tokens


def model_notes(spec: str) -> list[str]:
    """What the plan says about a model loaded from a folder: an sd3 folder without a T5 encoder that records no
    T5 context length gets diffusers' 256 zero tokens, where the built-in toy models use 0."""
    if spec in BUILDERS or model_family(spec) != "sd3":
        return []
    folder = _config_folder(spec)
    if folder is None or "text_encoder_3" not in absent_components(folder) or saved_t5_tokens(spec) is not None:
        return []
    return [f"model {spec!r} has no T5 encoder and its folder no {MODEL_FACTS}: its transformer gets diffusers' "
            "default 256 zero T5 tokens (the built-in toy models use 0; a folder saved by bench.export --merge "
            "records its model's count)"]


def _from_pretrained(source: str, family: str = "sd", absent=()):
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline

    is_dir = Path(source).is_dir()
    if is_dir and not (Path(source) / "model_index.json").is_file():
        raise UsageError(f"{source!r} has no model_index.json; pass a diffusers pipeline directory (save_pretrained)")
    try:
        if family == "sd3":
            return StableDiffusion3Pipeline.from_pretrained(source, **{name: None for name in absent})
        return StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as exc:
        if is_dir:
            raise UsageError(f"could not load diffusers pipeline from {source!r}: {exc}".splitlines()[0]) from None
        how = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else "from the cache or the hub"
        raise UsageError(
            f"model weights for {source!r} are not available {how}; download them first "
            f"(huggingface-cli download {source}) or pass a local diffusers directory"
        ) from None


def _use_ddim(pipe) -> None:
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
