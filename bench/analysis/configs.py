"""Which configuration each method ran with: the values that differ from the method's class defaults, and whether
they came from a ``bench.tune`` file (``bench.run --config-from``)."""

from __future__ import annotations

from dataclasses import fields

from bench.analysis.pooling import read_config
from bench.analysis.results import Results, read_manifest


def method_configurations(results: Results) -> list[dict]:
    """One row per method label: tuned or not (and from which file), and its non-default settings."""
    tuned_by_folder = {folder: (read_manifest(folder).get("plan") or {}).get("tuned")
                       for folder in set(results.sources.values())}
    rows = []
    for label, group in results.runs.sort_values("seed").groupby("label", sort=True):
        run_id = group["run_id"].iloc[0]
        folder = results.sources[run_id]
        config = (read_config(results.run_dir(run_id), strict=True) or {}).get("method_config", {})
        method = group["method"].iloc[0]
        tuned = tuned_by_folder.get(folder) or {}
        chosen = (tuned.get("methods") or {}).get(method)
        rows.append(dict(method=label,
                         tuned=f"yes ({(tuned.get('files') or {}).get(method, tuned['file'])})" if chosen else "no",
                         settings=", ".join(f"{k}={v}" for k, v in non_defaults(method, config).items()) or "defaults"))
    return rows


def non_defaults(method: str, config: dict) -> dict:
    """The entries of ``config`` that differ from ``method``'s config class defaults (all of it when the class is
    unknown, e.g. a plug-in that cannot be imported here)."""
    try:
        from methods import METHODS

        defaults = {f.name: f.default for f in fields(METHODS.get(method).Config)}
    except Exception:  # a plug-in method not importable from here: show everything
        return dict(config)
    return {k: v for k, v in config.items() if defaults.get(k, object()) != v}
