"""A suite folder read back, and its final scores normalised per (task, family) cell.

The folder (``bench.suite`` writes it): ``OUT/suite.json`` (``command``, ``tasks``, ``families``, ``methods``,
``seeds``, ``quick``) and one ``bench.run`` results folder per cell at ``OUT/<task>/<family>/``.

**Normalised score** of one run in one cell: ``(final - base) / (best - base)``, where ``final`` is the run's last
evaluation of the score (the task's true score by default), ``base`` the base model's (the cell's step-0 evaluation,
mean over its runs under the cell's evaluation setting) and ``best`` the mean final of the method whose mean final is
best, best read in the score's direction (for ``jpeg-compressibility``'s ``true_jpeg_kb`` the smallest file). So 0 is
the base model and 1 the best method in every cell, whichever way the score points; above 1 is a seed beating the
best method's mean, below 0 one that moved the wrong way. ``base`` and ``best`` are fixed constants of the cell (as
rliable's reference scores), not resampled. A cell where no method's mean moved the right way from the base has no
normalisation (it would put 1 below 0) and is said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.results import Results, add_labels, eval_setting, load_results, reward_higher_is_better
from bench.analysis.saved_fidelity import saved_fidelity
from bench.analysis.summary import per_run_evals, seed_values
from bench.core.errors import UsageError
from bench.core.files import NULL, read_json
from bench.harness.recorder import COMPLETED
from rewards.fidelity import FIDELITY

SUITE_FILE = "suite.json"
SUITE_SHAPE = {"tasks": ([str], {"*": dict}), "families": [str], "methods?": ([str], str), "seeds?": ([int], str),
               "quick?": bool, "command?": ([str], str), "tasks_file?": (str, NULL)}
"""What ``suite.json`` holds (``bench.core.files.check_shape``)."""
SCORES = ("true", "reward")
"""What a scoreboard normalises: the task's true score, or the learned reward it trains on."""
DIVERSITY = ("diversity", "attribute_diversity")
"""Evaluation metrics of sample diversity: ``diversity[<feature space>]`` and the shape world's outcome diversity."""


@dataclass(frozen=True)
class TaskInfo:
    """What the report needs of a task: its reward and true score, and the true score's direction."""

    name: str
    reward: str
    true_score: str
    true_higher_is_better: bool


@dataclass
class Cell:
    task: str
    family: str
    path: Path
    results: Results | None = None
    missing: str = ""
    """Why there are no results ("" when there are)."""


@dataclass
class Suite:
    root: Path
    spec: dict
    tasks: dict[str, TaskInfo]
    families: list[str]
    cells: list[Cell]
    methods: list[str] = field(default_factory=list)
    """The suite's methods: suite.json's, then any other found in a cell."""
    problems: list[str] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        return bool(self.spec.get("quick", False))

    def present(self) -> list[Cell]:
        return [c for c in self.cells if c.results is not None]


def is_diversity(metric: str) -> bool:
    return metric in DIVERSITY or str(metric).startswith("diversity[")


def read_suite_file(root) -> dict:
    """The suite.json of the suite folder ``root`` (``SUITE_SHAPE``); a folder without one, or one that is damaged
    or of the wrong shape, is a one-line ``UsageError`` naming the file."""
    root = Path(root)
    if not (root / SUITE_FILE).is_file():
        raise UsageError(f"{str(root)!r} is not a suite folder (no {SUITE_FILE}); pass the folder bench.suite wrote")
    return read_json(root / SUITE_FILE, "restore it from the suite's command line, or run the suite again",
                     SUITE_SHAPE)


