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
