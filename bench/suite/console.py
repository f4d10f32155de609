"""What ``bench.suite`` prints: the plan (every ``bench.tune`` and ``bench.run`` command, what is skipped and why,
the estimated CPU time) and, at the end, each stage's outcome."""

from __future__ import annotations

import shlex

from bench.harness.tuning import TUNE_EVAL_SEED
from bench.suite.cost import hours
from bench.suite.plan import SuitePlan
from bench.suite.tasks import shown
from bench.suite.settings import QUICK_LABEL

TUNING_WHY = (
    "one configuration per method and family, chosen on one task's validation prompts at the runs' budget and "
    "applied to every task of the family: tuning each of the 4 tasks would cost 4 times as much (about as much as "
    "the runs: the 8-hour budget cannot hold it); the learning rate is what is tuned, and Adam's normalised steps and "
    "the policy gradients' normalised advantages make it insensitive to a reward's scale, though not to its "
    "landscape: a method whose best learning rate differs on another task runs there at the tuning task's, by the "
    "same rule for every method (docs/suite.md)")
"""Why the suite tunes per family rather than per task (printed, and written into suite.json)."""


def tuning_skipped(plan: SuitePlan, quick: bool) -> str | None:
    """Why this suite has no tuning stage (None when it has one)."""
    if plan.tuning:
        return None
    if quick and plan.grid is None:
        return "--quick: tuning skipped; every method runs at its defaults (with the suite's shared settings)"
    return "--grid none: tuning skipped; every method runs at its defaults (with the suite's shared settings)"


def command_text(module: str, argv: list[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def budget_text(plan: SuitePlan) -> str:
    s = plan.settings
    schedule = f"--eval-at {s.eval_at}" if s.eval_at else "the start and the end"
    return (f"budget per run: {s.max_samples} reward queries, {s.steps} sampling steps, evaluated at {schedule} on "
            f"{s.eval_n} images (2 per shapes-eval prompt); --jobs {plan.jobs}")


def print_plan(plan: SuitePlan, stage: str, states: dict[str, str] | None = None) -> None:
    """The plan, flushed before anything runs. ``states``: each cell's (and tuning's) state in an existing
    ``--out`` (``finished``: skipped by ``--resume``)."""
    states = states or {}
    quick = plan.settings.name == "quick"
    lines = [QUICK_LABEL] if quick else []
    cells = [c for c in plan.cells if c.methods]
    runs = sum(c.runs for c in cells)
    lines += [f"bench.suite ({plan.settings.name}, stage {stage}): {len(plan.tasks)} task(s) x {len(plan.families)} "
              f"famil{'y' if len(plan.families) == 1 else 'ies'}: {len(cells)} results folder(s), {runs} runs "
              f"(seeds {','.join(map(str, plan.seeds))}) -> {plan.out}",
              f"tasks: {shown(plan.tasks_file)} (sha256 {plan.sha256[:12]}): {', '.join(plan.tasks)}",
              budget_text(plan)]
    lines += [f"left out: {m} ({why})" for m, why in plan.left_out.items()]
    skipped = tuning_skipped(plan, quick)
    if skipped:
        lines.append(f"tuning: {skipped}")
    else:
        lines.append(f"tuning: {TUNING_WHY.split(': tuning each')[0]}")
        for fam, job in plan.tuning.items():
            state = f" [{states[f'tune/{fam}']}]" if f"tune/{fam}" in states else ""
            seeds = ",".join(map(str, plan.settings.tune_seeds))
            lines.append(f"  {fam}: on task {job.task.name} ({job.task.val_prompts}, noise seed {TUNE_EVAL_SEED}), "
                         f"grid {plan.grid}, seeds {seeds}: {len(job.methods)} methods, {job.runs} runs, about "
                         f"{hours(job.estimate_s)} of CPU{state}")
            lines += [f"    untuned: {m} ({why}; it runs at its defaults)" for m, why in job.untuned.items()]
            lines.append(f"    {command_text('bench.tune', job.command)}")
    lines.append("runs:")
    for cell in plan.cells:
        state = f" [{states[cell.name]}]" if cell.name in states else ""
        if cell.methods:
            lines.append(f"  {cell.name}: {len(cell.methods)} methods x {len(plan.seeds)} seeds = {cell.runs} runs, "
                         f"about {hours(cell.estimate_s)} of CPU{state}")
        else:
            lines.append(f"  {cell.name}: nothing to run")
        lines += [f"    skipped: {m} ({why})" for m, why in cell.skipped.items()]
        if cell.tuned is not None and cell.tuned != plan.tuning[cell.family].file:
            lines.append(f"    tuned file: {cell.tuned} (the {cell.family} tuning's choices, made on task "
                         f"{plan.tuning[cell.family].task.name})")
        if cell.methods:
            lines.append(f"    {command_text('bench.run', cell.command)}")
    tune_s = sum(j.estimate_s for j in plan.tuning.values())
    run_s = sum(c.estimate_s for c in cells)
    parts = f"tuning {hours(tune_s)} + runs {hours(run_s)} = " if plan.tuning else ""
    lines.append(f"estimated CPU: {parts}{hours(tune_s + run_s)}, about "
                 f"{hours((tune_s + run_s) / plan.jobs)} on {plan.jobs} busy cores (bench.suite.cost; docs/suite.md)")
    print("\n".join(lines), flush=True)
