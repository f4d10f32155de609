"""Fault injection, part 2 (part 1, with the uninterrupted reference run, is test_faults.py): the runner killed,
bad input, a full disk, a SIGKILL's cause."""

import errno
import json
import sys
from pathlib import Path

import pytest

from bench.harness.guard import alive
from test_faults import ARGS, REPO, RUN, start, wait_for, worker_pid


# 2: the worker dies with its parent (SIGTERM through the parent-death signal: a clean `interrupted`)
@pytest.mark.slow  # a whole run (10-15 s of CPU): make test-slow
def test_killing_the_runner_leaves_no_orphan(tmp_path):
    out = tmp_path / "r"
    proc = start(out)
    pid = worker_pid(out)
    wait_for(lambda: (out / "runs" / RUN / "checkpoint.pt").is_file(), what="a checkpoint")
    proc.kill()
    proc.communicate()
    wait_for(lambda: not alive(pid), timeout=20, what="the orphaned worker to end")
    result = json.loads((out / "runs" / RUN / "result.json").read_text())
    assert result["status"] == "interrupted" and "SIGTERM" in result["error"]
    assert (out / "runs" / RUN / "rows.jsonl").stat().st_size > 0


# 4, 5, 6: bad input is one line, exit 2, no folder
def bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "binary.txt").write_bytes(bytes(range(256)))
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp / "syntax.py").write_text("class Broken(:\n")
    (tmp / "raises.py").write_text("raise RuntimeError('plug-in import failed')\n")
    (tmp / "a_file").write_text("x")
    base = ["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness"]
    return [
        ([*base, "--prompts", str(tmp / "binary.txt")], "not UTF-8 text|binary"),
        ([*base, "--prompts", str(tmp / "latin1.txt")], "not UTF-8 text"),
        ([*base[:-1], f"{tmp / 'syntax.py'}:Broken"], "fails on import.*SyntaxError"),
        ([*base[:-1], f"{tmp / 'raises.py'}:R"], "fails on import.*plug-in import failed"),
        ([*base[:3], f"{tmp / 'raises.py'}:M", *base[4:]], "fails on import"),
        ([*base, "--out", "/proc/bench-x"], "--out .*cannot be written: no file can be created"),
        ([*base, "--out", str(tmp / "a_file" / "sub")], "--out .*cannot be written: its parent .* is a regular file"),
        ([*base, "--out", ""], "--out is empty"),
        ([*base, "--seeds", "4294967296"], "--seeds must be"),
        ([*base, "--set", "lr=nan"], "finite"),
        ([*base, "--set", "guidance_scale=nan"], "finite"),
        ([*base, "--set", "rwr.lora_targets=bogus"], "'bogus' is no module"),
    ]


def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys):
    import re

    from bench.run import main

    results = REPO / "results"
    made = set(results.iterdir()) if results.is_dir() else set()
    for args, message in bad_inputs(tmp_path):
        out = tmp_path / "never"
        given = args if "--out" in args else [*args, "--out", str(out)]
        assert main(given) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), (args, err)
        assert not out.exists() and not Path("/proc/bench-x").exists()
    assert (set(results.iterdir()) if results.is_dir() else set()) == made  # --out "" never meant results/


# 7: a full disk names its cause; the runner's own failed writes are one line and leave earlier files
def test_worker_dying_of_a_full_disk_names_the_cause(tmp_path, monkeypatch):
    from bench.harness import launch
    from bench.harness.plan import plan
    from bench.run import build_parser

    runs, _ = plan(build_parser().parse_args([*ARGS, "--out", str(tmp_path)]))
    crash = "import sys; print('OSError: [Errno 28] No space left on device', file=sys.stderr); sys.exit(1)"
    monkeypatch.setattr(launch, "worker_command", lambda run_dir, processes: [sys.executable, "-c", crash])
    (tmp_path / "runs" / RUN).mkdir(parents=True)
    result = launch.run_worker(runs[0], tmp_path)
    assert result["status"] == "error" and "No space left on device" in result["error"]
    assert "No space left" in (tmp_path / "runs" / RUN / "error.log").read_text()


@pytest.mark.parametrize("kills, status", [([0, 0], "killed"), ([0, 1], "oom"), ([None, None], "killed")])
def test_sigkill_is_oom_only_when_the_oom_killer_struck(tmp_path, monkeypatch, kills, status):
    from bench.harness import launch
    from bench.harness.plan import plan
    from bench.run import build_parser

    runs, _ = plan(build_parser().parse_args([*ARGS, "--out", str(tmp_path)]))
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(launch, "worker_command", lambda run_dir, processes: [sys.executable, "-c", suicide])
    counts = iter(kills)
    monkeypatch.setattr(launch, "oom_kills", lambda: next(counts))
    (tmp_path / "runs" / RUN).mkdir(parents=True)
    result = launch.run_worker(runs[0], tmp_path)
    assert result["status"] == status and "SIGKILL" in result["error"], result


def test_worker_that_cannot_write_its_result_says_why(tmp_path, monkeypatch, capsys):
    import bench.worker as worker

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker, "die_with_parent", lambda: None)
    monkeypatch.setattr(worker, "raise_on_signals", lambda: None)
    monkeypatch.setattr(worker, "Run", lambda run_dir: (_ for _ in ()).throw(RuntimeError("no config")))
    monkeypatch.setattr(worker, "write_json", full)
    assert worker.main([str(tmp_path)]) == 1
    assert "No space left on device" in capsys.readouterr().err.strip().splitlines()[-1]
