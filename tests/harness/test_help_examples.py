"""Examples printed by ``--help`` work: ``python -m bench.tune --help``'s example grid parses, names fields the
methods have, and every candidate it makes passes bench.run's planner."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bench import run, tune
from bench.harness import tuning
from bench.harness.plan import plan
from methods import METHODS


def test_the_tune_help_example_grid_parses_and_plans(capsys):
    with pytest.raises(SystemExit) as exited:
        tune.main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    example = re.search(r'--grid GRID grid, e\.g\. "([^"]+)"', text).group(1)
    grid = tuning.parse_grid(example)
    methods = sorted({key.rpartition(".")[0] for key in grid if "." in key} | {"alignprop"})
    classes = {m: METHODS.get(m).Config for m in methods}
    tuning.check_grid_keys(grid, classes)
    args = argparse.Namespace(reward="mean-brightness", seeds="100")
    for method in methods:
        for cand in tuning.candidates(method, classes[method], grid):
            argv, _ = tuning.candidate_command(args, method, cand, ["--preset", "smoke"], methods, Path("OUT"))
            plan(run.build_parser().parse_args(argv))  # a bad key or value raises UsageError
