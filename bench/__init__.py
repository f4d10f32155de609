"""Diffusion reward fine-tuning bench: shared machinery (models, sampler, runner, recorder, reports)."""

__version__ = "0.1.0"
