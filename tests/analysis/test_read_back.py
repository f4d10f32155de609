"""Issue 36: every file a tool reads back is validated where it is read. A hand-edited value of the wrong type (a
string where a number belongs) is one line naming the file, the key and what was expected, exit 2, nothing written;
damage a report can read around (an emptied metrics table, text in a runs.csv number) is one warning line each. One
1-step rwr smoke run is made once in this process (through the worker's own loop); each test damages a copy."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished results folder (tables, manifest, one run folder with its eval files and adapter)."""
    from bench import run
    from bench.core.files import write_json
    from bench.harness import loop
    from bench.harness.recorder import write_results

    out = tmp_path_factory.mktemp("read_back") / "results"
    args = run.build_parser().parse_args(["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness",
                                          "--max-steps", "1", "--eval-n", "2", "--out", str(out)])
    (spec,), _ = run.plan(args)
    run_dir = out / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(spec.to_json())
    result = loop.Run(run_dir).execute()
    assert result["status"] == "max_steps"
    write_json(run_dir / loop.RESULT, result)
    write_results(out, [spec], {spec.run_id: result}, dict(runs={spec.run_id: spec.to_dict()},
                                                           command=["python", "-m", "bench.run"]))
    return out, spec.run_id


@pytest.fixture
def folder(finished, tmp_path):
    """A copy of the finished results folder and its run folder, to damage."""
    src, run_id = finished
    out = tmp_path / "results"
    shutil.copytree(src, out)
    return out, out / "runs" / run_id


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def one_line(capsys, code, expected_code=2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) == 1, (code, err)
    return err[0]


def test_a_hand_edited_eval_file_is_one_line_in_export_and_report(folder, tmp_path, capsys):
    from bench import export, report

    out, run_dir = folder
    edit(run_dir / "eval_last.json", lambda d: d["reward"].__setitem__(0, "abc"))
    expected = "eval_last.json' (key reward[0]): expected a number, got 'abc'"
    capsys.readouterr()
    assert expected in one_line(capsys, export.main([str(run_dir), "--out", str(tmp_path / "exported")]))
    assert expected in one_line(capsys, report.main([str(out), "--out", str(tmp_path / "report"), "--n-boot", "10",
                                                     "--formats", "png"]))
    assert not (tmp_path / "exported").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("tool", ["report", "compare"])
def test_a_hand_edited_manifest_names_its_key_in_report_and_compare(folder, tmp_path, capsys, tool):
    from bench import compare, report

    out, _ = folder
    edit(out / "manifest.json", lambda d: d.update(jobs="two"))
    capsys.readouterr()
    code = (report.main([str(out), "--out", str(tmp_path / "report"), "--n-boot", "10", "--formats", "png"])
            if tool == "report" else compare.main([str(out), "--write-baseline", str(tmp_path / "base.json")]))
    assert "manifest.json' (key jobs): expected an integer or null, got 'two'" in one_line(capsys, code)
    assert not (tmp_path / "report").exists() and not (tmp_path / "base.json").exists()


def test_a_hand_edited_manifest_is_refused_by_resume_before_anything(folder, capsys):
    from bench import run

    out, run_dir = folder
    edit(out / "manifest.json", lambda d: d.update(resumed=5))
    config = (run_dir / "config.json").read_text()
    capsys.readouterr()
    code = run.main(["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness", "--max-steps", "1",
                     "--eval-n", "2", "--out", str(out), "--resume"])
    assert "manifest.json' (key resumed): expected a list, got 5" in one_line(capsys, code)
    assert (run_dir / "config.json").read_text() == config


def test_a_hand_edited_result_of_a_folder_without_tables_names_its_key(folder, tmp_path, capsys):
    from bench import report

    out, run_dir = folder
    for name in ("runs.csv", "metrics.csv", "metrics.parquet"):
        (out / name).unlink()
    edit(run_dir / "result.json", lambda d: d.update(wall_s="fast"))
    capsys.readouterr()
    line = one_line(capsys, report.main([str(out), "--out", str(tmp_path / "report"), "--formats", "png"]))
    assert "result.json' (key wall_s): expected a number or null, got 'fast'" in line


def test_text_in_a_runs_csv_number_is_one_warning_and_read_as_missing(folder):
    import pandas as pd

    from bench.analysis.results import load_results

    out, _ = folder
    runs = pd.read_csv(out / "runs.csv")
    runs["final_eval_reward"] = runs["final_eval_reward"].astype(object)
    runs.loc[0, "final_eval_reward"] = "high"
    runs.to_csv(out / "runs.csv", index=False)
    results = load_results([out])
    assert [p for p in results.problems if "(column final_eval_reward): 1 value(s) not a number, e.g. 'high'" in p]
    assert results.runs["final_eval_reward"].isna().all()


