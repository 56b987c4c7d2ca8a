"""BatchNorm recalibration study (issue 16), run by hand: does judging a pruned plan with
re-estimated BatchNorm statistics rank plans the way fine-tuning does?

1. Stability: the recalibrated accuracy of a few neuron plans on digits-resnet against the
   number of calibration images (a stratified subset of the digits training split).
2. Study: on digits-resnet and digits-cnn, neuron plans over criteria x fractions x scope
   (per-layer uniform and global): raw accuracy (the dense model's statistics), recalibrated
   accuracy, and accuracy after a short fine-tune (the project's own fine-tuning, starting
   from the recalibrated statistics). Spearman's rank correlation of raw and of recalibrated
   accuracy with the fine-tuned accuracy.
3. Decisions: the suggested plan for a FLOPs target from a raw and from a recalibrated
   sensitivity scan, each judged recalibrated on the held-out part, beside the uniform and
   global-magnitude baselines fitted to the same target.

Run: ``python bench/bn_recalibration.py [--epochs 3] [--target flops=2]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.stats import spearmanr

from explorer import batchnorm
from explorer import evaluator as evaluator_module
from explorer.batchnorm import norms_of
from explorer.data import digits_train, digits_validation
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import suggest
from explorer.decide.targets import Target
from explorer.evaluator import Evaluator
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning
from explorer.finetune.retrain import retrain
from explorer.load.demos import load_demo
from explorer.plan import Plan

CRITERIA = ("l1", "activation", "taylor", "random")
FRACTIONS = (0.2, 0.35, 0.5)
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def plans(bundle) -> list[tuple[str, Plan]]:
    out = []
    names = bundle.prunable_layers("neurons")
    for criterion in CRITERIA:
        for f in FRACTIONS:
            out.append((f"{criterion} global {f:.0%}",
                        Plan(granularity="neurons", criterion=criterion, scope="global",
                             amount=f)))
            out.append((f"{criterion} per-layer {f:.0%}",
                        Plan(granularity="neurons", criterion=criterion,
                             sparsity={n: f for n in names})))
    return out


def stability(bundle, val, train) -> None:
    print("\n## Stability: recalibrated accuracy vs calibration images (digits-resnet)")
    chosen = [Plan(granularity="neurons", criterion=c, scope="global", amount=a)
              for c, a in (("l1", 0.3), ("random", 0.3), ("l1", 0.5))]
    sizes = (16, 32, 64, 128, 256, 512, len(train))
    print("| plan | " + " | ".join(str(n) for n in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    default = evaluator_module.calibration_size
    try:
        for plan in chosen:
            row = []
            for n in sizes:
                # the subset the evaluator recalibrates on (patching batchnorm's constant
                # does nothing since the evaluator sizes it with calibration_size)
                evaluator_module.calibration_size = lambda _bundle, n=n: n
                row.append(Evaluator(bundle, val, bn_calibration=train).evaluate(plan).accuracy)
            print(f"| {plan.criterion} {plan.amount:.0%} | "
                  + " | ".join(f"{a:.1%}" for a in row) + " |")
    finally:
        evaluator_module.calibration_size = default
    print(f"(the default is {batchnorm.CALIBRATION_IMAGES} images)")


def study(name: str, epochs: int) -> None:
    bundle, val, train = load_demo(name), digits_validation(), digits_train()
    raw_eval = Evaluator(bundle, val)
    recal_eval = Evaluator(bundle, val, bn_calibration=train)
    print(f"\n## {name}: {len(norms_of(bundle.program))} BatchNorm layers; dense "
          f"{raw_eval.evaluate(Plan()).accuracy:.2%}")
    print("| plan | raw | recalibrated | fine-tuned |")
    print("|---|---|---|---|")
    raws, recals, tuned = [], [], []
    began = time.perf_counter()
    for label, plan in plans(bundle):
        raw, recal = raw_eval.evaluate(plan).accuracy, recal_eval.evaluate(plan).accuracy
        run = retrain(Finetuning(bundle, plan, train, val, FinetuneSettings(epochs),
                                 recal_eval.bn_statistics(plan)), scores=recal_eval.scores)
        raws.append(raw)
        recals.append(recal)
        tuned.append(run.metrics.accuracy)
        print(f"| {label} | {raw:.1%} | {recal:.1%} | {tuned[-1]:.1%} |")
    rho_raw = spearmanr(raws, tuned).statistic
    rho_recal = spearmanr(recals, tuned).statistic
    print(f"\n{len(raws)} plans in {time.perf_counter() - began:.0f} s. Spearman with the "
          f"fine-tuned accuracy: raw {rho_raw:.3f}, recalibrated {rho_recal:.3f}")


def decisions(name: str, target: Target) -> None:
    bundle, val, train = load_demo(name), digits_validation(), digits_train()
    print(f"\n## {name}: suggestions for {target.describe()} (neurons, l1), judged "
          "recalibrated on the held-out part")
    judged = SplitEvaluator(bundle, val, bn_calibration=train)
    for source, calibration in (("raw scan", None), ("recalibrated scan", train)):
        judge = SplitEvaluator(bundle, val, bn_calibration=calibration)
        scan = sensitivity(judge.calibration, "neurons", "l1", GRID)
        result = suggest(scan, judge, target)
        print(f"- from a {source}: " + "; ".join(
            f"{row.name} {judged.evaluate(row.plan).held_out.accuracy:.1%}"
            if row.plan is not None else f"{row.name}: {row.error}" for row in result.rows))
        fractions = {k: round(v, 3) for k, v in result.plan.sparsity.items()}
        print(f"  suggested fractions: {fractions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--target", default="flops=2")
    args = parser.parse_args()
    torch.set_num_threads(2)
    stability(load_demo("digits-resnet"), digits_validation(), digits_train())
    for name in ("digits-resnet", "digits-cnn"):
        study(name, args.epochs)
    for name in ("digits-resnet", "digits-cnn"):
        decisions(name, Target.parse(args.target))


if __name__ == "__main__":
    main()
