"""``python -m bench.tune --methods a,b --reward R --grid "lr=1e-4,1e-3;batch_size=4,8" [bench.run flags]``: fair tuning.

Runs every method's grid (``bench.harness.tuning``) on the tuning seeds under the same budget and bench.run flags,
picks each method's configuration with the best mean final (``--score late``: late-half) eval reward, and writes
it to ``--write`` (default ``OUT/tuned.json``) for ``python -m bench.run --config-from FILE`` on *other* seeds. Every
flag it does not know goes to ``bench.run`` unchanged (``--preset``, ``--max-samples``, ``--model``, ``--eval-n``, ...).

Resumable: the same command with ``--resume`` (and an explicit ``--out``) reuses the candidates whose runs all
finished, resumes one stopped midway (``bench.run --resume``) and runs the rest.

Candidates are scored on validation, not on the reported test: unless told otherwise, on the validation prompt set
of the preset's evaluation set (``shapes-eval`` -> ``shapes-val``, disjoint, same distribution) and on evaluation
noise seed ``tuning.TUNE_EVAL_SEED`` (bench.run reports on seed 1234). Told to tune on a reported evaluation set or its
noise, it says so in its output and in the tuned file (``warnings``), as it does for unequal tuning effort.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from bench import run
from bench.analysis.results import reward_higher_is_better
from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import write_text
from bench.core.text import fmt, markdown_table
from bench.harness import scoring, tuning
from bench.harness.plan import plan
from bench.harness.spec import parse_list, parse_seeds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--methods", required=True, help="methods to tune, comma-separated")
    p.add_argument("--reward", required=True, help="the reward to tune for")
    p.add_argument("--grid", required=True, help='grid, e.g. "lr=1e-4,1e-3;batch_size=4,8;ddpo.inner_epochs=1,2"')
    p.add_argument("--seeds", default="100,101", help="tuning seeds (default 100,101); evaluate on others")
    p.add_argument("--out", help="folder of the tuning runs (default results/tune-<timestamp>)")
    p.add_argument("--write", help="tuned-configuration file to write (default OUT/tuned.json)")
    p.add_argument("--score", default="final", help="final (default: each run's last eval reward) or late (the mean "
                   "of its evaluations in the last half of its budget); then the mean over the tuning seeds")
    p.add_argument("--resume", action="store_true",
                   help="continue the tuning in --out begun by this same command (its --grid may grow): "
                        "finished candidates are reused")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args, passthrough = build_parser().parse_known_args(argv)
    for flag in ("--out", "--resume", "--config-from", "--dry-run"):
        if any(a == flag or a.startswith(flag + "=") for a in passthrough):
            raise UsageError(f"bench.tune does not take {flag}: it makes its own runs (tune keys go in --grid)")
    from methods import METHODS

    methods = parse_list(args.methods, "methods")
    seeds, score = parse_seeds(args.seeds), scoring.check_score(args.score)
    grid = tuning.parse_grid(args.grid)
    tuning.check_fixed_sets(passthrough, grid)
    classes = {m: METHODS.get(m).Config for m in methods}
    tuning.check_grid_keys(grid, classes)
    out = Path(args.out or f"results/tune-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    target = Path(args.write) if args.write else out / "tuned.json"
    earlier = tuning.check_targets(out, target, tuning.resume_command(argv) if args.resume else None)
    cands = {m: tuning.candidates(m, classes[m], grid) for m in methods}
    grown = earlier is not None and earlier != tuning.resume_command(argv)
    if grown:  # a resumed tuning's grid may grow (e.g. past a winner on its edge), never lose a candidate
        old = tuning.parse_grid(build_parser().parse_known_args(earlier)[0].grid)
        dropped = sorted({c.name for m in methods for c in tuning.candidates(m, classes[m], old)}
                         - {c.name for group in cands.values() for c in group})
        if dropped:
            raise UsageError(f"--resume --grid {args.grid!r} drops candidate(s) of the recorded tuning: "
                             f"{', '.join(dropped)}; keep every value of its --grid and add values")
    added, warnings = tuning.validation_flags(passthrough, score)
    passthrough = [*passthrough, *added]
    if len({len(c) for c in cands.values()}) > 1:
        warnings.append("unequal tuning effort: " + ", ".join(f"{m} {len(c)}" for m, c in cands.items())
                        + " configurations")
    reward, notes = args.reward, []
    for method, group in cands.items():  # every candidate's bench.run flags are checked before the first run
        for cand in group:
            argv_run, _ = tuning.candidate_command(args, method, cand, passthrough, methods, out)
            planned = run.build_parser().parse_args(argv_run)
            _, info = plan(tuning.grid_sources(planned, method, cand))  # errors name the grid part, not a --set
            notes += [n for n in info.get("notes", []) if n not in notes]  # e.g. a grid over a pinned inference setting
            reward = planned.reward  # what the name means on the model (shape world: aesthetic = shape-aesthetic)
    tuning.record_command(out, tuning.resume_command(argv))
    total = sum(len(c) for c in cands.values())
    print(f"tuning {total} configuration(s) x {len(seeds)} seed(s) of {reward}: "
          + "; ".join(f"{m}: {len(c)}" for m, c in cands.items()), flush=True)
    if grown:
        print(f"note: the grid grew from {build_parser().parse_known_args(earlier)[0].grid!r}; the earlier "
              "candidates' finished runs are reused", flush=True)
    for line in [f"WARNING: {w}" for w in warnings] + [f"note: {n}" for n in notes]:
        print(line, flush=True)
    for method, group in cands.items():
        for cand in group:
            cmd, folder = tuning.candidate_command(args, method, cand, passthrough, methods, out)
            if tuning.finished_candidate(folder, len(seeds)):
                print(f"reusing {folder} (every run finished in an earlier invocation)", flush=True)
            else:
                if (folder / "manifest.json").is_file():
                    cmd = [*cmd, "--resume"]  # an interrupted earlier invocation: bench.run checks it is the same
                print(f"$ python -m bench.run {shlex.join(cmd)}", flush=True)
                code = run.main(cmd)
                if code == 2:  # bad bench.run flags: the same for every candidate, stop at the first
                    return 2
                if code in (130, 143):  # SIGINT / SIGTERM: bench.run stopped its workers; the whole tuning stops
                    print(f"tuning stopped by {'SIGINT' if code == 130 else 'SIGTERM'}: no tuned file written; the "
                          f"same command with --resume continues it ({out})", file=sys.stderr)
                    return code
            tuning.read_scores(cand, folder, score)
    higher = reward_higher_is_better(reward)
    winners = {m: tuning.best(c, higher) for m, c in cands.items()}
    asked = {"reward_requested": args.reward} if reward != args.reward else {}
    facts = dict(reward=reward, **asked, grid=args.grid, score=score, tuning_seeds=seeds, bench_run_flags=passthrough,
                 candidates={m: len(c) for m, c in cands.items()}, warnings=warnings, notes=notes,
                 higher_is_better=higher, created=datetime.now().isoformat(timespec="seconds"))
    tuning.write_tuned(target, tuning.tuned_document(cands, winners, facts), out)
    rows = [dict(method=c.method, configuration=c.name, runs=c.runs, finished=len(c.final),
                 **{scoring.SCORES[score]: fmt(c.score, 4)},
                 chosen="**yes**" if winners[c.method] is c else "")
            for group in cands.values() for c in group]
    effort = ", ".join(f"{m} {len(c)}" for m, c in cands.items())
    text = (f"# Tuning: {reward}\n\nSeeds {args.seeds}; --score {score}; bench.run flags: `{shlex.join(passthrough)}`; "
            f"{'higher' if higher else 'lower'} is better.\n\nConfigurations per method: {effort}.\n\n"
            + "".join(f"WARNING: {w}\n\n" for w in warnings) + "".join(f"note: {n}\n\n" for n in notes)
            + f"{markdown_table(rows)}\n\nTuned file: `{target}`\n")
    write_text(out / "tuning.md", text)
    print("\n" + text)
    missing = [m for m, w in winners.items() if w is None]
    if missing:
        print(f"no configuration of {', '.join(missing)} finished every tuning seed: left untuned", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
