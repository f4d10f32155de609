"""The README's own command, ``python -m bench.run --methods alignprop,ddpo --reward aesthetic``, offline on the
embedded default (preset ``default``, model ``tiny-shapes``) at a tiny budget, two runs at once: on a shape-world
model ``aesthetic`` is the world's aesthetic, ``shape-aesthetic``, said in one line and recorded as such; no stand-in;
the redirected console is whole lines; and the exported adapter's model card snippet runs offline as printed and
redraws the run's evaluation images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MISSION = ["--methods", "alignprop,ddpo", "--reward", "aesthetic"]
TINY = ["--max-steps", "1", "--eval-n", "2", "--seeds", "0", "--jobs", "2", "--set", "steps=4"]


@pytest.fixture(scope="module")
def mission(tmp_path_factory):
    """The mission command run in this process (its two workers are subprocesses), output captured as redirected."""
    import contextlib
    import io
    import os

    from bench.run import main

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    out = tmp_path_factory.mktemp("mission") / "results"
    stdout, stderr = io.TextIOWrapper(io.BytesIO(), write_through=True), io.TextIOWrapper(io.BytesIO(), write_through=True)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*MISSION, *TINY, "--out", str(out)])
    text = lambda stream: stream.buffer.getvalue().decode()  # noqa: E731
    return dict(out=out, code=code, stdout=text(stdout), stderr=text(stderr))


def test_aesthetic_on_the_shape_world_is_its_aesthetic_said_once_and_recorded(mission):
    out, console = mission["out"], mission["stdout"] + mission["stderr"]
    assert mission["code"] == 0, console[-3000:]
    said = [line for line in console.splitlines() if line.startswith("reward aesthetic on tiny-shapes")]
    assert len(said) == 1 and "the world's aesthetic, shape-aesthetic" in said[0]
    assert "STAND-IN" not in console and "stand-in" not in console.lower()  # no random-weight reward, no random model
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs.run_id.tolist() == ["alignprop__shape-aesthetic__s0", "ddpo__shape-aesthetic__s0"]
    assert set(runs.reward) == {"shape-aesthetic"} and set(runs.stand_in) == {""} and set(runs.model) == {"tiny-shapes"}
    assert set(runs.status) == {"max_steps"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["reward"], manifest["reward_requested"]) == ("shape-aesthetic", "aesthetic")
    assert manifest["stand_ins"] == [] and {s["reward"] for s in manifest["runs"].values()} == {"shape-aesthetic"}
    assert "alignprop__shape-aesthetic__s0" in mission["stdout"]  # the plan and the summary name the reward run
    assert "Per method: evaluation reward on 2 held-out images, start -> final" in mission["stdout"]


WHOLE_LINE = re.compile(r"^(\[\d+/2\] (alignprop|ddpo)__shape-aesthetic__s0: (start|end, .+)"
                        r"|\[(alignprop|ddpo)__shape-aesthetic__s0\] [^\[]+)$")


def test_two_workers_lines_are_whole_lines(mission):
    lines = [line for line in mission["stderr"].splitlines() if line.strip()]
    assert lines and all(WHOLE_LINE.match(line) for line in lines), "\n".join(
        line for line in lines if not WHOLE_LINE.match(line))
    assert sum(line.endswith(": start") for line in lines) == 2 and sum(": end, " in line for line in lines) == 2


@pytest.mark.slow  # an export (a fresh pipeline load) and a diffusers sampling: make test-slow, run by .ci/run
def test_model_card_snippet_runs_offline_as_printed_and_redraws_the_evaluation(mission, tmp_path):
    from PIL import Image

    from bench.export import main as export

    run_dir = mission["out"] / "runs" / "alignprop__shape-aesthetic__s0"
    folder = tmp_path / "my-lora"
    assert export([str(run_dir), "--out", str(folder)]) == 0
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "a prompt" not in code and 'weight_name="pytorch_lora_weights.safetensors"' in code and str(folder) in code
    spec = json.loads((run_dir / "config.json").read_text())
    assert all(json.dumps(p) in code for p in dict.fromkeys(spec["eval"]["prompts"]))  # the run's own prompts
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the card's code, as a user would paste it)
    drawn = np.concatenate([np.asarray(image, dtype=np.float64) for image in scope["images"]], axis=1)
    last = np.asarray(Image.open(run_dir / "eval_last.png"), dtype=np.float64)  # the run's final evaluation images
    assert drawn.shape == last.shape and np.abs(drawn - last).max() <= 2.0, np.abs(drawn - last).max()


def test_laion_aesthetic_stays_laion_elsewhere_and_fails_at_once_offline(capsys):
    """On a model outside the shape world ``aesthetic`` is LAION's predictor; its missing weights stop the plan at
    once (HF_HUB_OFFLINE=1) with the one-line error."""
    import time

    from bench.run import main

    start = time.perf_counter()
    code = main([*MISSION, "--model", "tiny-random", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "weights for aesthetic (CLIP ViT-L/14 + LAION predictor v2) not found" in err
    assert "offline=True" in err and len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 10
