"""Issue 36's closing sweep, per-process resume: a run is never continued on another number of data-parallel
processes. `--resume --processes 1` of a `--processes 2` run resumed process 0's checkpoint in one process and
recorded `processes: 1` (2 of its 3 steps were trained by two processes: 10 reward queries where a 1-process run makes
6), saying nothing."""

from __future__ import annotations

import pytest
import torch

from bench.core.errors import UsageError
from bench.harness.checkpoints import CHECKPOINT, CHECKPOINT_KEYS, PREVIOUS, load_checkpoint


def fake_checkpoint(path, step: int, processes: int | None) -> None:
    state = {key: None for key in CHECKPOINT_KEYS} | {"step": step}
    if processes is not None:
        state["processes"] = processes
    torch.save(state, path)


def test_a_single_process_resume_never_takes_a_data_parallel_runs_checkpoint(tmp_path):
    fake_checkpoint(tmp_path / CHECKPOINT, 3, processes=2)
    fake_checkpoint(tmp_path / PREVIOUS, 2, processes=2)
    saved, note = load_checkpoint(tmp_path)
    assert saved is None
    assert f"{CHECKPOINT} is of a run with --processes 2: not used with --processes 1" in note
    assert note.endswith("no usable checkpoint: restarting the run from step 0 (recorded rows are kept)")
    fake_checkpoint(tmp_path / PREVIOUS, 2, processes=1)  # its own earlier checkpoint is still used
    saved, _ = load_checkpoint(tmp_path)
    assert saved["step"] == 2
    fake_checkpoint(tmp_path / CHECKPOINT, 4, processes=None)  # written before checkpoints recorded it: one process
    assert load_checkpoint(tmp_path) == ({key: None for key in CHECKPOINT_KEYS} | {"step": 4}, "")


def test_resume_with_another_processes_count_than_the_manifest_is_refused(tmp_path):
    from bench.harness.launch import check_out, prepare_out
    from bench.harness.plan import plan
    from bench.harness.recorder import write_manifest
    from bench.run import build_parser

    out = tmp_path / "r"
    runs, _ = plan(build_parser().parse_args(["--preset", "smoke", "--reward", "mean-brightness", "--methods", "rwr",
                                              "--out", str(out)]))
    prepare_out(out, runs, resume=False)[1].close()
    write_manifest(out, dict(runs={s.run_id: s.to_dict() for s in runs}, processes=2))
    with pytest.raises(UsageError, match=r"was run with --processes 2, not 1; repeat the original flags"):
        check_out(out, runs, resume=True, processes=1)
    assert check_out(out, runs, resume=True, processes=2)["processes"] == 2
    write_manifest(out, dict(runs={s.run_id: s.to_dict() for s in runs}))  # an older manifest: the worker decides
    assert check_out(out, runs, resume=True, processes=1) is not None
