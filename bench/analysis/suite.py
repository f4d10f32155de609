"""The suite report: one folder of markdown, figures and tidy tables from a suite folder (``python -m
bench.suite.report``; ``write_report`` for the suite runner).

report.md, in this order: the scoreboard (methods x (task, family): the normalised score with its interval over
seeds, and beside it the raw true score, learned reward, fidelity and diversity of the final evaluation;
``bench.analysis.suite_scores`` defines the normalisation), the aggregate over cells and seeds (IQM and mean with
stratified-bootstrap intervals, probability of improvement per pair, the performance profile;
``bench.analysis.aggregate``), per-task curves, the final score against diversity and fidelity, one image grid per
cell, speed-ups against a reference method per family (``bench.analysis.speedup``) and the published claims of
``bench/suite/claims.toml`` (``bench.analysis.suite_claims``). A quick suite is headed
``QUICK: numbers meaningless at this budget``; a method with no run in a cell is *absent* there (never a 0), and the
aggregate names the cells it is computed over.

Tables: ``scoreboard.csv`` (one row per cell and method, base rows too), ``scores.csv`` (one row per run with its
normalised score), ``aggregate.csv``, ``aggregate_per_family.csv``, ``improvement.csv``, ``speedups.csv`` (every target and cost axis),
``claims.csv`` (each published claim of ``bench/suite/claims.toml`` per cell, ``bench.analysis.suite_claims``).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import aggregate, plots, speedup, suite_claims, suite_figures
from bench.analysis.suite_markdown import report_markdown
from bench.analysis.suite_scores import complete, read_suite, score_matrices, scoreboard
from bench.core.errors import UsageError
from bench.core.files import atomic_dir

DEFAULT_REFERENCES = {"sd": "ddpo", "sd3": "flow-grpo"}
"""The reference of the speed-ups per family when ``--reference`` is not given: the suite's policy-gradient anchor
(DDPO on Stable Diffusion, Flow-GRPO on SD 3); another family falls back to ``speedup.DEFAULT_REFERENCE``."""
MARKER = "report.md"


def resolve_references(asked: str | None, families, methods) -> dict[str, str]:
    """family -> reference method: ``asked`` is one method for every family (``ddpo``) or ``family=method`` pairs
    (``sd=ddpo,sd3=flow-grpo``; a family left out keeps its default). A method with no run in the suite, or an
    unknown family, is refused."""
    found = {f: DEFAULT_REFERENCES.get(f, speedup.DEFAULT_REFERENCE) for f in families}
    if not asked:
        return found
    parts = [p.strip() for p in asked.split(",") if p.strip()]
    pairs = [p.split("=", 1) for p in parts] if all("=" in p for p in parts) else None
    if pairs is None and len(parts) != 1:
        raise UsageError(f"--reference {asked!r}: give one method (ddpo) or family=method pairs "
                         "(sd=ddpo,sd3=flow-grpo)")
    chosen = dict(pairs) if pairs else {f: parts[0] for f in families}
    for family, method in chosen.items():
        if family not in families:
            raise UsageError(f"--reference {asked!r}: family {family!r} is not in this suite; its families: "
                             f"{', '.join(families)}")
        if method not in methods:
            raise UsageError(f"--reference {asked!r}: no run of {method!r} in this suite; give one of "
                             f"{', '.join(methods) or '(none)'}")
    return {**found, **chosen}


def estimates(matrix: np.ndarray, *, seed: int, n_boot: int) -> dict:
    """The runs, the IQM and the mean of one method's [seeds, cells] matrix with their stratified-bootstrap intervals
    (none, and ``no_interval`` saying why, over one cell or one seed)."""
    reason = aggregate.no_interval_reason(matrix, "cell")
    row = dict(runs=int((~np.isnan(matrix)).sum()), no_interval=reason)
    for stat in ("iqm", "mean"):
        point, lo, hi = aggregate.interval(matrix, stat, rng=np.random.default_rng(seed), n_boot=n_boot)
        row.update({stat: point, f"{stat}_lo": np.nan if reason else lo, f"{stat}_hi": np.nan if reason else hi})
    return row


def aggregates(runs: pd.DataFrame, cells: pd.DataFrame, methods, *, seed: int, n_boot: int) -> dict:
    """The aggregate section's numbers: ``cells`` (the normalised cells, in order), ``matrices`` ({method: [seeds,
    cells]}), ``together`` (methods with a score in every one of them, aggregated together), ``estimates`` (one row
    per method: IQM and mean with intervals, over all cells for those together, else over the method's own cells),
    ``per_family`` ({family: the same over that family's cells, for every method with a score in each of them})
    and ``improvements`` (P(X > Y) per pair, over the cells both have)."""
    usable = cells[cells["present"] & (cells["note"] == "")] if len(cells) else cells
    keys = list(zip(usable["task"], usable["family"])) if len(usable) else []
    matrices = score_matrices(runs, keys, methods) if keys else {}
    matrices = {m: x for m, x in matrices.items() if (~np.isnan(x)).any()}
    together = [m for m, x in matrices.items() if complete(x)]
    rows = []
    for method, matrix in matrices.items():
        have = (~np.isnan(matrix)).any(axis=0)
        own = matrix[:, have]
        rows.append(dict(method=method, together=method in together, cells=int(have.sum()),
                         cell_names=", ".join(f"{t}/{f}" for (t, f), h in zip(keys, have) if h),
                         **estimates(own, seed=seed, n_boot=n_boot)))
    per_family = {}
    for family in dict.fromkeys(f for _, f in keys):
        idx = [i for i, (_, f) in enumerate(keys) if f == family]
        fam = {m: x[:, idx] for m, x in matrices.items() if complete(x[:, idx])}
        if not fam:
            continue
        fam_rows = [dict(family=family, method=method, cells=len(idx), **estimates(matrix, seed=seed, n_boot=n_boot))
                    for method, matrix in fam.items()]
        per_family[family] = pd.DataFrame(fam_rows).sort_values("iqm", ascending=False, ignore_index=True)
    pairs = []
    for x, y in itertools.combinations(matrices, 2):
        shared = (~np.isnan(matrices[x])).any(axis=0) & (~np.isnan(matrices[y])).any(axis=0)
        if not shared.any():
            continue
        a, b = matrices[x][:, shared], matrices[y][:, shared]
        p, lo, hi = aggregate.improvement_interval(a, b, rng=np.random.default_rng(seed), n_boot=n_boot)
        reason = aggregate.no_interval_reason(a, "cell") or aggregate.no_interval_reason(b, "cell")
        pairs.append(dict(x=x, y=y, p=p, lo=np.nan if reason else lo, hi=np.nan if reason else hi,
                          cells=int(shared.sum()), no_interval=reason, together=x in together and y in together))
    columns = ["method", "together", "cells", "runs", "cell_names", "no_interval", "iqm", "iqm_lo", "iqm_hi", "mean",
               "mean_lo", "mean_hi"]  # fixed, so that a suite where no cell can be normalised reports, empty
    return dict(cells=keys, matrices=matrices, together=together, estimates=pd.DataFrame(rows, columns=columns),
                per_family=per_family,
                improvements=pd.DataFrame(pairs, columns=["x", "y", "p", "lo", "hi", "cells", "no_interval",
                                                          "together"]))


def speedups(suite, references: dict[str, str], *, seed: int, n_boot: int) -> pd.DataFrame:
    """``speedup.time_to_targets`` of every cell against its family's reference (learned reward), one frame."""
    parts = []
    for cell in suite.present():
        reference = references[cell.family]
        table = speedup.time_to_targets(cell.results, reference, rng=np.random.default_rng(seed), n_boot=n_boot)
        if len(table):
            parts.append(table.assign(task=cell.task, family=cell.family, reference=reference))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_report(suite_dir, out_dir=None, *, tasks=None, score: str = "true", reference: str | None = None,
                 seed: int = 0, n_boot: int = 2000, formats=("png",), command: str | None = None,
                 claims_file=None) -> Path:
    """Write the suite report of ``suite_dir`` into ``out_dir`` (default ``suite_dir/report``, replaced whole) and
    return it. ``tasks``: name -> ``bench.suite.tasks.Task`` (the true score and its direction; default: what the
    suite folder says); ``score``: "true" (the task's true score) or "reward" (the learned reward) is normalised;
    ``reference``: see ``resolve_references``; ``claims_file``: the published claims to test (default
    ``bench/suite/claims.toml``)."""
    suite_dir = Path(suite_dir)
    out = Path(out_dir) if out_dir is not None else suite_dir / "report"
    suite = read_suite(suite_dir, tasks)
    if not suite.present():
        raise UsageError(f"{str(suite_dir)!r}: no (task, family) folder holds results yet; "
                         + "; ".join(f"{c.task}/{c.family}: {c.missing}" for c in suite.cells))
    for problem in suite.problems:
        print(f"warning: {problem}", file=sys.stderr)
    refs = resolve_references(reference, suite.families, suite.methods)
    runs, board, cells = scoreboard(suite, score, rng=np.random.default_rng(seed), n_boot=n_boot)
    agg = aggregates(runs, cells, suite.methods, seed=seed, n_boot=n_boot)
    reach = speedups(suite, refs, seed=seed, n_boot=n_boot)
    claims = suite_claims.load_claims(claims_file)
    claimed = suite_claims.check_claims(suite, claims, seed=seed, n_boot=n_boot)
    colors = plots.color_map(suite.methods)
    what = "normalised true score" if score == "true" else "normalised learned reward"
    inputs = [c.path for c in suite.cells if c.path.is_dir()] + [suite_dir / "suite.json"]
    with atomic_dir(out, MARKER, inputs, default="SUITE/report") as tmp:
        together = {m: agg["matrices"][m] for m in agg["together"]}
        cells_text = f"{len(agg['cells'])} cell{'s' * (len(agg['cells']) != 1)}"
        est = agg["estimates"]
        shown = est[est["together"]] if len(est) else est
        figures = dict(
            aggregate=suite_figures.aggregate_figure(
                tmp, {r.method: {"iqm": (r.iqm, r.iqm_lo, r.iqm_hi), "mean": (r.mean, r.mean_lo, r.mean_hi)}
                      for r in shown.itertuples()},
                agg["improvements"][agg["improvements"]["together"]], colors=colors, what=what, cells=cells_text,
                quick=suite.quick, formats=formats,
                note="; ".join(sorted({r.split(":")[0] for r in shown["no_interval"] if r}))),
            profile=suite_figures.profile_figure(tmp, together, colors=colors, what=what, cells=cells_text,
                                                 quick=suite.quick, seed=seed, n_boot=min(n_boot, 1000),
                                                 formats=formats),
            curves=suite_figures.curve_figures(suite, tmp, colors=colors, seed=seed, n_boot=min(n_boot, 1000),
                                               quick=suite.quick, formats=formats),
            grids=suite_figures.image_grids(suite, tmp, formats=formats),
            **suite_figures.scatter_figures(board, cells, tmp, tasks=list(suite.tasks), families=suite.families,
                                            colors=colors, what=what, quick=suite.quick, formats=formats))
        board.to_csv(tmp / "scoreboard.csv", index=False)
        cells.drop(columns=[c for c in ("other_settings",) if c in cells]).to_csv(tmp / "cells.csv", index=False)
        runs.to_csv(tmp / "scores.csv", index=False)
        est.to_csv(tmp / "aggregate.csv", index=False)
        if agg["per_family"]:
            pd.concat(agg["per_family"].values(), ignore_index=True).to_csv(tmp / "aggregate_per_family.csv",
                                                                            index=False)
        agg["improvements"].to_csv(tmp / "improvement.csv", index=False)
        reach.to_csv(tmp / "speedups.csv", index=False)
        claimed.to_csv(tmp / "claims.csv", index=False)
        text = report_markdown(suite, board, cells, agg, reach, refs, figures, score=score, what=what, seed=seed,
                               n_boot=n_boot, command=command, explicit_reference=reference is not None,
                               claims=suite_claims.claim_lines(claimed, claims))
        (tmp / MARKER).write_text(text)
    return out
