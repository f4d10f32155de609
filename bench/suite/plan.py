"""Planning the suite: tasks x families x methods x seeds as one ``bench.run`` per (task, family) and one
``bench.tune`` per family, every command checked as ``bench.run`` would check it before anything is written.

Each (task, family) cell runs every selected method registered for the family (``Method.families``), except one the
task cannot run: a method that backpropagates through the reward (``needs_reward_gradient``) on a reward with
neither a differentiable score nor a surrogate. The default selection also leaves out a registered name that is
another name's class (``draft-k`` is ``alignprop-k1``): its runs would repeat the other's. Each is said with its
reason in the plan and in suite.json.

Tuning (``docs/suite.md`` says why): one ``bench.tune`` per family on one task's validation prompts (the first
selected task the family runs, or ``--tune-task``), with the runs' budget; its chosen configurations apply to
every task of the family, through a tuned file per (task, family) (``bench.suite.runner.derive_tuned``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import UsageError
from bench.harness.spec import parse_list, parse_seeds
from bench.suite.cost import INVOCATION_S, run_seconds
from bench.suite.settings import ALIASES_NOTE, FULL, QUICK, Settings, method_sets
from bench.suite.tasks import TASKS_FILE, Task, load_tasks

@dataclass
class Cell:
    """One (task, family): one ``bench.run`` results folder."""

    task: Task
    family: str
    methods: list[str]
    skipped: dict[str, str]
    """Method -> why this cell does not run it."""
    folder: Path
    tuned: Path | None = None
    """The tuned file the runs apply (``--config-from``); None without tuning."""
    command: list[str] = field(default_factory=list)
    """``bench.run`` arguments (``python -m bench.run`` + these; ``--resume`` is added to continue)."""
    runs: int = 0
    estimate_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.task.name}/{self.family}"


@dataclass
class Tuning:
    """One family's tuning: ``bench.tune`` of its methods on one task's validation prompts."""

    family: str
    task: Task
    methods: list[str]
    untuned: dict[str, str]
    """Method -> why it is not tuned (it runs at its defaults)."""
    out: Path
    file: Path
    command: list[str] = field(default_factory=list)
    runs: int = 0
    estimate_s: float = 0.0


@dataclass
class SuitePlan:
    settings: Settings
    tasks_file: Path
    tasks_text: str
    tasks: dict[str, Task]
    families: list[str]
    seeds: list[int]
    out: Path
    cells: list[Cell]
    tuning: dict[str, Tuning]
    left_out: dict[str, str]
    """Methods of the default selection left out of every cell, with the reason."""
    grid: str | None
    jobs: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.tasks_text.encode()).hexdigest()

    def identity(self) -> dict:
        """What makes two invocations the same suite (``--stage``, ``--jobs``, ``--resume`` and ``--dry-run`` do not
        count): a resumed suite must agree on every key."""
        settings = {k: v for k, v in self.settings.to_dict().items() if k not in ("jobs", "grid", "methods")}
        return dict(tasks_sha256=self.sha256, tasks=list(self.tasks), families=self.families, seeds=self.seeds,
                    settings=settings, grid=self.grid, methods={c.name: c.methods for c in self.cells},
                    tuning={f: t.task.name for f, t in self.tuning.items()})


def make_plan(args) -> SuitePlan:
    """The suite ``args`` asks for, every command checked; a ``UsageError`` (exit 2) before anything is written."""
    settings = QUICK if args.quick else FULL
    tasks_file = Path(args.tasks_file) if args.tasks_file else TASKS_FILE
    every = load_tasks(tasks_file)
    tasks = pick(every, args.tasks, "task")
    known = list(dict.fromkeys(f for t in every.values() for f in t.families))
    families = list(pick(dict.fromkeys(known), args.families, "family", f"families of {tasks_file.name}"))
    seeds = parse_seeds(args.seeds) if args.seeds else list(settings.seeds)
    grid = settings.grid if args.grid is None else (None if args.grid.strip().lower() == "none" else args.grid)
    out = Path(args.out)
    names, explicit, left_out = choose_methods(args.methods, settings)
    cells = [make_cell(task, fam, names, explicit, out) for task in tasks.values() for fam in families
             if fam in task.families]
    cells = [c for c in cells if c.methods or c.skipped]
    if not any(c.methods for c in cells):
        why = "; ".join(f"{c.name}: " + ", ".join(f"{m} {r}" for m, r in c.skipped.items()) for c in cells)
        raise UsageError(f"no run to make ({why or 'no chosen task runs on the chosen families'}); choose other "
                         "--methods, --tasks or --families")
    tuning = {} if grid is None else plan_tuning(cells, every, families, args.tune_task, grid, settings, out)
    overlap = sorted(set(seeds) & set(settings.tune_seeds)) if tuning else []
    if overlap:
        raise UsageError(f"--seeds {','.join(map(str, overlap))} are the tuning seeds "
                         f"({','.join(map(str, settings.tune_seeds))}); evaluate on other seeds")
    jobs = args.jobs or settings.jobs
    for job in tuning.values():
        job.command = tune_command(job, grid, settings, jobs)
        check_tuning(job, grid, settings)
    for cell in cells:
        if cell.methods:
            job = tuning.get(cell.family)
            cell.tuned = None if job is None or not (set(cell.methods) & set(job.methods)) else tuned_file(job, cell)
            cell.command = run_command(cell, seeds, settings, jobs)
            cell.runs = len(cell.methods) * len(seeds)
            cell.estimate_s = check_run(cell)
    return SuitePlan(settings, tasks_file, tasks_file.read_text(encoding="utf-8"), tasks, families, seeds, out, cells,
                     tuning, left_out, grid, jobs)


def pick(available: dict, given: str | None, what: str, where: str = "") -> dict:
    """The entries of ``available`` named in ``given`` (comma-separated), in ``available``'s order; all of them
    when ``given`` is None. An unknown name lists the valid ones."""
    if given is None:
        return dict(available)
    names = parse_list(given, {"task": "tasks", "family": "families"}[what])
    for name in names:
        if name not in available:
            raise UsageError(f"unknown {what} {name!r}; valid{f' ({where})' if where else ''}: {', '.join(available)}")
    return {k: v for k, v in available.items() if k in names}


def choose_methods(given: str | None, settings: Settings) -> tuple[list[str], bool, dict[str, str]]:
    """(the methods to run where their family allows, whether ``--methods`` named them, the registered names the
    default selection leaves out as another name's class)."""
    from methods import METHODS

    if given is not None:
        names = parse_list(given, "methods")
        for name in names:
            METHODS.get(name)  # an unknown name lists the valid ones; a plug-in must import
        return names, True, {}
    if settings.methods is not None:
        return list(settings.methods), False, {}
    names, left_out, seen = [], {}, {}
    for name in METHODS.names():
        target = METHODS.target(name)
        if target in seen:
            left_out[name] = ALIASES_NOTE.format(twin=seen[target])
        else:
            seen[target] = name
            names.append(name)
    return names, False, left_out


def make_cell(task: Task, fam: str, names: list[str], explicit: bool, out: Path) -> Cell:
    """The cell's methods: those of ``names`` registered for ``fam`` that can train on the task's reward; the others
    with their reason (a family mismatch is said only for methods named by ``--methods``)."""
    from methods import METHODS

    chosen, skipped = [], {}
    for name in names:
        cls = METHODS.get(name)
        families = getattr(cls, "families", (fam,))
        if fam not in families:
            if explicit:
                skipped[name] = f"runs on {', '.join(families)} only (Method.families), not {fam}"
            continue
        reason = gradient_skip(cls, task.reward)
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    return Cell(task, fam, chosen, skipped, out / task.name / fam)


def gradient_skip(cls, reward: str) -> str | None:
    """Why a method cannot train on ``reward`` (it needs the reward's gradient and there is none), else None."""
    if not getattr(cls, "needs_reward_gradient", False):
        return None
    missing = [term for term in reward_terms(reward) if not term_has_gradient(term)]
    if not missing:
        return None
    return (f"needs the reward's gradient; {', '.join(missing)} is neither differentiable nor has a surrogate "
            "(methods that need none: the policy gradients, rwr)")


def reward_terms(spec: str) -> list[str]:
    from rewards.combine import parse_terms
    from rewards.plugins import is_combination

    return [term for _, term in parse_terms(spec)] if is_combination(spec) else [spec]


def term_has_gradient(term: str) -> bool:
    """Whether a reward gives gradient methods something to train on, read from its class without building it; a
    plug-in factory that is not a class counts as yes (its run says otherwise)."""
    from bench.core.registry import load_target
    from rewards import REWARDS, Reward
    from rewards.plugins import is_plugin

    factory = load_target(term) if is_plugin(term) else REWARDS.get(term)
    if not (isinstance(factory, type) and issubclass(factory, Reward)):
        return True
    return bool(factory.differentiable) or factory.surrogate is not Reward.surrogate


def plan_tuning(cells: list[Cell], every: dict[str, Task], families: list[str], tune_task: str | None, grid: str,
                settings: Settings, out: Path) -> dict[str, Tuning]:
    """Per family with something to run: the task it is tuned on (``--tune-task``, else the first selected task
    the family runs) and the methods tuned there (those of the family's cells that can train on it)."""
    if tune_task is not None and tune_task not in every:
        raise UsageError(f"--tune-task: unknown task {tune_task!r}; valid: {', '.join(every)}")
    jobs = {}
    for fam in families:
        mine = [c for c in cells if c.family == fam and c.methods]
        if not mine:
            continue
        task = every[tune_task] if tune_task else mine[0].task
        if fam not in task.families:
            raise UsageError(f"--tune-task {task.name} does not run on family {fam}; its families: "
                             f"{', '.join(task.families)} (choose one that runs on every chosen family)")
        wanted = list(dict.fromkeys(m for c in mine for m in c.methods))
        probe = make_cell(task, fam, wanted, False, out)
        jobs[fam] = Tuning(fam, task, probe.methods, dict(probe.skipped), out / "tune" / fam,
                           out / "tuned" / f"{fam}.json")
    return jobs


def tuned_file(job: Tuning, cell: Cell) -> Path:
    """The tuning's own file on its task; on another task a copy made for it (``runner.derive_tuned``)."""
    return job.file if cell.task.name == job.task.name else job.file.with_name(f"{job.family}.{cell.task.name}.json")


def task_flags(task: Task, fam: str, suite_flags: list[str]) -> list[str]:
    """The task's ``bench.run`` arguments (model, reward, prompts, its evaluation settings), then the suite's flags
    it does not set itself (a task's ``--eval-every-samples`` replaces the suite's ``--eval-at``)."""
    own = task.run_args(fam)
    given = {a for a in own if a.startswith("--")}
    if "--eval-every-samples" in given:
        given.add("--eval-at")
    kept = []
    for i in range(0, len(suite_flags), 2):  # the suite's flags are (flag, value) pairs
        if suite_flags[i] == "--set" or suite_flags[i] not in given:
            kept += suite_flags[i:i + 2]
    return own + kept


def run_command(cell: Cell, seeds: list[int], settings: Settings, jobs: int) -> list[str]:
    tuned = ["--config-from", str(cell.tuned)] if cell.tuned else []
    return ["--methods", ",".join(cell.methods), "--seeds", ",".join(map(str, seeds)),
            *task_flags(cell.task, cell.family, settings.run_flags()), *method_sets(cell.methods), *tuned,
            "--jobs", str(jobs), "--out", str(cell.folder)]


def tune_flags(job: Tuning, settings: Settings) -> list[str]:
    """The ``bench.run`` flags of the tuning's runs: the task on the family's model, scored on its validation
    prompts, at the runs' budget."""
    task = job.task
    return ["--model", task.models[job.family], "--prompts", task.prompts, "--eval-prompts", task.val_prompts,
            *settings.tune_flags(), *method_sets(job.methods)]


def tune_command(job: Tuning, grid: str, settings: Settings, jobs: int) -> list[str]:
    return ["--methods", ",".join(job.methods), "--reward", job.task.reward, "--grid", grid,
            "--seeds", ",".join(map(str, settings.tune_seeds)), "--score", "late", "--out", str(job.out),
            "--write", str(job.file), *tune_flags(job, settings), "--jobs", str(jobs)]


def planned(argv: list[str], where: str):
    """``bench.run``'s plan of ``argv`` (its runs): every check it makes before a folder exists, errors named by
    ``where``."""
    from bench import run
    from bench.harness.plan import plan

    try:
        runs, _ = plan(run.build_parser().parse_args(argv))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return runs


def check_run(cell: Cell) -> float:
    """Check a cell's command as ``bench.run`` would (a tuned file not yet written is left out); its CPU estimate."""
    argv = list(cell.command)
    if cell.tuned is not None and not cell.tuned.is_file():
        i = argv.index("--config-from")
        del argv[i:i + 2]
    runs = planned(argv, cell.name)
    return INVOCATION_S + sum(run_seconds(spec) for spec in runs)


def check_tuning(job: Tuning, grid: str, settings: Settings) -> None:
    """Check a family's tuning before any run: the grid against the methods, and one run's flags per method as
    ``bench.tune`` will give them (``bench.tune`` checks every candidate again before its first run)."""
    from bench.harness import scoring, tuning
    from methods import METHODS

    where = f"tuning {job.family} (task {job.task.name})"
    try:
        parsed = tuning.parse_grid(grid)
        tuning.check_fixed_sets(tune_flags(job, settings), parsed)
        classes = {m: METHODS.get(m).Config for m in job.methods}
        tuning.check_grid_keys(parsed, classes)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    argv = ["--methods", ",".join(job.methods), "--reward", job.task.reward,
            "--seeds", ",".join(map(str, settings.tune_seeds)), *tune_flags(job, settings),
            "--eval-seed", str(tuning.TUNE_EVAL_SEED), *scoring.late_schedule(tune_flags(job, settings))]
    sizes = {m: len(tuning.candidates(m, classes[m], parsed)) for m in job.methods}
    runs = planned(argv, where)
    job.runs = sum(sizes.values()) * len(settings.tune_seeds)
    job.estimate_s = sum(run_seconds(spec) * sizes[spec.method] for spec in runs) + INVOCATION_S * sum(sizes.values())
