"""The end-of-run summary (``summary.md``, printed at the end of ``bench.run``): one row per run, then per method
start -> final, with the finals that tie within the noise named as ties."""

from __future__ import annotations

import math
import statistics

from bench.core.text import fmt
from bench.harness.statuses import COMPLETED


def summary_markdown(rows: list[dict]) -> str:
    """The table printed at the end of ``bench.run`` and written to summary.md: one row per run (evaluation reward
    at the start and at the end), then per method start -> final with ties named (``method_lines``)."""
    head = ("| run | status | eval reward start -> final | steps | train s | s/step | CPU s/step | CPU s/query | "
            "peak MB |\n|---|---|---|---|---|---|---|---|---|\n")
    lines, notes = [], []
    for r in rows:
        cell = lambda v, spec: fmt(v, spec=spec, missing="")  # noqa: E731
        start, final = r.get("start_eval_reward"), r.get("final_eval_reward")
        reward = (f"{cell(start, '.4g')} -> {cell(final, '.4g')}" if start is not None and final is not None
                  else cell(final, ".4g"))
        lines.append(f"| {r['run_id']} | {r['status']} | {reward} | {r['steps']} | "
                     f"{cell(r['wall_s'], '.1f')} | {cell(r['sec_per_step'], '.3f')} | "
                     f"{cell(r.get('cpu_per_step'), '.3f')} | {cell(cpu_per_query(r), '.3f')} | "
                     f"{cell(r['peak_mem_mb'], '.0f')} |")
        if r["status"] not in COMPLETED and r.get("error"):
            notes.append(f"- {r['run_id']} {r['status']}: {r['error']}")
        if r.get("warning"):
            notes.append(f"- WARNING {r['run_id']}: {r['warning']}")
    stand_ins = sorted({r["stand_in"] for r in rows if r.get("stand_in")})
    note = "".join(f"\nStand-in (random weights): {s}\n" for s in stand_ins)
    settings = sorted({(r.get("precision"), r.get("protocol")) for r in rows if r.get("precision")})
    note += "".join(f"\nPrecision {p}, protocol {q}\n" for p, q in settings)
    notes = ("\n" + "\n".join(notes) + "\n") if notes else ""
    per_method = method_lines(rows)
    per_method = ("\n" + "\n".join(per_method) + "\n") if per_method else ""
    return head + "\n".join(lines) + "\n" + per_method + notes + note


def cpu_per_query(result: dict) -> float | None:
    """Training CPU seconds (all threads, evaluation excluded) per reward query made for training: the run's cost
    figure (runs.csv ``cpu_s`` / ``samples``); None before its first query."""
    cpu, samples = result.get("cpu_s"), result.get("samples")
    return cpu / samples if cpu is not None and samples else None


