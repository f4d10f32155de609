"""LoRA adapters on the UNet through peft: one place that decides what trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
