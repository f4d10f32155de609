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
