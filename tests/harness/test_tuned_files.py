"""Issue 36's closing sweep, tuned files and tuning: --config-from of a folder names the file to pass, a file that
tunes none of the chosen methods is refused and every chosen method it leaves at its defaults is said; bench.tune
says when a grid changes a method's published inference setting. In-process, nothing is run."""

from __future__ import annotations

import json

from bench import tune
from bench.harness.tuning import FORMAT
from test_run import bench_run_inprocess

BASE = ["--preset", "smoke", "--reward", "mean-brightness", "--seeds", "0", "--dry-run"]


def tuned_file(path, methods: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(format=FORMAT, reward="mean-brightness", tuning_seeds=[100],
                                    bench_run_flags=["--preset", "smoke"], methods=methods)))
    return str(path)


def test_config_from_a_folder_names_the_tuned_file_in_it(tmp_path, capsys):
    # Sweep: --config-from DIR said "'DIR' does not exist" of a folder that exists.
    folder = tmp_path / "tune-out"
    folder.mkdir()
    code, _, err = bench_run_inprocess(capsys, *BASE, "--methods", "rwr", "--config-from", str(folder))
    assert code == 2 and f"--config-from {str(folder)!r} is a folder; pass the tuned file" in err
    tuned_file(folder / "tuned.json", {"rwr": {"chosen": {"lr": "0.002"}}})
    code, _, err = bench_run_inprocess(capsys, *BASE, "--methods", "rwr", "--config-from", str(folder))
    assert code == 2 and f"is a folder; pass the tuned file in it, {str(folder / 'tuned.json')!r}" in err


def test_a_file_that_tunes_none_of_the_methods_is_refused_and_untuned_methods_are_said(tmp_path, capsys):
    # Sweep: a file tuning only diffusion-nft (or leaving rwr untuned: chosen null) applied to --methods rwr ran rwr
    # with its defaults and said nothing: the plan read as a tuned run.
    other = tuned_file(tmp_path / "nft.json", {"diffusion-nft": {"chosen": {"lr": "0.002"}}})
    code, _, err = bench_run_inprocess(capsys, *BASE, "--methods", "rwr", "--config-from", other)
    assert code == 2 and f"--config-from {other!r} tunes none of --methods rwr" in err
    untuned = tuned_file(tmp_path / "untuned.json", {"rwr": {"chosen": None}})
    code, text, _ = bench_run_inprocess(capsys, *BASE, "--methods", "rwr", "--config-from", untuned)
    assert code == 0 and f"note: --config-from {untuned!r} leaves rwr untuned (no configuration of it finished)" in text
    rwr = tuned_file(tmp_path / "rwr.json", {"rwr": {"chosen": {"lr": "0.002"}}})
    code, text, _ = bench_run_inprocess(capsys, *BASE, "--methods", "rwr,alignprop-k1", "--config-from", rwr)
    assert code == 0 and f"note: --config-from {rwr!r} does not tune alignprop-k1: it runs with its defaults" in text
    assert "lr=0.002" in text and "does not tune rwr" not in text


def test_tune_says_when_its_grid_changes_a_published_inference_setting(tmp_path, capsys, monkeypatch):
    # Sweep: --grid 'diffusion-nft.guidance_scale=1,4.5' trained and scored the 4.5 candidate with CFG 4.5 (its
    # published setting is CFG-free) and neither the console nor tuning.md said so; each candidate's own plan did,
    # naming a --set the user never typed.
    from bench import run

    monkeypatch.setattr(run, "main", lambda argv: 130)  # stop at the first run: the notes come before it
    grid = "diffusion-nft.guidance_scale=1,4.5"
    assert tune.main(["--methods", "diffusion-nft", "--model", "tiny-flow-random", "--reward", "mean-brightness",
                      "--grid", grid, "--seeds", "100", "--preset", "smoke", "--out", str(tmp_path / "t")]) == 130
    printed = capsys.readouterr().out
    assert f"note: --grid {grid!r} changes diffusion-nft's published guidance_scale 1" in printed
