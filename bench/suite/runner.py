"""Running a planned suite: the tuning stage (one ``bench.tune`` per family, grown past a winner on its grid's edge:
``bench.suite.growth``), then the runs (one ``bench.run`` per
(task, family)), each a subprocess as CleanRL's benchmark tool makes them, with ``OUT/suite.json`` rewritten after
each step: the command, commit, task file, every command with its state and CPU seconds.

Resumable: the same command with ``--resume`` skips finished folders and continues the others (``bench.tune
--resume``, ``bench.run --resume``); another command into the same ``--out`` is refused before anything runs.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import check_output, read_json, write_json
from bench.harness.guard import LOCK, lock_folder
from bench.harness.launch import FINISHED
from bench.harness.plan import REPO
from bench.suite.console import TUNING_WHY, command_text, tuning_skipped
from bench.suite.growth import next_growth
from bench.suite.plan import Cell, SuitePlan, Tuning
from bench.suite.settings import QUICK_LABEL

SUITE_FILE = "suite.json"
FORMAT = "bench-suite/1"
INTERRUPTED = (130, 143)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_out(plan: SuitePlan, resume: bool) -> dict | None:
    """Check ``--out`` without writing; with ``--resume``, the earlier suite.json (same suite, else refused)."""
    out = plan.out
    check_output(out, "--out", folder=True)
    record = out / SUITE_FILE
    if not resume:
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise UsageError(f"--out {str(out)!r} already holds results; pass --resume to continue the suite there or "
                             "choose another --out")
        return None
    if not record.is_file():
        raise UsageError(f"--resume: {str(out)!r} holds no suite ({SUITE_FILE}); drop --resume or fix --out")
    earlier = read_json(record, "it cannot be resumed: start a new --out", {"identity": dict, "command_line": str})
    now_id = json.loads(json.dumps(plan.identity()))  # as stored: tuples become lists
    changed = sorted(k for k in set(now_id) | set(earlier["identity"]) if now_id.get(k) != earlier["identity"].get(k))
    if changed:
        raise UsageError(f"--resume: {str(out)!r} holds a suite made by another command ({', '.join(changed)} "
                         f"differ); repeat `{earlier['command_line']}` with --resume, or choose another --out")
    return earlier


def cell_state(cell: Cell) -> tuple[str, dict[str, int]]:
    """A cell's folder: ``to do`` (no results), ``finished`` (every planned run in a finished status: a ``--resume``
    skips it), else ``incomplete``; with the count of each run status."""
    if not (cell.folder / "manifest.json").is_file():
        return "to do", {}
    try:
        with open(cell.folder / "runs.csv", newline="") as f:
            counts = Counter(row.get("status", "") for row in csv.DictReader(f))
    except OSError:
        return "incomplete", {}
    done = sum(n for status, n in counts.items() if status in FINISHED)
    return ("finished" if done == cell.runs == sum(counts.values()) else "incomplete"), dict(counts)


def tuning_state(job: Tuning) -> str:
    """``finished`` once the tuned file chose a configuration for every method (a ``--resume`` skips it), else
    ``incomplete`` (``bench.tune --resume`` reuses its finished candidates) or ``to do``."""
    if job.file.is_file() and all(v is not None for v in (chosen(job) or {None: None}).values()):
        return "finished"
    return "incomplete" if (job.out / "tune_command.json").is_file() else "to do"


def states(plan: SuitePlan) -> dict[str, str]:
    """Every step's state in ``--out`` (for the plan of a resumed suite)."""
    found = {f"tune/{f}": tuning_state(j) for f, j in plan.tuning.items()}
    found.update({c.name: cell_state(c)[0] for c in plan.cells if c.methods})
    return found


