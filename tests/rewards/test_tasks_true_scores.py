"""The suite's true scores: the shape world's hand reader (prompt-match), PIL's JPEG size (the JPEG tasks), and that
every task's reward records the true score its task names."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core import shape_reader
from bench.core import shapes as world
from bench.suite.tasks import load_tasks
from rewards import build_reward
from rewards.compress import held_out_images, jpeg_rate_kb
from rewards.shapeworld import PromptMatch, ShapeCount


def renders(sizes=(8, 12), seed=3, copies=1):
    """Every scene of the world ``copies`` times, rendered with objects of ``sizes``."""
    rng = np.random.default_rng(seed)
    scenes = world.all_scenes() * copies
    images = np.stack([world.render(s, rng, sizes) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, scenes


@pytest.mark.parametrize("sizes", [(4, 8), (8, 12), (12, 15)])
def test_reader_gets_every_render_right(sizes):
    images, scenes = renders(sizes)
    readings = shape_reader.read(images)
    assert [r.count for r in readings] == [s.count for s in scenes]
    assert all(o.color == s.color and o.shape == s.shape for r, s in zip(readings, scenes) for o in r.objects)
    assert [r.background for r in readings] == [s.background for s in scenes]
    assert all(float(v.mean()) == 1 for v in shape_reader.hits(images, scenes).values())


def test_reader_says_wrong_when_the_image_is_not_the_caption():
    images, scenes = renders(seed=5)
    colors, shapes = list(world.COLORS), list(world.SHAPES)
    for key, changed in (("color", [replace(s, color=colors[colors.index(s.color) - 1]) for s in scenes]),
                         ("shape", [replace(s, shape=shapes[shapes.index(s.shape) - 1]) for s in scenes]),
                         ("count", [replace(s, count=s.count % 4 + 1) for s in scenes])):
        verdict = shape_reader.hits(images, changed)
        assert float(verdict[key].sum()) == 0 and float(verdict["match"].sum()) == 0, key
    # repaint every object of an image in another palette colour: the reader follows the pixels, not the caption
    background = shape_reader.background(images)[:, :, None, None]
    objects = (images - background).abs().amax(dim=1, keepdim=True) > shape_reader.FOREGROUND
    other = torch.tensor([world.COLORS[colors[colors.index(s.color) - 2]] for s in scenes]).float() / 255
    repainted = torch.where(objects, other[:, :, None, None], images)
    verdict = shape_reader.hits(repainted, scenes)
    assert float(verdict["color"].sum()) == 0 and float(verdict["count"].mean()) == 1
    # erase one object (fill its quadrant with the background): the count drops by one
    erased = images.clone()
    for i, s in enumerate(scenes):
        quadrant = objects[i, 0].nonzero()[0] // 16 * 16  # the quadrant of the first object pixel
        erased[i, :, quadrant[0] : quadrant[0] + 16, quadrant[1] : quadrant[1] + 16] = background[i]
    assert [r.count for r in shape_reader.read(erased)] == [s.count - 1 for s in scenes]


def test_reader_keeps_counts_and_colours_under_blur_and_noise():
    from rewards.shapeworld import augment

    images, scenes = renders(seed=7, copies=2)
    truth = shape_reader.hits(augment(images, torch.Generator().manual_seed(1)), scenes)
    assert float(truth["count"].mean()) == 1 and float(truth["color"].mean()) == 1
    assert float(truth["shape"].mean()) > 0.9  # blurred 8 px shapes are the hard case (94 % on 2000 renders)


def test_prompt_match_records_the_reader_beside_the_classifiers():
    images, scenes = renders(seed=9)
    prompts = [s.caption for s in scenes]
    reward = PromptMatch()
    metrics = reward.eval_metrics(images, prompts)
    assert {"color_accuracy", "shape_accuracy", "exact_count"} <= metrics.keys()
    assert set(reward.true_metrics) <= metrics.keys() and metrics["true_match"] == 1
    wrong = [replace(s, count=s.count % 4 + 1).caption for s in scenes]
    assert reward.eval_metrics(images, wrong)["true_count"] == 0
    assert (reward(images, prompts) > reward(images, wrong)).float().mean() > 0.95  # the count term counts
    assert ShapeCount().eval_metrics(images, wrong)["true_count"] == 0


def pil_jpeg_bytes(image: torch.Tensor, quality: int) -> int:
    array = np.clip(np.rint(image.permute(1, 2, 0).double().numpy() * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return len(buffer.getvalue())


def test_jpeg_true_score_is_the_pil_byte_size_at_quality_95():
    images = torch.cat([held_out_images(6, seed=3, size=32), renders(seed=2)[0][:6]])
    expected = [pil_jpeg_bytes(image, 95) for image in images]
    assert len(set(expected)) > 6  # images of different sizes, so a constant could not pass
    for name in ("jpeg-compressibility", "jpeg-incompressibility"):
        reward = build_reward(name)
        for image, size in zip(images, expected):
            assert round(reward.eval_metrics(image[None], [""])["true_jpeg_kb"] * 1000) == size
        metrics = reward.eval_metrics(images, [""] * len(images))
        assert metrics["true_jpeg_kb"] == pytest.approx(np.mean(expected) / 1000, abs=1e-6)
        assert metrics["surrogate_jpeg_kb"] == pytest.approx(float(jpeg_rate_kb(images).mean()), rel=1e-6)
        sign = -1 if name == "jpeg-compressibility" else 1
        assert float(reward(images, [""] * len(images)).mean()) == pytest.approx(sign * metrics["true_jpeg_kb"])
        assert reward.true_metrics == {"true_jpeg_kb": sign == 1}
    assert pil_jpeg_bytes(images[0], 50) != expected[0]  # the quality matters: 95 is the stated one


@pytest.mark.parametrize("name", list(load_tasks()))
def test_every_task_s_reward_records_its_true_score(name):
    task = load_tasks()[name]
    images, scenes = renders(seed=11)
    metrics = build_reward(task.reward).eval_metrics(images[:8], [s.caption for s in scenes[:8]])
    assert task.true_score in metrics and np.isfinite(metrics[task.true_score])


def test_every_reward_records_prompt_fidelity_on_shape_world_prompts():
    """rewards.fidelity: the classifiers' accuracies whatever the reward (the JPEG tasks recorded none): the world's
    renders of their own captions score high, a blank canvas scores low on shape and count, and other prompts get
    nothing."""
    from rewards.fidelity import FIDELITY, fidelity_metrics

    images, scenes = renders()
    prompts = [s.caption for s in scenes]
    drawn = fidelity_metrics(images, prompts)
    assert set(drawn) == set(FIDELITY) and min(drawn.values()) > 0.9
    assert drawn == PromptMatch().classifier_metrics(images, prompts)  # the same classifiers prompt-match records
    blank = fidelity_metrics(torch.ones_like(images), prompts)
    assert blank["shape_accuracy"] < 0.6 and blank["exact_count"] < 0.6
    assert fidelity_metrics(images, ["a photo of a cat"] * len(images)) == {}


def test_fidelity_read_back_from_saved_images_equals_the_recorded_one(tmp_path):
    """bench.analysis.saved_fidelity: the classifiers on the run's own saved eval_first/last.png (8-bit, as the loop
    writes them) give what they give on the float images the evaluation recorded them from."""
    import json

    import pandas as pd

    from bench.analysis.saved_fidelity import saved_fidelity
    from bench.harness.loop import save_grid
    from rewards.fidelity import fidelity_metrics

    images, scenes = renders(sizes=(6, 13), seed=11)
    prompts = [s.caption for s in scenes]
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    noisy = (images + 0.08 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    save_grid(images, run_dir / "eval_first.png")
    save_grid(noisy, run_dir / "eval_last.png")  # a model's images are not the renderer's clean palette
    (run_dir / "config.json").write_text(json.dumps({"eval": {"prompts": prompts, "n": len(prompts)}}))

    class Folder:
        runs = pd.DataFrame({"run_id": ["r"]})

        def run_dir(self, run_id):
            return tmp_path / "runs" / run_id

    read = saved_fidelity(Folder()).set_index(["which", "metric"])["value"]
    for which, source in (("first", images), ("last", noisy)):
        for name, value in fidelity_metrics(source, prompts).items():
            assert read[(which, name)] == pytest.approx(value, abs=1e-9), (which, name)
