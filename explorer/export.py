"""Taking a plan out of the explorer: files a user can load, run or hand to Torch-Pruning.

:func:`export_all` writes, into one folder:

* ``plan.json`` — the plan itself (:meth:`Plan.to_json`).
* ``pruned.safetensors`` — the model's ``state_dict`` (buffers included) with the plan made
  permanent: removed entries are zeros in place, merged neurons' new values written in.
  Same shapes as the original, so :func:`explorer.io.load_model` loads it back.
* ``shrunk.pt2`` (neuron plans) — the physically smaller model (:func:`explorer.shrink.shrink`)
  as a ``torch.export`` program with a dynamic batch dimension.
* ``apply_plan.py`` — a script applying the plan to the user's own copy of the model with
  ``torch.nn.utils.prune``; ``masks.safetensors`` alongside when it needs exact masks.
* ``pruning_ratio_dict.json`` — per-layer ratios in Torch-Pruning's ``pruning_ratio_dict``
  form, with a note on how to pass them.

The shared model is never written: every file is made from copies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from explorer.bundle import ModelBundle
from explorer.errors import ExplorerError
from explorer.masks import Masks
from explorer.plan import Plan

MASK_PREFIX = "mask/"
VALUE_PREFIX = "value/"

TP_HOW_TO = (
    "Torch-Pruning: pass the ratios keyed by module, e.g. "
    "ratios = json.load(open('pruning_ratio_dict.json'))['pruning_ratio_dict']; "
    "pruner = tp.pruner.MetaPruner(model, example_inputs, importance=tp.importance."
    "MagnitudeImportance(p=1), pruning_ratio=0.0, pruning_ratio_dict="
    "{model.get_submodule(name): ratio for name, ratio in ratios.items()}); pruner.step() "
    "(pruning_ratio=0.0 leaves the layers not listed whole). Torch-Pruning removes channels "
    "(structured) and chooses them by its own importance, so its model can differ from "
    "this plan's."
)


def export_all(
    bundle: ModelBundle, plan: Plan, out_dir: str | Path, evaluator=None
) -> dict[str, Path]:
    """Write every export of ``plan`` for ``bundle`` into ``out_dir``; returns path by file name.

    ``evaluator`` (an :class:`~explorer.evaluator.Evaluator` on ``bundle``) reuses its score
    cache; without one a data-free evaluator is made (data-driven criteria then fail with
    the evaluator's own message).
    """
    from explorer.evaluator import Evaluator

    evaluator = evaluator or Evaluator(bundle, None)
    masks = evaluator.masks(plan)  # checks the plan against the model first
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplorerError(f"Cannot create the export folder {out}: {exc.strerror}.") from None
    written = {"plan.json": _write_text(out / "plan.json", plan.to_json() + "\n")}

    path = out / "pruned.safetensors"
    save_file(pruned_state_dict(bundle, masks), str(path))
    written[path.name] = path

    if masks.granularity == "neurons":
        path = out / "shrunk.pt2"
        torch.export.save(shrunk_program(bundle, masks), str(path))
        written[path.name] = path

    exact = not _uses_torch_prune_selection(plan)
    if exact:
        path = out / "masks.safetensors"
        save_file(mask_tensors(bundle, masks), str(path))
        written[path.name] = path
    written["apply_plan.py"] = _write_text(out / "apply_plan.py", apply_script(bundle, plan, exact))

    ratios = {"pruning_ratio_dict": pruning_ratios(bundle, masks),
              "granularity": plan.granularity, "how_to_use": TP_HOW_TO}
    written["pruning_ratio_dict.json"] = _write_text(
        out / "pruning_ratio_dict.json", json.dumps(ratios, indent=2) + "\n")
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pruned_state_dict(bundle: ModelBundle, masks: Masks) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` (copies) with masked / merged parameters substituted."""
    state = {k: v.detach().clone().contiguous() for k, v in bundle.model.state_dict().items()}
    for name, value in masks.apply(bundle.params()).items():
        state[name] = value.detach().to(state[name].dtype).contiguous()
    return state


def shrunk_program(bundle: ModelBundle, masks: Masks) -> torch.export.ExportedProgram:
    """The shrunk model (a neuron plan's) exported with a dynamic batch dimension."""
    from explorer.shrink import shrink

    model = shrink(bundle, masks).eval()
    example = torch.zeros((2, *bundle.input_shape))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def mask_tensors(bundle: ModelBundle, masks: Masks) -> dict[str, torch.Tensor]:
    """``mask/<param>`` keep-masks (uint8) and ``value/<param>`` merged values to load first."""
    out = {MASK_PREFIX + n: m.to(torch.uint8).contiguous() for n, m in masks.masks.items()}
    for name, value in masks.updates.items():
        out[VALUE_PREFIX + name] = value.detach().float().contiguous()
    return out


def pruning_ratios(bundle: ModelBundle, masks: Masks) -> dict[str, float]:
    """Fraction removed per layer by module name: neurons (neuron plans) or weights."""
    out = {}
    for la in bundle.layers:
        k = masks.removed.get(la.name, 0)
        if k:
            total = la.neurons if masks.granularity == "neurons" else math.prod(la.weight_shape)
            out[la.name] = k / total
    return out


def _uses_torch_prune_selection(plan: Plan) -> bool:
    """Whether ``torch.nn.utils.prune``'s own L1 selection reproduces the plan's masks."""
    return plan.granularity == "weights" and plan.criterion == "magnitude"


def apply_script(bundle: ModelBundle, plan: Plan, exact: bool) -> str:
    """Source of ``apply_plan.py`` for ``plan`` (see the script's docstring)."""
    if plan.scope == "global":
        names = list(plan.layers) if plan.layers is not None else bundle.layer_names
        spec = {"mode": "global", "amount": plan.amount, "layers": names}
    else:
        spec = {"mode": "layer", "sparsity": {k: v for k, v in plan.sparsity.items() if v > 0}}
    if exact:
        spec = {"mode": "masks"}
    params = {la.name: la.weight.rsplit(".", 1)[-1] for la in bundle.layers}
    demo = bundle.name if bundle.source == "zoo" else None
    return SCRIPT.format(spec=json.dumps(spec), params=json.dumps(params), demo=repr(demo))


SCRIPT = '''"""Apply a Pruning Explorer plan to your own model with torch.nn.utils.prune.

Usage:  python apply_plan.py [EXPORT_DIR] [--out pruned_by_script.safetensors]

EXPORT_DIR is the folder holding this script (the default) with plan.json and, when the
plan needs exact masks, masks.safetensors. Edit your_model() to return your model.

* A weight plan by magnitude is re-derived by torch: prune.l1_unstructured per layer, or
  prune.global_unstructured(..., pruning_method=prune.L1Unstructured) for a global plan.
* Any other plan (another criterion, a neuron plan) applies the exact keep-masks from
  masks.safetensors ("mask/<parameter>") with prune.custom_from_mask; a merge plan first
  copies the merged values ("value/<parameter>") into the model.

prune.remove then makes the pruning permanent (the zeros stay in the weights).
"""

import argparse
import json
import math
from pathlib import Path

import torch
from torch.nn.utils import prune

SPEC = {spec}
WEIGHT_NAMES = {params}  # parameter name of each pruned layer's weight
DEMO = {demo}


def your_model() -> torch.nn.Module:
    """Return the model the plan was made for (a fresh copy: it is modified in place)."""
    if DEMO is None:
        raise SystemExit("Edit your_model() in apply_plan.py to return your model.")
    from explorer.models import load_demo

    return load_demo(DEMO).model


def apply_plan(model: torch.nn.Module, export_dir: Path) -> torch.nn.Module:
    if SPEC["mode"] == "layer":
        for name, amount in SPEC["sparsity"].items():
            module = model.get_submodule(name)
            prune.l1_unstructured(module, WEIGHT_NAMES[name], amount=amount)
            prune.remove(module, WEIGHT_NAMES[name])
    elif SPEC["mode"] == "global":
        targets = [(model.get_submodule(n), WEIGHT_NAMES[n]) for n in SPEC["layers"]]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                                  amount=SPEC["amount"])
        for module, attr in targets:
            prune.remove(module, attr)
    else:
        from safetensors.torch import load_file

        tensors = load_file(str(export_dir / "masks.safetensors"))
        with torch.no_grad():
            for key, value in tensors.items():
                if key.startswith("value/"):
                    model.get_parameter(key[len("value/"):]).copy_(value)
        for key, mask in tensors.items():
            if key.startswith("mask/"):
                owner, _, attr = key[len("mask/"):].rpartition(".")
                module = model.get_submodule(owner)
                prune.custom_from_mask(module, attr, mask.bool())
                prune.remove(module, attr)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Apply a Pruning Explorer plan.")
    parser.add_argument("export_dir", nargs="?", default=str(Path(__file__).parent))
    parser.add_argument("--out", help="save the pruned state_dict here (.safetensors)")
    args = parser.parse_args()
    model = apply_plan(your_model(), Path(args.export_dir))
    if args.out:
        from safetensors.torch import save_file

        state = {{k: v.detach().contiguous() for k, v in model.state_dict().items()}}
        save_file(state, args.out)
        print(f"wrote {{args.out}}")
'''