def children_cpu() -> float:
    """CPU seconds of every finished child process and its descendants (the workers, reaped by bench.run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Child:
    """The one subprocess running now; SIGINT/SIGTERM to the suite is passed to it, and the suite stops after it."""

    proc: subprocess.Popen | None = None
    stopped: int | None = None

    @classmethod
    def handler(cls, signum, frame):
        cls.stopped = cls.stopped or signum
        if cls.proc is not None and cls.proc.poll() is None:
            cls.proc.send_signal(signum)  # bench.run stops its workers, writes its tables and exits 130 / 143


def die_with_suite() -> None:
    """In the child: SIGTERM when the suite dies (Linux), so a killed suite leaves no orphan writing results."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def call(module: str, argv: list[str]) -> tuple[int, float]:
    """Run ``python -m module argv`` in the working directory, its output passed through; (exit code, CPU s)."""
    print(f"$ {command_text(module, argv)}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    before = children_cpu()
    Child.proc = subprocess.Popen([sys.executable, "-m", module, *argv], env=env, preexec_fn=die_with_suite)
    try:
        code = Child.proc.wait()
    finally:
        Child.proc = None
    return code, children_cpu() - before


def derive_tuned(job: Tuning, target: Path, task) -> None:
    """The family's tuned file made for another task of the family: the same choices, ``reward`` set to the task's
    so that ``bench.run --config-from`` applies them there, and where they came from said in the file."""
    data = read_json(job.file, "run the tuning again (--stage tune --resume)")
    note = (f"chosen by the suite's {job.family} tuning on task {job.task.name} ({data.get('reward')}, validation "
            f"prompts {job.task.val_prompts}) and applied to task {task.name} ({task.reward}): the suite tunes once "
            "per family (docs/suite.md)")
    data.update(reward=task.reward, derived_from=str(job.file), tuned_on_task=job.task.name,
                tuned_on_reward=data.get("reward"), warnings=[*data.get("warnings", []), note])
    write_json(target, data)


def new_record(plan: SuitePlan, argv: list[str]) -> dict:
    quick = plan.settings.name == "quick"
    tasks = {name: dict(reward=t.reward, true_score=t.true_score, true_higher_is_better=t.true_higher_is_better,
                        prompts=t.prompts, val_prompts=t.val_prompts, eval_prompts=t.eval_prompts,
                        families=list(t.families), models=t.models, eval=t.eval, description=t.description)
             for name, t in plan.tasks.items()}
    methods = list(dict.fromkeys(m for c in plan.cells for m in c.methods))
    return dict(format=FORMAT, quick=quick, label=QUICK_LABEL if quick else None,
                command=["python", "-m", "bench.suite", *argv], command_line=command_text("bench.suite", argv),
                identity=plan.identity(), started=now(), updated=now(), finished=None, invocations=[],
                tasks_file=str(plan.tasks_file.resolve()), tasks_sha256=plan.sha256, tasks_content=plan.tasks_text,
                tasks=tasks, families=plan.families, methods=methods, seeds=plan.seeds,
                settings=plan.settings.to_dict(), jobs=plan.jobs, left_out=plan.left_out,
                tuning=dict(skipped=tuning_skipped(plan, quick), why=None if not plan.tuning else TUNING_WHY,
                            grid=plan.grid, seeds=list(plan.settings.tune_seeds), families={}),
                cells={}, cpu_s=0.0, report=None)


def check_stage(plan: SuitePlan, stage: str) -> None:
    """``--stage run`` needs the tuned files of an earlier ``--stage tune`` (when the suite tunes)."""
    missing = [str(j.file) for j in plan.tuning.values() if not j.file.is_file()] if stage == "run" else []
    if missing:
        raise UsageError(f"--stage run: no tuned file yet ({', '.join(missing)}); run the tuning first (--stage "
                         "tune or all, with --resume on this --out)")


def refresh(record: dict, plan: SuitePlan) -> None:
    """Every planned step in suite.json, from the first invocation on: its command, methods and skips beside the
    state and CPU seconds recorded so far (a step not yet reached is ``to do``)."""
    for fam, job in plan.tuning.items():
        entry = record["tuning"]["families"].setdefault(fam, dict(state="to do", cpu_s=0.0, chosen=None))
        entry.update(task=job.task.name, methods=job.methods, untuned=job.untuned, out=str(job.out),
                     file=str(job.file), command=["python", "-m", "bench.tune", *job.command])
    for cell in plan.cells:
        entry = record["cells"].setdefault(cell.name, dict(state="to do" if cell.methods else "nothing to run",
                                                           runs={}, cpu_s=0.0))
        entry.update(task=cell.task.name, family=cell.family, folder=str(cell.folder), methods=cell.methods,
                     skipped=cell.skipped, tuned_file=None if cell.tuned is None else str(cell.tuned),
                     command=["python", "-m", "bench.run", *cell.command] if cell.methods else None)


def run_suite(plan: SuitePlan, argv: list[str], stage: str, earlier: dict | None, given: list[str]) -> int:
    """Run the stages of the suite ``argv`` describes (``given``: this invocation's arguments); returns the exit
    code (0: every step of the stages finished, 1: one did not, 130/143: stopped; ``--resume`` continues it)."""
    plan.out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(plan.out, "bench.suite")  # noqa: F841 (held until exit)
    record = earlier or new_record(plan, argv)
    record["invocations"].append(dict(at=now(), command_line=command_text("bench.suite", given), stage=stage,
                                      commit=git_commit()))
    record["commit"] = record["invocations"][-1]["commit"]
    refresh(record, plan)
    save(plan, record)
    Child.stopped = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, Child.handler)
    failed = False
    for fam, job in plan.tuning.items() if stage in ("tune", "all") else ():
        entry = record["tuning"]["families"][fam]
        if tuning_state(job) == "finished":
            print(f"tuning {fam}: finished earlier ({job.file})", flush=True)
        else:
            resume = ["--resume"] if (job.out / "tune_command.json").is_file() else []
            code = step(plan, record, entry, "bench.tune", [*job.command, *resume])
            if code in INTERRUPTED:
                return code
        code = grow(plan, record, entry, job)  # past a winner on the grid's edge (bench.suite.growth)
        if code in INTERRUPTED:
            return code
        entry["state"], entry["chosen"] = tuning_state(job), chosen(job)
        failed |= entry["state"] != "finished" or code != 0
        save(plan, record)
    for cell in (c for c in plan.cells if c.methods) if stage in ("run", "all") else ():
        entry, job = record["cells"][cell.name], plan.tuning.get(cell.family)
        if cell.tuned is not None and not job.file.is_file():
            entry["state"], failed = f"not run: the {cell.family} tuning wrote no tuned file", True
            save(plan, record)
            continue
        if cell.tuned is not None and cell.tuned != job.file:
            derive_tuned(job, cell.tuned, cell.task)
        state, _ = cell_state(cell)
        if state == "finished":
            print(f"{cell.name}: finished earlier ({cell.folder})", flush=True)
        else:
            code = step(plan, record, entry, "bench.run", [*cell.command, *(["--resume"] if state != "to do" else [])])
            if code in INTERRUPTED:
                return code
        entry["state"], entry["runs"] = cell_state(cell)
        failed |= entry["state"] != "finished"
        save(plan, record)
    if stage in ("run", "all"):
        save(plan, record)
        record["report"] = suite_report(plan)
        failed |= record["report"]["status"] == "failed"
    done = [e["state"] for e in [*record["tuning"]["families"].values(), *record["cells"].values()]]
    record["finished"] = now() if all(s in ("finished", "nothing to run") for s in done) else None
    save(plan, record)
    print(outcome(plan, record, stage), flush=True)
    return 1 if failed else 0


