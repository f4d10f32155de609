"""Sample diversity (``bench.core.diversity``, ``rewards.diversity``): identical samples give exactly 0, independent
renders of the shape world far more than near-identical ones, images of different prompts are never paired, distinct
outcomes are counted per prompt, the vectorised pairwise mean equals a plain double loop, and the space is chosen
by the images' world and named in the metric."""

import itertools
import math

import numpy as np
import pytest
import torch

from bench.core import shapes as world
from bench.core.diversity import (FeatureSpace, PixelSpace, diversity, outcome_diversity, pairwise_distances,
                                  prompt_groups)
from rewards import build_reward
from rewards.diversity import LpipsSpace, diversity_metrics, space_for
from rewards.shapeworld import classifier_space

SCENES = world.eval_scenes()[:6]
K = 4


def render(scene: world.Scene, seed: int) -> torch.Tensor:
    return torch.from_numpy(world.render(scene, np.random.default_rng(seed))).permute(2, 0, 1).float() / 255


def grouped(images_of) -> tuple[torch.Tensor, list[str]]:
    """K images per scene, prompts cycling as in the evaluation (image i has prompt i modulo their number)."""
    order = [SCENES[i % len(SCENES)] for i in range(K * len(SCENES))]
    return torch.stack([images_of(s, i) for i, s in enumerate(order)]), [s.caption for s in order]


