"""Sensitivity scan of digits-cnn (weights, magnitude, default grid): ours vs full passes.

* ours: :func:`explorer.decide.sensitivity.sensitivity` on one :class:`Evaluator` (each unit's grid
  in order, so every evaluation resumes from the network before the swept layer).
* plain: the same plans, one after another, on an :class:`Evaluator` with
  ``memory_budget=0`` — every evaluation a full forward pass over the validation set.

Both share one score cache, computed before timing, so the figure is the forward passes
alone. Run by hand: ``python bench/sensitivity.py [--repeats 3]``; prints both times (best
of the repeats) and the speed-up, and checks the two give the same accuracy and loss.
"""

from __future__ import annotations

import argparse
import time

from explorer.data import digits_validation
from explorer.decide.sensitivity import DEFAULT_GRID, sensitivity
from explorer.evaluator import Evaluator
from explorer.load.demos import load_demo
from explorer.masks import ScoreCache
from explorer.plan import Plan


def plain_loop(evaluator: Evaluator, layers: list[str]) -> list[tuple[float, float]]:
    out = []
    for layer in layers:
        for fraction in DEFAULT_GRID:
            m = evaluator.evaluate(Plan(sparsity={layer: fraction}))
            out.append((m.accuracy, m.loss))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bundle, data = load_demo(args.model), digits_validation()
    scores = ScoreCache(bundle, data)
    Evaluator(bundle, data, scores).evaluate(Plan(sparsity={la: 0.5 for la in bundle.layer_names}))

    ours_s, plain_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        result = sensitivity(Evaluator(bundle, data, scores), "weights", "magnitude")
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        plain = plain_loop(Evaluator(bundle, data, scores, memory_budget=0), bundle.layer_names)
        plain_s.append(time.perf_counter() - t)
    ours = [(a, lo) for u in result.units for a, lo in zip(u.accuracy, u.loss, strict=True)]
    assert ours == plain, "the scan and the plain loop disagree"
    n = len(plain)
    print(
        f"{args.model}: {len(result.units)} layers x {len(DEFAULT_GRID)} fractions = "
        f"{n} evaluations on {len(data)} samples"
    )
    print(
        f"plain loop (full forward each): {min(plain_s):.3f} s ({min(plain_s) / n * 1e3:.1f} "
        "ms/eval)"
    )
    print(
        f"sensitivity (incremental):      {min(ours_s):.3f} s ({min(ours_s) / n * 1e3:.1f} ms/eval)"
    )
    print(f"speed-up: {min(plain_s) / min(ours_s):.2f}x")


if __name__ == "__main__":
    main()
