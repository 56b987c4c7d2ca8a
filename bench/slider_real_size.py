"""A slider move on a CIFAR-size ResNet-18 upload with 3,000 images (issue 11), side by side.

The model is the zoo's ``resnet18-cifar`` (fixed seed) saved with ``torch.jit.save`` and
loaded through the guarded upload path, as the app does; the data is random images with
random labels. After the dense baseline (the app computes it when the model loads), one
slider move each on the first, the middle and the last prunable layer (50% of its weights,
magnitude), timed:

* ours: ``Evaluator.evaluate(plan, progress)``, the app's evaluator with its default memory
  budget: seconds to the first estimate (the stratified subset's metrics, as the Prune
  page shows them) and to the exact value;
* naive: deepcopy the original module, ``torch.nn.utils.prune.l1_unstructured`` on every
  layer, a full batched forward over the 3,000 images;
* suffix: the naive forward's time times the share of the dense FLOPs at and after the
  changed layer, a stand-in for "a plain forward over the part after the changed layer"
  (the issue's yardstick for the exact value).

Both paths must agree on the number of correct predictions. With ``--bn`` the evaluator
also recalibrates BatchNorm on 256 random calibration images (issue 16; an upload with a
calibration file): only our times are reported then, the naive path having no such step.
Run by hand: ``python bench/slider_real_size.py [--images 3000] [--bn]``.
"""

from __future__ import annotations

import argparse
import copy
import io
import time

import torch
from torch.nn.utils import prune

from explorer.data import ValidationSet
from explorer.evaluator import Evaluator
from explorer.load.model_file import load_model_bytes
from explorer.load.zoo import ZOO
from explorer.plan import Plan


def naive(model: torch.nn.Module, bundle, plan: Plan, data: ValidationSet) -> tuple[int, float]:
    """(correct, seconds) of the naive path: copy, prune every layer, full forward."""
    began = time.perf_counter()
    pruned = copy.deepcopy(model)
    for layer in bundle.layers:
        module = pruned.get_submodule(layer.name.removesuffix(".weight"))
        prune.l1_unstructured(module, "weight", plan.fraction(layer.name))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), 256):
            logits = pruned(data.x[start:start + 256])
            correct += int((logits.argmax(1) == data.y[start:start + 256]).sum())
    return correct, time.perf_counter() - began


def ours(evaluator: Evaluator, plan: Plan) -> tuple[int, float, float, int]:
    """(correct, seconds to the estimate, seconds to the exact value, estimate images)."""
    heard: dict[str, float] = {}
    began = time.perf_counter()

    def progress(done: int, total: int, so_far) -> None:
        if so_far.samples == evaluator.estimate_samples and "estimate" not in heard:
            heard["estimate"] = time.perf_counter() - began

    metrics = evaluator.evaluate(plan, progress)
    exact = time.perf_counter() - began
    return metrics.correct, heard.get("estimate", exact), exact, evaluator.estimate_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--bn", action="store_true", help="recalibrate BatchNorm per plan")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ZOO["resnet18-cifar"].build().eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    bundle = load_model_bytes(buffer.getvalue(), "r18.pt", input_shape=(3, 32, 32))
    generator = torch.Generator().manual_seed(args.images)
    data = ValidationSet(torch.randn((args.images, 3, 32, 32), generator=generator),
                         torch.randint(0, 10, (args.images,), generator=generator), 10, "random")
    calibration = None
    if args.bn:
        noise = torch.Generator().manual_seed(1)
        calibration = ValidationSet(torch.randn((256, 3, 32, 32), generator=noise),
                                    torch.randint(0, 10, (256,), generator=noise), 10, "cal")
    evaluator = Evaluator(bundle, data, bn_calibration=calibration)
    began = time.perf_counter()
    dense = evaluator.evaluate(Plan())
    print(f"dense baseline: {time.perf_counter() - began:.1f} s, batch {evaluator.batch_size}, "
          f"{evaluator.kept_batches} batches kept ({evaluator.kept_bytes / 2**20:.0f} MiB of "
          f"{evaluator.memory_budget / 2**20:.0f} MiB), estimate on "
          f"{evaluator.estimate_samples} images; dense accuracy {dense.accuracy:.4f}")
    names = [layer.name for layer in bundle.layers]
    picks = {"first": names[0], "middle": names[len(names) // 2], "last": names[-1]}
    print(f"{'layer':>22} {'estimate s':>10} {'exact s':>8} {'naive s':>8} {'suffix s':>9} "
          f"{'exact/naive':>11} {'exact/suffix':>12}")
    for where, name in picks.items():
        plan = Plan(sparsity={name: 0.5})
        correct, estimate_s, exact_s, _ = ours(evaluator, plan)
        if args.bn:  # recalibrated: no naive counterpart to time or to agree with
            print(f"{where + ' ' + name:>22} {estimate_s:>10.2f} {exact_s:>8.2f} "
                  "(BatchNorm recalibrated)", flush=True)
            continue
        reference, naive_s = naive(model, bundle, plan, data)
        assert correct == reference, (where, correct, reference)
        index = names.index(name)
        share = sum(la.flops for la in bundle.layers[index:]) / sum(
            la.flops for la in bundle.layers)
        suffix_s = naive_s * share
        print(f"{where + ' ' + name:>22} {estimate_s:>10.2f} {exact_s:>8.2f} {naive_s:>8.2f} "
              f"{suffix_s:>9.2f} {exact_s / naive_s:>11.2f} {exact_s / suffix_s:>12.2f}",
              flush=True)


if __name__ == "__main__":
    main()
