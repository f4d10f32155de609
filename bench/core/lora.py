"""LoRA adapters on the UNet through peft: one place that decides what trains."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core.files import atomic_write
from bench.core.modules import forget

ADAPTER = "default"


@dataclass
class LoraSettings:
    """LoRA adapter shape shared by every method (AlignProp and trl both default to rank 4 on attention)."""

    rank: int = 4
    """Rank r of each low-rank update (AlignProp paper and trl default: 4)."""
    alpha: float = 4.0
    """Scale numerator: the update is multiplied by alpha / rank (trl default: 4)."""
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet module names that get adapters (attention projections, as trl and the AlignProp code)."""
    init_seed: int = 0
    """Seed for the Gaussian initialisation of the A matrices (B starts at zero, so the model starts unchanged)."""

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha}")
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(m for m in self.target_modules.split(",") if m)
        if not self.target_modules:
            raise ValueError("lora target_modules is empty; name at least one UNet module, e.g. to_q")


def add_lora(unet: torch.nn.Module, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Freeze ``unet`` and attach float32 LoRA adapters; return the adapter parameters (the only trainable ones)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=list(settings.target_modules),
        init_lora_weights="gaussian",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.init_seed)
        unet.add_adapter(config, adapter_name=ADAPTER)
    forget(unet)  # new tuner layers: bench.core.modules finds them again
    params = lora_parameters(unet)
    if not params:
        raise ValueError(f"no UNet module matched lora target_modules {settings.target_modules}")
    for p in params:  # adapters train in float32 whatever the frozen weights' dtype (bench.core.precision)
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def adapter_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone, detached copies on CPU, keyed by parameter name."""
    return {n: p.detach().cpu().clone() for n, p in unet.named_parameters() if "lora_" in n}


def load_adapter_state_dict(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(unet.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(f"adapter keys not in this UNet (different base model or LoRA settings?): {missing[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
"""The file name diffusers' ``load_lora_weights(folder)`` looks for first."""


def lora_component(pipe) -> str:
    """The pipeline component the LoRA adapts, named as diffusers' LoRA loader prefixes its keys: ``unet`` for the
    Stable Diffusion family, ``transformer`` for pipelines whose loader names a transformer (SD3)."""
    return getattr(pipe, "transformer_name", None) or getattr(pipe, "unet_name", None) or "unet"


def diffusers_lora(state: dict[str, torch.Tensor], settings: LoraSettings, component: str = "unet"):
    """(tensors, metadata) of ``state`` (peft's in-model names, ``...to_q.lora_A.default.weight``) in the format
    diffusers' ``load_lora_weights`` reads: keys ``<component>.<module>.lora_A.weight`` and the peft ``LoraConfig``
    arguments under ``lora_adapter_metadata``, so rank and alpha load as trained (without them diffusers assumes
    alpha = rank)."""
    marker = re.compile(rf"\.(lora_[AB])\.{re.escape(ADAPTER)}\.")
    tensors = {f"{component}." + marker.sub(r".\1.", key): value.detach().cpu().contiguous()
               for key, value in state.items()}
    config = dict(r=settings.rank, lora_alpha=settings.alpha, target_modules=sorted(settings.target_modules),
                  rank_pattern={}, alpha_pattern={}, init_lora_weights=True)
    packed = {f"{component}.{k}": v for k, v in config.items()}
    return tensors, {"format": "pt", "lora_adapter_metadata": json.dumps(packed, indent=2, sort_keys=True)}


def save_diffusers_lora(path, state: dict[str, torch.Tensor], settings: LoraSettings, component: str = "unet",
                        extra: dict[str, str] | None = None) -> None:
    """Write ``state`` as ``diffusers_lora`` (plus ``extra`` metadata strings) to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors, metadata = diffusers_lora(state, settings, component)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), {**(extra or {}), **metadata}))


def save_run_adapter(path, state: dict[str, torch.Tensor], method_config: dict, component: str = "unet",
                     **metadata: str) -> None:
    """A run's ``adapter.safetensors`` (peft's in-model names, the LoRA settings and ``metadata`` in its header) and
    beside it the same weights as diffusers' ``pytorch_lora_weights.safetensors`` (keys prefixed by ``component``)."""
    from safetensors.torch import save_file

    lora = {k: method_config[k] for k in ("lora_rank", "lora_alpha", "lora_targets") if k in method_config}
    header = dict(metadata, lora=json.dumps(lora))
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), header))
    base = LoraSettings()
    settings = LoraSettings(rank=lora.get("lora_rank", base.rank), alpha=lora.get("lora_alpha", base.alpha),
                            target_modules=lora.get("lora_targets", base.target_modules))
    save_diffusers_lora(Path(path).with_name(DIFFUSERS_WEIGHTS), state, settings, component, extra=header)
