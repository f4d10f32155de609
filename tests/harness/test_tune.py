"""bench.tune: grids expand per method, the best configuration is chosen and applied by bench.run --config-from."""

import json
from pathlib import Path

import pytest

from bench import tune
from bench.core.errors import UsageError
from bench.harness import tuning
from methods.alignprop import AlignPropConfig
from methods.rwr import RWRConfig
from test_run import bench_run_inprocess


def test_grid_parsing_and_expansion():
    grid = tuning.parse_grid("lr=1e-4,1e-3; batch_size=4,8;rwr.temperature=0.5")
    assert grid == {"lr": ["1e-4", "1e-3"], "batch_size": ["4", "8"], "rwr.temperature": ["0.5"]}
    names = [c.name for c in tuning.candidates("rwr", RWRConfig, grid)]
    assert len(names) == 4 and names[0] == "rwr[lr=1e-4,batch_size=4,temperature=0.5]"
    assert len(tuning.candidates("alignprop", AlignPropConfig, grid)) == 4  # rwr.temperature is rwr's alone
    for bad in ("lr", "lr=", "lr=1,,2", ";", "lr=1;lr=2"):
        with pytest.raises(UsageError):
            tuning.parse_grid(bad)
    with pytest.raises(UsageError, match="no chosen method has a config field 'lrr'"):
        tuning.check_grid_keys({"lrr": ["1"]}, {"rwr": RWRConfig})


def test_best_needs_every_seed_and_follows_the_direction():
    a, b, c = (tuning.Candidate("m", {"lr": v}) for v in ("1", "2", "3"))
    a.final, a.runs = [0.5, 0.7], 2
    b.final, b.runs = [0.9], 2  # one seed failed: not a winner, however good
    c.final, c.runs = [0.2, 0.4], 2
    assert tuning.best([a, b, c], higher_is_better=True) is a
    assert tuning.best([a, b, c], higher_is_better=False) is c
    assert tuning.best([b], higher_is_better=True) is None


