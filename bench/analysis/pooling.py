"""Which runs of several results folders a report may pool: a repeat of one run id (the same command run twice),
and the seeds of one method, reward and model spread over folders, only when made with the same settings."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import NULL, read_json

CONFIG_FILE = "config.json"
CONFIG_SHAPE = {"run_id?": str, "method?": str, "reward?": str, "model?": str, "seed?": int,
                "method_config?": {"*": None}, "eval?": dict, "lora?": (dict, NULL)}
"""What the reports read of a run's config.json (``bench.harness.spec.RunSpec`` writes it; older folders lack later
keys, an older runner wrote ``lora``), for ``bench.core.files.check_shape``."""
NOT_SETTINGS = {"tracker"}
"""config.json keys that change where a run is watched, not what it computes: runs differing in them pool."""
PER_SEED = {"run_id", "seed"}
"""config.json keys in which the seeds of one method's runs differ by design."""


def read_config(run_dir: Path, strict: bool = False) -> dict | None:
    """A run folder's config.json as a dict; None when it is missing. One that is damaged or of another shape
    (``CONFIG_SHAPE``): None, or with ``strict`` a one-line ``UsageError`` naming the file and the key."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path, "restore it from the results folder's manifest.json with bench.run --resume",
                         CONFIG_SHAPE)
    except UsageError:
        if strict:
            raise
        return None


def config_difference(first: Path, second: Path, ignore=frozenset()) -> str | None:
    """None when two run folders were made with the same configuration (config.json, but for ``ignore``); else
    what differs."""
    a, b = read_config(first), read_config(second)
    if a is None or b is None:
        return "config.json missing or damaged, so the settings cannot be compared"
    keys = sorted(k for k in (set(a) | set(b)) - NOT_SETTINGS - set(ignore) if a.get(k) != b.get(k))
    return f"settings differ in {', '.join(keys)}" if keys else None


def pool_repeat(run_id: str, sources: dict, directory: Path) -> str:
    """The id under which a repeat of ``run_id`` (same configuration, another folder) joins: ``run_id#2``, ..."""
    first = sources[run_id]
    reason = config_difference(first / "runs" / run_id, directory / "runs" / run_id)
    if reason:
        raise UsageError(f"run {run_id!r} appears in both {str(first)!r} and {str(directory)!r} and cannot be pooled: "
                         f"{reason}; pool folders made by the same command, or report them separately")
    k = 2
    while f"{run_id}#{k}" in sources:
        k += 1
    return f"{run_id}#{k}"


def check_seeds_poolable(runs, run_dir) -> None:
    """Refuse folders whose runs of one (method, reward, model) were made with other settings (another budget,
    learning rate, evaluation...): the report would average them as seeds of one configuration. ``run_dir(run_id)``
    is a run's folder; runs whose config.json is missing or damaged (tables alone) are not compared."""
    for (method, reward, model), group in runs.groupby(["method", "reward", "model"], sort=False):
        first = None
        for run_id in group["run_id"].astype(str):
            folder = run_dir(run_id)
            if read_config(folder) is None:
                continue
            if first is None:
                first = folder
                continue
            reason = config_difference(first, folder, PER_SEED)
            if reason:
                raise UsageError(f"runs {first.name!r} ({str(first.parent.parent)!r}) and {folder.name!r} "
                                 f"({str(folder.parent.parent)!r}) of {method} on {reward} ({model}) cannot be pooled "
                                 f"as seeds of one configuration: {reason}; report them separately")
