"""Taking a plan out of the explorer: files a user can load, run or hand to Torch-Pruning.

:func:`export_all` writes, into one folder:

* ``plan.json`` — the plan itself (:meth:`Plan.to_json`).
* ``pruned.safetensors`` — the model's ``state_dict`` (buffers included) with the plan made
  permanent: removed entries are zeros in place, merged neurons' new values written in.
  Same shapes as the original, so :func:`explorer.load.model_file.load_model` loads it back.
* ``shrunk.pt2`` (neuron plans) — the physically smaller model
  (:func:`explorer.export.shrink.shrink`) as a ``torch.export`` program with a dynamic batch
  dimension.
* ``apply_plan.py`` — a script applying the plan to the user's own copy of the model with
  ``torch.nn.utils.prune``; ``masks.safetensors`` alongside when it needs exact masks.
* ``pruning_ratio_dict.json`` — per-layer ratios in Torch-Pruning's ``pruning_ratio_dict``
  form, with a note on how to pass them.

The shared model is never written: every file is made from copies. The folder is checked
before any work: a folder holding anything is refused unless ``force`` is given, and even then
only a folder holding nothing but an earlier export's files is replaced (never the user's
own files). The files are written into a fresh folder beside it and moved in at the end, so
the folder holds exactly one export and a failure while writing leaves the old one intact.

For the app, :func:`export_files` makes the same files as bytes, one by one (a failure
costs only the files that need the failing piece), :func:`zip_files` packs them, and
:func:`reload_metrics` loads the model files back and evaluates them without a plan.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load, save

from explorer.bundle import ModelBundle, export_program, load_into_graph
from explorer.errors import ExplorerError, ModelError, name_some
from explorer.export.save import check_writable
from explorer.graph import Program
from explorer.masks import Masks
from explorer.plan import Plan

if TYPE_CHECKING:
    from explorer.data import ValidationSet
    from explorer.evaluator import Evaluator
    from explorer.metrics import Metrics

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
    bundle: ModelBundle, plan: Plan, out_dir: str | Path, evaluator=None, force: bool = False
) -> dict[str, Path]:
    """Write every export of ``plan`` for ``bundle`` into ``out_dir``; returns path by file name.

    Args:
        bundle: the model to export (never written).
        plan: what to remove.
        out_dir: a new or empty folder; with ``force``, a folder of an earlier export, whose
            content is replaced (see :func:`check_export_folder`).
        evaluator: an :class:`~explorer.evaluator.Evaluator` on ``bundle``, to reuse its
            score cache; without one a data-free evaluator is made (data-driven criteria
            then fail with the evaluator's own message).
        force: replace an earlier export in ``out_dir``.

    The files are those of :func:`export_files`; when one cannot be made (e.g. torch.export
    fails on the shrunk model) the others are still written and an :class:`ExplorerError`
    then names what is missing and why.
    """
    from explorer.evaluator import Evaluator

    out = check_export_folder(out_dir, force)
    evaluator = evaluator or Evaluator(bundle, None)
    evaluator.masks(plan)  # a plan that does not fit the model fails before any file exists
    made = export_files(bundle, plan, evaluator)
    _write_folder(out, made.files)
    written = {name: out / name for name in made.files}
    if made.errors:
        missing = "; ".join(f"{name}: {why}" for name, why in made.errors.items())
        raise ExplorerError(f"Not every export was made ({missing}). The other files are in "
                            f"{out}.")
    return written


def check_export_folder(out_dir: str | Path, force: bool = False) -> Path:
    """``out_dir`` as an absolute path if an export may be written there; else an
    :class:`ExplorerError` saying why, before any work. A new or empty folder is fine;
    a folder holding files is refused unless ``force``, and then only if it holds nothing
    but files an export writes (:data:`EXPORT_FILES`); the folder above must be writable
    (the export is written beside it first)."""
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ExplorerError(f"Cannot export into {out}: it is a file, not a folder.")
    try:
        held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError as exc:
        raise ExplorerError(f"Cannot export into {out}: {exc.strerror}.") from None
    foreign = [n for n in held if n not in EXPORT_FILES or not (out / n).is_file()]
    if held and foreign and force:
        raise ExplorerError(
            f"{out} holds files that are not an export's ({name_some(foreign)}); --force "
            "replaces only an earlier export. Choose a new or empty folder."
        )
    if held and not force:
        raise ExplorerError(
            f"{out} is not empty ({name_some(held)}). Choose a new or empty folder, or "
            "pass --force (force=True) to replace the earlier export in it."
        )
    check_writable(out.parent / f".{out.name}.probe")
    return out


def _write_folder(out: Path, files: Mapping[str, bytes]) -> None:
    """``out`` holds exactly ``files``: they are written into a new folder beside it first
    (a failure there leaves ``out`` as it was), then moved in, the earlier export's files
    moved out. The folder itself stays (its permissions, a shell's working directory)."""
    fresh = out.parent / f".{out.name}.new-{uuid.uuid4().hex[:8]}"
    old = fresh.with_name(fresh.name + ".old")
    try:
        fresh.mkdir(parents=True)
        for name, data in files.items():
            (fresh / name).write_bytes(data)
        if not out.exists():
            fresh.rename(out)
            return
        old.mkdir()
        _move_all(out, old)
        try:
            _move_all(fresh, out)
        except OSError:
            _move_all(out, fresh)
            _move_all(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)  # only once the new export is in place
    except OSError as exc:
        raise ExplorerError(f"Cannot write the export into {out}: {exc.strerror}.") from None
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _move_all(source: Path, target: Path) -> None:
    """Move every file of ``source`` into ``target`` (renames within one file system)."""
    for path in source.iterdir():
        path.rename(target / path.name)


def pruned_state_dict(bundle: ModelBundle, masks: Masks,
                      buffers: Mapping[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` (copies) with masked / merged parameters substituted, and
    ``buffers`` (e.g. recalibrated BatchNorm statistics) in place of the model's."""
    state = {k: v.detach().clone().contiguous() for k, v in bundle.model.state_dict().items()}
    for name, value in {**masks.apply(bundle.params()), **(buffers or {})}.items():
        if name in state:  # not a block gate, which only the exported graph holds
            state[name] = value.detach().to(state[name].dtype).contiguous()
    return state


def shrunk_program(bundle: ModelBundle, masks: Masks,
                   buffers: Mapping[str, torch.Tensor] | None = None
                   ) -> torch.export.ExportedProgram:
    """The shrunk model (a neuron plan's) exported with a dynamic batch dimension."""
    from explorer.export.shrink import shrink

    return export_program(shrink(bundle, masks, buffers).eval(),
                          torch.zeros((2, *bundle.input_shape)))


def mask_tensors(bundle: ModelBundle, masks: Masks) -> dict[str, torch.Tensor]:
    """``mask/<param>`` keep-masks (uint8) and ``value/<param>`` merged values to load first."""
    out = {MASK_PREFIX + n: m.to(torch.uint8).contiguous() for n, m in masks.masks.items()}
    for name, value in masks.updates.items():
        out[VALUE_PREFIX + name] = value.detach().float().contiguous()
    return out


def pruning_ratios(bundle: ModelBundle, masks: Masks) -> dict[str, float]:
    """Fraction removed per layer by module name: neurons (neuron plans), heads (heads
    plans) or weights."""
    out = {}
    for la in bundle.layers:
        k = masks.removed.get(la.name, 0)
        if k:
            if masks.granularity == "heads":
                total = bundle.head_group_of(la.name).heads
            elif masks.granularity == "neurons":
                total = la.neurons
            else:
                total = math.prod(la.weight_shape)
            out[la.name] = k / total
    return out


def _uses_torch_prune_selection(plan: Plan) -> bool:
    """Whether ``torch.nn.utils.prune``'s own L1 selection reproduces the plan's masks."""
    return plan.granularity == "weights" and plan.criterion == "magnitude"


def apply_script(bundle: ModelBundle, plan: Plan, exact: bool,
                 dropped: tuple[str, ...] = ()) -> str:
    """Source of ``apply_plan.py`` for ``plan`` (see the script's docstring); ``dropped``:
    a blocks plan's dropped blocks."""
    if plan.granularity == "blocks":
        spec = {"mode": "blocks", "dropped": list(dropped)}
    elif exact:
        spec = {"mode": "masks"}
    elif plan.scope == "global":
        names = list(plan.layers) if plan.layers is not None else bundle.layer_names
        spec = {"mode": "global", "amount": plan.amount, "layers": names}
    else:
        spec = {"mode": "layer", "sparsity": {k: v for k, v in plan.sparsity.items() if v > 0}}
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
* A blocks plan replaces each dropped block with a module that returns its input.

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
    from explorer.load.demos import load_demo

    return load_demo(DEMO).model


class PassThrough(torch.nn.Module):
    """A dropped block: returns its first input."""

    def forward(self, x, *args, **kwargs):
        return x


def apply_plan(model: torch.nn.Module, export_dir: Path) -> torch.nn.Module:
    if SPEC["mode"] == "blocks":
        for name in SPEC["dropped"]:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, PassThrough())
    elif SPEC["mode"] == "layer":
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


MODEL_FILES = ("pruned.safetensors", "shrunk.pt2", "masks.safetensors", "apply_plan.py",
               "pruning_ratio_dict.json")
EXPORT_FILES = ("plan.json", *MODEL_FILES)  # every file an export may write
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportFiles:
    """One plan's exports as bytes by file name, and why each missing one is missing.

    ``files`` holds what :func:`export_all` would write, in the same order; ``errors`` maps
    a file name that could not be made to a one-line reason.
    """

    files: dict[str, bytes]
    errors: dict[str, str]


def export_files(
    bundle: ModelBundle, plan: Plan, evaluator: Evaluator | None = None
) -> ExportFiles:
    """The files of :func:`export_all` as bytes, each made on its own.

    Unlike :func:`export_all`, a failure does not stop the rest: a plan whose masks cannot
    be computed (e.g. a data-driven criterion without data) leaves ``plan.json`` alone; a
    shrunk model that cannot be exported leaves every other file.
    """
    from explorer.evaluator import Evaluator

    files = {"plan.json": (plan.to_json() + "\n").encode()}
    exact = not _uses_torch_prune_selection(plan)
    blocks = plan.granularity == "blocks"  # no weight masked; Torch-Pruning cuts no block
    try:
        evaluator = evaluator or Evaluator(bundle, None)
        masks = evaluator.masks(plan)
        buffers = evaluator.bn_statistics(plan)  # the statistics its metrics were judged with
    except ExplorerError as exc:
        skipped = {"shrunk.pt2": plan.granularity == "weights",
                   "masks.safetensors": not exact or blocks, "pruning_ratio_dict.json": blocks}
        return ExportFiles(files, {n: str(exc) for n in MODEL_FILES if not skipped.get(n)})
    state = pruned_state_dict(bundle, masks, buffers)
    if masks.dropped_blocks:  # the model without its dropped blocks: their weights are gone
        gone = tuple(f"{b}." for b in masks.dropped_blocks)
        state = {k: v for k, v in state.items() if not k.startswith(gone)}
    files["pruned.safetensors"] = save(state)
    errors = {}
    if masks.granularity != "weights":
        try:
            buffer = io.BytesIO()
            torch.export.save(shrunk_program(bundle, masks, buffers), buffer)
            files["shrunk.pt2"] = buffer.getvalue()
        except ExplorerError as exc:
            errors["shrunk.pt2"] = str(exc)
        except Exception as exc:  # torch.export raises many kinds, with pages of detail
            from explorer.load.files import first_line

            log.exception("exporting the shrunk %s failed", bundle.name)
            errors["shrunk.pt2"] = ("torch.export could not export the shrunk model "
                                    f"({type(exc).__name__}: {first_line(exc)}).")
    if exact and not blocks:
        files["masks.safetensors"] = save(mask_tensors(bundle, masks))
    files["apply_plan.py"] = apply_script(bundle, plan, exact, masks.dropped_blocks).encode()
    if not blocks:
        ratios = {"pruning_ratio_dict": pruning_ratios(bundle, masks),
                  "granularity": plan.granularity, "how_to_use": TP_HOW_TO}
        files["pruning_ratio_dict.json"] = (json.dumps(ratios, indent=2) + "\n").encode()
    return ExportFiles(files, errors)


def zip_files(files: Mapping[str, bytes]) -> bytes:
    """``files`` as one zip archive (deflated), each at the archive's top level.

    Unpacked into a folder, ``apply_plan.py`` finds its ``masks.safetensors`` beside it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def reload_metrics(
    files: Mapping[str, bytes], data: ValidationSet | None = None,
    like: ModelBundle | None = None,
) -> dict[str, Metrics]:
    """Metrics of each model file in ``files`` loaded back and evaluated densely.

    ``pruned.safetensors`` (and ``shrunk.pt2`` when present) are read as a user would read
    them (:func:`explorer.load.model_file.load_model_bytes`, architecture auto-detected) and
    evaluated with an empty plan on ``data`` (a :class:`~explorer.data.ValidationSet`, or None: no
    accuracy). They should equal the plan's metrics: accuracy, loss and nonzero parameters
    for the pruned weights; accuracy, FLOPs and parameters for the shrunk model.

    ``like`` is the model the files were made from. When it is not a demo architecture (a
    pretrained model, an upload), no architecture can be detected from its weights alone,
    so ``pruned.safetensors`` goes into a copy of it with ``load_state_dict`` (every key),
    as the user of that model loads it (:func:`weights_into`).
    """
    from explorer.evaluator import Evaluator
    from explorer.export.save import zoo_architecture
    from explorer.load.model_file import load_model_bytes

    own = like is not None and zoo_architecture(like.model) is None
    out = {}
    for name in ("pruned.safetensors", "shrunk.pt2"):
        if name in files:
            loaded = (weights_into(like, files[name]) if own and name.endswith(".safetensors")
                      else load_model_bytes(files[name], name))
            out[name] = Evaluator(loaded, data).evaluate(Plan())
    return out


def weights_into(like: ModelBundle, raw: bytes) -> ModelBundle:
    """``like`` with the weights of safetensors bytes ``raw``, loaded strictly into copies of
    its model and of its graph (the shared model is not touched).

    Raises:
        ModelError: the file's keys or shapes are not the model's.
    """
    with warnings.catch_warnings():  # an exported graph's copy warns about torch internals
        warnings.simplefilter("ignore", FutureWarning)
        model = copy.deepcopy(like.model)
        module = (model if like.model is like.program.module
                  else copy.deepcopy(like.program.module))
    try:
        model.load_state_dict(load(raw))
        if module is not model:
            load_into_graph(module, model.state_dict())
    except RuntimeError as exc:
        raise ModelError(f"The weights do not fit {like.name}: {str(exc).splitlines()[0]}") \
            from None
    return replace(like, model=model.eval(), program=Program(module))
