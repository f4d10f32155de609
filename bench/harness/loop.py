"""The training loop of one (method, reward, seed) run, in its own process (``python -m bench.worker RUN_DIR``).

Reads ``RUN_DIR/config.json``, trains until the first budget is reached, evaluates on fixed prompts and noise with
the true reward (outside the training clock), appends every row to ``RUN_DIR/rows.jsonl`` as it is recorded,
checkpoints for ``--resume`` (keeping the previous checkpoint until the next one is written; a damaged one falls back
to the previous, else the run restarts, saying so), and returns the result (status, counters) the worker writes to
``RUN_DIR/result.json``, with ``adapter.safetensors`` and the first/last evaluation grids.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.core import distributed
from bench.core.files import NoSpaceError, atomic_write, storage_cause, write_json
from bench.harness.checkpoints import CHECKPOINT, checkpoint_names, load_resume_point  # noqa: F401 (loop.CHECKPOINT)
from bench.harness.guard import Interrupted, keep_error_log
from bench.harness.progress import Progress
from bench.harness.recorder import ROWS, STATUSES, Recorder, cores, is_finite, read_rows, write_rows
from bench.harness.schedule import QuerySchedule
from bench.harness.spec import Budget, RunSpec
from bench.harness.tracking import open_tracker

RESULT = "result.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(budget: Budget, device: torch.device | None = None) -> torch.device:
    """``device`` (a data-parallel process's GPU) or the first GPU or the CPU; on CUDA apply the memory cap."""
    if device is not None or torch.cuda.is_available():
        device = device or torch.device("cuda")
        if budget.max_memory_gb:
            total = torch.cuda.get_device_properties(device).total_memory / 2**30
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget.max_memory_gb / total), device)
        torch.cuda.reset_peak_memory_stats(device)
        return device
    return torch.device("cpu")


