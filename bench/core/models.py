"""Model registry: built-in tiny models by name, any diffusers Stable Diffusion (1.x/2.x or 3/3.5) or FLUX.1
directory, or a hub id. Each model belongs to a family (``bench.core.families``: ``sd``, ``sd3`` or ``flux``), which
decides its chain; the built-in models and hub aliases below are collected from the families' own entries
(``Family.models``, ``hub``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.families import FAMILIES, Family, family_of_pipe, family_of_pipeline_class
from bench.core.registry import Registry

BUILT_IN = {name: model for fam in FAMILIES.values() for name, model in fam.models.items()}
"""Built-in models, constructed in-process (no download): every family's ``models``."""
BUILDERS = Registry("model", {name: f"{m.build.__module__}:{m.build.__name__}" for name, m in BUILT_IN.items()})
# Short names for hub checkpoints (need the weights in the Hugging Face cache, or a connection).
HUB_ALIASES = {alias: hub_id for fam in FAMILIES.values() for alias, hub_id in fam.hub.items()}
# The family of every built-in model and hub alias (directories and other hub ids: read from model_index.json).
FAMILY_OF = {name: fam.name for fam in FAMILIES.values() for name in [*fam.models, *fam.hub]}
# Models whose weights are random: every output that uses them is labelled.
STAND_INS = {name: m.stand_in for name, m in BUILT_IN.items() if m.stand_in}
STAND_IN_MARKER = "BENCH_STAND_IN.txt"
MODEL_FACTS = "bench_model.json"
"""What a saved pipeline folder needs beyond diffusers' files to sample as the harness did: its family's ``facts``
(``Family.facts``: an sd3 or flux model's T5 context length ``t5_tokens``, zero T5 tokens on the toy models that have
no T5 encoder where diffusers defaults to 256 / 512; a flux model's native latent size ``default_sample_size``, which
its transformer's config does not hold). ``save_model`` writes it, ``load_model`` reads it."""


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


GEOMETRY = {name: m.geometry for name, m in BUILT_IN.items() if m.geometry}
"""Built-in models built from code: (VAE factor, denoiser down-sampling factor: UNet levels or the transformer's
patch size); the shipped models' are read from their files."""


def family_of(spec: str) -> Family:
    """The family of a model spec, read without loading weights (resolve it once and pass it on); a hub id whose
    model_index.json is not on this machine counts as ``sd``."""
    import json

    if spec in FAMILY_OF:
        return FAMILIES[FAMILY_OF[spec]]
    index = _config_folder(spec)
    try:
        name = json.loads((index / "model_index.json").read_text()).get("_class_name", "") if index else ""
    except (OSError, ValueError):
        name = ""
    try:
        return family_of_pipeline_class(name)
    except ValueError:
        return FAMILIES["sd"]


def model_family(spec: str) -> str:
    """The family's name (``sd``, ``sd3`` or ``flux``) of a model spec (``family_of``)."""
    return family_of(spec).name


def _config_folder(spec: str) -> Path | None:
    """The folder holding the model's configs (a directory, a shipped asset or the hub cache), or None."""
    if spec in BUILT_IN and BUILT_IN[spec].folder is not None:
        return BUILT_IN[spec].folder
    if Path(spec).is_dir():
        return Path(spec)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(HUB_ALIASES.get(spec, spec), "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


def model_geometry(spec: str, family: Family | None = None) -> tuple[int, int] | None:
    """(pixels per latent cell, denoiser down-sampling factor) read from the model's configs without loading
    weights; None where they cannot be read here (a hub id not in the cache). ``family``: the model's, if resolved."""
    import json

    if spec in GEOMETRY:
        return GEOMETRY[spec]
    folder = _config_folder(spec)
    if folder is None:
        return None
    fam = family or family_of(spec)
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        down = fam.down_factor(json.loads((folder / fam.denoiser / "config.json").read_text()))
    except (OSError, ValueError, KeyError):
        return None
    return 2 ** (len(vae["block_out_channels"]) - 1), down


def load_model(spec: str, *, seed: int = 0, device: str = "cpu") -> LoadedModel:
    """Load ``spec`` (a registry name, a diffusers directory or a hub id) on ``device``; its family's scheduler
    replaces the model's own unless the family keeps it (``Family.own_scheduler``: an ``sd`` pipeline gets a DDIM
    scheduler, an ``sd3`` one keeps its flow-matching Euler scheduler)."""
    import torch

    check_model(spec)
    fam = family_of(spec)
    if spec in BUILDERS:
        pipe, stand_in = BUILDERS.get(spec)(seed=seed), STAND_INS.get(spec)
    else:
        source = HUB_ALIASES.get(spec, spec)
        pipe = _from_pretrained(source, fam, absent_components(_config_folder(spec)))
        marker = Path(source) / STAND_IN_MARKER
        stand_in = marker.read_text().strip() if marker.is_file() else None
        for key, value in saved_facts(spec, fam).items():
            setattr(pipe, key, value)  # else the chain's default, e.g. diffusers' 256 T5 tokens (``model_notes``)
    if not fam.own_scheduler:
        _use_scheduler(pipe, fam.scheduler)
    pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe=pipe, name=spec, stand_in=stand_in)


