"""The suite's tasks, read from a TOML file (``tasks.toml`` beside this module unless another is given).

A task is data, so a user adds one without code::

    [models]                         # the model tasks run on, per model family
    sd = "tiny-shapes"
    sd3 = "tiny-shapes-flow"

    [tasks.prompt-match]
    description = "..."              # optional, one line
    reward = "prompt-match"          # what methods train on: a reward name, combination or plug-in (as --reward)
    true_score = "true_match"        # the metric evaluation records beside it: one of the reward's true_metrics
    prompts = "shapes-train"         # training prompts: a registered set or a text file (relative to this file)
    val_prompts = "shapes-val"       # what tuning scores on
    eval_prompts = "shapes-eval"     # what results report
    families = ["sd", "sd3"]         # the families it runs on, each needing a [models] entry

    [tasks.prompt-match.eval]        # optional evaluation settings: bench.run's --eval-n, --eval-seed, --eval-every,
    n = 60                           # --eval-every-samples (keys n, seed, every, every_samples)

Loading checks every key: an unknown reward, true score, prompt set, family, model or key is one line naming the
file and the key, with the valid names (``UsageError``: ``error: ...`` and exit 2 from a command). Nothing is
built: rewards are read from their registered classes, models from their configs.

    python -m bench.suite.tasks [FILE]     # check a task file and list its tasks
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.cli import command
from bench.core.errors import UsageError

TASKS_FILE = Path(__file__).with_name("tasks.toml")
REQUIRED = ("reward", "true_score", "prompts", "val_prompts", "eval_prompts", "families")
"""The keys every task has."""
OPTIONAL = ("description", "eval")
EVAL_FLAGS = {"n": ("--eval-n", 1), "seed": ("--eval-seed", 0), "every": ("--eval-every", 0),
              "every_samples": ("--eval-every-samples", 1)}
"""A task's evaluation setting -> (the ``bench.run`` flag it sets, its smallest value)."""
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Task:
    """One task of the suite, as read and checked from its file."""

    name: str
    reward: str
    """The reward methods train on (a ``--reward`` spec)."""
    true_score: str
    """The evaluation metric that is the task's true score (one of the reward's ``true_metrics``)."""
    true_higher_is_better: bool
    """Whether the true score should rise (False for ``true_jpeg_kb`` under compressibility)."""
    prompts: str
    val_prompts: str
    eval_prompts: str
    families: tuple[str, ...]
    models: dict[str, str] = field(default_factory=dict)
    """Family -> the model the task runs on there (the file's ``[models]``, for this task's families)."""
    eval: dict[str, int] = field(default_factory=dict)
    """Evaluation settings (keys of ``EVAL_FLAGS``)."""
    description: str = ""
    source: str = ""
    """The file the task was read from."""

    def run_args(self, family: str) -> list[str]:
        """``bench.run`` arguments of this task on ``family``'s model (methods, seeds and budgets are the suite's)."""
        if family not in self.models:
            raise UsageError(f"task {self.name!r} does not run on family {family!r}; its families: "
                             f"{', '.join(self.families)}")
        args = ["--model", self.models[family], "--reward", self.reward, "--prompts", self.prompts,
                "--eval-prompts", self.eval_prompts]
        for key, value in self.eval.items():
            args += [EVAL_FLAGS[key][0], str(value)]
        return args


def load_tasks(path: str | Path | None = None) -> dict[str, Task]:
    """Every task of ``path`` (default ``TASKS_FILE``) by name, in file order, each checked."""
    path = Path(path) if path is not None else TASKS_FILE
    data = read_toml(path)
    where = shown(path)
    unknown_keys(data, ("models", "tasks"), where, "")
    models = check_models(data.get("models", {}), where)
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise UsageError(f"{where}: tasks: no task; add a [tasks.NAME] table with the keys {', '.join(REQUIRED)}")
    return {name: check_task(name, table, models, path) for name, table in tasks.items()}


def list_tasks(path: str | Path | None = None) -> list[str]:
    """The names of the tasks of ``path`` (default ``TASKS_FILE``), in file order."""
    return list(load_tasks(path))


def get_task(name: str, path: str | Path | None = None) -> Task:
    """The task called ``name``; an unknown name lists the valid ones."""
    tasks = load_tasks(path)
    if name not in tasks:
        raise UsageError(f"unknown task {name!r}; valid: {', '.join(tasks)}")
    return tasks[name]


