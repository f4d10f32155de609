"""Mixed precision, decided in one place: which dtype the frozen weights take and how forwards are autocast.

- ``fp32``: everything in float32, no autocast.
- ``bf16`` / ``fp16``: frozen UNet, VAE and text-encoder weights in that dtype; LoRA parameters and the optimizer
  state stay float32 (``bench.core.lora`` keeps them so); UNet, text-encoder and reward forwards run under
  ``torch.autocast`` with outputs cast back to float32; the scheduler arithmetic and log-probabilities of the
  sampler stay float32. ``vae_fp32`` keeps the VAE (and its decode) in float32: fp16 VAEs are known to give NaNs.
- ``fp16`` adds a gradient scaler (``grad_scaler``); bf16 has float32's exponent range and needs none.

Autocast runs with ``cache_enabled=False``: autocast's cast cache would hand a rollout's gradient-carrying steps the
casts of LoRA weights made by its earlier no-grad steps, which carry no graph, and silently stop their gradient
(diffusion-tinker's REPRODUCTION.md documents this for DRaFT).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
"""The matching ``mixed_precision`` of accelerate (trl's trainers)."""


def default_precision() -> str:
    """bf16 on a CUDA device that supports it, else fp32."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def check(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def dtype(name: str) -> torch.dtype:
    return DTYPES[check(name)]


def autocast(device: torch.device | str, name: str, enabled: bool = True):
    """``torch.autocast`` to the precision's dtype (no cast cache), or a no-op for fp32."""
    if check(name) == "fp32" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[name], cache_enabled=False)


def cast_frozen(pipe, name: str, vae_fp32: bool = False) -> None:
    """Frozen denoiser (UNet or transformer), text encoders and VAE to the precision's dtype (the VAE stays float32
    with ``vae_fp32``)."""
    target = dtype(name)
    for key, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            module.to(dtype=torch.float32 if key == "vae" and vae_fp32 else target)


def grad_scaler(device: torch.device | str, name: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (a disabled one passes losses and steps through unchanged)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=check(name) == "fp16")
