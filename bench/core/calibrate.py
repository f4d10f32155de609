"""The calibration workload: how many CPU seconds this process needs, now, for a fixed piece of diffusion work.

Every worker measures it once before training, in its own process and with its own torch thread count: the
``tiny-random`` UNet's forward and backward pass on fixed inputs (batch 4, 4x16x16 latents, 77 context tokens),
one untimed warm-up and then ``repeats`` timed passes spread over the run, the median of their process CPU
seconds. A slower machine,
or one whose cores are shared with busy processes (caches, memory bandwidth, frequency), slows this workload and a
training step of the same character alike, so ``cpu_per_step / calib_cpu_s`` (``cpu_per_step_norm`` in runs.csv)
compares step costs across machines; the regression gate (``bench.analysis.compare``) uses it. It always runs on the
CPU: it calibrates the CPU seconds the gate compares, whatever device trains. About 0.1 s a pass on one thread.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from bench.core.errors import UsageError

REPEATS_ENV = "BENCH_CALIBRATE_REPEATS"
"""Environment variable: timed passes per worker (default ``DEFAULT_REPEATS``; 0 skips the calibration)."""
DEFAULT_REPEATS = 5


def repeats_from_env() -> int:
    raw = os.environ.get(REPEATS_ENV, "").strip()
    if not raw:
        return DEFAULT_REPEATS
    if not raw.isdigit():
        raise UsageError(f"{REPEATS_ENV}={raw!r} must be a whole number of passes (0 skips the calibration)")
    return int(raw)


class Calibration:
    """The fixed workload, its passes spread over a run: one untimed warm-up when built, then one timed pass after
    each of the first ``repeats`` training steps (outside the training clock), the rest at the end, so the passes
    see the machine as the steps did (load from other processes comes and goes within seconds). ``repeats`` 0 (or
    ``BENCH_CALIBRATE_REPEATS=0``) measures nothing. Leaves every global random stream as it found it."""

    def __init__(self, repeats: int | None = None):
        self.repeats = repeats_from_env() if repeats is None else repeats
        self.times: list[float] = []
        if self.repeats <= 0:
            return
        from diffusers import UNet2DConditionModel

        from bench.core.families.sd import TINY_UNET

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.unet = UNet2DConditionModel(**TINY_UNET).eval()  # no dropout: no random draw
        gen = torch.Generator().manual_seed(0)
        self.inputs = (torch.randn(4, 4, 16, 16, generator=gen), torch.full((4,), 500),
                       torch.randn(4, 77, TINY_UNET["cross_attention_dim"], generator=gen))
        self._pass()  # warm-up: the allocator's and the kernels' first use

    def _pass(self) -> float:
        latents, timesteps, context = self.inputs
        start = time.process_time()
        with torch.enable_grad():
            self.unet(latents, timesteps, encoder_hidden_states=context).sample.square().mean().backward()
        self.unet.zero_grad(set_to_none=True)
        return time.process_time() - start

    def after_step(self) -> None:
        """One timed pass while fewer than ``repeats`` were taken."""
        if len(self.times) < self.repeats:
            self.times.append(self._pass())

    def cpu_s(self) -> float | None:
        """The median CPU seconds of a pass (completing the passes first); None when nothing is measured."""
        while len(self.times) < self.repeats:
            self.times.append(self._pass())
        return round(statistics.median(self.times), 6) if self.times else None


def calibration_cpu_s(repeats: int | None = None) -> float | None:
    """The median process CPU seconds of one forward+backward pass of the fixed workload, measured now."""
    return Calibration(repeats).cpu_s()
