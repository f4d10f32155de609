"""Issue 36: one output guard (``bench.core.files.check_output``) for every tool, before any work. bench.report,
bench.compare, bench.run and bench.tune have theirs beside their other bad-input tests."""

from __future__ import annotations

import pytest

from bench.core.errors import UsageError
from bench.core.files import check_output


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_the_guard_names_flag_path_and_problem_and_leaves_nothing(tmp_path):
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("keep")
    cases = [(dict(path=a_file / "sub", folder=True), f"its parent {str(a_file)!r} is a regular file, not a folder"),
             (dict(path=a_file / "a" / "b.json"), f"its parent {str(a_file)!r} is a regular file"),
             (dict(path=a_file, folder=True), "is a file, not a folder; choose a folder"),
             (dict(path=tmp_path, what="tuned file", example="t.json"), f"name the tuned file to write, e.g. "
                                                                         f"{tmp_path / 't.json'}"),
             (dict(path="/proc/x/y", folder=True, whole=True), "no file can be created in '/proc'")]
    for kwargs, message in cases:
        path = kwargs.pop("path")
        with pytest.raises(UsageError) as caught:
            check_output(path, "--flag", **kwargs)
        assert str(caught.value).startswith(f"--flag {str(path)!r} ") and message in str(caught.value)
    assert check_output(tmp_path / "new" / "deeper", "--out", folder=True) == tmp_path / "new" / "deeper"
    assert check_output(tmp_path / "new.json", "--json") == tmp_path / "new.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"] and a_file.read_text() == "keep"


def test_export_and_interpolate_check_out_before_any_work(tmp_path, capsys, monkeypatch):
    # --out somefile/sub raised FileExistsError after bench.export had loaded the model and verified the adapter.
    import bench.analysis.export as export_module
    from bench import export, interpolate

    monkeypatch.setattr(export_module, "export_run", lambda *a, **k: pytest.fail("work began"))
    monkeypatch.setattr(interpolate, "run_mix", lambda *a, **k: pytest.fail("work began"))
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("keep")
    for out, message in ((a_file / "sub", f"its parent {str(a_file)!r} is a regular file"),
                         ("/proc/export", "no file can be created in '/proc'")):
        assert export.main([str(tmp_path / "runs" / "x"), "--out", str(out)]) == 2
        err = one_line(capsys)
        assert err.startswith(f"error: --out {str(out)!r} ") and message in err, err
        assert interpolate.main([str(tmp_path / "a"), "base", "--out", str(out)]) == 2
        err = one_line(capsys)
        assert err.startswith(f"error: --out {str(out)!r} ") and message in err, err
    assert a_file.read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["somefile.txt"]


def test_a_folder_output_through_a_symbolic_link_is_written_where_it_points(tmp_path):
    # Sweep: --out a dangling link (bench.export, bench.report) ended in a NotADirectoryError traceback after all the
    # work, leaving a .tmp folder behind; bench.run already wrote through such a link.
    from bench.core.files import atomic_dir

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing" / "target")
    with atomic_dir(link, "marker.json") as tmp:
        (tmp / "marker.json").write_text("{}")
    assert link.is_symlink() and (tmp_path / "missing" / "target" / "marker.json").is_file()
    with atomic_dir(link, "marker.json") as tmp:  # an earlier output behind a link is replaced, the link kept
        (tmp / "marker.json").write_text("[]")
    assert link.is_symlink() and (link / "marker.json").read_text() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "missing"]
    assert sorted(p.name for p in (tmp_path / "missing").iterdir()) == ["target"]


def test_a_failed_final_rename_keeps_the_earlier_output_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import os

    from bench.core.errors import OutputError
    from bench.core.files import atomic_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "marker.json").write_text("old")
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: real(a, b) if ".old-" in str(b) or ".old-" in str(a)
                        else (_ for _ in ()).throw(OSError(20, "Not a directory")))
    with pytest.raises(OutputError, match="earlier output is kept"):
        with atomic_dir(out, "marker.json") as tmp:
            (tmp / "marker.json").write_text("new")
    assert (out / "marker.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_compare_never_overwrites_its_inputs_nor_one_output_with_the_other(tmp_path, capsys):
    # Sweep: --json NEW/manifest.json overwrote the results folder's manifest, --json BASELINE.json the baseline, and
    # --write-baseline B --baseline B wrote B first and compared the folder against itself (always OK); exit 0 each.
    import pandas as pd

    from bench import compare

    new = tmp_path / "new"
    new.mkdir()
    pd.DataFrame([dict(run_id="rwr__mean-brightness__s0", method="rwr", reward="mean-brightness",
                       model="tiny-random", seed=0, status="max_steps", final_eval_reward=0.5, sec_per_step=1.0,
                       peak_mem_mb=100.0)]).to_csv(new / "runs.csv", index=False)
    (new / "manifest.json").write_text("{}")
    base = tmp_path / "base.json"
    assert compare.main([str(new), "--write-baseline", str(base)]) == 0
    kept = base.read_text()
    capsys.readouterr()
    cases = [(["--baseline", base, "--json", new / "manifest.json"], f"--json {str(new / 'manifest.json')!r} is a "
                                                                     f"file inside the input {str(new)!r}"),
             (["--baseline", base, "--json", base], f"--json {str(base)!r} is the input {str(base)!r}"),
             (["--baseline", base, "--write-baseline", base], f"--write-baseline {str(base)!r} is the input"),
             (["--baseline", base, "--json", tmp_path / "x.json", "--write-baseline", tmp_path / "x.json"],
              "--json and --write-baseline both name")]
    for argv, message in cases:
        assert compare.main([str(new), *map(str, argv)]) == 2
        err = one_line(capsys)
        assert message in err, err
    assert base.read_text() == kept and (new / "manifest.json").read_text() == "{}"
    assert not (tmp_path / "x.json").exists()
    assert compare.main([str(new), "--baseline", str(base), "--json", str(new / "compare.json")]) == 0  # a new file
