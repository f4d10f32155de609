"""Drive trl 0.23.1's diffusion trainers (DDPOTrainer, AlignPropTrainer) from the harness.

trl's ``DefaultDDPOStableDiffusionPipeline`` loads its model by name and hard-codes LoRA rank 4 on attention. The
adapter below hands trl an already-loaded pipeline (any model of the registry) and the harness's LoRA settings, and
otherwise keeps trl's own sampling and training code (``pipeline_step``, ``pipeline_step_with_grad``,
``scheduler_step``). trl's metrics leave through ``accelerator.log``; ``capture_logs`` collects them instead.

Precision: trl gets the matching accelerate ``mixed_precision`` and itself casts the frozen weights to that dtype;
accelerate then autocasts the UNet's forward in sampling and in training alike (no fp32-sampling / bf16-replay
mismatch in DDPO's ratio), and ``add_lora`` keeps the adapters float32. ``resolution`` is handed to trl's samplers
as height and width. ``vae_fp32`` is not available here (trl decodes in the frozen weights' dtype).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from bench.core import precision as mp
from bench.core.lora import LoraSettings, add_lora
from methods.base import Method


def trl_pipeline(pipe, lora: LoraSettings, resolution: int = 0):
    """A trl ``DDPOStableDiffusionPipeline`` around ``pipe`` whose trainable layers are our LoRA adapters; trl's
    samplers draw ``resolution``-pixel images (0: the model's native size)."""
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

        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **size(kwargs))

        def rgb_with_grad(self, *args, **kwargs):
            return super().rgb_with_grad(*args, **size(kwargs))

    def size(kwargs: dict) -> dict:
        if resolution:
            kwargs.setdefault("height", resolution)
            kwargs.setdefault("width", resolution)
        return kwargs

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


def reset_accelerate_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide mixed precision and refuses a trainer asking for another; a worker builds
    one trainer, but a process that builds several (tests, the ladder) must reset it between them."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()


class TrlMethod(Method):
    """Shared driver of trl's diffusion trainers: our pipeline and LoRA in, one trl epoch per harness step.

    Single process only: trl wraps the UNet for data parallelism but runs its forward through the raw module, so
    gradients would not be averaged across processes (the runner refuses ``--processes > 1`` for these methods).
    """

    supports_processes = False
    families = ("sd",)
    """trl's DDPOStableDiffusionPipeline wraps a Stable Diffusion UNet + DDIM pipeline only."""

    def common_trl_config(self) -> dict:
        """trl config fields both trainers share, from the harness config."""
        cfg = self.config
        return dict(
            seed=self.seed,
            log_with=None,
            mixed_precision=mp.ACCELERATE[cfg.precision],
            save_freq=10**9,  # never let trl write checkpoints: the harness owns files
            sample_num_steps=cfg.steps,
            sample_eta=cfg.eta,
            sample_guidance_scale=cfg.guidance_scale,
            train_learning_rate=cfg.lr,
            train_adam_weight_decay=cfg.weight_decay,
            train_max_grad_norm=cfg.max_grad_norm or float("inf"),
            allow_tf32=False,
        )

    def build_trainer(self, trainer_cls, trl_config) -> None:
        from bench.core import distributed

        if distributed.world_size() > 1:
            raise RuntimeError(f"{self.name} runs trl's trainer, which is single-process here; use --processes 1")
        if self.config.vae_fp32:
            raise ValueError(f"{self.name}: vae_fp32 is not available with trl's trainers (they decode in the frozen "
                             f"weights' dtype); set it per method, e.g. --set alignprop.vae_fp32=true")
        if self.config.resolution:
            from bench.core.sampler import latent_size

            latent_size(self.pipe, self.config.resolution)  # refuses a size the model cannot draw
        reset_accelerate_precision(mp.ACCELERATE[self.config.precision])
        settings = self.config.lora_settings()
        settings.init_seed = self.seed
        self.trl_pipe = trl_pipeline(self.pipe, settings, self.config.resolution)
        self.denoiser = self.pipe.unet  # the module trl's LoRA trains (the base's adapter and state methods read it)
        with quiet_trl():
            self.trainer = trainer_cls(trl_config, self._reward_fn, self._prompt_fn, self.trl_pipe)
        silence_progress(self.trainer)
        self.optimizer = self.trainer.optimizer
        self.scaler = None  # accelerate owns fp16's gradient scaler for trl's trainers
        self.records = capture_logs(self.trainer)
        self.epoch = 0
        self.queries = 0

    def _prompt_fn(self):
        return self.prompts.sample(1, self.generator)[0], {}

    def _reward_fn(self, images, prompts, metadata):
        raise NotImplementedError

    def run_epoch(self) -> list[dict]:
        """One ``trainer.step`` (one epoch, one optimizer update); returns what trl logged during it."""
        self.records.clear()
        self.queries = 0
        self.trainer.step(self.epoch, self.epoch)
        self.epoch += 1
        return list(self.records)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epoch = state["epoch"]
