"""Issue 36: an error about a value names where the value was given: a ``--set`` flag, a ``--config-from`` file and
its key, or a ``--grid`` part; and a bad ``--tracker`` is one line, not argparse's usage. In-process calls of
bench.run's and bench.tune's main: every case is refused in planning, before any folder exists."""

import json

import pytest

from bench.run import main

BASE = ["--preset", "smoke", "--reward", "mean-brightness", "--methods", "rwr"]


def refused(capsys, tmp_path, command=main, *args) -> str:
    """Run a command in-process; assert exit 2, one stderr line, no folder; return the line."""
    out = tmp_path / "never"
    capsys.readouterr()
    code = command([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (args, code, err)
    assert not out.exists(), args
    return err[0]


def tuned_file(tmp_path, chosen: dict) -> str:
    from bench.harness.tuning import FORMAT

    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(dict(format=FORMAT, reward="mean-brightness", tuning_seeds=[5],
                                    methods={"rwr": {"chosen": chosen}})))
    return str(path)


@pytest.mark.parametrize("chosen, message", [
    ({"lr": "abc"}, "(key methods.rwr.chosen.lr): expected a float, got 'abc'"),
    ({"temperature": -1}, "(key methods.rwr.chosen.temperature): rwr.temperature must be > 0, got -1"),
    ({"precision": "bf16"}, "(key methods.rwr.chosen.precision): precision is run-wide"),
    ({"nope": 1}, "(key methods.rwr.chosen.nope): unknown key for rwr; valid: "),
])
def test_config_from_values_are_named_by_file_and_key(tmp_path, capsys, chosen, message):
    path = tuned_file(tmp_path, chosen)
    line = refused(capsys, tmp_path, main, *BASE, "--config-from", path)
    assert line.startswith(f"error: --config-from {path!r} {message}"), line
    assert "--set" not in line.split(";")[0], line


@pytest.mark.parametrize("item, message", [
    ("rwr.lr=abc", "error: --set rwr.lr=abc: expected a float, got 'abc'"),
    ("rwr.temperature=-1", "error: --set rwr.temperature=-1: rwr.temperature must be > 0, got -1"),
    ("lr=-1", "error: --set lr=-1: rwr.lr must be > 0, got -1"),
    ("rwr.precision=bf16", "error: --set rwr.precision=bf16: precision is run-wide"),
])
def test_set_values_are_named_by_their_flag(tmp_path, capsys, item, message):
    assert refused(capsys, tmp_path, main, *BASE, "--set", item).startswith(message)


@pytest.mark.parametrize("grid, message", [
    ("rwr.lr=abc", "error: --grid 'rwr.lr=abc': expected a float, got 'abc'"),
    ("lr=1e-3,abc", "error: --grid 'lr=1e-3,abc': expected a float, got 'abc'"),
    ("rwr.temperature=1,-1", "error: --grid 'rwr.temperature=1,-1': rwr.temperature must be > 0, got -1"),
    ("precision=bf16,fp32", "error: --grid 'precision=bf16,fp32': precision is run-wide"),
])
def test_grid_values_are_named_by_their_grid_part(tmp_path, capsys, grid, message):
    from bench import tune

    line = refused(capsys, tmp_path, tune.main, "--methods", "rwr", "--reward", "mean-brightness", "--grid", grid,
                   "--seeds", "100", "--preset", "smoke")
    assert line.startswith(message), line


def test_an_unknown_tracker_is_one_line_listing_the_valid_ones(tmp_path, capsys):
    from bench import tune
    from bench.harness.tracking import TRACKER_NAMES

    expected = f"error: --tracker 'foo' unknown; valid: {', '.join(TRACKER_NAMES)}"
    assert refused(capsys, tmp_path, main, *BASE, "--tracker", "foo") == expected
    assert refused(capsys, tmp_path, tune.main, "--methods", "rwr", "--reward", "mean-brightness", "--grid",
                   "lr=1e-3", "--preset", "smoke", "--tracker", "foo") == expected


def test_a_key_set_twice_with_two_values_is_refused_and_spaces_around_it_are_ignored(tmp_path, capsys):
    # Sweep: `--set rwr.lr=1e-3 --set rwr.lr=2e-3` trained on 2e-3 without a word (the last won unseen);
    # `--set 'rwr.lr = 1e-3'` was "unknown key for rwr" with lr among the valid keys listed.
    from bench.run import build_parser, plan

    line = refused(capsys, tmp_path, main, *BASE, "--set", "rwr.lr=1e-3", "--set", "rwr.lr=2e-3")
    assert line == "error: --set 'rwr.lr=2e-3' contradicts --set rwr.lr=1e-3 given before; give rwr.lr once"
    for sets in (["rwr.lr=1e-3", "rwr.lr=1e-3"], ["rwr.lr = 1e-3"], [" lr=1e-3 "]):
        args = [*BASE, *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "x")]
        (spec,), _ = plan(build_parser().parse_args(args))
        assert spec.method_config["lr"] == 1e-3, sets