@pytest.mark.slow  # two tunings' runs (about 28 s of CPU): make test-slow
def test_tune_writes_the_best_and_run_applies_it_on_other_seeds(tmp_path, capsys):
    out, tuned = tmp_path / "tune", tmp_path / "tuned.json"
    code = tune.main(["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-5,3e-2", "--seeds", "100",
                      "--out", str(out), "--write", str(tuned), "--preset", "smoke", "--max-steps", "2",
                      "--eval-n", "2"])
    assert code == 0
    doc = json.loads(tuned.read_text())
    grid = {g["values"]["lr"]: g["score"] for g in doc["methods"]["rwr"]["grid"]}
    assert set(grid) == {"1e-5", "3e-2"} and all(v is not None for v in grid.values())
    assert doc["methods"]["rwr"]["chosen"] == {"lr": max(grid, key=grid.get)}  # mean-brightness: higher is better
    assert "**yes**" in (out / "tuning.md").read_text()
    # Resumable: the same command with --resume reuses every finished candidate (no run is made again); another
    # command, or the same --out without --resume, is refused before any run.
    first = [*map(str, ["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-5,3e-2", "--seeds", "100",
                        "--out", out, "--write", tuned, "--preset", "smoke", "--max-steps", "2", "--eval-n", "2"])]
    capsys.readouterr()
    assert tune.main([*first, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 2 and "$ python -m bench.run" not in printed
    assert json.loads(tuned.read_text())["methods"]["rwr"]["chosen"] == doc["methods"]["rwr"]["chosen"]
    assert tune.main(first) == 2 and "add --resume" in capsys.readouterr().err
    assert tune.main([*first[:5], "lr=1e-5", *first[6:], "--resume"]) == 2  # a grid may grow, never shrink
    assert "drops candidate(s) of the recorded tuning: rwr[lr=3e-2]" in capsys.readouterr().err
    assert tune.main([*first[:-3], "3", *first[-2:], "--resume"]) == 2  # --max-steps 3: another command
    assert "records another command" in capsys.readouterr().err
    grown = [*first[:5], "lr=1e-5,3e-2,1e-3", *first[6:]]  # past an edge: only the new candidate runs
    assert tune.main([*grown, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 2 and printed.count("$ python -m bench.run") == 1 and "grid grew" in printed
    assert {g["values"]["lr"] for g in json.loads(tuned.read_text())["methods"]["rwr"]["grid"]} == {"1e-5", "3e-2",
                                                                                                     "1e-3"}
    assert tune.main([*grown, "--resume"]) == 0 and "grid grew" not in capsys.readouterr().out  # recorded anew
    base = ["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--config-from", str(tuned),
            "--dry-run"]
    code, text, _ = bench_run_inprocess(capsys, *base, "--seeds", "0")
    assert code == 0 and f"lr={float(doc['methods']['rwr']['chosen']['lr'])}" in text
    code, text, _ = bench_run_inprocess(capsys, *base, "--seeds", "0", "--set", "rwr.lr=0.5")
    assert code == 0 and "lr=0.5" in text  # an explicit --set wins over the tuned value
    code, _, err = bench_run_inprocess(capsys, *base, "--seeds", "100")
    assert code == 2 and "were used to tune" in err
    code, _, err = bench_run_inprocess(capsys, *base[:5], "jpeg-compressibility", *base[6:], "--seeds", "0")
    assert code == 2 and "tuned for reward 'mean-brightness'" in err
    # Two files for different methods combine; two files tuning the same method are refused.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(doc, methods={"ddpo": {"chosen": {"lr": "0.002"}, "grid": []}})))
    both = ["--preset", "smoke", "--methods", "rwr,ddpo", "--reward", "mean-brightness", "--seeds", "0", "--dry-run"]
    code, text, _ = bench_run_inprocess(capsys, *both, "--config-from", f"{tuned},{other}")
    assert code == 0 and "lr=0.002" in text and f"lr={float(doc['methods']['rwr']['chosen']['lr'])}" in text
    code, _, err = bench_run_inprocess(capsys, *both, "--config-from", f"{tuned},{tuned}")
    assert code == 2 and "both" in err and "tune rwr" in err
    assert tune.main(["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1", "--set", "x=1"]) == 2


def test_tuning_scores_on_validation_unless_told_otherwise():
    added, warnings = tuning.validation_flags(["--preset", "default"])
    assert added == ["--eval-prompts", "shapes-val", "--eval-seed", str(tuning.TUNE_EVAL_SEED)] and not warnings
    added, warnings = tuning.validation_flags(["--eval-prompts", "shapes-eval", "--eval-seed", "1234"])
    assert added == [] and len(warnings) == 2 and "reported evaluation set" in warnings[0]
    _, warnings = tuning.validation_flags(["--preset", "smoke"])  # eval-animals has no validation set
    assert "no validation prompt set" in warnings[0]


def test_fixed_sets_reach_their_own_method_only_and_never_shadow_the_grid():
    flags = ["--set", "steps=10", "--set", "ddpo.batch_size=32", "--set=grpo.group_size=8", "--jobs", "2"]
    assert tuning.flags_for(flags, "grpo", ["ddpo", "grpo"]) == ["--set", "steps=10", "--set=grpo.group_size=8",
                                                                  "--jobs", "2"]
    tuning.check_fixed_sets(flags, {"rwr.batch_size": ["4"]})  # another method's key: fine
    with pytest.raises(UsageError, match="names the grid key"):
        tuning.check_fixed_sets(flags, {"batch_size": ["4", "8"]})


def test_a_method_key_beats_a_global_key_whatever_the_order_and_repeats_are_refused():
    # Issue 36 item 5: --grid 'rwr.lr=0.02,0.03;lr=1e-3,1e-4' tuned rwr on 1e-3/1e-4.
    for text in ("rwr.lr=0.02,0.03;lr=1e-3,1e-4", "lr=1e-3,1e-4;rwr.lr=0.02,0.03"):
        grid = tuning.parse_grid(text)
        assert [c.values["lr"] for c in tuning.candidates("rwr", RWRConfig, grid)] == ["0.02", "0.03"]
        assert [c.values["lr"] for c in tuning.candidates("alignprop", AlignPropConfig, grid)] == ["1e-3", "1e-4"]
    for same in ("vae_fp32=true,yes", "vae_fp32=1,true", "vae_fp32=off,false", "lr=1e-3,0.001"):
        with pytest.raises(UsageError, match="same value twice"):
            tuning.parse_grid(same)


def test_a_tuned_file_from_another_model_is_named_or_refused(tmp_path, capsys):
    # Issue 36 item 8: a file tuned on tiny-random was applied silently to a tiny-flow-random run.
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"format": tuning.FORMAT, "reward": "mean-brightness", "tuning_seeds": [100],
                                 "bench_run_flags": ["--preset", "smoke"],
                                 "methods": {"rwr": {"chosen": {"lr": "0.002"}, "grid": []}}}))
    base = ["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--seeds", "0",
            "--config-from", str(tuned), "--dry-run"]
    code, _, err = bench_run_inprocess(capsys, *base, "--model", "tiny-flow-random")
    assert code == 2 and "tuned on 'tiny-random', another model family" in err
    code, text, _ = bench_run_inprocess(capsys, *base, "--model", "tiny-shapes")
    assert code == 0 and "tuned on 'tiny-random', not 'tiny-shapes' (same family)" in text and "lr=0.002" in text
    code, text, _ = bench_run_inprocess(capsys, *base)
    assert code == 0 and "tuned on" not in text


@pytest.mark.parametrize("code", [130, 143])
def test_a_signal_stops_the_whole_tuning_and_writes_no_tuned_file(tmp_path, capsys, monkeypatch, code):
    # Issue 36: Ctrl-C / SIGTERM stopped one candidate's bench.run (exit 130), tune went on with the next and wrote a
    # winner from the rest. bench.run returns 130 (SIGINT) or 143 (SIGTERM) when a signal stops it.
    from bench import run

    calls = []
    monkeypatch.setattr(run, "main", lambda argv: calls.append(argv) or code)
    tuned = tmp_path / "tuned.json"
    assert tune.main(["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-5,3e-2", "--seeds", "100",
                      "--out", str(tmp_path / "t"), "--write", str(tuned), "--preset", "smoke"]) == code
    assert len(calls) == 1 and not tuned.exists() and "--resume continues it" in capsys.readouterr().err


def test_write_replaces_only_a_tuned_file_and_every_target_is_checked_before_any_run(tmp_path, capsys, monkeypatch):
    # Issue 36: --write results/x/manifest.json overwrote a run's manifest after the tuning; --write /proc/tuned.json
    # failed only after every run. A tuned file is recognised by its "format" (tuning.FORMAT), which it always has.
    from bench import run

    calls = []
    monkeypatch.setattr(run, "main", lambda argv: calls.append(argv) or 130)  # a run that starts: stops the tuning
    manifest = tmp_path / "results" / "x" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"runs": {}}))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    out = tmp_path / "t"
    cases = [(manifest, "exists and is not a tuned file written by bench.tune"),
             (notes, "exists and is not a tuned file written by bench.tune"),
             (notes / "tuned.json", f"its parent {str(notes)!r} is a regular file"),
             ("/proc/tuned.json", "no file can be created in '/proc'"),
             (out / "rwr" / "tuned.json", "inside the tuning's own results"),
             (out / "tune_command.json", "inside the tuning's own results")]
    argv = ["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-5", "--seeds", "100", "--preset",
            "smoke", "--out", str(out)]
    for target, message in cases:
        capsys.readouterr()
        assert tune.main([*argv, "--write", str(target)]) == 2, target
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and f"--write {str(target)!r}" in err[0], err
        assert not calls and not out.exists()
    assert manifest.read_text() == json.dumps({"runs": {}}) and notes.read_text() == "keep me"
    assert tune.main([*argv[:-1], str(notes / "t"), "--write", str(tmp_path / "new.json")]) == 2
    assert "--out" in capsys.readouterr().err and not calls
    earlier = tmp_path / "earlier.json"  # an earlier tuned file is replaced: the tuning starts
    earlier.write_text(json.dumps({"format": tuning.FORMAT, "methods": {}}))
    assert tune.main([*argv, "--write", str(earlier)]) == 130 and len(calls) == 1
    with pytest.raises(UsageError, match="not a tuned file"):  # checked again when written (made during the runs)
        tuning.write_tuned(manifest, {"format": tuning.FORMAT}, out)


