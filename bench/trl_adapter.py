"""Drive trl 0.23.1's diffusion trainers (DDPOTrainer, AlignPropTrainer) from the harness.

trl's ``DefaultDDPOStableDiffusionPipeline`` loads its model by name and hard-codes LoRA rank 4 on attention. The
adapter below hands trl an already-loaded pipeline (any model of the registry) and the harness's LoRA settings, and
otherwise keeps trl's own sampling and training code (``pipeline_step``, ``pipeline_step_with_grad``,
``scheduler_step``). trl's metrics leave through ``accelerator.log``; ``capture_logs`` collects them instead.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from bench.lora import LoraSettings, add_lora


def trl_pipeline(pipe, lora: LoraSettings):
    """A trl ``DDPOStableDiffusionPipeline`` around ``pipe`` whose trainable layers are our LoRA adapters."""
    from accelerate import PartialState

    PartialState()  # trl's pipeline expects accelerate's process state to exist before it is used
    from trl.models.modeling_sd_base import DefaultDDPOStableDiffusionPipeline

    class HarnessPipeline(DefaultDDPOStableDiffusionPipeline):
        def __init__(self):  # no from_pretrained: the pipeline is already built
            self.sd_pipeline = pipe
            self.use_lora = True
            self.pretrained_model = getattr(pipe, "name_or_path", "harness")
            self.pretrained_revision = "main"

        def get_trainable_layers(self):
            add_lora(self.sd_pipeline.unet, lora)
            return self.sd_pipeline.unet

    wrapped = HarnessPipeline()
    return wrapped


def silence_progress(trainer) -> None:
    """trl turns the pipeline's per-timestep progress bar on; the harness draws its own."""
    trainer.sd_pipeline.set_progress_bar_config(disable=True)


@contextlib.contextmanager
def quiet_trl():
    """Silence trl's start-up warnings (no image hook, deprecation) while a trainer is built."""
    logger = logging.getLogger("trl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def capture_logs(trainer) -> list[dict]:
    """Replace the trainer's ``accelerator.log`` by a collector; returns the list it appends to."""
    records: list[dict] = []

    def log(values, step=None, **_):
        records.append({k: _to_float(v) for k, v in values.items()})

    trainer.accelerator.log = log
    return records


def _to_float(value):
    """Scalars and arrays (trl logs numpy arrays, numpy scalars and tensors) as one Python float (mean)."""
    import numpy as np

    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    if isinstance(value, (np.ndarray, np.generic, int, float)):
        array = np.asarray(value, dtype=np.float64)
        return float(array.mean()) if array.size else float("nan")
    return value