def shown(path: Path) -> str:
    """``path`` as errors name it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as a package
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"task file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{shown(path)}: not valid TOML ({str(exc).splitlines()[0]})") from None


def unknown_keys(table: dict, valid: tuple[str, ...], where: str, prefix: str) -> None:
    for key in table:
        if key not in valid:
            raise UsageError(f"{where}: {prefix}{key}: unknown key; valid: {', '.join(valid)}")


def check_models(table, where: str) -> dict[str, str]:
    from bench.core.families import FAMILIES
    from bench.core.models import check_model, model_family

    if not isinstance(table, dict):
        raise UsageError(f"{where}: models: must be a table of family = \"model\" ({', '.join(FAMILIES)})")
    unknown_keys(table, tuple(FAMILIES), where, "models.")
    for family, model in table.items():
        key = f"models.{family}"
        text(model, where, key)
        try:
            check_model(model)
            found = model_family(model)
        except (UsageError, ValueError, OSError) as exc:
            raise UsageError(f"{where}: {key}: {str(exc).splitlines()[0]}") from None
        if found != family:
            raise UsageError(f"{where}: {key}: {model!r} is a {found!r} model, not {family!r}")
    return dict(table)


def text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key}: must be a non-empty string, got {value!r}")
    return value


def check_task(name: str, table, models: dict[str, str], path: Path) -> Task:
    where, key = shown(path), f"tasks.{name}"
    if not NAME.match(name):
        raise UsageError(f"{where}: {key}: a task name is lower-case letters, digits, '.', '_' and '-'")
    if not isinstance(table, dict):
        raise UsageError(f"{where}: {key}: must be a table with the keys {', '.join(REQUIRED)}")
    unknown_keys(table, REQUIRED + OPTIONAL, where, f"{key}.")
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise UsageError(f"{where}: {key}: missing {', '.join(missing)}")
    reward = check_reward(text(table["reward"], where, f"{key}.reward"), where, f"{key}.reward")
    true_score, higher = check_true_score(reward, text(table["true_score"], where, f"{key}.true_score"), where,
                                          f"{key}.true_score")
    prompt_sets = {k: check_prompts(reward, text(table[k], where, f"{key}.{k}"), path, f"{key}.{k}")
                   for k in ("prompts", "val_prompts", "eval_prompts")}
    families = check_families(table["families"], models, where, f"{key}.families")
    return Task(name, reward, true_score, higher, **prompt_sets, families=families,
                models={f: models[f] for f in families}, eval=check_eval(table.get("eval", {}), where, f"{key}.eval"),
                description=str(table.get("description", "")), source=where)


def check_reward(spec: str, where: str, key: str) -> str:
    from rewards import check_reward_spec

    try:
        check_reward_spec(spec)
    except UsageError as exc:
        raise UsageError(f"{where}: {key}: {exc}") from None
    return spec


def check_true_score(reward: str, name: str, where: str, key: str) -> tuple[str, bool]:
    from rewards import reward_names, true_metrics

    metrics = true_metrics(reward)
    if name in metrics:
        return name, metrics[name]
    if metrics:
        raise UsageError(f"{where}: {key}: reward {reward!r} records no true score {name!r}; valid: "
                         f"{', '.join(metrics)}")
    recording = [f"{r} ({', '.join(true_metrics(r))})" for r in reward_names() if true_metrics(r)]
    raise UsageError(f"{where}: {key}: reward {reward!r} records no true score; rewards that do: "
                     f"{'; '.join(recording)}")


def check_prompts(reward: str, spec: str, path: Path, key: str) -> str:
    from bench.core.prompts import PROMPT_SETS, load_prompts, prompt_set_names
    from rewards import check_reward_prompts

    if spec not in PROMPT_SETS:
        candidate = Path(spec) if Path(spec).is_absolute() else path.parent / spec
        if not candidate.is_file():
            raise UsageError(f"{shown(path)}: {key}: unknown prompt set {spec!r}; valid: "
                             f"{', '.join(prompt_set_names())}, or a text file (relative to the task file)")
        spec = str(candidate)
    try:
        check_reward_prompts(reward, list(load_prompts(spec).prompts))
    except UsageError as exc:
        raise UsageError(f"{shown(path)}: {key}: {exc}") from None
    return spec


def check_families(value, models: dict[str, str], where: str, key: str) -> tuple[str, ...]:
    from bench.core.families import FAMILIES

    if not isinstance(value, list) or not value or not all(isinstance(f, str) for f in value):
        raise UsageError(f"{where}: {key}: must be a non-empty list of families ({', '.join(FAMILIES)})")
    for family in value:
        if family not in FAMILIES:
            raise UsageError(f"{where}: {key}: unknown family {family!r}; valid: {', '.join(FAMILIES)}")
        if family not in models:
            raise UsageError(f"{where}: {key}: family {family!r} has no model; add it to [models] "
                             f"({family} = \"MODEL\")")
    return tuple(dict.fromkeys(value))


def check_eval(table, where: str, key: str) -> dict[str, int]:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: {key}: must be a table with keys among {', '.join(EVAL_FLAGS)}")
    unknown_keys(table, tuple(EVAL_FLAGS), where, f"{key}.")
    for name, value in table.items():
        smallest = EVAL_FLAGS[name][1]
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise UsageError(f"{where}: {key}.{name}: must be an integer >= {smallest}, got {value!r}")
    return dict(table)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite.tasks", description="Check a task file and list its "
                                     "tasks (reward, true score, prompt sets, families).")
    parser.add_argument("file", nargs="?", default=str(TASKS_FILE), help="task file (default: the suite's own)")
    args = parser.parse_args(argv)
    for task in load_tasks(args.file).values():
        direction = "higher" if task.true_higher_is_better else "lower"
        print(f"{task.name}: reward {task.reward}, true score {task.true_score} ({direction} is better), prompts "
              f"{task.prompts} / {task.val_prompts} / {task.eval_prompts}, on "
              f"{', '.join(f'{f} ({m})' for f, m in task.models.items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