# Issue 37: AlignProp's tuned lr sat on the grid's edge after one seed fell from 0.48 to 0.23 between its last two
# evaluations. --score late scores each seed by the mean of its evaluations in the last half of its budget.
CURVES = {"1e-3": [0.20, 0.45, 0.46, 0.44], "1e-2": [0.20, 0.25, 0.23, 0.48]}  # at 0, 8, 12, 16 queries
"""Steadily higher (1e-3) against a lucky last evaluation (1e-2)."""


def fake_run(calls):
    """bench.run's stand-in: a candidate's results folder whose eval curve is ``CURVES`` of its lr."""
    import pandas as pd

    def main(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        lr = next(a.rsplit("=", 1)[1] for a in argv if a.startswith("--set=rwr.lr="))
        curve, seeds = CURVES[lr], argv[argv.index("--seeds") + 1].split(",")
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text("{}")
        pd.DataFrame([dict(run_id=f"r{s}", status="max_samples", samples=16, final_eval_reward=curve[-1])
                      for s in seeds]).to_csv(out / "runs.csv", index=False)
        pd.DataFrame([dict(run_id=f"r{s}", step=i, samples=q, split="eval", metric="reward_mean", value=v)
                      for s in seeds for i, (q, v) in enumerate(zip((0, 8, 12, 16), curve))]
                     ).to_csv(out / "metrics.csv", index=False)
        return 0

    return main


@pytest.mark.parametrize("score, winner", [("final", "1e-2"), ("late", "1e-3")])
def test_a_late_score_is_not_swung_by_one_lucky_last_evaluation(tmp_path, monkeypatch, score, winner):
    from bench import run

    calls = []
    monkeypatch.setattr(run, "main", fake_run(calls))
    tuned = tmp_path / "tuned.json"
    argv = ["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-3,1e-2", "--seeds", "100,101",
            "--out", str(tmp_path / "t"), "--write", str(tuned), "--preset", "smoke", "--max-samples", "16",
            "--eval-every", "0"]
    assert tune.main([*argv, "--score", score] if score == "late" else argv) == 0
    doc = json.loads(tuned.read_text())
    assert doc["score"] == score and doc["methods"]["rwr"]["chosen"] == {"lr": winner}
    grid = {g["values"]["lr"]: g for g in doc["methods"]["rwr"]["grid"]}
    if score == "late":  # the runs evaluate at 1/2 and 3/4 of the budget: the late half holds 3 evaluations
        assert all(c[c.index("--eval-at") + 1] == "8,12" for c in calls)
        assert grid["1e-3"]["late"] == [pytest.approx(0.45)] * 2 and grid["1e-3"]["late_evaluations"] == [3, 3]
        assert grid["1e-2"]["score"] == pytest.approx((0.25 + 0.23 + 0.48) / 3)
        assert "late eval reward" in (tmp_path / "t" / "tuning.md").read_text()
    else:  # unchanged: the last evaluation, no schedule added
        assert all("--eval-at" not in c for c in calls) and "late" not in grid["1e-3"]
        assert grid["1e-2"]["score"] == pytest.approx(0.48)


def test_late_needs_evaluations_in_the_last_half_and_a_bad_score_is_one_line(tmp_path, capsys):
    from bench.harness import scoring

    assert scoring.late_schedule(["--eval-every", "0", "--max-samples", "384"]) == ["--eval-at", "192,288"]
    assert scoring.late_schedule(["--eval-every", "0", "--eval-at", "log", "--max-samples", "384"]) == []
    assert scoring.late_schedule(["--max-samples", "384"]) == []  # the preset's schedule evaluates on its own
    with pytest.raises(UsageError, match="give --max-samples"):
        scoring.late_schedule(["--eval-every", "0"])
    base = ["--methods", "rwr", "--reward", "mean-brightness", "--grid", "lr=1e-3", "--out", str(tmp_path / "t"),
            "--preset", "smoke"]
    assert tune.main([*base, "--score", "mean"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --score 'mean' is not a score; give --score final")
    assert not (tmp_path / "t").exists()
