"""Applying ``bench.tune``'s tuned files (``bench.run --config-from``): reading one (``load_tuned``), its chosen
values as ``--set`` values that name the file and key (``tuned_sets``), and the checks of ``apply_tuned`` (reward,
seeds, model family, methods covered)."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import UsageError
from bench.core.files import NULL, check_shape, read_json
from bench.harness.spec import Given

FORMAT = "bench-tuned/1"
"""The ``format`` every tuned file holds (``--write`` replaces only such a file)."""


def load_tuned(path: str | Path) -> dict:
    """A file written by ``bench.tune``; anything else is a UsageError naming the fix."""
    path = Path(path)
    if path.is_dir():
        inside = path / "tuned.json"
        raise UsageError(f"--config-from {str(path)!r} is a folder; pass the tuned file"
                         + (f" in it, {str(inside)!r}" if inside.is_file() else " bench.tune wrote (OUT/tuned.json or --write)"))
    if not path.is_file():
        raise UsageError(f"--config-from {str(path)!r} does not exist; write one with python -m bench.tune")
    label, fix = f"--config-from {str(path)!r}", "write it again with python -m bench.tune"
    data = read_json(path, fix, label=label)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{label} is not a bench.tune file ({FORMAT}); write one with python -m bench.tune")
    check_shape(data, TUNED_SHAPE, label, fix)
    return data


TUNED_SHAPE = {"reward": str, "tuning_seeds?": ([int], NULL), "bench_run_flags?": ([str], NULL),
               "methods": {"*": {"chosen?": ({"*": (float, str, bool)}, NULL)}}}
"""What ``bench.run --config-from`` reads from a tuned file (``bench.core.files.check_shape``)."""


def tuned_sets(data: dict, methods: list[str], path: str = "") -> dict[str, dict[str, str]]:
    """Per-method values from a tuned file, for the chosen methods the file covers, as text the way ``--set`` gives
    them (``Given``: the same conversion and validation, whose errors name the file and key)."""
    out = {}
    for method in methods:
        entry = data["methods"].get(method) or {}
        if entry.get("chosen"):
            out[method] = {k: Given(str(v), f"--config-from {path!r} (key methods.{method}.chosen.{k})")
                           for k, v in entry["chosen"].items()}
    return out


def tuned_model(data: dict) -> str:
    """The model a ``bench.tune`` file was tuned on: its bench.run flags' ``--model``, else their preset's model."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model")
    p.add_argument("--preset", default="default")
    known, _ = p.parse_known_args([str(f) for f in data.get("bench_run_flags") or []])
    from bench.harness.presets import get_preset

    return known.model or get_preset(known.preset).model


def check_tuned_model(path: str, data: dict, model: str | None) -> str | None:
    """A file tuned on a model of another family is refused; on another model of the same family, a note."""
    if model is None:
        return None
    from bench.core.models import family_of

    source = tuned_model(data)
    if source == model:
        return None
    try:
        same_family = family_of(source) is family_of(model)
    except Exception:  # a directory or hub id that is gone: its family cannot be read
        same_family = False
    if not same_family:
        raise UsageError(f"--config-from {path!r} was tuned on {source!r}, another model family than {model!r}; "
                         "tune on this model (python -m bench.tune --model ...) or drop --config-from")
    return f"--config-from {path!r} was tuned on {source!r}, not {model!r} (same family); its values are applied"


def apply_tuned(paths: str | None, reward: str, seeds: list[int], per_method: dict[str, dict],
                model: str | None = None) -> dict | None:
    """Merge the chosen values of one or more ``bench.tune`` files (comma-separated) under each method's own
    ``--set`` values (which win); refuses a file tuned for another reward, on the seeds being evaluated or on a
    model of another family, a method two files both tune, and files that tune none of the chosen methods. Returns
    what was applied, for the manifest (with a note where a file was tuned on another model of the same family, and
    one for each chosen method the files leave at its defaults)."""
    if paths is None:
        return None
    applied, files, tuning_seeds, notes, listed = {}, {}, set(), [], set()
    items = [p.strip() for p in paths.split(",")]
    if not all(items):
        raise UsageError(f"--config-from {paths!r} is empty or malformed; give bench.tune files, comma-separated")
    for path in items:
        data = load_tuned(path)
        if data.get("reward") != reward:
            raise UsageError(f"--config-from {path!r} was tuned for reward {data.get('reward')!r}, not {reward!r}; "
                             "tune for this reward first (python -m bench.tune)")
        note = check_tuned_model(path, data, model)
        if note:
            notes.append(note)
        overlap = sorted(set(seeds) & set(data.get("tuning_seeds") or []))
        if overlap:
            raise UsageError(f"--seeds {','.join(map(str, overlap))} were used to tune {path!r}; evaluate the chosen "
                             "configurations on other seeds")
        for method, values in tuned_sets(data, list(per_method), path).items():
            if method in applied:
                raise UsageError(f"--config-from: both {files[method]!r} and {path!r} tune {method}; pass one of them")
            applied[method], files[method] = values, path
        tuning_seeds |= set(data.get("tuning_seeds") or [])
        listed |= set(data["methods"]) & set(per_method)
    if not listed:
        raise UsageError(f"--config-from {paths!r} tunes none of --methods {','.join(per_method)}; pass the file "
                         "tuned for them (python -m bench.tune --methods ...) or drop --config-from")
    for method in per_method:  # a method the file(s) leave at its defaults is said, never assumed tuned
        if method not in applied:
            why = (f"leaves {method} untuned (no configuration of it finished)" if method in listed
                   else f"does not tune {method}")
            notes.append(f"--config-from {paths!r} {why}: it runs with its defaults")
    for method, values in applied.items():
        per_method[method] = {**values, **per_method[method]}
    return dict(file=paths, files=files, tuning_seeds=sorted(tuning_seeds), methods=applied, notes=notes)