def read_suite(root, tasks=None) -> Suite:
    """The suite folder ``root``. ``tasks``: name -> an object with ``reward``, ``true_score`` and
    ``true_higher_is_better`` (``bench.suite.tasks.Task``); a task it lacks is read from suite.json's entry when that
    is a table, else from its cells' reward and the first true score the reward declares."""
    root = Path(root)
    spec = read_suite_file(root)
    names = list(spec["tasks"])
    cells, problems = [], []
    for task in names:
        for family in spec["families"]:
            cell = Cell(task, family, root / task / family)
            if not cell.path.is_dir():
                cell.missing = "no results folder (not run, or not yet)"
            else:
                try:
                    cell.results = load_results([cell.path])
                except UsageError as exc:
                    cell.missing = str(exc)
                else:
                    add_labels(cell.results.runs, cell.results.metrics)
                    problems += cell.results.problems
            cells.append(cell)
    infos = {name: task_info(name, (tasks or {}).get(name), spec["tasks"], cells) for name in names}
    found = [m for c in cells if c.results is not None for m in sorted(set(c.results.runs["label"]))]
    listed = spec.get("methods", [])
    listed = listed.split(",") if isinstance(listed, str) else listed  # "ddpo,alignprop" as --methods gives it
    methods = list(dict.fromkeys([m.strip() for m in listed if m.strip()] + found))
    return Suite(root, spec, infos, list(spec["families"]), cells, methods, problems)


def task_info(name: str, given, listed, cells: list[Cell]) -> TaskInfo:
    if given is not None:
        return TaskInfo(name, given.reward, given.true_score, bool(given.true_higher_is_better))
    entry = listed.get(name) if isinstance(listed, dict) else None
    if entry and {"reward", "true_score"} <= set(entry):
        higher = entry.get("true_higher_is_better")
        if higher is None:
            higher = true_direction(entry["reward"]).get(entry["true_score"], True)
        return TaskInfo(name, entry["reward"], entry["true_score"], bool(higher))
    rewards = [r for c in cells if c.task == name and c.results is not None for r in c.results.runs["reward"]]
    if not rewards:
        return TaskInfo(name, name, "", True)
    reward = pd.Series(rewards).mode().iloc[0]
    declared = true_direction(reward)
    true = next(iter(declared), "")
    return TaskInfo(name, reward, true, declared.get(true, True))


def true_direction(reward: str) -> dict[str, bool]:
    from rewards import true_metrics

    try:
        return true_metrics(reward)
    except Exception:  # a reward no longer registered: no declared true score
        return {}


def score_metric(task: TaskInfo, score: str) -> tuple[str, bool]:
    """(metric, higher is better) that ``score`` ("true" or "reward") normalises for ``task``."""
    if score not in SCORES:
        raise UsageError(f"--score {score!r}: valid: {', '.join(SCORES)}")
    if score == "true" and task.true_score:
        return task.true_score, task.true_higher_is_better
    return "reward_mean", reward_higher_is_better(task.reward)


def best_method(means: dict[str, float], higher: bool) -> str | None:
    """The label whose mean final is best in the score's direction (None when no mean is finite)."""
    finite = {k: v for k, v in means.items() if not math.isnan(v)}
    return (max if higher else min)(finite, key=finite.get) if finite else None


def normalise(values, base: float, best: float) -> np.ndarray:
    """``(values - base) / (best - base)``: 0 at the base model, 1 at the best method's mean, in either direction."""
    return (np.asarray(values, dtype=float) - base) / (best - base)


def extra_metrics(results: Results) -> list[str]:
    """Fidelity and diversity metrics the cell's evaluations record, in a fixed order."""
    names = set(results.metrics.loc[results.metrics["split"] == "eval", "metric"])
    return [f for f in FIDELITY if f in names] + sorted(n for n in names if is_diversity(n))


