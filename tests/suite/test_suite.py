"""``python -m bench.suite``: the plan of a selection (what runs, what is skipped and why), suite.json, --resume
skipping finished folders, refusals (another command into the same --out, unknown names), and one tiny suite end to
end (slow)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.suite import runner
from bench.suite.__main__ import build_parser, main
from bench.suite.plan import make_plan

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--quick", "--tasks", "prompt-match,jpeg-compressibility", "--families", "sd3", "--methods", "rwr,grpo"]

NO_GRADIENT = '''
import torch
from rewards.base import Reward


class Flat(Reward):
    """A reward with no gradient and no surrogate, recording a true score."""

    name = "flat"
    true_metrics = {"true_flat": True}

    def score(self, images, prompts):
        return images.detach().mean(dim=(1, 2, 3))
'''


def commands(text: str, module: str = "bench.run") -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(f"python -m {module} ")]


def flag(command: str, name: str) -> str:
    words = command.split()
    return words[words.index(name) + 1]


def test_the_dry_run_plans_a_small_selection_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "suite"
    assert main([*SMALL, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("QUICK: numbers meaningless at this budget")
    runs = commands(text)
    assert [flag(c, "--reward") for c in runs] == ["jpeg-compressibility", "prompt-match"]  # the task file's order
    for command in runs:  # rwr only: grpo is registered for sd, said per folder
        assert (flag(command, "--methods"), flag(command, "--seeds"), flag(command, "--model")) == \
            ("rwr", "0,1", "tiny-shapes-flow")
        assert flag(command, "--out").startswith(str(out)) and "--config-from" not in command
    assert text.count("skipped: grpo (runs on sd only (Method.families), not sd3)") == 2
    assert "tuning: --quick: tuning skipped; every method runs at its defaults" in text
    assert commands(text, "bench.tune") == [] and not out.exists()


def test_the_full_plan_runs_every_registered_method_and_fits_8_hours_of_2_cores(tmp_path):
    plan = make_plan(build_parser().parse_args(["--out", str(tmp_path / "s")]))
    from methods import METHODS

    assert plan.left_out == {"draft-k": "the same class as alignprop-k1 (methods/__init__.py): its runs would "
                                        "repeat alignprop-k1's"}
    for cell in plan.cells:
        registered = [m for m in METHODS.names() if cell.family in METHODS.get(m).families and m not in plan.left_out]
        assert cell.methods == registered and cell.runs == 3 * len(registered) and not cell.skipped
        job = plan.tuning[cell.family]
        assert job.task.name == "shape-aesthetic" and job.methods == cell.methods
        own = cell.task.name == "shape-aesthetic"
        assert cell.tuned == (job.file if own else job.file.with_name(f"{cell.family}.{cell.task.name}.json"))
        line = " ".join(cell.command)
        assert (flag(line, "--eval-at"), flag(line, "--max-samples"), flag(line, "--seeds")) == ("8,16,32,64,128,256", "384", "0,1,2")
    assert [c.name for c in plan.cells] == [f"{t}/{f}" for t in ("shape-aesthetic", "jpeg-compressibility",
                                                                  "jpeg-incompressibility", "prompt-match")
                                             for f in ("sd", "sd3")]
    total = sum(c.estimate_s for c in plan.cells) + sum(j.estimate_s for j in plan.tuning.values())
    assert sum(j.runs for j in plan.tuning.values()) == (12 + 15) * 3 * 2  # sd: 12 methods, sd3: 15
    assert total / 2 <= 0.95 * 8 * 3600  # docs/suite.md: 2 busy cores, 5 % kept for slack


def no_gradient_tasks(tmp_path) -> Path:
    (tmp_path / "flat.py").write_text(NO_GRADIENT)
    path = tmp_path / "tasks.toml"
    path.write_text(textwrap.dedent(f"""
        [models]
        sd3 = "tiny-shapes-flow"

        [tasks.flat]
        reward = "{tmp_path / 'flat.py'}:Flat"
        true_score = "true_flat"
        prompts = "shapes-train"
        val_prompts = "shapes-val"
        eval_prompts = "shapes-eval"
        families = ["sd3"]
        """))
    return path


def test_a_method_the_task_cannot_train_is_skipped_with_its_reason_in_the_plan_and_suite_json(tmp_path, capsys):
    out = tmp_path / "suite"
    tasks = no_gradient_tasks(tmp_path)
    args = ["--quick", "--tasks-file", str(tasks), "--methods", "alignprop,rwr", "--out", str(out)]
    assert main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    reason = (f"needs the reward's gradient; {tmp_path / 'flat.py'}:Flat is neither differentiable nor has a "
              "surrogate (methods that need none: the policy gradients, rwr)")
    assert f"skipped: alignprop ({reason})" in text
    assert [flag(c, "--methods") for c in commands(text)] == ["rwr"]
    assert main([*args, "--stage", "tune"]) == 0  # no tuning in --quick: writes suite.json and runs nothing
    record = json.loads((out / "suite.json").read_text())
    cell = record["cells"]["flat/sd3"]
    assert cell["skipped"] == {"alignprop": reason} and cell["methods"] == ["rwr"] and cell["state"] == "to do"
    assert record["quick"] and record["label"] == "QUICK: numbers meaningless at this budget"
    assert record["tasks_file"] == str(tasks.resolve()) and record["tasks_content"] == tasks.read_text()
    assert len(record["tasks_sha256"]) == 64 and record["commit"]
    assert cell["command"][:3] == ["python", "-m", "bench.run"] and not (out / "flat").exists()


def fake_cell(folder: Path, statuses: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    rows = "".join(f"rwr__r__s{i},{s}\n" for i, s in enumerate(statuses))
    (folder / "runs.csv").write_text("run_id,status\n" + rows)


def test_resume_skips_finished_folders_and_continues_the_others(tmp_path, capsys, monkeypatch):
    out = tmp_path / "suite"
    args = [*SMALL, "--out", str(out)]
    assert main([*args, "--stage", "tune"]) == 0  # the suite's record, nothing run
    fake_cell(out / "prompt-match" / "sd3", ["max_samples", "diverged"])  # finished: skipped
    fake_cell(out / "jpeg-compressibility" / "sd3", ["max_samples", "error"])  # continued with --resume
    calls = []

    def call(module, argv):
        calls.append((module, argv))
        (out / "jpeg-compressibility" / "sd3" / "runs.csv").write_text("run_id,status\na,max_samples\nb,max_samples\n")
        return 0, 1.5

    monkeypatch.setattr(runner, "call", call)
    monkeypatch.setattr(runner, "suite_report", lambda plan: dict(status="written"))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    text = capsys.readouterr().out
    assert "prompt-match/sd3: 1 methods x 2 seeds = 2 runs, about 0 min of CPU [finished]" in text
    assert f"prompt-match/sd3: finished earlier ({out / 'prompt-match' / 'sd3'})" in text
    assert [(m, a[-3:]) for m, a in calls] == [("bench.run", ["--out", str(out / "jpeg-compressibility" / "sd3"),
                                                              "--resume"])]
    record = json.loads((out / "suite.json").read_text())
    assert {k: (v["state"], v["runs"]) for k, v in record["cells"].items()} == {
        "prompt-match/sd3": ("finished", {"max_samples": 1, "diverged": 1}),
        "jpeg-compressibility/sd3": ("finished", {"max_samples": 2})}
    assert record["cells"]["jpeg-compressibility/sd3"]["cpu_s"] == 1.5 and len(record["invocations"]) == 2
    assert record["invocations"][1]["command_line"].endswith("--resume") and record["finished"]


def test_another_command_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "suite"
    args = [*SMALL, "--out", str(out)]
    assert main([*args, "--stage", "tune"]) == 0
    before = (out / "suite.json").read_text()
    capsys.readouterr()
    assert main([*SMALL, "--seeds", "3,4", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume: '{out}' holds a suite made by another command (seeds differ); repeat "
                          f"`python -m bench.suite {' '.join(SMALL)} --out {out} --stage tune` with --resume")
    assert "\n" not in err
    assert main(args) == 2 and "already holds results; pass --resume" in capsys.readouterr().err
    assert (out / "suite.json").read_text() == before


@pytest.mark.parametrize("given, message", [
    (["--tasks", "prompt-match,nope"], "error: unknown task 'nope'; valid: shape-aesthetic, jpeg-compressibility, "
                                       "jpeg-incompressibility, prompt-match"),
    (["--families", "sdxl"], "error: unknown family 'sdxl'; valid (families of tasks.toml): sd, sd3"),
    (["--methods", "rwr,alinprop"], "error: unknown method 'alinprop'; valid: adjoint-matching, alignprop, "),
    (["--tune-task", "nope"], "error: --tune-task: unknown task 'nope'; valid: shape-aesthetic, "),
])
def test_unknown_names_exit_2_listing_the_valid_ones(given, message, tmp_path, capsys):
    assert main([*given, "--dry-run", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_failed_suite_report_is_a_warning_that_names_its_command(tmp_path, monkeypatch, capsys):
    import bench.analysis.suite as report
    from bench.core.errors import UsageError

    def fail(*args, **kwargs):
        raise UsageError("no (task, family) folder holds results yet")

    monkeypatch.setattr(report, "write_report", fail)
    plan = make_plan(build_parser().parse_args([*SMALL, "--out", str(tmp_path / "s")]))
    found = runner.suite_report(plan)
    again = f"python -m bench.suite.report {tmp_path / 's'}"
    assert found == dict(status="failed", note="no (task, family) folder holds results yet", command=again)
    assert f"warning: the suite report failed (no (task, family) folder holds results yet); `{again}` makes it " \
        "again" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_suite_end_to_end_tuned_on_another_task_then_resumed(tmp_path):
    """One task x one family x one method, tuned (a 1-point grid) on another task, as a user runs it, then the
    suite report: about 75 CPU s."""
    out = tmp_path / "suite"
    args = [sys.executable, "-m", "bench.suite", "--quick", "--grid", "lr=3e-3", "--tune-task", "shape-aesthetic",
            "--tasks", "prompt-match", "--families", "sd3", "--methods", "rwr", "--out", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    record = json.loads((out / "suite.json").read_text())
    # The report needs a cell where a method moved the score the right way (else it cannot normalise): with one
    # method at 8 queries that is chance, and its failure is a warning and exit 1, the runs kept.
    report = record["report"]
    assert report["command"] == f"python -m bench.suite.report {out}"
    assert done.returncode == (0 if report["status"] == "written" else 1), done.stderr[-2000:]
    assert (report["status"] == "written") == (out / "report" / "report.md").is_file()
    assert record["tuning"]["families"]["sd3"]["chosen"] == {"rwr": {"lr": "3e-3"}}
    cell = record["cells"]["prompt-match/sd3"]
    assert cell["state"] == "finished" and cell["runs"] == {"max_samples": 2} and cell["cpu_s"] > 0
    derived = json.loads((out / "tuned" / "sd3.prompt-match.json").read_text())
    assert (derived["reward"], derived["tuned_on_task"], derived["tuned_on_reward"]) == \
        ("prompt-match", "shape-aesthetic", "shape-aesthetic")
    manifest = json.loads((out / "prompt-match" / "sd3" / "manifest.json").read_text())
    assert manifest["plan"]["tuned"]["methods"] == {"rwr": {"lr": "3e-3"}}
    assert "QUICK: numbers meaningless at this budget" in done.stdout.splitlines()[-1]
    again = subprocess.run([*args, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == done.returncode, again.stderr[-2000:]
    assert "tuning sd3: finished earlier" in again.stdout and "prompt-match/sd3: finished earlier" in again.stdout
    assert "$ python -m" not in again.stdout


def test_a_stopped_suite_records_where_it_stopped_and_starts_nothing_more(tmp_path, capsys, monkeypatch):
    import signal

    out = tmp_path / "suite"
    calls = []

    def call(module, argv):  # SIGTERM arrives during the first folder: bench.run stops and exits 143
        calls.append(argv)
        runner.Child.stopped = signal.SIGTERM
        return 143, 0.5

    monkeypatch.setattr(runner, "call", call)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main([*SMALL, "--out", str(out)]) == 143
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert len(calls) == 1  # the second folder never started
    record = json.loads((out / "suite.json").read_text())
    assert [c["state"] for c in record["cells"].values()] == ["interrupted by SIGTERM", "to do"]
    assert record["finished"] is None
    assert "the same command with --resume continues it" in capsys.readouterr().err


# Issue 37: a winner on the grid's edge grows the grid past it (bench.suite.growth).
GROWN = ["--quick", "--grid", "lr=1e-3,3e-3,1e-2", "--tasks", "shape-aesthetic", "--families", "sd3", "--methods",
         "rwr,alignprop", "--stage", "tune"]


def fake_tune(out: Path, targets: dict, calls: list):
    """bench.tune's stand-in: each method chooses the lr of its grid nearest (in log) to its target; it writes the
    tuned file and records its command as bench.tune does."""
    import math

    from bench.harness import tuning

    def call(module, argv):
        calls.append(argv)
        grid = tuning.parse_grid(argv[argv.index("--grid") + 1])
        methods = argv[argv.index("--methods") + 1].split(",")
        pick = {m: min(grid.get(f"{m}.lr", grid["lr"]), key=lambda v: abs(math.log(float(v) / targets[m])))
                for m in methods}
        (out / "tuned").mkdir(parents=True, exist_ok=True)
        (out / "tuned" / "sd3.json").write_text(json.dumps({
            "format": tuning.FORMAT, "reward": "shape-aesthetic", "bench_run_flags": ["--model", "tiny-shapes-flow"],
            "methods": {m: {"chosen": {"lr": v}} for m, v in pick.items()}}))
        tuning.record_command(out / "tune" / "sd3", [a for a in argv if a != "--resume"])
        return 0, 1.0

    return call


def test_an_edge_winner_grows_the_grid_until_inside_or_twice(tmp_path, monkeypatch, capsys):
    from bench.harness import tuning

    out, calls = tmp_path / "suite", []
    # rwr's best lr lies just below the grid (one growth), alignprop's far above it (two, then a warning).
    monkeypatch.setattr(runner, "call", fake_tune(out, {"rwr": 6e-4, "alignprop": 1.0}, calls))
    assert main([*GROWN, "--out", str(out)]) == 0
    assert len(calls) == 3 and "--resume" not in calls[0] and all(c[-1] == "--resume" for c in calls[1:])
    assert all(flag(" ".join(c), "--score") == "late" for c in calls)
    grids = [tuning.parse_grid(c[c.index("--grid") + 1]) for c in calls]
    assert grids[1] == {"lr": ["1e-3", "3e-3", "1e-2"], "rwr.lr": ["3e-4", "1e-3", "3e-3", "1e-2"],
                        "alignprop.lr": ["1e-3", "3e-3", "1e-2", "3e-2"]}
    assert grids[2]["alignprop.lr"][-2:] == ["3e-2", "1e-1"] and grids[2]["rwr.lr"] == grids[1]["rwr.lr"]
    record = json.loads((out / "suite.json").read_text())
    fam = record["tuning"]["families"]["sd3"]
    assert record["identity"]["grid"] == record["tuning"]["grid"] == "lr=1e-3,3e-3,1e-2"  # the suite's identity
    assert fam["grown"] == {"rwr": ["3e-4"], "alignprop": ["3e-2", "1e-1"]}
    assert [g["added"] for g in fam["growths"]] == [{"rwr": "3e-4", "alignprop": "3e-2"}, {"alignprop": "1e-1"}]
    assert [g["command"][3:] for g in fam["growths"]] == calls[1:] and all(g["state"] == "finished"
                                                                            for g in fam["growths"])
    assert fam["warnings"] == ["alignprop: lr=1e-1, winner still on the edge after 2 growths"]
    assert fam["chosen"] == {"rwr": {"lr": "1e-3"}, "alignprop": {"lr": "1e-1"}} and fam["state"] == "finished"
    assert "WARNING: tuning sd3: alignprop: lr=1e-1, winner still on the edge" in capsys.readouterr().out
    calls.clear()
    assert main([*GROWN, "--out", str(out), "--resume"]) == 0 and calls == []  # nothing more to grow


def test_an_interior_winner_grows_nothing(tmp_path, monkeypatch):
    out, calls = tmp_path / "suite", []
    monkeypatch.setattr(runner, "call", fake_tune(out, {"rwr": 3e-3, "alignprop": 2.5e-3}, calls))
    assert main([*GROWN, "--out", str(out)]) == 0 and len(calls) == 1
    fam = json.loads((out / "suite.json").read_text())["tuning"]["families"]["sd3"]
    assert fam["grown"] == {} and fam["growths"] == [] and fam["warnings"] == []


def test_a_suite_tuned_before_growth_existed_is_grown_on_resume_with_its_own_command(tmp_path, monkeypatch):
    out, calls, grow = tmp_path / "suite", [], runner.grow
    monkeypatch.setattr(runner, "call", fake_tune(out, {"rwr": 3e-3, "alignprop": 1e-2}, calls))
    monkeypatch.setattr(runner, "grow", lambda *args: 0)  # as before this feature
    assert main([*GROWN, "--out", str(out)]) == 0 and len(calls) == 1
    old = [a for a in calls[0] if a not in ("--score", "late")]  # its tuning command had no --score late
    (out / "tune" / "sd3" / "tune_command.json").write_text(json.dumps({"argv": old}))
    record = json.loads((out / "suite.json").read_text())
    del record["tuning"]["families"]["sd3"]["chosen"]
    (out / "suite.json").write_text(json.dumps(record))
    monkeypatch.setattr(runner, "grow", grow)
    calls.clear()
    assert main([*GROWN, "--out", str(out), "--resume"]) == 0
    assert len(calls) == 1 and calls[0][-1] == "--resume" and "--score" not in calls[0]  # bench.tune's own record
    assert calls[0][calls[0].index("--grid") + 1] == "lr=1e-3,3e-3,1e-2;alignprop.lr=1e-3,3e-3,1e-2,3e-2"


def test_the_ladder_steps_past_an_edge():
    from bench.suite.growth import edge_growth, ladder_step

    assert [ladder_step(v, up) for v, up in (("1e-3", False), ("3e-4", False), ("1e-2", True), ("3e-2", True),
                                             ("5e-3", True), ("0.001", False), ("abc", True))] == \
        ["3e-4", "1e-4", "3e-2", "1e-1", "1e-2", "3e-4", None]
    assert edge_growth("lr=3e-3", {"rwr": {"lr": "3e-3"}}, {}) == ({}, [])  # one value: no edge