def step(plan: SuitePlan, record: dict, entry: dict, module: str, argv: list[str]) -> int:
    """One tuning or folder: its subprocess, its CPU seconds into ``entry``; 130 / 143 when the suite was stopped
    (before it, or during it: the child stopped too and wrote what it had)."""
    code = INTERRUPTED[0]
    if not Child.stopped:
        code, cpu = call(module, argv)
        entry["cpu_s"] = round(entry["cpu_s"] + cpu, 1)
    if code in INTERRUPTED or Child.stopped:
        return stop(plan, record, entry, code)
    return code


def grow(plan: SuitePlan, record: dict, entry: dict, job: Tuning) -> int:
    """Grow a finished tuning past its winners on the grid's edge (``bench.suite.growth``), each growth one
    ``bench.tune --resume``; an unfinished growth recorded by an earlier invocation is run again. Returns the exit
    code of a growth that failed or was stopped, else 0."""
    growths = entry.setdefault("growths", [])
    while True:
        pending = growths[-1] if growths and growths[-1]["state"] != "finished" else None
        if pending is None and tuning_state(job) == "finished":
            pending = next_growth(plan.grid, entry, job, chosen(job))
        save(plan, record)
        if pending is None:
            return 0
        code = step(plan, record, entry, "bench.tune", pending["command"][3:])
        if code in INTERRUPTED:
            return code
        pending["state"] = "finished" if code == 0 else f"failed (exit {code})"
        save(plan, record)
        if code:
            return code


