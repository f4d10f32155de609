"""Paper scale without running it: protocols, precision and resolution resolved and checked by the planner."""

import re

from bench import gpu_check, run


def dry_run(capsys, *args):
    code = run.main(["--methods", "alignprop,ddpo,rwr", "--reward", "mean-brightness", "--dry-run", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_paper_preset_uses_published_settings_and_ddpo_updates_several_times(capsys):
    code, out, _ = dry_run(capsys, "--preset", "paper", "--model", "sd15-random", "--precision", "bf16")
    assert code == 0 and "protocol published, precision bf16" in out
    lines = {m: next(line for line in out.splitlines() if line.strip().startswith(f"{m}__"))
             for m in ("alignprop", "ddpo", "rwr")}
    assert all("(published)" in line for line in lines.values())
    assert "updates/step=2" in lines["ddpo"] and "images/step=256" in lines["ddpo"]  # ddpo-pytorch dgx.py aesthetic
    assert "sample_batches=32" in lines["ddpo"] and "train_grad_accum=32" in lines["ddpo"]
    assert "batch_size=4 grad_accum=32" in lines["alignprop"]  # AlignProp config/align_prop.py aesthetic()
    assert "51200 reward queries" in out  # equal reward-query budget for every method


def test_matched_protocol_gives_every_method_the_same_images_per_update(capsys):
    code, out, _ = dry_run(capsys, "--preset", "paper", "--model", "sd15-random", "--protocol", "matched")
    assert code == 0
    per_step = re.findall(r"\(matched\): images/step=(\d+) updates/step=(\d+)", out)
    assert per_step == [("8", "1")] * 3


def test_resolution_the_model_cannot_draw_is_refused(capsys):
    code, _, err = dry_run(capsys, "--preset", "smoke", "--resolution", "30")
    assert code == 2 and "multiple of 4" in err
    code, _, err = dry_run(capsys, "--preset", "paper", "--model", "sd15-random", "--resolution", "96")
    assert code == 2 and "multiple of 64" in err
    code, out, _ = dry_run(capsys, "--preset", "smoke", "--resolution", "64", "--precision", "fp32")
    assert code == 0 and "resolution=64" in out and "precision fp32" in out
    code, _, err = dry_run(capsys, "--preset", "smoke", "--precision", "fp8")
    assert code == 2 and "--precision" in err


def test_gpu_check_dry_run_prints_every_command(capsys, tmp_path):
    assert gpu_check.main(["--dry-run", "--wheels", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "--no-index --find-links" in out and "trl==0.23.1" in out and "torch==" not in out
    assert out.count("bench.memory_ladder --model sd15-random --steps 50 --batch 1") == 2
    assert "alignprop-auto@2x" in out and "--preset paper --model sd15-random" in out
    assert "--model sd35m-random --steps 10 --batch 8 --dtypes bf16 --resolution 512 --rows flow-grpo" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert gpu_check.main(["--dry-run", "--wheels", str(tmp_path / "missing")]) == 2