def cell_runs(cell: Cell, task: TaskInfo, score: str) -> tuple[pd.DataFrame, dict]:
    """One row per run of ``cell`` (its final and step-0 score, learned reward, fidelity and diversity, the
    normalised score where the cell has one) and the cell's normalisation (``base``, ``best``, ``best_mean``,
    ``metric``, ``higher``, ``setting``, ``note``: why there is none, "" when there is one)."""
    results = cell.results
    metric, higher = score_metric(task, score)
    runs = results.runs.copy()
    runs["setting"] = eval_setting(runs)
    extras = extra_metrics(results)
    evals = per_run_evals(results, [m for m in dict.fromkeys([metric, "reward_mean", task.true_score, *extras]) if m])
    read_back = ""
    if not any(f in extras for f in FIDELITY):  # folders from before every evaluation recorded it
        saved = saved_fidelity(results)
        if len(saved):
            wide = saved.pivot_table(index=["run_id", "metric"], columns="which", values="value").reset_index()
            wide = wide.assign(first_step=0).reindex(columns=["run_id", "metric", "first", "last", "first_step"])
            evals = pd.concat([evals, wide], ignore_index=True)
            extras = [f for f in FIDELITY if f in set(saved["metric"])] + extras
            read_back = "saved images"
    first = {k: g.set_index("run_id")["first"] for k, g in evals.groupby("metric")}
    first_step = {k: g.set_index("run_id")["first_step"] for k, g in evals.groupby("metric")}
    last = {k: g.set_index("run_id")["last"] for k, g in evals.groupby("metric")}
    ids = runs["run_id"]
    get = lambda table, m: table.get(m, pd.Series(dtype=float)).reindex(ids).to_numpy(float)  # noqa: E731
    table = pd.DataFrame({"task": cell.task, "family": cell.family, "method": runs["label"].to_numpy(),
                          "seed": runs["seed"].to_numpy(), "run_id": ids.to_numpy(),
                          "status": runs["status"].to_numpy(),
                          "completed": runs["status"].isin(COMPLETED).to_numpy(), "setting": runs["setting"].to_numpy(),
                          "score_metric": metric, "start_step": get(first_step, metric)})
    for name, metric_name in (("score", metric), ("reward", "reward_mean"), ("true", task.true_score),
                              *((name, name) for name in extras)):
        table[f"final_{name}"], table[f"start_{name}"] = get(last, metric_name), get(first, metric_name)
    norm = normalisation(table, higher)
    at_base = table[(table["setting"] == norm["setting"]) & (table["start_step"] == 0)]
    norm.update({f"base_{c[len('start_'):]}": float(at_base[c].mean()) if at_base[c].notna().any() else float("nan")
                 for c in table.columns if c.startswith("start_") and c != "start_step"})
    table["normalised"] = (normalise(table["final_score"], norm["base"], norm["best_mean"]) if not norm["note"]
                           else np.nan)
    table.loc[~table["completed"], "normalised"] = np.nan
    return table, dict(norm, metric=metric, higher=higher, fidelity_from=read_back)


def normalisation(table: pd.DataFrame, higher: bool) -> dict:
    """A cell's base (step-0 mean under its most common evaluation setting, every status: a failed run's step 0 is
    still the base model), best method and its mean final (completed runs, replicates of one seed averaged)."""
    settings = table["setting"].value_counts()
    setting = sorted(settings[settings == settings.max()].index)[0] if len(settings) else ""
    at_zero = table[(table["setting"] == setting) & (table["start_step"] == 0)]["start_score"].dropna()
    base = float(at_zero.mean()) if len(at_zero) else float("nan")
    done = table[table["completed"]]
    means = {m: float(seed_values(g, g["final_score"]).mean()) if g["final_score"].notna().any() else float("nan")
             for m, g in done.groupby("method", sort=True)}
    best = best_method(means, higher)
    out = dict(base=base, best=best, best_mean=means.get(best, float("nan")), setting=setting, note="",
               other_settings=sorted(set(table.loc[table["setting"] != setting, "method"])))
    if math.isnan(base):
        out["note"] = "no step-0 evaluation of the score: no base model to normalise from"
    elif best is None:
        out["note"] = "no finished run with a final evaluation"
    elif (out["best_mean"] - base) * (1 if higher else -1) <= 0:
        out["note"] = (f"no method moved the score the right way from the base model (best {best}: "
                       f"{out['best_mean']:.4g} vs base {base:.4g}): no normalisation")
    return out


