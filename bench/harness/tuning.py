"""Fair tuning: each method's small hyper-parameter grid on tuning seeds under one budget, the best configuration
per method by evaluation reward (``--score``: the final one, or the last half's mean: ``scoring``), written to a
file that ``bench.run --config-from`` applies.

A grid is ``"lr=1e-4,3e-4,1e-3;batch_size=4,8"``: ``;`` separates keys, ``,`` values. A key applies to every chosen
method whose config has it (``ddpo.lr=...`` to one method only); a method with none of the keys runs once, on its
defaults. Configurations are named like ``alignprop[lr=0.001,batch_size=8]``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import check_output, read_json, read_table, write_json
from bench.core.text import safe_name
from bench.harness import scoring
from bench.harness.spec import Given
from bench.harness.statuses import COMPLETED
from bench.harness.tuned import FORMAT



TUNE_EVAL_SEED = 4321
"""Evaluation noise seed of tuning runs (bench.run's default, what results report, is 1234)."""


def validation_flags(passthrough: list[str], score: str = "final") -> tuple[list[str], list[str]]:
    """The ``--eval-prompts`` / ``--eval-seed`` flags to add so that tuning scores on validation (and, for ``--score
    late``, the evaluations in the last half of the budget it needs: ``scoring.late_schedule``), and warnings for
    a tuning that scores on the reported evaluation set or noise."""
    from bench.core.evaluate import EvalConfig
    from bench.core.prompts import VALIDATION_SETS
    from bench.harness.presets import get_preset

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--preset", default="default")
    p.add_argument("--eval-prompts")
    p.add_argument("--eval-seed", type=int)
    known, _ = p.parse_known_args(passthrough)
    added, warnings = (scoring.late_schedule(passthrough) if scoring.check_score(score) == "late" else []), []
    reported = get_preset(known.preset).eval_prompts
    if known.eval_prompts is None:
        if reported in VALIDATION_SETS:
            added += ["--eval-prompts", VALIDATION_SETS[reported]]
        else:
            warnings.append(f"no validation prompt set is registered for {reported!r}: tuning scores on the "
                            "reported evaluation prompts (pass --eval-prompts with a held-out file)")
    elif known.eval_prompts in VALIDATION_SETS or known.eval_prompts == reported:
        warnings.append(f"--eval-prompts {known.eval_prompts} is a reported evaluation set: hyper-parameters chosen "
                        f"on it flatter that set's results (its validation set: "
                        f"{VALIDATION_SETS.get(known.eval_prompts, 'none')})")
    if known.eval_seed is None:
        added += ["--eval-seed", str(TUNE_EVAL_SEED)]
    elif known.eval_seed == EvalConfig.seed:
        warnings.append(f"--eval-seed {EvalConfig.seed} is the reported evaluation noise; tune on another seed")
    return added, warnings


@dataclass
class Candidate:
    """One configuration of one method in the grid."""

    method: str
    values: dict
    """Config field -> value (as given on the command line)."""
    final: list[float] = field(default_factory=list)
    """Final eval reward of each tuning seed that finished its budget."""
    runs: int = 0
    """Tuning runs made (finished or not)."""
    origins: dict = field(default_factory=dict)
    """Config field -> the ``--grid`` part that gave its values (``rwr.lr=1e-4,abc``), named by errors about them."""
    kind: str = "final"
    """What ``score`` means (``--score``): the mean of ``final``, or of ``late``."""
    late: list[float] = field(default_factory=list)
    """Per finished tuning seed: the mean eval reward over its evaluations in the last half of its budget."""
    late_n: list[int] = field(default_factory=list)
    """How many evaluations each ``late`` value averages."""

    @property
    def name(self) -> str:
        inside = ",".join(f"{k}={v}" for k, v in self.values.items())
        return f"{self.method}[{inside}]" if inside else self.method

    @property
    def score(self) -> float:
        """Mean final (or late) eval reward over the tuning seeds; NaN unless every seed finished (a failure is no
        winner)."""
        values = self.late if self.kind == "late" else self.final
        if not values or len(values) < self.runs:
            return float("nan")
        return sum(values) / len(values)


def parse_grid(text: str) -> dict[str, list[str]]:
    """``"a=1,2;m.b=x"`` -> ``{"a": ["1", "2"], "m.b": ["x"]}``; malformed text is a UsageError."""
    grid: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, eq, values = part.partition("=")
        items = [v.strip() for v in values.split(",")]
        if not eq or not key.strip() or not all(items):
            raise UsageError(f"--grid part {part!r} is malformed; write key=v1,v2;key2=v3 (e.g. lr=1e-4,1e-3)")
        if key.strip() in grid:
            raise UsageError(f"--grid names {key.strip()!r} twice; list each key once")
        same = repeated_value(items)
        if same:
            raise UsageError(f"--grid {key.strip()}: {same} gives the same value twice; list each value once")
        grid[key.strip()] = items
    if not grid:
        raise UsageError(f"--grid {text!r} is empty; write key=v1,v2;key2=v3 (e.g. lr=1e-4,1e-3)")
    return grid


def repeated_value(items: list[str]) -> str | None:
    """The first two grid values that are the same value ("1e-3" and "0.001" are), as text; None when all differ."""
    seen = {}
    for item in items:
        word = item.lower()
        if word in ("true", "yes", "on", "false", "no", "off"):
            value = word in ("true", "yes", "on")  # the spellings a boolean --set accepts (True == 1.0 as a key)
        else:
            try:
                value = float(item)
            except ValueError:
                value = word
        if value in seen:
            return f"{seen[value]!r} and {item!r}" if seen[value] != item else repr(item)
        seen[value] = item
    return None


COMMAND_FILE = "tune_command.json"
"""The tuning command, written into OUT before the first run; ``--resume`` requires the same one."""


def record_command(out: Path, command: list[str]) -> None:
    from bench.core.files import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / COMMAND_FILE, {"argv": command})


