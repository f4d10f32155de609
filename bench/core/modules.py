"""Facts about a model that diffusers and peft find by walking its whole module tree, remembered instead.

diffusers' ``ModelMixin.device`` and ``.dtype`` look for group-offloading and layerwise-casting hooks on every
submodule on each call, and its ``enable_adapters`` / ``disable_adapters`` walk every submodule to find peft's
tuner layers. The sampler asks for the device and dtype on every denoiser call and the KL methods toggle the adapter
for every reference forward: on the toy models that walking was 9-14 % of training and 12-13 % of an evaluation
(``docs/performance.md``). The functions here return exactly what those calls return (the same values, the same
per-layer calls in the same order) and walk the tree only when it may have changed:

- ``device_dtype``: diffusers' own ``(module.device, module.dtype)``, read again whenever the module's first
  parameter is another tensor or has another device or dtype than when they were read (``.to()``, ``cast_frozen``
  and a replaced parameter all change it). What is not noticed: group offloading or layerwise casting enabled on a
  module after its device or dtype was first asked for (the harness enables neither).
- ``set_adapters``: each peft tuner layer's ``enable_adapters(enabled)``, the layers found once per model and found
  again after ``forget`` (``bench.core.lora.add_lora`` calls it when it adds an adapter).
"""

from __future__ import annotations

import itertools
import weakref

import torch

FACTS = "_bench_device_dtype"
LAYERS = "_bench_tuner_layers"


def first_tensor(module: torch.nn.Module) -> torch.Tensor | None:
    """The module's first parameter, else its first buffer (what diffusers' ``device`` falls back to), else None."""
    return next(itertools.chain(module.parameters(), module.buffers()), None)


def device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """``(module.device, module.dtype)`` as diffusers reports them, remembered until the first parameter changes."""
    first = first_tensor(module)
    key = None if first is None else (first.device, first.dtype)
    saved = module.__dict__.get(FACTS)
    if saved is None or saved[0] != key or (first is not None and saved[1]() is not first):
        saved = (key, None if first is None else weakref.ref(first), module.device, module.dtype)
        module.__dict__[FACTS] = saved
    return saved[2], saved[3]


def device_of(module: torch.nn.Module) -> torch.device:
    return device_dtype(module)[0]


def dtype_of(module: torch.nn.Module) -> torch.dtype:
    return device_dtype(module)[1]


def tuner_layers(module: torch.nn.Module) -> list:
    """peft's tuner layers of ``module`` in ``named_modules`` order (what diffusers' adapter toggles visit)."""
    layers = module.__dict__.get(LAYERS)
    if layers is None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for _, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
        module.__dict__[LAYERS] = layers
    return layers


def set_adapters(module: torch.nn.Module, enabled: bool) -> None:
    """diffusers' ``enable_adapters()`` (``enabled``) or ``disable_adapters()`` without the module-tree walk."""
    if not getattr(module, "_hf_peft_config_loaded", False):
        raise ValueError("No adapter loaded. Please load an adapter first.")
    for layer in tuner_layers(module):
        layer.enable_adapters(enabled=enabled)


def forget(module: torch.nn.Module) -> None:
    """Drop what was remembered about ``module`` (after adapters were added or the tree changed)."""
    module.__dict__.pop(FACTS, None)
    module.__dict__.pop(LAYERS, None)
