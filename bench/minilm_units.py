"""all-MiniLM-L6-v2 pruned by heads, FFN neurons, 2:4 weights and blocks: the issue-12 table.

For each unit kind and criterion, the same fraction is removed from every layer of that kind
(every attention's heads; every block's feed-forward neurons; every linear layer of the
encoder in 2:4), or 1, 2 or 3 of the 6 blocks are dropped, and the plan is judged on the
corpus's 200 validation sentences: topic accuracy by the nearest centroid (95% Wilson
interval), the mean cosine similarity of the sentence embeddings to the dense ones, the
FLOPs per sentence as the cost model counts them (the smaller model's, for heads, neurons
and blocks) and the speed-up they imply. Needs the ``transformers`` extra. Run by hand:
``python bench/minilm_units.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

from explorer.evaluator import Evaluator
from explorer.load.transformers import embedding_fidelity, load_minilm
from explorer.masks import ScoreCache
from explorer.plan import Plan

FRACTIONS = (0.0, 0.25, 0.5, 0.75)


def plans(bundle) -> list[tuple[str, str, float, Plan]]:
    """(kind, criterion, fraction, plan) for every row of the table."""
    heads = [name for g in bundle.heads for name in g.layers]
    ffn = [la.name for la in bundle.layers if la.name.endswith(".intermediate.dense")]
    rows = []
    for criterion in ("l1", "taylor", "random"):
        for f in FRACTIONS:
            rows.append(("heads", criterion, f, Plan(
                granularity="heads", criterion=criterion, sparsity=dict.fromkeys(heads, f))))
    for criterion in ("l1", "taylor", "random"):
        for f in FRACTIONS:
            rows.append(("ffn neurons", criterion, f, Plan(
                granularity="neurons", criterion=criterion, sparsity=dict.fromkeys(ffn, f))))
    for criterion in ("magnitude", "wanda"):
        rows.append(("2:4 weights", criterion, 0.5, Plan(
            criterion=criterion, scope="global", pattern="2:4")))
    for criterion in ("influence", "random"):
        for dropped in (1, 2, 3):
            share = dropped / len(bundle.blocks)
            rows.append(("blocks", criterion, share, Plan(
                granularity="blocks", criterion=criterion, scope="global",
                amount=share + 1e-6)))  # round(amount x 6) is exactly `dropped`
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    start = time.perf_counter()
    bundle, data = load_minilm()
    print(f"loaded {bundle.name} in {time.perf_counter() - start:.1f} s: "
          f"{bundle.param_count:,} parameters, {len(data)} validation sentences, "
          f"{len(bundle.heads)} attentions of {bundle.heads[0].heads} heads")
    evaluator = Evaluator(bundle, data, ScoreCache(bundle, data))
    out = []
    print("| units | criterion | removed | topic accuracy (95% CI) | embedding cosine | "
          "MFLOPs / sentence | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for kind, criterion, fraction, plan in plans(bundle):
        metrics = evaluator.evaluate(plan)
        cosine = embedding_fidelity(bundle, evaluator.masks(plan), data)
        low, high = metrics.accuracy_ci
        row = {"units": kind, "criterion": criterion, "removed": fraction,
               "accuracy": metrics.accuracy, "accuracy_ci": [low, high],
               "embedding_cosine": cosine, "flops": metrics.flops["effective"],
               "speedup": metrics.speedup}
        out.append(row)
        print(f"| {kind} | {criterion} | {fraction:.0%} | {metrics.accuracy:.1%} "
              f"({low:.1%}-{high:.1%}) | {cosine:.4f} | "
              f"{metrics.flops['effective'] / 1e6:.1f} | {metrics.speedup:.2f}x |", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