def chosen(job: Tuning) -> dict | None:
    """The tuning's choice per method (None: no configuration finished every tuning seed), from its tuned file."""
    if not job.file.is_file():
        return None
    data = read_json(job.file, "run the tuning again (--stage tune --resume)")
    return {m: (e or {}).get("chosen") for m, e in data.get("methods", {}).items()}


def stop(plan: SuitePlan, record: dict, entry: dict, code: int) -> int:
    signum = Child.stopped or (signal.SIGTERM if code == 143 else signal.SIGINT)
    entry["state"] = f"interrupted by {signal.Signals(signum).name}"
    save(plan, record)
    print(f"suite stopped by {signal.Signals(signum).name}: the same command with --resume continues it "
          f"({plan.out})", file=sys.stderr, flush=True)
    return 143 if signum == signal.SIGTERM else 130


def save(plan: SuitePlan, record: dict) -> None:
    """Rewrite suite.json (atomically); ``cpu_s``: every tuning's, folder's and invocation's own CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record["invocations"][-1]["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # planning, this process
    parts = [*record["tuning"]["families"].values(), *record["cells"].values(), *record["invocations"]]
    record["cpu_s"] = round(sum(float(p.get("cpu_s") or 0.0) for p in parts), 1)
    record["updated"] = now()
    write_json(plan.out / SUITE_FILE, record)


def git_commit() -> str:
    from bench.harness.environment import git_commit as commit

    return commit()


def suite_report(plan: SuitePlan) -> dict:
    """The suite report (``bench.analysis.suite``: scoreboard, aggregate, curves, speed-ups) into ``OUT/report``,
    as ``python -m bench.suite.report OUT`` writes it. A failure is a warning and ``failed`` in suite.json: the runs
    stay, and that command writes the report again."""
    from bench.analysis.suite import write_report

    again = command_text("bench.suite.report", [str(plan.out)])
    try:
        path = write_report(plan.out, tasks=plan.tasks, command=again)
    except Exception as exc:  # noqa: BLE001 (the runs are done; the report is made again by its own command)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"warning: the suite report failed ({text}); `{again}` makes it again", file=sys.stderr, flush=True)
        return dict(status="failed", note=text, command=again)
    print(f"suite report: {path / 'report.md'}", flush=True)
    return dict(status="written", path=str(path), command=again)


def outcome(plan: SuitePlan, record: dict, stage: str) -> str:
    lines = [f"\nsuite {stage}: {plan.out} (suite.json: commands, states, {record['cpu_s']:.0f} CPU s so far)"]
    for fam, entry in record["tuning"]["families"].items():
        lines.append(f"  tuning {fam}: {entry.get('state')}, {entry['cpu_s']:.0f} CPU s; chosen "
                     f"{json.dumps(entry.get('chosen'))}")
    for name, entry in record["cells"].items():
        runs = ", ".join(f"{n} {s}" for s, n in (entry.get("runs") or {}).items())
        lines.append(f"  {name}: {entry.get('state')}{f' ({runs})' if runs else ''}, {entry['cpu_s']:.0f} CPU s")
    if stage == "tune" and plan.tuning:
        lines.append("next: the same command with --stage run --resume")
    if record.get("label"):
        lines.append(record["label"])
    return "\n".join(lines)
