"""Data parallelism inside one run: several processes (or GPUs), one adapter kept identical on every process.

Launch a worker under ``torch.distributed.run`` (the runner does this for ``--processes N``) or ``accelerate
launch``; both set WORLD_SIZE / RANK / LOCAL_RANK. Each process samples its own prompts and noise, gradients are
averaged across processes before clipping and the optimizer step, and metrics are combined before the recorder
sees them. With one process every function here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init() -> torch.device | None:
    """Join the process group when launched with WORLD_SIZE > 1; returns this process's CUDA device if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return None


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over processes (a missing gradient counts as zero)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size()


def gather_cat(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' ``values`` (equal lengths) concatenated in rank order, and where this process's part starts."""
    if world_size() == 1:
        return values, 0
    parts = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts), rank() * len(values)


def combine_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Means over processes (equal batches); ``samples`` summed; reward_std pooled exactly from means and stds."""
    if world_size() == 1:
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    second = values.clone()
    if "reward_std" in keys and "reward_mean" in keys:
        i, j = keys.index("reward_std"), keys.index("reward_mean")
        second[i] = values[i] ** 2 + values[j] ** 2  # E[r^2] on this process
    dist.all_reduce(values)
    dist.all_reduce(second)
    n = world_size()
    out = {k: float(v) / n for k, v in zip(keys, values)}
    if "samples" in out:
        out["samples"] = float(values[keys.index("samples")])
    if "reward_std" in out and "reward_mean" in out:
        out["reward_std"] = max(float(second[keys.index("reward_std")]) / n - out["reward_mean"] ** 2, 0.0) ** 0.5
    return out


def all_gather(value) -> list:
    """Every process's ``value`` (any picklable object), in rank order."""
    if world_size() == 1:
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def agree(choice: str | None, choices: tuple[str, ...]) -> str | None:
    """The main process's ``choice`` on every process (stop decisions must not diverge)."""
    if world_size() == 1:
        return choice
    t = torch.tensor([choices.index(choice) if choice is not None else -1])
    dist.broadcast(t, src=0)
    return None if int(t) < 0 else choices[int(t)]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def weight_spread(params: list[torch.nn.Parameter]) -> float:
    """Largest absolute difference of any adapter weight between processes (0 when they are identical)."""
    if world_size() == 1:
        return 0.0
    flat = torch.cat([p.detach().flatten().float().cpu() for p in params])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).abs().max())
