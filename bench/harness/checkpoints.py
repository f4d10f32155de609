"""Checkpoint files for ``--resume``: every process of a run writes and resumes its own.

Process 0 (the only one of a single-process run) writes ``checkpoint.pt``, process r > 0 of a data-parallel run
``checkpoint.rank<r>.pt``; each keeps the one before (``*.prev.pt``) until its next is written. A process's
checkpoint holds its own state: the method's (adapter, optimizer, buffered rollouts, old adapter, its generator, the
torch and CUDA RNG states) and Python's and NumPy's RNG states. A data-parallel run resumes every process from its
own checkpoint of the newest step that all of them have one of (a kill can fall between their writes); with no such
step (a process has none: killed before its first, or a checkpoint of another ``--processes`` or from before each
process kept its own) the run restarts from step 0, saying so. A damaged file is set aside as ``NAME.damaged``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from bench.core import distributed

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
"""Process 0's checkpoint before the last, kept until the next one is safely written."""
CHECKPOINT_KEYS = ("method", "step", "samples", "wall_s", "peak_mb", "py_rng", "np_rng")
RESTART = "restarting the run from step 0 (recorded rows are kept)"


def checkpoint_names(rank: int = 0) -> tuple[str, str]:
    """Process ``rank``'s checkpoint and the one before it (process 0's are a single-process run's names, so
    checkpoints written before each process kept its own still resume a single-process run)."""
    if rank == 0:
        return CHECKPOINT, PREVIOUS
    return f"checkpoint.rank{rank}.pt", f"checkpoint.rank{rank}.prev.pt"


def read_checkpoint(path: Path) -> tuple[dict | None, str]:
    """``(state, "")``; ``(None, "")`` when there is no file; ``(None, note)`` for a damaged one, set aside as
    ``NAME.damaged`` (truncated, not a torch file, or another program's: it never blocks the run)."""
    if not path.is_file():
        return None, ""
    try:
        saved = torch.load(path, weights_only=False)
        missing = [k for k in CHECKPOINT_KEYS if k not in saved]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
    except Exception as exc:
        try:
            os.replace(path, path.with_name(path.name + ".damaged"))
        except OSError:
            pass
        return None, f"{path.name} is damaged ({type(exc).__name__}), set aside as {path.name}.damaged"
    return saved, ""


def load_checkpoint(run_dir: Path, rank: int = 0) -> tuple[dict | None, str]:
    """A single-process run's resume point: the newest readable checkpoint (``checkpoint.pt``, else
    ``checkpoint.prev.pt``) of a single-process run and a note on what was damaged or of another ``--processes``;
    with none usable the run restarts."""
    notes = []
    for name in checkpoint_names(rank):
        saved, note = read_checkpoint(run_dir / name)
        notes += [note] if note else []
        if saved is not None and saved.get("processes", 1) != 1:  # process 0 of a data-parallel run's state
            notes.append(f"{name} is of a run with --processes {saved['processes']}: not used with --processes 1")
            saved = None
        if saved is not None:
            if notes:
                notes.append(f"resuming from {name} at step {saved['step']}")
            return saved, "; ".join(notes)
    if notes:
        notes.append(f"no usable checkpoint: {RESTART}")
    return None, "; ".join(notes)


def load_agreed(run_dir: Path, rank: int, world: int, gather: Callable[[object], list]) -> tuple[dict | None, str]:
    """Process ``rank``'s own checkpoint of the newest step every one of the ``world`` processes has a checkpoint
    of (None: restart from step 0), and, on process 0, a note on what all of them found (``""`` elsewhere).
    ``gather(value)``: every process's value in rank order (``distributed.all_gather``); every process calls it
    equally often."""
    notes, held = [], []
    shared: set[int] = set()
    for name in checkpoint_names(rank):  # the newer one first; the older one only when no step is shared yet
        saved, note = read_checkpoint(run_dir / name)
        notes += [note] if note else []
        if saved is not None and saved.get("processes") != world:
            made = (f"of a run with --processes {saved['processes']}" if "processes" in saved else
                    "from before each process kept its own checkpoint")
            notes.append(f"{name} is {made}: not used with --processes {world}")
            saved = None
        if saved is not None:
            held.append((name, saved))
        steps = gather([s["step"] for _, s in held])
        shared = set.intersection(*(set(s) for s in steps))
        if shared:
            break
    chosen = None
    if shared:
        step = max(shared)
        index, (name, chosen) = next((i, h) for i, h in enumerate(held) if h[1]["step"] == step)
        if notes or index > 0:
            notes.append(f"resuming from {name} at step {step} (the newest step every process has a checkpoint of)")
    everyone = gather("; ".join(notes))
    if rank != 0:
        return chosen, ""
    said = [text if r == 0 else f"process {r}: {text}" for r, text in enumerate(everyone) if text]
    if not shared and (said or any(steps)):  # (nothing at all: a run's first attempt)
        lacking = [r for r, s in enumerate(steps) if not s]
        if lacking:
            files = ", ".join(checkpoint_names(r)[0] for r in lacking)
            said.append(f"no usable checkpoint of process {', '.join(map(str, lacking))} ({files}): {RESTART}")
        else:
            said.append(f"the processes' checkpoints are of different steps ({steps}): {RESTART}")
    return chosen, "; ".join(said)


def load_resume_point(run_dir: Path) -> tuple[dict | None, str]:
    """This process's checkpoint to resume from and a note: ``load_checkpoint`` in a single-process run,
    ``load_agreed`` across the processes of a data-parallel one."""
    if distributed.world_size() == 1:
        return load_checkpoint(run_dir)
    return load_agreed(run_dir, distributed.rank(), distributed.world_size(), distributed.all_gather)
