"""A sensitivity scan of a CIFAR-size ResNet-18 upload vs a plain loop of full evaluations
(issue 11), side by side in one run.

The model is the zoo's ``resnet18-cifar`` (fixed seed) saved with ``torch.jit.save`` and
loaded through the guarded upload path; the data is random images with random labels. The
grid is ``--grid`` on every prunable layer (weights by magnitude):

* plain: for every point, a fresh full forward of the masked model over every image
  (``full_forward_logits`` in batches of 256: no cache, no resuming);
* screened: ``sensitivity(screen=True)`` with the app's evaluator: each point on the
  stratified subset, resuming the unchanged prefix (points are estimates, marked so), then
  each unit's tolerance points on every image (they must equal the plain loop's);
* exact: ``sensitivity(screen=False)``: each point on every image, resuming the prefix;
  every point's correct count must equal the plain loop's.

Run by hand: ``python bench/sensitivity_real_size.py [--images 1000] [--grid 0,0.5,0.9]``.
"""

from __future__ import annotations

import argparse
import io
import time

import torch

from explorer.data import ValidationSet
from explorer.decide.sensitivity import sensitivity
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.load.model_file import load_model_bytes
from explorer.load.zoo import ZOO
from explorer.masks import ScoreCache
from explorer.plan import Plan


def plain_loop(bundle, data, scores, units: list[str], grid: list[float]) -> tuple[dict, float]:
    """{(unit, fraction): correct} of a fresh full forward per point, and the seconds."""
    began = time.perf_counter()
    evaluator = Evaluator(bundle, None, scores)  # masks only
    out = {}
    for unit in units:
        for fraction in grid:
            masks = evaluator.masks(Plan(sparsity={unit: fraction}))
            correct = 0
            for start in range(0, len(data), 256):
                logits = full_forward_logits(bundle, masks, data.x[start:start + 256])
                correct += int((logits.argmax(1) == data.y[start:start + 256]).sum())
            out[(unit, fraction)] = correct
    return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--grid", default="0,0.5,0.9")
    args = parser.parse_args()
    grid = [float(g) for g in args.grid.split(",")]
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(ZOO["resnet18-cifar"].build().eval()), buffer)
    bundle = load_model_bytes(buffer.getvalue(), "r18.pt", input_shape=(3, 32, 32))
    generator = torch.Generator().manual_seed(args.images)
    data = ValidationSet(torch.randn((args.images, 3, 32, 32), generator=generator),
                         torch.randint(0, 10, (args.images,), generator=generator), 10, "random")
    scores = ScoreCache(bundle, data)
    units = list(bundle.units("weights"))
    reference, plain_s = plain_loop(bundle, data, scores, units, grid)
    seconds, samples, exact_points = {}, 0, {}
    for name, screen in (("screened", True), ("exact", False)):
        evaluator = Evaluator(bundle, data, scores)
        evaluator.evaluate(Plan())  # the dense baseline: the app has it when the model loads
        began = time.perf_counter()
        scan = sensitivity(evaluator, "weights", "magnitude", grid, screen=screen)
        seconds[name] = time.perf_counter() - began
        samples = samples or scan.samples
        exact_points[name] = 0
        for curve in scan.units:  # every point that says it is exact equals the plain loop's
            for fraction, accuracy, n in zip(curve.fractions, curve.accuracy, curve.samples,
                                             strict=True):
                if n == len(data):
                    exact_points[name] += 1
                    assert round(accuracy * len(data)) == reference[(curve.unit, fraction)]
    print(f"{len(units) * len(grid)} points ({len(units)} layers x {len(grid)} fractions) on "
          f"{args.images} images; screened points on {samples} images")
    print(f"plain loop {plain_s:.1f} s; screened {seconds['screened']:.1f} s "
          f"({plain_s / seconds['screened']:.1f}x faster; {exact_points['screened']} points, "
          "each unit's tolerance, on every image and equal to the plain loop's); "
          f"exact {seconds['exact']:.1f} s "
          f"({plain_s / seconds['exact']:.1f}x faster, every point equal to the plain loop's)")


if __name__ == "__main__":
    main()
