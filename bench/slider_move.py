"""One slider move on digits-cnn: ours vs the naive path, side by side in one run.

A slider move changes one layer's sparsity and asks for accuracy, size and FLOPs.

* naive: deepcopy the model, ``torch.nn.utils.prune.l1_unstructured`` on every layer,
  a full forward over the validation set, a fresh ``FlopCounterMode`` count, sizes from
  the pruned weights.
* ours: ``Evaluator.evaluate`` (cached scores, arithmetic costs, resume after the changed
  layer).

Each move sets a fraction not seen before, so every mask is new. Run by hand:
``python bench/slider_move.py [--repeats 30]``; prints medians and the speed-up per layer.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from explorer.data import digits_validation
from explorer.evaluator import Evaluator
from explorer.load.demos import load_demo
from explorer.plan import Plan


def naive_move(bundle, data, plan: Plan) -> tuple[float, int, int]:
    model = copy.deepcopy(bundle.model)
    for layer in bundle.layers:
        prune.l1_unstructured(model.get_submodule(layer.name), "weight", plan.fraction(layer.name))
    with torch.no_grad():
        accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
        with FlopCounterMode(display=False) as counter:
            model(data.x[:1])
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.state_dict().values())
    density = {
        la.name: float(model.get_submodule(la.name).weight.count_nonzero())
        / model.get_submodule(la.name).weight.numel()
        for la in bundle.layers
    }
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    flops = sum(sum(per_module[f"{prefix}.{la.name}"].values()) * density[la.name]
                for la in bundle.layers)
    return accuracy, nonzero, int(flops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--model", default="digits-cnn")
    args = parser.parse_args()
    bundle, data = load_demo(args.model), digits_validation()
    evaluator = Evaluator(bundle, data)
    names = bundle.layer_names
    picks = {"first": names[0], "middle": names[len(names) // 2], "last": names[-1]}
    base = Plan(sparsity={n: 0.5 for n in names})
    evaluator.evaluate(base)  # scores sorted once, as after the page loads
    print(f"{args.model}: {bundle.param_count:,} params, {len(data)} validation images, "
          f"{torch.get_num_threads()} threads, {args.repeats} moves per layer")
    print(f"{'layer':<22}{'naive ms':>10}{'ours ms':>10}{'speed-up':>10}")
    for where, name in picks.items():
        fractions = [0.30 + 0.6 * i / args.repeats for i in range(args.repeats)]
        naive, ours = [], []
        for i, frac in enumerate(fractions):
            plan = base.with_sparsity(name, frac)
            order = [("naive", naive), ("ours", ours)] if i % 2 else [("ours", ours),
                                                                     ("naive", naive)]
            for kind, times in order:
                start = time.perf_counter()
                if kind == "naive":
                    accuracy = naive_move(bundle, data, plan)[0]
                else:
                    accuracy = evaluator.evaluate(plan).accuracy
                times.append(time.perf_counter() - start)
            evaluator.evaluate(base)  # the next move starts from the same plan
        n, o = statistics.median(naive) * 1e3, statistics.median(ours) * 1e3
        print(f"{where + ' (' + name + ')':<22}{n:>10.2f}{o:>10.2f}{n / o:>9.1f}x")
        del accuracy


if __name__ == "__main__":
    main()