def scoreboard(suite: Suite, score: str = "true", *, rng: np.random.Generator,
               n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, board, cells): every run with its normalised score; one row per (task, family, method) of the suite
    (``status`` "absent" where the method has no run there, never a 0); one row per cell with its normalisation."""
    run_parts, board, cell_rows = [], [], []
    for cell in suite.cells:
        task = suite.tasks[cell.task]
        if cell.results is None:
            cell_rows.append(dict(task=cell.task, family=cell.family, note=cell.missing, present=False))
            board += [dict(task=cell.task, family=cell.family, method=m, status="absent", seeds=0)
                      for m in suite.methods]
            continue
        table, norm = cell_runs(cell, task, score)
        run_parts.append(table)
        cell_rows.append(dict(task=cell.task, family=cell.family, present=True, **norm))
        for method in suite.methods:
            board.append(board_row(cell, method, table[table["method"] == method], norm, rng=rng, n_boot=n_boot))
    runs = pd.concat(run_parts, ignore_index=True) if run_parts else pd.DataFrame()
    return runs, pd.DataFrame(board), pd.DataFrame(cell_rows)


def board_row(cell: Cell, method: str, g: pd.DataFrame, norm: dict, *, rng, n_boot: int) -> dict:
    """One (cell, method) of the scoreboard: seeds, normalised mean with its interval over seeds (none with one
    seed), and the raw finals beside it (means over seeds)."""
    row = dict(task=cell.task, family=cell.family, method=method)
    if not len(g):
        return dict(row, status="absent", seeds=0)
    done = g[g["completed"]]
    counts = g["status"].value_counts()
    row["status"] = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    row["finished"] = bool(len(done))
    row["other_setting"] = method in norm["other_settings"]
    per_seed = seed_values(done, done["normalised"])
    row["seeds"] = int(done["seed"].fillna(-1).nunique())  # finished seeds, normalised or not (a cell may have no scale)
    if len(per_seed) > 1:
        row["normalised"], row["normalised_lo"], row["normalised_hi"] = stats.bootstrap_ci(
            per_seed, "mean", rng=rng, n_boot=n_boot)
    else:
        row["normalised"] = float(per_seed.mean()) if len(per_seed) else float("nan")
        row["normalised_lo"] = row["normalised_hi"] = float("nan")
    at_base = g[g["start_step"] == 0]
    for name in [c[len("final_"):] for c in g.columns if c.startswith("final_")]:
        values = seed_values(done, done[f"final_{name}"])
        row[f"final_{name}"] = float(values.mean()) if len(values) else float("nan")
        starts = at_base[f"start_{name}"].dropna()  # this method's own step 0 (its setting's base model)
        row[f"start_{name}"] = float(starts.mean()) if len(starts) else float("nan")
    return row


def score_matrices(runs: pd.DataFrame, cells: list[tuple[str, str]], methods) -> dict[str, np.ndarray]:
    """``{method: array [seeds, cells]}`` of normalised scores (replicates of a seed averaged), NaN where a seed or a
    cell is missing: the aggregate's input, cells in the order given."""
    out = {}
    for method in methods:
        cols = []
        for task, family in cells:
            g = runs[(runs["task"] == task) & (runs["family"] == family) & (runs["method"] == method)
                     & runs["completed"]] if len(runs) else runs
            cols.append(seed_values(g, g["normalised"]) if len(g) else np.zeros(0))
        depth = max([len(c) for c in cols] + [1])
        out[method] = np.array([np.pad(c, (0, depth - len(c)), constant_values=np.nan) for c in cols]).T \
            if cols else np.zeros((1, 0))
    return out


def complete(matrix: np.ndarray) -> bool:
    """Whether a method has a score in every cell (column) of its matrix."""
    return bool(matrix.shape[1]) and bool((~np.isnan(matrix)).any(axis=0).all())
