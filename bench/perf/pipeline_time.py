"""``python -m bench.perf.pipeline_time --model tiny-flux-random``: the one sampler against the model's own diffusers
pipeline, the same images at what cost.

Both draw the same batch (same prompts, noise seed, steps and guidance; ``guidance_scale`` means what the pipeline's
argument means in every family: the classifier-free weight on sd and sd3, the guidance embedding on flux), in
alternation (A B, then B A, ...) after one warm-up call each, in this process on its threads. Prints each side's
median seconds per call, the ratio sampler / pipeline and the largest pixel difference of their images.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.core.cli import command


def measure(model: str, *, steps: int, batch: int, repeats: int, guidance: float, seed: int = 0) -> dict:
    import torch

    from bench.analysis.export import call_arguments
    from bench.core.models import load_model
    from bench.core.sampler import Sampler, SamplerConfig

    pipe = load_model(model).pipe
    sampler = Sampler(pipe, SamplerConfig(steps=steps, guidance_scale=guidance))
    prompts = [("a cat", "a red dog", "a blue car", "a bird")[i % 4] for i in range(batch)]  # within toy 16-token limits
    size = sampler.image_size
    extra = {**call_arguments(pipe), "height": size, "width": size}

    def ours():
        return sampler.sample(prompts, generator=torch.Generator().manual_seed(seed)).images

    def theirs():
        return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                    generator=torch.Generator().manual_seed(seed), **extra).images

    times = {"sampler": [], "pipeline": []}
    with torch.no_grad():
        images = {"sampler": ours(), "pipeline": theirs()}  # warm-up, and the images compared
        for i in range(repeats):
            order = (("sampler", ours), ("pipeline", theirs))
            for name, call in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return dict(model=model, steps=steps, batch=batch, repeats=repeats, sampler_s=medians["sampler"],
                pipeline_s=medians["pipeline"], ratio=medians["sampler"] / medians["pipeline"],
                max_abs_diff=float((images["sampler"] - images["pipeline"]).abs().max()))


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf.pipeline_time", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-flux-random", help="a model of any family (default tiny-flux-random)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (default 10)")
    p.add_argument("--batch", type=int, default=2, help="images per call (default 2)")
    p.add_argument("--repeats", type=int, default=6, help="timed calls of each side (default 6)")
    p.add_argument("--guidance", type=float, default=3.5, help="guidance_scale (default 3.5, FluxPipeline's)")
    args = p.parse_args(argv)
    row = measure(args.model, steps=args.steps, batch=args.batch, repeats=args.repeats, guidance=args.guidance)
    print(f"{row['model']}: {row['steps']} steps, batch {row['batch']}, median of {row['repeats']}: sampler "
          f"{row['sampler_s']:.3f} s, pipeline {row['pipeline_s']:.3f} s, ratio {row['ratio']:.2f}; images differ by "
          f"{row['max_abs_diff']:.1e} at most")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
