"""Issue 36's closing sweep, exports: a merged sd3 export loads as ``--model DIR`` (``load_model``) and samples
exactly like the run's model (its T5 context length travels in ``bench_model.json``); a run whose config.json was
edited after the run is refused against its manifest; a failing load is one line."""

from __future__ import annotations

import json
import shutil

import pytest

MODEL_FACTS = "bench_model.json"  # bench.core.models.MODEL_FACTS


def export(*argv) -> int:
    from bench import export as cli

    return cli.main([str(a) for a in argv])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def planned(tmp_path, model: str = "tiny-random", *extra: str):
    """The spec of a 1-step rwr smoke run on ``model`` (planned, not run)."""
    from bench import run

    args = run.build_parser().parse_args([
        "--preset", "smoke", "--model", model, "--methods", "rwr", "--reward", "mean-brightness", "--max-steps", "1",
        "--eval-n", "2", "--out", str(tmp_path / "results"), *extra])  # fmt: skip
    (spec,), _ = run.plan(args)
    return spec


def results_folder(tmp_path, spec, result: dict | None = None):
    """A results folder holding ``spec``'s run as bench.run lays it out (config.json, result.json, manifest.json
    with the run's spec); returns the run folder."""
    out = tmp_path / "results"
    run_dir = out / "runs" / spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(spec.to_json())
    (run_dir / "result.json").write_text(json.dumps(result or {"status": "max_steps", "steps": 1}))
    (out / "manifest.json").write_text(json.dumps({"runs": {spec.run_id: json.loads(spec.to_json())}}))
    return run_dir


def test_a_config_json_edited_after_the_run_is_refused_against_the_manifest(tmp_path, capsys):
    # Sweep: an edited lora_rank (or evaluation steps, or model) was exported under a card describing a run that
    # never happened (exit 0); the manifest is the source of truth, as for --resume.
    spec = planned(tmp_path)
    run_dir = results_folder(tmp_path, spec)
    for key, edit in (("method_config", lambda c: c["method_config"].update(lora_rank=8)),
                      ("eval", lambda c: c["eval"]["config"].update(steps=20)),
                      ("model", lambda c: c.update(model="tiny-shapes"))):
        config = json.loads(spec.to_json())
        edit(config)
        (run_dir / "config.json").write_text(json.dumps(config))
        assert export(run_dir, "--out", tmp_path / "x") == 2
        err = one_line(capsys)
        assert f"config.json' differs from '{tmp_path / 'results' / 'manifest.json'}' in {key}" in err, err
    assert not (tmp_path / "x").exists()


def capture_eval(monkeypatch) -> dict:
    """The exact evaluation tensors a run's PNGs are made from, by their file stem."""
    from bench.harness import loop

    grids, save_grid = {}, loop.save_grid
    monkeypatch.setattr(loop, "save_grid", lambda images, path: (grids.update({path.stem: images.clone()}),
                                                                 save_grid(images, path)))
    return grids


@pytest.mark.slow  # a 1-step run, a merged export (three model loads) and one evaluation: ~15 s
def test_a_merged_sd3_export_loads_as_a_model_and_draws_the_runs_images(tmp_path, monkeypatch, capsys):
    # Sweep: load_model(DIR) of a merged sd3 export failed (text_encoder_3 / tokenizer_3 saved as null were not
    # passed as None); passed naively, the chain fell back to diffusers' 256 zero T5 tokens where the run used 0.
    from bench.core.evaluate import evaluate
    from bench.core.models import load_model, model_notes
    from bench.harness import loop
    from rewards import build_reward

    spec = planned(tmp_path, "tiny-flow-random", "--set", "lr=3e-2")
    run_dir = results_folder(tmp_path, spec)
    grids = capture_eval(monkeypatch)
    assert loop.Run(run_dir).execute()["status"] == "max_steps"
    merged = tmp_path / "merged"
    assert export(run_dir, "--out", merged, "--merge") == 0
    assert json.loads((merged / MODEL_FACTS).read_text()) == {"t5_tokens": 0}
    assert model_notes(str(merged)) == []
    pipe = load_model(str(merged)).pipe
    assert pipe.t5_tokens == 0
    _, images = evaluate(pipe, build_reward("mean-brightness"), spec.eval.prompt_per_image(), spec.eval.config)
    assert (images - grids["eval_last"]).abs().max() <= 1e-4
    assert (grids["eval_last"] - grids["eval_first"]).abs().max() > 1e-2  # trained: the match means something
    # A folder that records no count gets diffusers' 256, and the plan says so.
    (merged / MODEL_FACTS).unlink()
    assert not hasattr(load_model(str(merged)).pipe, "t5_tokens")
    (note,) = model_notes(str(merged))
    assert "256 zero T5 tokens" in note and MODEL_FACTS in note
    # An export's own check loads quietly: a run folder (no manifest) whose model cannot take the adapter is one line.
    alone = tmp_path / "alone" / spec.run_id
    shutil.copytree(run_dir, alone)
    config = json.loads(spec.to_json())
    config["model"] = "tiny-shapes-flow"
    (alone / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert export(alone, "--out", tmp_path / "y") == 2
    err = one_line(capsys)
    assert "does not load into 'tiny-shapes-flow' (size mismatch" in err and not (tmp_path / "y").exists()


def test_a_saved_sd3_folder_records_its_t5_tokens_and_loads_with_them(tmp_path):
    # The fix's two halves without a run: save_model writes the count, load_model passes the null components as None
    # and reads it back; a damaged count is one line naming the file and key.
    from bench.core.errors import UsageError
    from bench.core.models import absent_components, load_model, save_model

    folder = save_model(load_model("tiny-flow-random"), tmp_path / "flow")
    assert absent_components(folder) == ["text_encoder_3", "tokenizer_3"]
    assert load_model(str(folder)).pipe.t5_tokens == 0
    (folder / MODEL_FACTS).write_text(json.dumps({"t5_tokens": "zero"}))
    with pytest.raises(UsageError, match=r"bench_model.json' \(key t5_tokens\): expected an integer"):
        load_model(str(folder))
    from bench.core.families.sd3 import SHAPES_FLOW_ASSET

    assert load_model(str(SHAPES_FLOW_ASSET)).pipe.t5_tokens == 0  # the shipped folder as --model DIR: as its name


def test_merging_into_the_runs_own_merged_export_is_refused(tmp_path, capsys):
    # Sweep: `--merge --base EXPORT` of the run EXPORT was merged from fused the adapter a second time (every module
    # fits, exit 0): the export's bench_export.json names the run it holds.
    spec = planned(tmp_path)
    run_dir = results_folder(tmp_path, spec)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "bench_export.json").write_text(json.dumps({"run": str(run_dir.resolve()), "merged_into": spec.model}))
    assert export(run_dir, "--out", tmp_path / "x", "--merge", "--base", merged) == 2
    err = one_line(capsys)
    assert f"--base {str(merged)!r} is {spec.run_id}'s own merged export" in err and "applied twice" in err, err
    assert not (tmp_path / "x").exists()