TIE_SIGMAS = 2.0
"""Two finals tie, and a final is no change from the start, when they differ by at most this many standard errors
of the difference (about a 95 % interval)."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def paired_noise(a: list[list[float]], b: list[list[float]]) -> float | None:
    """Standard error of the difference between two methods' mean rewards over the same evaluation images: from
    per-image differences of each seed's runs (the images share prompts and noise), averaged over seeds; None
    when the per-image rewards are missing or unequal in number."""
    errors = []
    for x, y in zip(a, b):
        if not x or len(x) != len(y) or len(x) < 2:
            return None
        errors.append(_sd([p - q for p, q in zip(x, y)]) / math.sqrt(len(x)))
    return math.sqrt(sum(e * e for e in errors)) / len(errors) if errors else None


def difference_noise(a: dict, b: dict) -> tuple[float | None, str]:
    """(standard error of ``a``'s mean final minus ``b``'s, what it is): over seeds when both have two or more
    (the seeds' spread), else paired over the evaluation images of the seeds they share (one seed: the spread over
    seeds is unknown, so this is a lower bound of the noise)."""
    if len(a["finals"]) >= 2 and len(b["finals"]) >= 2:
        se = math.sqrt(_sd(a["finals"]) ** 2 / len(a["finals"]) + _sd(b["finals"]) ** 2 / len(b["finals"]))
        return se, "the seeds' spread"
    shared = sorted(set(a["images"]) & set(b["images"]), key=str)
    se = paired_noise([a["images"][s] for s in shared], [b["images"][s] for s in shared])
    return (se, "the paired evaluation images' spread") if se is not None else (None, "")


def change_noise(m: dict) -> float | None:
    """Standard error of a method's change from the start: its finals' spread over seeds (the start is the same
    base model for every seed), or with one seed the paired per-image spread between its first and last
    evaluation."""
    if len(m["finals"]) >= 2:
        return _sd(m["finals"]) / math.sqrt(len(m["finals"]))
    shared = sorted(set(m["images"]) & set(m["start_images"]), key=str)
    return paired_noise([m["images"][s] for s in shared], [m["start_images"][s] for s in shared])


def method_lines(rows: list[dict]) -> list[str]:
    """Per method: evaluation reward at the start and at the end (means over the runs that finished their budget),
    and whether the change is beyond the noise; then which methods tie (finals apart by no more than
    ``TIE_SIGMAS`` standard errors of their difference: the seeds' spread, or with one seed the paired per-image
    spread) or which one leads. Empty when no run finished with an evaluation."""
    methods: dict[str, dict] = {}
    for r in rows:
        if r["status"] not in COMPLETED or r.get("final_eval_reward") is None:
            continue
        m = methods.setdefault(r["method"], dict(name=r["method"], reward=r.get("reward"), starts=[], finals=[],
                                                 images={}, start_images={}))
        m["finals"].append(float(r["final_eval_reward"]))
        if r.get("start_eval_reward") is not None:
            m["starts"].append(float(r["start_eval_reward"]))
        if r.get("final_images"):
            m["images"][r.get("seed")] = list(r["final_images"])
        if r.get("start_images"):
            m["start_images"][r.get("seed")] = list(r["start_images"])
    if not methods:
        return []
    from rewards import higher_is_better

    higher = higher_is_better(next(iter(methods.values()))["reward"])
    ranked = sorted(methods.values(), key=lambda m: _mean(m["finals"]), reverse=higher)
    n_images = next((len(v) for m in ranked for v in m["images"].values()), None)
    seeds = {len(m["finals"]) for m in ranked}
    lines = [f"Per method: evaluation reward{f' on {n_images} held-out images' if n_images else ''}, start -> final "
             f"({'higher' if higher else 'lower'} is better; "
             + (plural_seeds(next(iter(seeds))) if len(seeds) == 1 else "mean over seeds") + "):"]
    width = max(len(m["name"]) for m in ranked)
    for m in ranked:
        final = _mean(m["finals"])
        text = f"- {m['name']:<{width}}  "
        if m["starts"]:
            start = _mean(m["starts"])
            text += f"{start:.4g} -> {final:.4g}  ({final - start:+.2g}"
            se = change_noise(m)
            if se is not None and abs(final - start) <= TIE_SIGMAS * se:
                text += f", within the noise +-{TIE_SIGMAS * se:.2g}: no change"
            text += ")"
        else:
            text += f"final {final:.4g}"
        lines.append(text + ("" if len(seeds | {len(m['finals'])}) == 1 else f", {plural_seeds(len(m['finals']))}"))
    if len(ranked) < 2:
        return lines
    best, tied, behind = ranked[0], [], []
    one_seed = False
    for other in ranked[1:]:
        se, what = difference_noise(best, other)
        gap = abs(_mean(best["finals"]) - _mean(other["finals"]))
        one_seed |= what.startswith("the paired")
        if se is not None and gap <= TIE_SIGMAS * se:
            tied.append((other["name"], gap, se, what))
        else:
            behind.append((other["name"], gap, se, what))
    what = next((w for *_, w in tied + behind if w), "")
    if len(tied) == 1:
        name, gap, se, _ = tied[0]
        lines.append(f"- tie: {best['name']} and {name}: finals {gap:.2g} apart, within the noise +-{TIE_SIGMAS * se:.2g} "
                     f"({TIE_SIGMAS:g} x the standard error from {what})")
    elif tied:
        lines.append(f"- tie: {best['name']}, " + ", ".join(name for name, *_ in tied) + f": finals within the noise of "
                     f"{best['name']}'s (" + "; ".join(f"{name} {gap:.2g} apart, +-{TIE_SIGMAS * se:.2g}"
                                                      for name, gap, se, _ in tied)
                     + f"; {TIE_SIGMAS:g} x the standard error from {what})")
    if behind:
        gaps = "; ".join(f"{name} by {gap:.2g}" + (f" (noise +-{TIE_SIGMAS * se:.2g})" if se is not None else
                                                   " (noise unknown)") for name, gap, se, _ in behind)
        lines.append((f"- behind them: {gaps}" if tied else f"- {best['name']} ahead of {gaps}")
                     + ("; one seed: the spread over seeds is unknown, so this is no ranking" if one_seed else ""))
    return lines


def plural_seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"