def test_an_emptied_metrics_table_is_rebuilt_from_the_rows_with_one_warning(folder, tmp_path, capsys):
    from bench import compare, report
    from bench.analysis.results import load_results

    out, _ = folder
    whole = load_results([out]).metrics
    (out / "metrics.parquet").unlink()
    (out / "metrics.csv").write_bytes(b"")
    rebuilt = load_results([out])
    assert len(rebuilt.metrics) == len(whole) and set(rebuilt.metrics["metric"]) == set(whole["metric"])
    capsys.readouterr()
    assert report.main([str(out), "--out", str(tmp_path / "report"), "--n-boot", "10", "--formats", "png"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "metrics.csv holds no rows (0 bytes) but the runs' rows.jsonl hold" in err[0], err
    assert "rebuilt from them" in (tmp_path / "report" / "report.md").read_text()
    assert compare.main([str(out), "--baseline", str(out)]) == 0
    assert "metrics.csv holds no rows (0 bytes)" in capsys.readouterr().err


def test_compare_warns_on_a_folder_without_tables(folder, capsys):
    from bench import compare

    out, _ = folder
    for name in ("runs.csv", "metrics.csv", "metrics.parquet"):
        (out / name).unlink()
    capsys.readouterr()
    compare.main([str(out), "--baseline", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 1 and err[0].startswith("warning: ") and "no runs.csv or metrics" in err[0], err


def test_report_refuses_a_reference_method_with_no_runs(folder, tmp_path, capsys):
    from bench import report

    out, _ = folder
    capsys.readouterr()
    line = one_line(capsys, report.main([str(out), "--out", str(tmp_path / "report"), "--reference", "foo"]))
    assert line == "error: --reference 'foo': no run of that method in these results; give one of rwr, or leave " \
                   "--reference out"
    assert not (tmp_path / "report").exists()


def test_a_hand_edited_baseline_entry_names_its_key(folder, tmp_path, capsys):
    from bench import compare

    out, _ = folder
    base = tmp_path / "base.json"
    assert compare.main([str(out), "--write-baseline", str(base)]) == 0
    edit(base, lambda d: d["entries"][0].update(n="two"))
    capsys.readouterr()
    line = one_line(capsys, compare.main([str(out), "--baseline", str(base)]))
    assert "(key entries[0].n): expected a number or null, got 'two'" in line


def test_interpolate_names_a_hand_edited_runs_csv(folder):
    import pandas as pd

    from bench.analysis.interpolate import load_run
    from bench.core.errors import UsageError

    out, run_dir = folder
    runs = pd.read_csv(out / "runs.csv").astype({"final_eval_reward": object})
    runs.loc[0, "final_eval_reward"] = "abc"
    runs.to_csv(out / "runs.csv", index=False)
    with pytest.raises(UsageError, match=r"runs.csv' \(column final_eval_reward, row 1\): expected a number, got 'abc'"):
        load_run(run_dir)


def test_tuning_reads_a_candidates_runs_csv_and_its_command_file_checked(folder, tmp_path):
    import pandas as pd

    from bench.core.errors import UsageError
    from bench.harness import tuning

    out, _ = folder
    assert tuning.finished_candidate(out, 1)
    runs = pd.read_csv(out / "runs.csv").astype({"final_eval_reward": object})
    runs.loc[0, "final_eval_reward"] = "best"
    runs.to_csv(out / "runs.csv", index=False)
    with pytest.raises(UsageError, match=r"column final_eval_reward, row 1\): expected a number, got 'best'"):
        tuning.finished_candidate(out, 1)
    tune_out = tmp_path / "tune"
    tune_out.mkdir()
    (tune_out / tuning.COMMAND_FILE).write_text(json.dumps({"argv": "--methods rwr"}))
    with pytest.raises(UsageError, match=r"tune_command.json' \(key argv\): expected a list, got '--methods rwr'"):
        tuning.check_targets(tune_out, tune_out / "tuned.json", resume=["--methods", "rwr"])


def test_rows_of_the_wrong_type_are_skipped_like_a_torn_line(folder):
    from bench.harness.recorder import ROWS, read_rows

    _, run_dir = folder
    rows = read_rows(run_dir / ROWS)
    with open(run_dir / ROWS, "a") as f:
        f.write(json.dumps({**rows[-1], "step": 99, "value": "abc"}) + "\n")
        f.write(json.dumps({**rows[-1], "step": "x"}) + "\n")
    assert read_rows(run_dir / ROWS) == rows