class Fixed(FeatureSpace):
    """Features given by hand: row i of ``table``."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def features(self, images):
        return self.table[images[:, 0, 0, 0].long()]


class MeanAbs(torch.nn.Module):
    def forward(self, a, b):
        return (a - b).abs().mean((1, 2, 3), keepdim=True)


def test_identical_samples_of_each_prompt_give_exactly_zero():
    images, prompts = grouped(lambda s, i: render(s, 7))
    for space in (classifier_space(), PixelSpace()):
        assert diversity(images, prompts, space) == 0.0
    assert diversity_metrics(build_reward("count"), images, prompts) == {
        "diversity[shapeworld-classifier]": 0.0, "attribute_diversity": 0.0}


def test_independent_renders_are_far_more_diverse_than_near_identical_images():
    gen = torch.Generator().manual_seed(0)
    same, prompts = grouped(lambda s, i: render(s, 7))
    near = (same + 0.02 * torch.randn(same.shape, generator=gen)).clamp(0, 1)
    renders, _ = grouped(lambda s, i: render(s, 1000 + i))
    space = classifier_space()
    low, high = diversity(near, prompts, space), diversity(renders, prompts, space)
    assert 0 < low < 0.05 and high > 0.25 and high > 10 * low, (low, high)  # measured 0.011 vs 0.44
    assert diversity(renders, prompts, PixelSpace()) > 5 * diversity(near, prompts, PixelSpace())  # 0.16 vs 0.014


def test_images_of_different_prompts_are_never_paired():
    # Each prompt's samples are one image, but the two prompts' images differ: any cross-prompt pair would count.
    a, b = render(SCENES[0], 1), render(SCENES[3], 2)
    images = torch.stack([a, b, a, b, a, b])
    prompts = ["A", "B", "A", "B", "A", "B"]
    assert float((a - b).abs().max()) > 0.5
    assert diversity(images, prompts, PixelSpace()) == 0.0
    assert diversity(images, prompts, classifier_space()) == 0.0
    assert prompt_groups(["A", "B", "A", "C", "B", "A"]) == [[0, 2, 5], [1, 4]]  # C has one sample: left out
    # per prompt, then the mean over prompts: A's pairs (3) do not outweigh B's (1)
    table = torch.tensor([[0.0], [1.0], [3.0], [0.0], [0.0]])
    images = torch.arange(5.0)[:, None, None, None].expand(5, 3, 1, 1)
    assert diversity(images, ["A", "A", "A", "B", "B"], Fixed(table)) == pytest.approx(((1 + 3 + 2) / 3 + 0) / 2)


def test_no_prompt_with_two_samples_records_nothing():
    images, prompts = grouped(lambda s, i: render(s, i))
    first = slice(0, len(SCENES))  # one image per prompt
    assert diversity(images[first], prompts[first], PixelSpace()) is None
    assert outcome_diversity(list(range(len(SCENES))), prompts[first]) is None
    assert diversity_metrics(build_reward("count"), images[first], prompts[first]) == {}


def test_attribute_diversity_counts_distinct_outcomes_per_prompt():
    red, blue = ("red", "circle", 1), ("blue", "circle", 1)
    outcomes = [red, red, red, red, blue, ("red", "square", 2), red, red, blue, red]
    prompts = ["A", "A", "A", "B", "B", "B", "C", "C", "C", "D"]  # A 1 outcome, B 3, C 2 (of 3), D alone
    assert outcome_diversity(outcomes, prompts) == pytest.approx((0 / 2 + 2 / 2 + 1 / 2) / 3)
    assert outcome_diversity([red, blue], ["A", "A"]) == 1.0
    # the classifiers' outcomes: clean renders of three scenes read as their own (colour, shape, count)
    scenes = [world.Scene(1, "red", "circle", "white"), world.Scene(2, "blue", "square", "black"),
              world.Scene(4, "green", "triangle", "white")]
    images = torch.stack([render(s, 3) for s in scenes] + [render(scenes[0], 4)])
    assert classifier_space().outcomes(images) == [(s.color, s.shape, s.count) for s in scenes + scenes[:1]]
    metrics = diversity_metrics(build_reward("count"), images, ["P", "P", "P", "Q"])
    assert metrics["attribute_diversity"] == 1.0


def test_vectorised_pairwise_mean_equals_a_double_loop():
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(13, 5, generator=gen)
    prompts = ["p", "q", "r", "p", "q", "p", "s", "p", "q", "r", "p", "t", "t"]
    images = torch.arange(13.0)[:, None, None, None].expand(13, 3, 1, 1)
    per_prompt = []
    for prompt in dict.fromkeys(prompts):
        idx = [i for i, p in enumerate(prompts) if p == prompt]
        pairs = [math.dist(table[i].tolist(), table[j].tolist()) for i, j in itertools.combinations(idx, 2)]
        if pairs:
            per_prompt.append(sum(pairs) / len(pairs))
    assert diversity(images, prompts, Fixed(table)) == pytest.approx(sum(per_prompt) / len(per_prompt), rel=1e-12)
    d = pairwise_distances(table)
    assert torch.equal(d, d.T) and torch.equal(torch.diag(d), torch.zeros(13, dtype=d.dtype))
    # the pixel stand-in is the RMS difference per value: black vs white is 1
    black_white = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    assert diversity(black_white, ["x", "x"], PixelSpace()) == pytest.approx(1.0, abs=1e-6)
    # LPIPS's pairwise matrix is filled symmetrically from one call per pair (a stand-in network, no weights)
    images = torch.rand(4, 3, 64, 64, generator=gen)
    net, x = MeanAbs(), images * 2 - 1
    loop = [float(net(x[i : i + 1], x[j : j + 1])) for i, j in itertools.combinations(range(4), 2)]
    assert diversity(images, ["x"] * 4, LpipsSpace(net)) == pytest.approx(sum(loop) / len(loop), rel=1e-6)


def test_the_space_suits_the_images_and_is_named_in_the_metric():
    shape_prompts = [s.caption for s in SCENES]
    assert space_for(build_reward("mean-brightness"), shape_prompts).name == "shapeworld-classifier"
    assert space_for(build_reward("count+prompt-match"), ["a snail"]).name == "shapeworld-classifier"  # its own
    other = space_for(build_reward("mean-brightness"), ["a snail", "a lobster"])
    assert other.name in ("lpips-alex", "pixel16-stand-in")
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert list(diversity_metrics(build_reward("mean-brightness"), images, ["a snail", "a lobster"] * 2)) == [
        f"diversity[{other.name}]"]
    features = classifier_space().features(images)
    assert torch.allclose(features.norm(dim=-1), torch.ones(4)) and features.shape == (4, 256)
