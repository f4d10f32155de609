"""What a suite costs in CPU seconds, from measured numbers (``docs/suite.md`` does the same arithmetic by hand).

A run costs ``CPU_PER_QUERY x queries`` of training, plus ``EVAL_IMAGE_S`` per evaluated image, plus
``RUN_FIXED_S`` (its worker's imports and model build); every ``bench.run`` invocation adds ``INVOCATION_S`` of
planning. Training and evaluation scale with the sampling steps (measured at ``MEASURED_STEPS``).
"""

from __future__ import annotations

import math

MEASURED_STEPS = 10
"""Sampling steps of the measurements below (the committed comparisons' ``--set steps=10``)."""

CPU_PER_QUERY: dict[str, dict[str, float]] = {
    # tiny-shapes: results/reference/long/runs.csv (cpu_s / samples over 3 seeds of 768 queries, shape-aesthetic)
    "sd": {"alignprop": 0.238, "draft-lv": 0.131, "refl": 0.178, "ddpo": 0.278, "grpo": 0.245, "grpo-kl": 0.296,
           "rwr": 0.154,
           # not in a reference run: alignprop's (rwr's) cost x the memory ladder's s/step ratio to it
           # (docs/performance.md: full 4.65, K=1 1.25, trl 2.97 against alignprop's 2.92; rwr-sparse 0.85 / 0.92)
           "alignprop-full": 0.379, "alignprop-k1": 0.102, "draft-k": 0.102, "alignprop-trl": 0.242,
           "rwr-sparse": 0.142,
           # issue 38's methods: one 96-query run each (/work/wt/measure_new.sh in the closing note of issue 38;
           # load 1.6; alignprop beside it measured 0.231, its reference 0.238)
           "adjoint-matching": 0.378},
    # tiny-shapes-flow: issue 25's flow comparison (768 queries, 3 seeds; git show
    # b8f2458:results/reference/flow-pg/backprop/runs.csv and .../policy-gradients/runs.csv); its successor at
    # d32b70f costs less per query, these stay (conservative)
    "sd3": {"alignprop": 0.166, "draft-lv": 0.103, "refl": 0.118, "rwr": 0.105, "flow-grpo": 0.196,
            "dance-grpo": 0.124, "mixgrpo": 0.106, "diffusion-nft": 0.234,
            # issue 38's methods: one 96-query run each at the suite's settings (load 1.8; flow-grpo beside them
            # measured 0.187, its reference 0.196): guard 0.184, adjoint-matching 0.182, awm 0.116
            "flow-grpo-guard": 0.196, "adjoint-matching": 0.182, "awm": 0.116,
            "flow-grpo-cps": 0.196,  # not measured: flow-grpo's computation with another step formula
            "alignprop-full": 0.264, "alignprop-k1": 0.071, "draft-k": 0.071, "rwr-sparse": 0.097},
}
"""Training CPU seconds per reward query, per family and method (evaluation excluded, as ``cpu_s`` is)."""

EVAL_IMAGE_S = {"sd": 0.19, "sd3": 0.09}
"""CPU seconds per evaluated image at 10 sampling steps, reward, true score and diversity included: one run of
``rwr`` evaluated on 2 x 160 images against 2 x 40, the difference over the 240 images (tiny-shapes 67.6 - 21.3 s,
tiny-shapes-flow 40.4 - 19.2 s of CPU; measured at load 6 on 2 cores, so rather high)."""

RUN_FIXED_S = 8.0
"""CPU seconds of a run besides training and evaluation: its worker's imports and model build."""

INVOCATION_S = 5.0
"""CPU seconds of one ``bench.run`` invocation's planning (torch imports, the reward's weights)."""


def per_query(family: str, method: str) -> float:
    """A method's measured training CPU seconds per query; a method not measured costs the family's mean."""
    table = CPU_PER_QUERY.get(family) or CPU_PER_QUERY["sd"]
    return table.get(method, sum(table.values()) / len(table))


def evaluations(images_per_step: int, budget: int, schedule=None, every_steps: int = 0) -> int:
    """How many times a run evaluates: step 0, after each step that crosses a count of ``schedule`` (a
    ``QuerySchedule``) or a multiple of ``every_steps``, and at the end of its ``budget`` of queries."""
    steps = math.ceil(budget / images_per_step)
    count = 2  # step 0 and the end
    for step in range(1, steps):
        before, after = (step - 1) * images_per_step, step * images_per_step
        if (schedule is not None and schedule.crossed(before, after)) or (every_steps and step % every_steps == 0):
            count += 1
    return count


def run_seconds(spec) -> float:
    """The CPU seconds one planned run (a ``RunSpec``) is expected to take."""
    from bench.harness.schedule import QuerySchedule
    from bench.core.models import family_of
    from methods import METHODS

    fam = family_of(spec.model).name
    config = METHODS.get(spec.method).Config(**spec.method_config)
    per_step = config.images_per_step()
    budget = int(spec.budget.max_samples or per_step * (spec.budget.max_steps or 1))
    schedule = QuerySchedule.parse(spec.eval_at) if spec.eval_at else None
    n_evals = evaluations(per_step, budget, schedule, spec.eval_every)
    scale = spec.method_config.get("steps", MEASURED_STEPS) / MEASURED_STEPS
    queries = math.ceil(budget / per_step) * per_step
    train = per_query(fam, spec.method) * queries * scale
    evaluate = n_evals * spec.eval.config.n * EVAL_IMAGE_S.get(fam, EVAL_IMAGE_S["sd"]) * \
        spec.eval.config.steps / MEASURED_STEPS
    return train + evaluate + RUN_FIXED_S


def hours(seconds: float) -> str:
    """``13.7 h``, or ``9 min`` under an hour."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