def without_grid(argv: list[str]) -> list[str]:
    """The command without its ``--grid``, the one part a resumed tuning may change (only grow: ``bench.tune``)."""
    return [a for i, a in enumerate(argv) if not (a.startswith("--grid") or (i and argv[i - 1] == "--grid"))]


def check_targets(out: Path, target: Path, resume: list[str] | None = None) -> list[str] | None:
    """Before the first run: OUT new (or empty) and creatable, the tuned file writable (``check_tuned_target``); with
    ``resume`` (the command without it) OUT holds this command's tuning, whose recorded command is returned."""
    check_output(out, "--out", folder=True)
    if resume is not None:
        if not (out / COMMAND_FILE).is_file():
            raise UsageError(f"--resume: {str(out)!r} holds no tuning begun by bench.tune ({COMMAND_FILE} missing); "
                             "give the --out of the tuning to continue")
        earlier = read_json(out / COMMAND_FILE, "give the --out of a tuning begun by bench.tune", {"argv": [str]},
                            label=f"--resume: {str(out / COMMAND_FILE)!r}")["argv"]  # fmt: skip
        if without_grid(earlier) != without_grid(resume):
            raise UsageError(f"--resume: {str(out / COMMAND_FILE)!r} records another command; repeat it exactly "
                             "(plus --resume; only its --grid may grow) or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{str(out)!r} already holds results; choose another --out or add --resume")
    check_output(target, "--write", what="tuned file", example="tuned.json")
    check_tuned_target(target, out)
    return earlier if resume is not None else None


def check_tuned_target(target: Path, out: Path) -> None:
    """``--write`` replaces only a tuned file (``format`` is ``FORMAT``, a key ``tuned_document`` always writes),
    never a results folder's ``manifest.json`` or any other file, nor a path among the tuning's own results."""
    import json

    target, out = Path(os.path.abspath(target)), Path(os.path.abspath(out))
    if out in target.parents and (target.parent != out or target.name in (COMMAND_FILE, "tuning.md")):
        raise UsageError(f"--write {str(target)!r} is inside the tuning's own results in --out {str(out)!r}; name a "
                         f"file beside them, e.g. {out / 'tuned.json'}")
    try:
        kind = json.loads(target.read_text()).get("format") if target.is_file() else FORMAT
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != FORMAT:
        raise UsageError(f"--write {str(target)!r} exists and is not a tuned file written by bench.tune (no "
                         f"\"format\": \"{FORMAT}\"); it would be overwritten: name a new file")


def candidates(method: str, config_cls, grid: dict[str, list[str]]) -> list[Candidate]:
    """Every combination of the grid keys that ``method``'s config has (``method.key`` keys for it alone)."""
    names = {f.name for f in fields(config_cls)}
    keys, origins = {}, {}
    # Global keys first, then this method's own (``method.key``), which win whatever their order in the grid.
    for specific in (False, True):
        for key, values in grid.items():
            target, dot, name = key.rpartition(".")
            if bool(dot) == specific and (not dot or target == method) and name in names:
                keys[name], origins[name] = values, f"{key}={','.join(values)}"
    combos = itertools.product(*keys.values()) if keys else [()]
    return [Candidate(method, dict(zip(keys, combo)), origins=origins) for combo in combos]


def grid_sources(planned, method: str, cand: Candidate):
    """A candidate's parsed bench.run flags with its own ``--set`` values marked as given by ``--grid``
    (``Given``): a value the planner refuses is named as the grid part that gave it, not as a ``--set``."""
    mine = {f"{method}.{k}={v}": f"--grid {cand.origins[k]!r}" for k, v in cand.values.items() if k in cand.origins}
    planned.sets = [Given(item, mine[item]) if item in mine else item for item in planned.sets]
    return planned


def check_grid_keys(grid: dict[str, list[str]], config_classes: dict) -> None:
    """Every grid key must apply to at least one chosen method (a typo would silently tune nothing)."""
    for key in grid:
        target, dot, name = key.rpartition(".")
        if dot and target not in config_classes:
            raise UsageError(f"--grid key {key!r} names method {target!r}, which is not in --methods")
        owners = [m for m, cls in config_classes.items() if (not dot or m == target)
                  and name in {f.name for f in fields(cls)}]
        if not owners:
            raise UsageError(f"--grid key {key!r}: no chosen method has a config field {name!r}")


