"""Fault injection (issue 15): kills of workers and of the runner, damaged checkpoints and results files, a full disk,
concurrent use of a results folder, bad input. Each test names the defect it pins; rows are compared with one
uninterrupted reference run."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.harness.guard import alive

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
ARGS = ["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--max-steps", "6", "--max-seconds", "3600",
        "--eval-n", "2",
        "--checkpoint-every", "1"]
RUN = "rwr__mean-brightness__s0"
KEY = ["run_id", "step", "split", "metric"]


def start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.run", *ARGS, "--out", str(out), *extra], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def worker_pid(out: Path) -> int:
    lock = out / "runs" / RUN / ".lock"
    wait_for(lambda: lock.is_file() and lock.read_text().strip(), what="the worker's lock")
    return int(lock.read_text())


def rows(out: Path) -> pd.DataFrame:
    m = pd.read_parquet(out / "metrics.parquet")
    return m[[*KEY, "samples", "value"]].sort_values(KEY).reset_index(drop=True)


def own_lines(stderr: str) -> list[str]:
    """The runner's own lines (the worker's progress bars and warnings pass through the same stream)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "interrupted", "no run"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    code, err = finish(start(out))
    assert code == 0, err[-3000:]
    return out


def test_reference_is_complete(reference):
    assert pd.read_csv(reference / "runs.csv").status.tolist() == ["max_steps"]
    assert sorted(rows(reference).query("split == 'train' and metric == 'loss'").step) == [1, 2, 3, 4, 5, 6]


# 1 + 9: a SIGKILLed worker is `killed` with its real step count; a damaged checkpoint falls back, rows survive
@pytest.mark.slow
def test_killed_worker_then_damaged_checkpoint_loses_no_row(reference, tmp_path):
    out = tmp_path / "r"
    proc = start(out)
    run_dir = out / "runs" / RUN
    pid = worker_pid(out)
    wait_for(lambda: (run_dir / "checkpoint.prev.pt").is_file(), what="two checkpoints")
    os.kill(pid, signal.SIGKILL)
    code, err = finish(proc)
    assert code == 1 and "no run finished" in err  # 10: nothing finished its budget
    run = pd.read_csv(out / "runs.csv", keep_default_na=False).iloc[0]
    assert run.status == "killed" and "signal 9" in run.error, run.to_dict()
    recorded = rows(out)
    assert run.steps == recorded.query("split == 'train'").step.max() >= 2
    before = len(recorded)
    with open(run_dir / "checkpoint.pt", "r+b") as f:
        f.truncate(1000)
    code, err = finish(start(out, "--resume"))
    assert code == 0, err[-3000:]
    assert "checkpoint.pt is damaged" in err and "resuming from checkpoint.prev.pt" in err
    assert (run_dir / "checkpoint.pt.damaged").is_file()
    assert len(rows(out)) >= before
    pd.testing.assert_frame_equal(rows(out), rows(reference))  # bit for bit, as the uninterrupted run


def test_no_readable_checkpoint_restarts_and_says_so(tmp_path):
    from bench.harness.checkpoints import load_checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"\0" * 1000)
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"PK not a checkpoint")
    saved, note = load_checkpoint(tmp_path)
    assert saved is None and "restarting the run from step 0" in note
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "checkpoint.prev.pt.damaged").is_file()


def test_rows_log_survives_a_torn_line_and_keeps_the_latest(tmp_path):
    from bench.harness.recorder import read_rows

    row = dict(run_id="r", step=1, split="train", metric="loss", value=1.0)
    log = tmp_path / "rows.jsonl"
    log.write_text(json.dumps(row) + "\n" + json.dumps({**row, "value": 2.0}) + "\n" + '{"run_id": "r", "st')
    assert [r["value"] for r in read_rows(log)] == [2.0]