def unet_module_names(spec: str, family: Family | None = None) -> set[str] | None:
    """Module names of the model's denoiser (UNet or SD3 transformer), built without weights where it can be (what
    LoRA targets are matched against); the built-in models of a family share its blocks, so the family's tiny
    random model stands for them. None when the denoiser's config is not on this machine (a hub id not in the
    cache). ``family``: the model's, if resolved."""
    import diffusers

    fam = family or family_of(spec)
    if spec in BUILDERS:
        tiny = BUILDERS.get(fam.tiny)(seed=0)
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

    cls = getattr(diffusers, fam.denoiser_class)
    with init_empty_weights():
        module = cls.from_config(cls.load_config(str(config)))
    return {name for name, _ in module.named_modules()}


def save_model(model: LoadedModel, directory: str | Path) -> Path:
    """``save_pretrained`` plus a marker file that keeps a stand-in labelled when loaded back."""
    directory = Path(directory)
    model.pipe.save_pretrained(directory)
    if model.stand_in:
        (directory / STAND_IN_MARKER).write_text(model.stand_in + "\n")
    facts = {key: int(getattr(model.pipe, key)) for key in family_of_pipe(model.pipe).facts
             if getattr(model.pipe, key, None) is not None}
    if facts:
        from bench.core.files import write_json

        write_json(directory / MODEL_FACTS, facts)
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


def saved_facts(spec: str, family: Family | None = None) -> dict[str, int]:
    """The pipeline attributes a saved folder records (``MODEL_FACTS``, its family's ``facts``), checked; {} where it
    records none. ``family``: the model's, if resolved."""
    folder = _config_folder(spec) if spec not in BUILDERS else None
    path = folder / MODEL_FACTS if folder else None
    if path is None or not path.is_file():
        return {}
    from bench.core.files import read_json

    fix = "save the model again (bench.export --merge) or delete the file"
    ranges = (family or family_of(spec)).facts
    data = read_json(path, fix, {f"{key}?": int for key in ranges})
    facts = {key: data[key] for key in ranges if key in data}
    for key, value in facts.items():
        low, high = ranges[key]
        if not low <= value <= high:
            raise UsageError(f"{str(path)!r} (key {key}): expected {low}..{high}, got {value}; {fix}")
    return facts


def model_notes(spec: str, family: Family | None = None) -> list[str]:
    """What the plan says about a model loaded from a folder: one of a family with a T5 part (sd3, flux) without a
    T5 encoder that records no T5 context length gets diffusers' default count of zero tokens (256, 512), where the
    built-in toy models use 0. ``family``: the model's, if resolved."""
    fam = family or family_of(spec)
    if spec in BUILDERS or not fam.t5_encoder:
        return []
    folder = _config_folder(spec)
    if folder is None or fam.t5_encoder not in absent_components(folder) or "t5_tokens" in saved_facts(spec, fam):
        return []
    return [f"model {spec!r} has no T5 encoder and its folder no {MODEL_FACTS}: its transformer gets diffusers' "
            f"default {fam.t5_default} zero T5 tokens (the built-in toy models use 0; a folder saved by bench.export "
            "--merge records its model's count)"]


def _from_pretrained(source: str, family: Family, absent=()):
    is_dir = Path(source).is_dir()
    if is_dir and not (Path(source) / "model_index.json").is_file():
        raise UsageError(f"{source!r} has no model_index.json; pass a diffusers pipeline directory (save_pretrained)")
    try:
        return family.load(source, absent)
    except (OSError, ValueError) as exc:
        if is_dir:
            raise UsageError(f"could not load diffusers pipeline from {source!r}: {exc}".splitlines()[0]) from None
        how = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else "from the cache or the hub"
        raise UsageError(
            f"model weights for {source!r} are not available {how}; download them first "
            f"(huggingface-cli download {source}) or pass a local diffusers directory"
        ) from None


def _use_scheduler(pipe, name: str) -> None:
    import diffusers

    cls = getattr(diffusers, name)
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