def save_grid(images: torch.Tensor, path: Path) -> None:
    """One row of evaluation images (in evaluation-prompt order) as a PNG."""
    from PIL import Image

    row = torch.cat(list(images.clamp(0, 1)), dim=2)  # [3, H, n*W]
    array = (row.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


class Run:
    """The training loop around a method: budgets, evaluation, checkpoints, result."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.spec = RunSpec.from_file(run_dir / "config.json")
        self.budget = self.spec.budget

    def stop_reason(self, rec: Recorder) -> str | None:
        """The first budget reached, checked in a fixed order before every step."""
        b = self.budget
        if b.max_steps is not None and rec.step >= b.max_steps:
            return "max_steps"
        if b.max_samples is not None and rec.samples >= b.max_samples:
            return "max_samples"
        if b.max_seconds is not None and rec.wall_s >= b.max_seconds:
            return "max_seconds"
        return None

    def execute(self) -> dict:
        from bench.core.calibrate import Calibration
        from bench.core.evaluate import evaluate
        from bench.core.lora import lora_component, save_run_adapter
        from bench.core.models import load_model
        from bench.core.prompts import load_prompts
        from methods import METHODS
        from rewards.base import RewardNotDifferentiable
        from rewards.diversity import diversity_metrics
        from rewards.fidelity import FIDELITY, fidelity_metrics

        spec = self.spec
        seed_everything(spec.seed)
        device = pick_device(self.budget, distributed.init())
        model = load_model(spec.model, device=str(device))
        reward = build_reward(spec).to(device)
        stand_in = "; ".join(s for s in (model.stand_in, reward.stand_in) if s)
        identity = dict(run_id=spec.run_id, method=spec.method, reward=spec.reward, model=spec.model,
                        seed=spec.seed, stand_in=stand_in)
        base = dict(identity, device=str(device), status=None, error="")
        method_cls = METHODS.get(spec.method)
        base["surrogate"] = reward.trained_on() if method_cls.needs_reward_gradient else ""
        config = method_cls.Config(**spec.method_config)
        try:
            method = method_cls(model.pipe, reward, load_prompts(spec.prompts), config, spec.seed)
        except RewardNotDifferentiable as exc:
            return dict(base, status="skipped", error=str(exc), steps=0, samples=0, wall_s=0.0,
                        peak_mem_mb=None)  # nothing of the method ran: no memory to report
        eval_cfg = spec.eval.config
        eval_prompts = spec.eval.prompts

        log = self.dir / ROWS if distributed.is_main() else None
        rec = Recorder(identity, device, log=log)
        saved, note = load_resume_point(self.dir)  # this process's own (bench.harness.checkpoints)
        if note:
            print(f"warning: {spec.run_id}: {note}", file=sys.stderr, flush=True)
        if saved is not None:
            method.load_state_dict(saved["method"])
            if log is not None and "rows" in saved and not log.is_file():  # a checkpoint from before rows.jsonl
                write_rows(log, saved["rows"])
            # rows past the checkpoint stay in the log until this attempt records them again
            kept = [r for r in read_rows(self.dir / ROWS) if r["step"] <= saved["step"]]
            rec = Recorder(identity, device, rows=kept, peak_mb=saved["peak_mb"], log=log)
            rec.step, rec.samples, rec.wall_s = saved["step"], saved["samples"], saved["wall_s"]
            rec.cpu_s, rec.load_max = saved.get("cpu_s", 0.0), saved.get("load_max")
            random.setstate(saved["py_rng"])
            np.random.set_state(saved["np_rng"])

        if distributed.is_main():  # a resumed run continues its tracker run from the checkpoint's step
            rec.tracker = open_tracker(spec, self.dir, saved["step"] if saved is not None else
                                       (-1 if (self.dir / ROWS).is_file() else None))
        progress = Progress(spec, self.budget, initial=rec)

        def run_eval(first: bool = False) -> float | None:
            """Main process only (the others wait): the true reward on the fixed prompts and noise."""
            if not distributed.is_main():
                distributed.barrier()
                return None
            # Training must not depend on when it was evaluated: whatever evaluation draws from the global RNGs
            # (a pipeline or a library may) is given back, so --eval-every changes no training number.
            py_state, np_state = random.getstate(), np.random.get_state()
            with (progress.evaluating(eval_cfg.n) as bar, torch.random.fork_rng(devices=rng_devices(device)),
                  method.evaluation_weights()):
                scores, images = evaluate(model.pipe, reward, eval_prompts, eval_cfg, progress=bar)
                on_device = images.to(device)
                extra = reward.eval_metrics(on_device, eval_prompts)
                extra.update(diversity_metrics(reward, on_device, eval_prompts))  # >= 2 samples per prompt
                if not all(name in extra for name in FIDELITY):  # a reward that records them keeps its own
                    for name, value in fidelity_metrics(on_device, eval_prompts).items():
                        extra.setdefault(name, value)  # every other reward's, on shape-world prompts
            random.setstate(py_state)
            np.random.set_state(np_state)
            progress.evaluated(rec.step, float(scores.mean()), eval_cfg.n, samples=rec.samples)
            rec.add("eval", {"reward_mean": float(scores.mean()), "reward_std": float(scores.std(unbiased=False)),
                             **extra})
            which = "eval_first" if first else "eval_last"
            save_grid(images, self.dir / f"{which}.png")
            if rec.tracker is not None:
                rec.tracker.log_image("eval/images", images, rec.step)
            write_json(self.dir / f"{which}.json", {"step": rec.step, "reward": [float(s) for s in scores]})
            distributed.barrier()
            return float(scores.mean())

        schedule = QuerySchedule.parse(spec.eval_at) if spec.eval_at else None  # --eval-at (checked when planned)
        if saved is None:
            run_eval(first=True)
        # the fixed workload of bench.core.calibrate, in this process, on its threads, its passes between the first
        # steps: normalises CPU s/step for the regression gate
        calibration = Calibration()
        status, error = None, ""
        try:
            while (status := distributed.agree(self.stop_reason(rec), STATUSES)) is None:
                start, cpu_start = time.perf_counter(), time.process_time()
                metrics = method.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                rec.wall_s += time.perf_counter() - start
                rec.cpu_s += time.process_time() - cpu_start
                rec.note_load()
                calibration.after_step()
                metrics = distributed.combine_metrics(metrics)
                rec.step += 1
                queried = int(metrics.get("samples", 0))
                rec.samples += queried
                rec.add("train", metrics)
                progress.update(rec, metrics)
                if not is_finite(metrics.get("reward_mean"), metrics.get("loss")) or not all(
                    torch.isfinite(p).all() for p in method.trainable_parameters()
                ):
                    status, error = "diverged", "non-finite reward, loss or adapter weight"
                    break
                every_q = spec.eval_every_samples
                if (spec.eval_every and rec.step % spec.eval_every == 0) or (
                    every_q and rec.samples // every_q > (rec.samples - queried) // every_q
                ) or (schedule is not None and schedule.crossed(rec.samples - queried, rec.samples)):
                    run_eval()
                if spec.checkpoint_every and rec.step % spec.checkpoint_every == 0:  # every process its own
                    self.checkpoint(method, rec)
        except Interrupted as exc:  # SIGTERM/SIGINT: rows are on disk, the last checkpoint resumes it
            status, error = "interrupted", f"stopped by {exc.name} during step {rec.step + 1}"
        except torch.cuda.OutOfMemoryError as exc:
            status, error = "oom", str(exc).splitlines()[0]
        except MemoryError as exc:
            status, error = "oom", f"MemoryError: {exc}"
        except Exception as exc:  # keep the rows collected so far; the message goes to runs.csv
            keep_error_log(self.dir, traceback.format_exc())
            status, error = "error", failure_text(exc, self.dir)
        calib = calibration.cpu_s() if status not in ("interrupted", "oom") else None
        result = dict(base, status=status, error=error, steps=rec.step, samples=rec.samples, wall_s=rec.wall_s,
                      calib_cpu_s=calib,
                      cpu_s=rec.cpu_s, load_avg=rec.load_max, cores=cores(), threads=torch.get_num_threads(),
                      peak_mem_mb=rec.peak_mb,
                      final_eval_reward=rec.last("eval", "reward_mean"))
        if note:
            result["warning"] = note
        if status == "interrupted":
            progress.close()
            close_tracker(rec)
            return result
        if status in ("oom", "error", "diverged") or last_eval_step(rec) == rec.step:
            final = rec.last("eval", "reward_mean")  # a diverged adapter is not evaluated: its weights are not finite
        else:
            final = run_eval()
        progress.close()
        close_tracker(rec)
        spread = distributed.weight_spread(method.trainable_parameters())
        if distributed.is_main():
            with method.evaluation_weights():  # the adapter that was evaluated (DiffusionNFT: its EMA)
                adapter = method.adapter_state_dict()
            save_run_adapter(self.dir / "adapter.safetensors", adapter, spec.method_config,
                             lora_component(model.pipe), model=spec.model, method=spec.method, seed=str(spec.seed))
            if status not in ("oom", "error"):  # an ended run's rows are exactly this attempt's; a failed one keeps
                rec.compact()                   # an earlier attempt's later rows until it is retried
        return dict(result, final_eval_reward=final, peak_mem_mb=rec.peak_mb, processes=distributed.world_size(),
                    rank_weight_spread=spread)

    def checkpoint(self, method, rec: Recorder) -> None:
        """Write this process's checkpoint (``checkpoint.pt``; ``checkpoint.rank<r>.pt`` for process r > 0)
        atomically; the one it replaces becomes ``checkpoint.prev.pt`` (``checkpoint.rank<r>.prev.pt``)."""
        state = dict(method=method.state_dict(), step=rec.step, samples=rec.samples, wall_s=rec.wall_s,
                     cpu_s=rec.cpu_s, load_max=rec.load_max, peak_mb=rec.peak_mb, py_rng=random.getstate(),
                     np_rng=np.random.get_state(), processes=distributed.world_size())
        current, previous = checkpoint_names(distributed.rank())
        path = self.dir / current

        def write(tmp: Path) -> None:
            try:
                torch.save(state, tmp)
            except Exception as exc:  # named while the partial file still fills the disk (removed right after)
                cause = storage_cause(exc, self.dir, writing=True)
                if cause:
                    raise NoSpaceError(errno.ENOSPC, cause, str(self.dir)) from exc
                raise
            if path.is_file():
                os.replace(path, self.dir / previous)

        atomic_write(path, write)


def failure_text(exc: BaseException, run_dir: Path) -> str:
    """The one line runs.csv gets for a failed run: the storage cause where a write met a full disk."""
    return (storage_cause(exc, run_dir) or f"{type(exc).__name__}: {exc}").splitlines()[0][:500]


def close_tracker(rec: Recorder) -> None:
    if rec.tracker is not None:
        rec.tracker.close()
        rec.tracker = None


def rng_devices(device: torch.device) -> list:
    """The CUDA devices whose RNG ``torch.random.fork_rng`` must save (none on CPU)."""
    return [device] if device.type == "cuda" else []


def last_eval_step(rec: Recorder) -> int | None:
    steps = [row["step"] for row in rec.rows if row["split"] == "eval"]
    return max(steps) if steps else None


def build_reward(spec: RunSpec):
    """The run's reward (name, combination or plug-in), falling back to a stand-in only where the run allows it."""
    from rewards import build_reward as build

    return build(spec.reward, weights=spec.reward_weights, allow_stand_in=spec.allow_stand_in)
