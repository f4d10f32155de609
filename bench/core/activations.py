"""How much memory a forward keeps for its backward, and how much memory a step may use: auto checkpointing's inputs.

``saved_bytes`` counts the bytes autograd saves for the backward while a function runs (saved-tensor hooks; each
storage once; the module parameters it is given excluded, since they exist anyway), on any device, without
running the backward. ``step_budget_bytes`` says how much memory a training step may add to what is allocated when
it starts.
"""

from __future__ import annotations

import torch

CPU_FRACTION = 0.5
"""Share of the available RAM (MemAvailable) a step may use on a CPU when no budget is given."""


def saved_bytes(fn, exclude: list[torch.Tensor] = ()) -> tuple[object, int]:
    """Run ``fn()`` and return (its result, bytes of the tensors autograd saved for the backward during it)."""
    skip = {p.untyped_storage().data_ptr() for p in exclude}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, sum(seen.values())


def available_ram_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else 0."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def current_bytes(device: torch.device) -> int:
    """Memory in use now: CUDA allocated, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def step_budget_bytes(device: torch.device, step_budget_mb: float = 0.0, max_memory_gb: float = 0.0) -> int:
    """Memory one step may add: ``step_budget_mb`` if given; else ``max_memory_gb`` minus what is in use now; else
    the CUDA device's free memory; else ``CPU_FRACTION`` of the available RAM."""
    if step_budget_mb > 0:
        return int(step_budget_mb * 2**20)
    if max_memory_gb > 0:
        return max(0, int(max_memory_gb * 2**30) - current_bytes(device))
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return int(CPU_FRACTION * available_ram_bytes())