# 2 + 3: a folder in use is locked; SIGINT stops the worker, writes the tables, exits 130, resumes to the same rows
@pytest.mark.slow
def test_interrupt_writes_tables_and_a_concurrent_resume_is_refused(reference, tmp_path, capsys):
    from bench.run import main

    out = tmp_path / "r"
    proc = start(out)
    pid = worker_pid(out)
    wait_for(lambda: (out / "runs" / RUN / "checkpoint.pt").is_file(), what="a checkpoint")
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"PID {proc.pid}" in err[0], err
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, timeout=60)
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert len(own_lines(err)) == 1 and own_lines(err)[0].startswith("interrupted by SIGINT")
    wait_for(lambda: not alive(pid), timeout=10, what="the worker to end")
    run = pd.read_csv(out / "runs.csv").iloc[0]
    assert run.status == "interrupted" and run.steps >= 1
    assert (out / "summary.md").is_file() and len(rows(out))
    code, err = finish(start(out, "--resume"))
    assert code == 0, err[-3000:]
    pd.testing.assert_frame_equal(rows(out), rows(reference))


# 4: damaged files on --resume
@pytest.mark.parametrize("name", ["manifest.json", f"runs/{RUN}/config.json"])
def test_damaged_manifest_or_config_is_one_line_exit_2(reference, tmp_path, capsys, name):
    from bench.run import main

    out = tmp_path / "r"
    shutil.copytree(reference, out)
    path = out / name
    path.write_bytes(path.read_bytes()[:40])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("damaged" in err[0] or "not valid JSON" in err[0]), err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == {
        p: b for p, b in before.items() if p.name != ".lock"}


@pytest.mark.slow  # a whole run (10-15 s of CPU): make test-slow
def test_damaged_result_is_made_again_from_its_checkpoint(reference, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(reference, out)
    (out / "runs" / RUN / "result.json").write_text('{"status": "max_st')
    code, err = finish(start(out, "--resume"))
    assert code == 0, err[-3000:]
    assert "result.json is damaged" in err
    assert pd.read_csv(out / "runs.csv").status.tolist() == ["max_steps"]
    pd.testing.assert_frame_equal(rows(out), rows(reference))


def test_runner_write_failure_is_one_line_and_keeps_earlier_files(reference, tmp_path, monkeypatch, capsys):
    from bench.core.cli import command
    from bench.harness import recorder
    from bench.harness.plan import plan
    from bench.run import build_parser

    out = tmp_path / "r"
    shutil.copytree(reference, out)
    old = (out / "metrics.csv").read_bytes()
    real = recorder.atomic_write

    def full(path, write):
        if Path(path).name.startswith("metrics"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, write)

    monkeypatch.setattr(recorder, "atomic_write", full)
    runs, _ = plan(build_parser().parse_args([*ARGS, "--out", str(out)]))
    result = json.loads((out / "runs" / RUN / "result.json").read_text())
    wrapped = command(lambda argv: recorder.write_results(out, runs, {RUN: result}, {}))
    assert wrapped([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0]
    assert (out / "metrics.csv").read_bytes() == old and (out / "summary.md").is_file()
    assert not list(out.glob(".metrics*.tmp"))


# 8: damaged CSVs in bench.report are said, and nothing usable is exit 2
def test_report_says_when_tables_are_damaged(reference, tmp_path, capsys):
    from bench.analysis.results import load_results
    from bench.report import main

    out = tmp_path / "r"
    shutil.copytree(reference, out)
    (out / "metrics.parquet").unlink()
    text = (out / "metrics.csv").read_text()
    (out / "metrics.csv").write_text(text[: len(text) - 5])
    problems = load_results([out]).problems
    assert any("ends mid-row" in p for p in problems)
    (out / "metrics.csv").write_text("run_id,method,rew\n")
    assert any("damaged header" in p for p in load_results([out]).problems)
    (out / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    (out / "runs.csv").write_bytes(b"\x89PNG\0\0garbage")
    assert main([str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing usable" in err[0], err
