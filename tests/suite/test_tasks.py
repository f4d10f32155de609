"""The suite's task file: what it holds, and the loader's one-line errors (file, key, valid names; exit 2)."""

import textwrap

import pytest

from bench.core.errors import UsageError
from bench.run import build_parser
from bench.suite.tasks import TASKS_FILE, get_task, list_tasks, load_tasks, main
from rewards import true_metrics

GOOD = """
[models]
sd = "tiny-shapes"
sd3 = "tiny-shapes-flow"

[tasks.mine]
reward = "prompt-match"
true_score = "true_match"
prompts = "shapes-train"
val_prompts = "shapes-val"
eval_prompts = "shapes-eval"
families = ["sd"]
"""


def write(tmp_path, text: str, name: str = "tasks.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_suite_holds_four_tasks_on_both_shape_world_models():
    assert list_tasks() == ["shape-aesthetic", "jpeg-compressibility", "jpeg-incompressibility", "prompt-match"]
    tasks = load_tasks()
    truth = {name: (t.reward, t.true_score, t.true_higher_is_better) for name, t in tasks.items()}
    assert truth == {"shape-aesthetic": ("shape-aesthetic", "true_aesthetic", True),
                     "jpeg-compressibility": ("jpeg-compressibility", "true_jpeg_kb", False),
                     "jpeg-incompressibility": ("jpeg-incompressibility", "true_jpeg_kb", True),
                     "prompt-match": ("prompt-match", "true_match", True)}
    for task in tasks.values():
        assert task.models == {"sd": "tiny-shapes", "sd3": "tiny-shapes-flow"} and task.source.endswith("tasks.toml")
        assert (task.prompts, task.val_prompts, task.eval_prompts) == ("shapes-train", "shapes-val", "shapes-eval")
        assert task.true_score in true_metrics(task.reward)
        for family in task.families:  # bench.run takes each task's arguments as they are
            args = build_parser().parse_args(["--methods", "alignprop", *task.run_args(family)])
            assert (args.reward, args.model, args.eval_prompts) == (task.reward, task.models[family], "shapes-eval")


def test_a_user_adds_a_task_without_code(tmp_path):
    (tmp_path / "mine.txt").write_text("two red circles on a white background\none blue square on a black background\n")
    path = write(tmp_path, GOOD.replace('prompts = "shapes-train"', 'prompts = "mine.txt"') + "[tasks.mine.eval]\nn = 40\n")
    task = get_task("mine", path)
    assert task.prompts == str(tmp_path / "mine.txt") and task.eval == {"n": 40} and task.families == ("sd",)
    assert task.run_args("sd")[-2:] == ["--eval-n", "40"]
    with pytest.raises(UsageError, match="does not run on family 'sd3'"):
        task.run_args("sd3")
    with pytest.raises(UsageError, match="unknown task 'other'; valid: mine"):
        get_task("other", path)


@pytest.mark.parametrize("change, key, message", [
    (('reward = "prompt-match"', 'reward = "prompt-mach"'), "tasks.mine.reward",
     "unknown reward 'prompt-mach'; valid: aesthetic, clip-score, count,"),
    (('true_score = "true_match"', 'true_score = "true_aesthetic"'), "tasks.mine.true_score",
     "reward 'prompt-match' records no true score 'true_aesthetic'; valid: true_match, true_color, true_shape, "
     "true_count"),
    (('reward = "prompt-match"', 'reward = "mean-brightness"'), "tasks.mine.true_score",
     "reward 'mean-brightness' records no true score; rewards that do: count (true_count);"),
    (('eval_prompts = "shapes-eval"', 'eval_prompts = "shapes-evl"'), "tasks.mine.eval_prompts",
     "unknown prompt set 'shapes-evl'; valid: eval-animals, shapes-eval, shapes-train, shapes-val, simple-animals"),
    (('prompts = "shapes-train"', 'prompts = "simple-animals"'), "tasks.mine.prompts",
     "reward 'prompt-match' needs shape-world prompts"),
    (('families = ["sd"]', 'families = ["sd", "sdxl"]'), "tasks.mine.families",
         "unknown family 'sdxl'; valid: sd, sd3, flux"),
    (('sd3 = "tiny-shapes-flow"', 'sd3 = "tiny-shapes"'), "models.sd3", "'tiny-shapes' is a 'sd' model, not 'sd3'"),
    (('sd = "tiny-shapes"', 'sd = "tiny-shapez"'), "models.sd", "unknown model 'tiny-shapez'; valid:"),
    (('families = ["sd"]', 'familys = ["sd"]'), "tasks.mine.familys", "unknown key; valid: reward, true_score,"),
    (('true_score = "true_match"\n', ''), "tasks.mine", "missing true_score"),
    (('families = ["sd"]', 'families = ["sd"]\neval = {n = 0}'), "tasks.mine.eval.n", "must be an integer >= 1, got 0"),
    (('families = ["sd"]', 'families = ["sd"]\neval = {steps = 5}'), "tasks.mine.eval.steps",
     "unknown key; valid: n, seed, every, every_samples"),
])
def test_a_bad_entry_is_one_line_naming_the_file_and_the_key(tmp_path, change, key, message):
    path = write(tmp_path, GOOD.replace(*change))
    assert GOOD.replace(*change) != GOOD
    with pytest.raises(UsageError) as error:
        load_tasks(path)
    text = str(error.value)
    assert "\n" not in text and error.value.exit_code == 2
    assert text.startswith(f"{path}: {key}: "), text
    assert message in text, text


def test_a_family_without_a_model_and_a_file_without_tasks_are_refused(tmp_path):
    path = write(tmp_path, GOOD.replace('sd3 = "tiny-shapes-flow"\n', "").replace('["sd"]', '["sd", "sd3"]'))
    with pytest.raises(UsageError, match=r"tasks.mine.families: family 'sd3' has no model; add it to \[models\]"):
        load_tasks(path)
    with pytest.raises(UsageError, match="tasks: no task; add a"):
        load_tasks(write(tmp_path, "[models]\nsd = \"tiny-shapes\"\n", "empty.toml"))
    with pytest.raises(UsageError, match="not valid TOML"):
        load_tasks(write(tmp_path, "[tasks.mine\n", "broken.toml"))
    with pytest.raises(UsageError, match="does not exist"):
        load_tasks(tmp_path / "absent.toml")


def test_the_command_lists_the_tasks_or_exits_2_with_one_line(tmp_path, capsys):
    assert main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[1].startswith("jpeg-compressibility: reward jpeg-compressibility, true score "
                                               "true_jpeg_kb (lower is better)")
    assert main([str(write(tmp_path, GOOD.replace("prompt-match", "nope")))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "tasks.mine.reward: unknown reward 'nope'" in err
    assert TASKS_FILE.name == "tasks.toml" and TASKS_FILE.is_file()