def set_flags(passthrough: list[str]) -> list[tuple[int, str, int]]:
    """Every ``--set`` in ``passthrough``: (index, ``key=value``, number of arguments it spans)."""
    found = []
    for i, arg in enumerate(passthrough):
        if arg == "--set" and i + 1 < len(passthrough):
            found.append((i, passthrough[i + 1], 2))
        elif arg.startswith("--set="):
            found.append((i, arg.split("=", 1)[1], 1))
    return found


def check_fixed_sets(passthrough: list[str], grid: dict[str, list[str]]) -> None:
    """``--set`` given to bench.tune fixes a value for every candidate alike (e.g. ``--set steps=10``); one that
    names a grid key would silently override the grid, so it is refused."""
    for _, value, _ in set_flags(passthrough):
        method, _, name = value.partition("=")[0].strip().rpartition(".")
        for key in grid:
            owner, _, grid_name = key.rpartition(".")
            if name == grid_name and (not method or not owner or method == owner):
                raise UsageError(f"--set {value!r} names the grid key {key!r}; give its values in --grid only")


def flags_for(passthrough: list[str], method: str, methods: list[str]) -> list[str]:
    """The bench.run flags of one method's tuning runs: ``--set other.key=v`` for another tuned method dropped."""
    dropped = set()
    for i, value, span in set_flags(passthrough):
        owner = value.partition("=")[0].rpartition(".")[0]
        if owner in methods and owner != method:
            dropped.update(range(i, i + span))
    return [arg for i, arg in enumerate(passthrough) if i not in dropped]


def best(cands: list[Candidate], higher_is_better: bool) -> Candidate | None:
    """The candidate with the best mean final reward (ties: the earlier in grid order); None if none finished."""
    scored = [c for c in cands if not math.isnan(c.score)]
    if not scored:
        return None
    return (max if higher_is_better else min)(scored, key=lambda c: c.score)


def tuned_document(chosen: dict[str, list[Candidate]], winners: dict[str, Candidate | None], facts: dict) -> dict:
    """The tuned-configuration file: each method's chosen values and its whole grid with scores."""
    methods = {}
    for method, cands in chosen.items():
        win = winners[method]
        methods[method] = dict(
            chosen=win.values if win else None,
            score=None if win is None else win.score,
            grid=[dict(name=c.name, values=c.values, final=c.final, runs=c.runs,
                       **(dict(late=c.late, late_evaluations=c.late_n) if c.kind == "late" else {}),
                       score=None if math.isnan(c.score) else c.score) for c in cands],
        )
    return dict(format=FORMAT, methods=methods, **facts)


def write_tuned(path: Path, document: dict, out: Path) -> None:
    check_tuned_target(path, out)  # again: a file may have been made there during the runs
    write_json(path, document)


def resume_command(argv: list[str] | None) -> list[str]:
    """The tuning command as recorded in OUT (without ``--resume``): a resumed tuning must repeat it."""
    return [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]


def finished_candidate(folder: Path, runs: int) -> bool:
    """Whether an earlier invocation left this candidate's folder with all ``runs`` runs finished (tuning resumes:
    rerunning the same command reuses them, and resumes a candidate it was stopped inside)."""
    if not (folder / "runs.csv").is_file():
        return False
    table = read_runs(folder)
    return len(table) == runs and bool(table.status.isin(COMPLETED).all())


def read_scores(cand: Candidate, folder: Path, kind: str) -> None:
    """A candidate's runs, final eval rewards and (``kind`` late) late eval rewards, from its results folder."""
    table = read_runs(folder)
    cand.runs, cand.kind = len(table), kind
    cand.final = table[table.status.isin(COMPLETED)].final_eval_reward.dropna().tolist()
    if kind == "late":
        cand.late, cand.late_n = scoring.late_rewards(folder, table)


def read_runs(folder: Path):
    """A candidate's ``runs.csv`` (status and final evaluation reward per run); a damaged or hand-edited one (text
    where the reward belongs) is a ``UsageError`` naming the file, column and row."""
    return read_table(folder / "runs.csv", "delete the candidate's folder to run it again, or restore the file",
                      columns=("status",), numbers=("final_eval_reward",))


def candidate_command(args, method: str, cand, passthrough: list[str], methods: list[str],
                      out: Path) -> tuple[list[str], Path]:
    """The bench.run arguments of one candidate's runs (other methods' --set values dropped), and its folder."""
    folder = out / safe_name(cand.name, keep="-_.=,[]")
    sets = [f"--set={method}.{k}={v}" for k, v in cand.values.items()]
    flags = flags_for(passthrough, method, methods)
    return ["--methods", method, "--reward", args.reward, "--seeds", args.seeds, *sets, *flags,
            "--out", str(folder)], folder
