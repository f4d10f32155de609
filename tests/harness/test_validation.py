"""Issue 27: no input is accepted and then trained or recorded wrongly. In-process calls of bench.run's main (no
worker starts: each case is refused in planning), and the pieces that decide resume, tuned files and warnings."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.core.checks import ANY, Range, check_ranges, declared_ranges, numeric_fields
from bench.harness.plan import plan
from bench.run import build_parser, main

BASE = ["--preset", "smoke", "--reward", "mean-brightness"]


def refused(capsys, tmp_path, *args, out_name="never"):
    """Run bench.run in-process; assert exit 2, one stderr line, no folder; return the line."""
    out = tmp_path / out_name
    capsys.readouterr()
    code = main([*BASE, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (args, code, err)
    assert not out.exists(), args
    return err[0]


def out_of_range(rule: Range, integer: bool) -> list[float]:
    """Values just outside a declared range (on each bounded side)."""
    step = 1 if integer else 0.5
    values = []
    if rule.low is not None:
        values.append(rule.low if rule.low_open else rule.low - step)
    if rule.high is not None:
        values.append(rule.high if rule.high_open else rule.high + step)
    return values


def method_fields():
    """(method, field, Range, integer) for every numeric field of every registered method, each field once per class
    that declares its range (shared fields are tested once, through the first method that has them)."""
    from methods import METHODS

    seen, cases = set(), []
    for method in METHODS.names():
        config_cls = METHODS.get(method).Config
        ranges = declared_ranges(config_cls)
        for name in numeric_fields(config_cls()):
            owner = next(k for k in config_cls.__mro__ if name in vars(k).get("RANGES", {}))
            if (owner, name) in seen:
                continue
            seen.add((owner, name))
            cases.append((method, name, ranges[name], isinstance(config_cls.__dataclass_fields__[name].default, int)))
    return cases


def test_every_numeric_field_of_every_method_config_has_a_range_and_out_of_range_values_exit_2(tmp_path, capsys):
    from methods import METHODS

    cases = method_fields()
    assert {"clip_range", "adv_clip_max", "temperature", "truncation_step", "stop_from"} <= {c[1] for c in cases}
    tried = 0
    for method, name, rule, integer in cases:
        for value in out_of_range(rule, integer):
            text = f"{value:g}"
            model = [] if "sd" in METHODS.get(method).families else ["--model", "tiny-flow-random"]
            line = refused(capsys, tmp_path, "--methods", method, *model, "--set", f"{method}.{name}={text}")
            assert name in line and "--set" in line, line
            tried += 1
        if rule is ANY:
            continue
        assert out_of_range(rule, integer), (method, name)  # a declared range bounds something
    assert tried >= 50


def test_a_numeric_field_without_a_declared_range_is_refused():
    from methods.base import MethodConfig

    @dataclass
    class Forgetful(MethodConfig):
        new_knob: float = 1.0

    with pytest.raises(TypeError, match="new_knob has no declared range"):
        Forgetful()
    check_ranges(MethodConfig())


@pytest.mark.parametrize("method", ["ddpo", "grpo"])
def test_ddpo_and_grpo_refuse_negative_clips_by_one_rule(tmp_path, capsys, method):
    from methods.base import PPO_RANGES
    from methods import METHODS

    assert all(declared_ranges(METHODS.get(method).Config)[k] is PPO_RANGES[k] for k in PPO_RANGES)
    for key in ("clip_range", "adv_clip_max"):
        line = refused(capsys, tmp_path, "--methods", method, "--set", f"{method}.{key}=-1")
        assert f"{key} must be > 0" in line


def test_run_wide_set_keys_are_their_flags(tmp_path):
    from bench.harness.plan import plan
    from bench.run import build_parser

    runs, info = plan(build_parser().parse_args([*BASE, "--methods", "rwr,ddpo", "--set", "precision=bf16",
                                                 "--set", "resolution=16"]))
    for spec in runs:
        assert spec.precision == "bf16" and spec.method_config["precision"] == "bf16"
        assert spec.method_config["resolution"] == 16 and spec.eval.config.resolution == 16
        assert spec.eval.config.precision == "bf16"
    assert info["precision"] == "bf16" and info["resolution"] == 16


@pytest.mark.parametrize("args, message", [
    (["--set", "resolution=7"], "--resolution: tiny-random cannot draw it"),
    (["--set", "rwr.resolution=-4"], "resolution is run-wide"),
    (["--set", "rwr.precision=bf16"], "precision is run-wide"),
    (["--set", "precision=bf16", "--precision", "fp32"], "contradicts --precision fp32"),
    (["--set", "precision=fp8"], "--precision 'fp8' unknown"),
    (["--precision", ""], "--precision is empty"),
    (["--config-from", ","], "--config-from ',' is empty"),
])
def test_run_wide_and_empty_values_exit_2(tmp_path, capsys, args, message):
    assert message in refused(capsys, tmp_path, "--methods", "rwr", *args)


def tuned_file(tmp_path, **changes):
    from bench.harness.tuning import FORMAT

    data = dict(format=FORMAT, reward="mean-brightness", tuning_seeds=[5], methods={"rwr": {"chosen": {"lr": 1e-3}}})
    data.update(changes)
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("changes, message", [
    (dict(methods={"rwr": "oops"}), "(key methods.rwr): expected an object, got 'oops'"),
    (dict(methods={"rwr": {"chosen": "lr=1"}}), "(key methods.rwr.chosen): expected an object or null, got 'lr=1'"),
    (dict(methods={"rwr": {"chosen": {"lr": [1]}}}), "(key methods.rwr.chosen.lr): expected a number, a string or"),
    (dict(tuning_seeds="0"), "(key tuning_seeds): expected a list or null, got '0'"),
    (dict(tuning_seeds=[0.5]), "(key tuning_seeds[0]): expected an integer, got 0.5"),
    (dict(reward=3), "(key reward): expected a string, got 3"),
])
def test_config_from_schema_errors_are_one_line(tmp_path, capsys, changes, message):
    assert message in refused(capsys, tmp_path, "--methods", "rwr", "--config-from", tuned_file(tmp_path, **changes))


def test_resume_of_an_unrelated_folder_leaves_no_lock(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*BASE, "--methods", "rwr", "--resume", "--out", str(mine)]) == 2
    assert "holds no results" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_resume_compares_with_the_manifest_and_rebuilds_a_lost_config(tmp_path):
    from bench.core.errors import UsageError
    from bench.harness.launch import check_out, prepare_out
    from bench.harness.plan import plan
    from bench.harness.recorder import write_manifest
    from bench.harness.spec import RunSpec
    from bench.run import build_parser

    out = tmp_path / "r"
    args = [*BASE, "--methods", "rwr", "--out", str(out)]
    runs, _ = plan(build_parser().parse_args(args))
    prepare_out(out, runs, resume=False)[1].close()
    write_manifest(out, dict(runs={s.run_id: s.to_dict() for s in runs}))
    config = out / "runs" / runs[0].run_id / "config.json"
    config.unlink()  # every config.json lost: the manifest still holds the specs
    other, _ = plan(build_parser().parse_args([*args, "--set", "rwr.lr=0.5", "--max-steps", "9"]))
    with pytest.raises(UsageError, match="budget, method_config differ from manifest.json"):
        check_out(out, other, resume=True)
    assert not config.exists()
    prepare_out(out, runs, resume=True)[1].close()
    assert RunSpec.from_file(config).to_json() == runs[0].to_json()


@pytest.mark.parametrize("load, own, warned", [(2.0, 2, False), (2.04, 2, False), (2.9, 2, False), (3.1, 2, True),
                                               (2.3, 1, True), (1.9, 1, False)])
def test_load_warning_counts_only_load_beyond_the_jobs_own_threads(load, own, warned):
    from bench.harness.recorder import timing_warning

    text = timing_warning("max_steps", 3, 3, load, 2, own)
    assert bool(text) == warned, text
    if warned:
        assert f"load {load:.1f} on 2 cores, {load - own:.1f} beyond this job's own {own} thread(s)" in text


@pytest.mark.parametrize("grid, extra, message", [
    ("lr=1e-3,1e-3", [], "'1e-3' gives the same value twice"),
    ("lr=1e-3,0.001", [], "'1e-3' and '0.001' gives the same value twice"),
    ("rwr.temperature=1,-1", [], "temperature must be > 0"),  # the second candidate: refused before the first runs
    ("lr=1e-3", ["--write", "WRITE_DIR"], "is a folder; name the tuned file"),
])
def test_tune_checks_every_candidate_and_its_targets_before_the_first_run(tmp_path, capsys, grid, extra, message):
    from bench import tune

    (tmp_path / "WRITE_DIR").mkdir()
    extra = [str(tmp_path / e) if e == "WRITE_DIR" else e for e in extra]
    out = tmp_path / "tune"
    capsys.readouterr()
    code = tune.main(["--methods", "rwr", "--reward", "mean-brightness", "--grid", grid, "--seeds", "100",
                      "--preset", "smoke", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_full_disk_mid_checkpoint_is_named_and_error_log_keeps_the_traceback(tmp_path, monkeypatch):
    import traceback

    import torch

    from bench.core import files
    from bench.harness import guard, loop
    from bench.harness.recorder import Recorder

    run = object.__new__(loop.Run)
    run.dir = tmp_path
    guard.reserve_error_log(tmp_path)

    def torch_writer_fails(state, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_writer_fails)
    monkeypatch.setattr(files, "free_bytes", lambda path: 4096)  # the disk is full while the writer fails

    class Method:
        def state_dict(self):
            return {}

    with pytest.raises(OSError) as caught:
        run.checkpoint(Method(), Recorder({}, torch.device("cpu")))
    line = loop.failure_text(caught.value, tmp_path)
    assert line.startswith(f"no space left on {tmp_path}") and "inline_container" in line and "--resume" in line
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / loop.CHECKPOINT).exists()

    def no_new_files(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_new_files)  # only the reserved space can take the traceback
    guard.keep_error_log(tmp_path, "".join(traceback.format_exception(caught.value)))
    log = (tmp_path / "error.log").read_text()
    assert "no space left on" in log and "inline_container" in log and not (tmp_path / guard.ERROR_RESERVE).exists()
    full = OSError(28, "No space left on device", str(tmp_path / "rows.jsonl"))
    assert loop.failure_text(full, tmp_path).startswith(f"no space left on {tmp_path / 'rows.jsonl'}")
    assert loop.failure_text(ValueError("bad"), tmp_path) == "ValueError: bad"


def test_report_reads_a_killed_runners_folder_from_its_manifest_and_rows(tmp_path, capsys):
    import torch

    from bench.analysis.results import load_results
    from bench.harness.launch import prepare_out
    from bench.harness.plan import plan
    from bench.harness.recorder import ROWS, Recorder, write_manifest
    from bench.run import build_parser

    out = tmp_path / "r"
    runs, _ = plan(build_parser().parse_args([*BASE, "--methods", "rwr,ddpo", "--out", str(out)]))
    prepare_out(out, runs, resume=False)[1].close()
    write_manifest(out, dict(runs={s.run_id: s.to_dict() for s in runs}))
    for spec, finished in zip(runs, (True, False)):  # as a SIGKILL leaves it: rows, one result.json, no tables
        run_dir = out / "runs" / spec.run_id
        rec = Recorder(dict(run_id=spec.run_id, method=spec.method, reward=spec.reward, model=spec.model,
                            seed=spec.seed, stand_in="random weights"), torch.device("cpu"), log=run_dir / ROWS)
        rec.add("eval", {"reward_mean": 0.5})
        rec.step, rec.samples = 1, 2
        rec.add("train", {"reward_mean": 0.52, "loss": 0.1})
        if finished:
            rec.add("eval", {"reward_mean": 0.55})
            (run_dir / "result.json").write_text(json.dumps(dict(status="max_steps", steps=1, samples=2, wall_s=1.0,
                                                                 final_eval_reward=0.55)))
    results = load_results([out])
    status = dict(zip(results.runs.run_id, results.runs.status))
    assert status == {runs[0].run_id: "max_steps", runs[1].run_id: "unknown"}
    assert set(results.metrics.run_id) == {s.run_id for s in runs} and len(results.metrics) == 7
    assert any("--resume" in p and "manifest.json" in p for p in results.problems)
    (out / "manifest.json").unlink()
    from bench.core.errors import UsageError

    with pytest.raises(UsageError, match="not a results folder"):
        load_results([out])


def test_flow_sdes_are_planned_only_where_they_exist(tmp_path, capsys):
    # The sd3 family zeroes eta (its chain is the ODE) except for a method whose config selects a flow SDE.
    runs, _ = plan(build_parser().parse_args([*BASE, "--model", "tiny-flow-random", "--methods", "flow-grpo,alignprop",
                                              "--out", str(tmp_path / "dry")]))
    flow, alignprop = (next(r.method_config for r in runs if r.method == m) for m in ("flow-grpo", "alignprop"))
    assert (flow["eta"], flow["sde"], alignprop["eta"]) == (0.7, "flow-grpo", 0.0)
    line = refused(capsys, tmp_path, "--model", "tiny-flow-random", "--methods", "alignprop", "--set", "alignprop.eta=0.5")
    assert "deterministic flow ODE unless a flow SDE is chosen" in line
    line = refused(capsys, tmp_path, "--model", "tiny-flow-random", "--methods", "dance-grpo", "--set", "dance-grpo.sde=")
    assert "dance-grpo.eta=0.3" in line
    line = refused(capsys, tmp_path, "--methods", "grpo", "--set", "grpo.sde=flow-grpo")
    assert "grpo.sde=flow-grpo" in line and "DDIM's stochastic step" in line
    line = refused(capsys, tmp_path, "--model", "tiny-flow-random", "--methods", "flow-grpo", "--set",
                   "flow-grpo.sde=nope")
    assert "sde 'nope' unknown" in line


def test_run_out_under_a_file_or_where_nothing_can_be_created_exits_2_with_nothing_written(tmp_path, capsys):
    # Issue 36: bench.run's own check said "(File exists)" for --out somefile/sub; one guard serves every tool.
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("keep")
    for out, message in ((a_file / "sub", f"its parent {str(a_file)!r} is a regular file"),
                         ("/proc/results", "no file can be created in '/proc'")):
        capsys.readouterr()
        assert main([*BASE, "--methods", "rwr", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --out {str(out)!r} ") and message in err, err
    assert a_file.read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["somefile.txt"]


@pytest.mark.slow  # a whole run in-process: ~10 s of CPU (make test-slow)
def test_a_full_disk_under_torchs_cpp_stream_is_named_in_runs_csv_error_log_and_console(tmp_path, monkeypatch):
    # Issue 36: on a tiny tmpfs --checkpoint-every 1 ended as "RuntimeError: basic_ios::clear: iostream error" (torch's
    # C++ stream, no errno): after a failed write the free space on the target's file system names the cause.
    import os

    import pandas as pd
    import torch

    from bench.harness import guard, loop
    from bench.harness.launch import run_end_line
    from bench.harness.recorder import write_results

    out = tmp_path / "r"
    (spec,), _ = plan(build_parser().parse_args([*BASE, "--methods", "rwr", "--max-steps", "2", "--eval-n", "2",
                                                 "--checkpoint-every", "1", "--out", str(out)]))
    run_dir = out / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(spec.to_json())
    guard.reserve_error_log(run_dir)

    def stream_fails(state, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", stream_fails)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255)))
    result = loop.Run(run_dir).execute()
    cause = result["error"]
    assert result["status"] == "error" and result["steps"] == 1
    assert cause.startswith(f"no space left on {run_dir}: disk full (0 bytes free on /"), cause
    assert "RuntimeError: basic_ios::clear: iostream error" in cause and cause.endswith("again with --resume")
    assert "disk full (0 bytes free on" in (run_dir / "error.log").read_text()
    write_results(out, [spec], {spec.run_id: result}, {})
    assert pd.read_csv(out / "runs.csv").error.tolist() == [cause]
    assert run_end_line(result, 5.0).endswith(cause)  # the runner's "end, error, ..." console line
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / loop.CHECKPOINT).exists()
