"""The flow policy gradients learn the toy reward's way and resume as the same run: `make test-slow` (which
`.ci/run` runs after `make test`), so that `make test` from a clean clone stays under 5 minutes."""

import pytest

pytestmark = pytest.mark.slow

from bench.core.prompts import load_prompts
from rewards.toy import MeanBrightness
from test_flow_pg import FLOW_PG, build, flow  # noqa: F401  (flow: the module fixture)


@pytest.mark.parametrize("name", FLOW_PG)
def test_learns_in_the_rewarded_direction(flow, name):
    from bench.core.evaluate import EvalConfig, evaluate

    def brightness(pipe):
        scores, _ = evaluate(pipe, MeanBrightness(), load_prompts("eval-animals").first(4),
                             EvalConfig(n=4, steps=4, guidance_scale=3.0))
        return float(scores.mean())

    clip = {} if name in ("diffusion-nft", "awm") else dict(clip_range=0.2)  # (DiffusionNFT: no ratio; AWM: 1)
    method = build(name, flow, lr=3e-2, max_grad_norm=0.0, batch_size=8, group_size=4, **clip)
    before = brightness(method.pipe)
    for _ in range(4):
        method.step()
    assert brightness(method.pipe) - before > 5e-5


@pytest.mark.parametrize("name", FLOW_PG)
def test_state_round_trip_continues_the_same_run(flow, name):
    rounds = {} if name in ("diffusion-nft", "awm") else dict(updates_per_batch=2)  # (one update per round)
    a = build(name, flow, seed=5, **rounds)
    a.step()
    state = a.state_dict()  # grpo's: the set's untrained half; mixgrpo's: its update count; nft's, awm's: adapters
    next_a = a.step()
    b = build(name, flow, seed=5, **rounds)
    b.load_state_dict(state)
    next_b = b.step()
    assert next_a["loss"] == pytest.approx(next_b["loss"], rel=1e-5, abs=1e-9)
    assert next_a["reward_mean"] == pytest.approx(next_b["reward_mean"], rel=1e-5)
