"""The training loop records sample diversity at every evaluation when each evaluation prompt has two samples, named
by its feature space (``rewards.diversity``; one sample per prompt records none: ``tests/rewards/test_diversity.py``).
The run goes through the worker's own loop in this process (no process start-up)."""

import pandas as pd
import pytest


def run_rows(tmp_path, *flags) -> pd.DataFrame:
    from bench import run
    from bench.harness.loop import Run
    from bench.harness.recorder import ROWS

    args = run.build_parser().parse_args(["--preset", "smoke", "--methods", "rwr", "--max-steps", "1", *flags])
    (spec,), _ = run.plan(args)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(spec.to_json())
    assert Run(folder).execute()["status"] == "max_steps"
    rows = pd.read_json(folder / ROWS, lines=True)
    return rows[rows.split == "eval"]


@pytest.mark.slow  # a real tiny-shapes run with two evaluations: ~20 s of CPU (make test-slow)
def test_a_shape_world_run_records_classifier_and_attribute_diversity(tmp_path):
    prompts = tmp_path / "two.txt"
    prompts.write_text("two red circles on a white background\nthree blue squares on a black background\n")
    rows = run_rows(tmp_path, "--model", "tiny-shapes", "--prompts", "shapes-train", "--eval-prompts", str(prompts),
                    "--reward", "count", "--eval-n", "4")  # 2 prompts x 2 samples from different noise
    for metric in ("diversity[shapeworld-classifier]", "attribute_diversity", "exact_count"):
        values = rows[rows.metric == metric]
        assert sorted(values.step) == [0, 1], metric  # every evaluation
    diversity = rows[rows.metric == "diversity[shapeworld-classifier]"].value
    assert ((diversity > 0) & (diversity < 2**0.5)).all()  # samples from different noise differ

