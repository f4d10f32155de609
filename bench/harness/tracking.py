"""Experiment trackers (``--tracker tensorboard|wandb|trackio|none``): the worker mirrors what the recorder writes.

One tracker run per harness run, named by its run id and grouped by its results folder: every recorded row's
scalars (tag ``<split>/<metric>`` at the optimizer step, as in ``metrics.csv``) with the counters beside the training
rows (``counters/samples``, ``counters/wall_s``, ``counters/cpu_s``, ``counters/peak_mem_mb``), each evaluation's
image grid (``eval/images``) and the resolved run configuration. Offline where the library has a mode for it (W&B
``offline`` unless ``WANDB_MODE`` says otherwise; trackio's local store unless ``TRACKIO_SPACE_ID`` is set), and a
``--resume`` continues the same tracker run (TensorBoard purges the steps it will record again). Methods never log:
only the recorder's rows reach a tracker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import UsageError
from bench.core.registry import Registry

TRACKERS = Registry("tracker", {
    "tensorboard": "bench.harness.tracking:TensorBoard",
    "wandb": "bench.harness.tracking:WandB",
    "trackio": "bench.harness.tracking:Trackio",
})
TRACKER_NAMES = ("none", *TRACKERS.names())
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
"""The module each tracker imports (also its pip extra: ``pip install -e '.[NAME]'``)."""
PROJECT = "diffusion-reward-bench"
"""The W&B / trackio project every run goes to (``WANDB_PROJECT`` / ``TRACKIO_PROJECT`` override it)."""


def check_tracker(name: str | None) -> None:
    """Before any run starts: an unknown tracker or one whose package is missing is a ``UsageError``."""
    if not name or name == "none":
        return
    if name not in PACKAGES:
        raise UsageError(f"--tracker {name!r} unknown; valid: {', '.join(TRACKER_NAMES)}")
    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise UsageError(f"--tracker {name} needs the {PACKAGES[name]} package: pip install -e '.[{name}]' "
                         f"(or pip install {PACKAGES[name]}), or drop --tracker")


def open_tracker(spec, run_dir: Path, resume_step: int | None):
    """The run's tracker (None for ``none``). ``resume_step``: the checkpoint's step when the run continues (rows
    after it are recorded again), -1 when it restarts in a folder that already logged, None for a fresh run."""
    name = getattr(spec, "tracker", "none") or "none"
    if name == "none":
        return None
    out = Path(run_dir).resolve().parents[1]  # RESULTS/runs/<run_id>
    return TRACKERS.get(name)(spec, out, resume_step)


def grid(images: torch.Tensor) -> np.ndarray:
    """Evaluation images [n, 3, H, W] in [0, 1] as one row, uint8 [H, n*W, 3] (prompt order, as eval_last.png)."""
    row = torch.cat(list(images.detach().float().cpu().clamp(0, 1)), dim=2)
    return (row.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def scalars(split: str, metrics: dict, counters: dict) -> dict[str, float]:
    """The tags and values of one recorded row set (the recorder's filter: numbers, not ``samples``)."""
    tags = {f"{split}/{k}": float(v) for k, v in metrics.items()
            if k != "samples" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if split == "train":
        tags.update({f"counters/{k}": float(v) for k, v in counters.items() if v is not None})
    return tags


class Tracker:
    """What the recorder calls; a backend implements ``log_scalars``, ``log_image`` and ``close``."""

    def __init__(self, spec, out: Path, resume_step: int | None):
        self.run_id, self.group, self.config = spec.run_id, out.name, json.loads(spec.to_json())
        self.out, self.resume_step = out, resume_step

    def run_key(self) -> str:
        """A stable id for the tracker run of this (results folder, run id): a resume finds the same run."""
        return hashlib.sha1(f"{self.out}|{self.run_id}".encode()).hexdigest()[:16]

    def log(self, split: str, metrics: dict, counters: dict, step: int) -> None:
        values = scalars(split, metrics, counters)
        if values:
            self.log_scalars(values, step)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_image(self, tag: str, images: torch.Tensor, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    """Event files in ``RESULTS/tensorboard/<run_id>/`` (``tensorboard --logdir RESULTS/tensorboard``)."""

    def __init__(self, spec, out, resume_step):
        super().__init__(spec, out, resume_step)
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = out / "tensorboard" / spec.run_id
        again = resume_step is not None and self.logdir.is_dir()
        # purge_step: TensorBoard drops the earlier attempt's events from this step on (they are recorded again)
        self.writer = SummaryWriter(str(self.logdir), purge_step=resume_step + 1 if again else None)
        if not again or resume_step < 0:  # (a restart purges step 0, the config's step, too)
            self.writer.add_text("config", "```\n" + json.dumps(self.config, indent=2, sort_keys=True) + "\n```", 0)

    def log_scalars(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag, images, step):
        self.writer.add_image(tag, grid(images), step, dataformats="HWC")

    def close(self):
        self.writer.close()


class WandB(Tracker):
    """A W&B run in ``RESULTS/wandb/`` (offline unless ``WANDB_MODE`` is set; ``wandb sync`` uploads it)."""

    def __init__(self, spec, out, resume_step):
        super().__init__(spec, out, resume_step)
        import wandb

        self.wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner would bury the run's own lines
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), group=self.group, name=self.run_id,
                              id=self.run_key(), resume="allow", dir=str(out), config=self.config,
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log_scalars(self, values, step):
        self.run.log(values, step=step)

    def log_image(self, tag, images, step):
        self.run.log({tag: self.wandb.Image(grid(images))}, step=step)

    def close(self):
        self.run.finish()


class Trackio(Tracker):
    """A trackio run in its local store (a Space only when ``TRACKIO_SPACE_ID`` is set); ``trackio show``."""

    def __init__(self, spec, out, resume_step):
        super().__init__(spec, out, resume_step)
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=self.run_id,
                                group=self.group, config=self.config,
                                resume="never" if resume_step is None else "allow")  # runs are found by name

    def log_scalars(self, values, step):
        self.trackio.log(values, step=step)

    def log_image(self, tag, images, step):
        self.trackio.log({tag: self.trackio.Image(grid(images))}, step=step)

    def close(self):
        self.trackio.finish()
