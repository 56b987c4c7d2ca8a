"""Turning an exported program or a TorchScript file into the plain graph the engine reads.

Both run the user's model (TorchScript's code, an exported graph), so they are called only
inside the guarded child process (:mod:`explorer.load.guard`);
:mod:`explorer.load.model_file` vets the file before and the program the child returns
after. The result is an ``fx.GraphModule`` with the weights as parameters under their
``state_dict`` names, ``aten.conv2d`` / ``aten.linear`` ops and a dynamic batch dimension:
what :mod:`explorer.graph` analyses.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import torch
from torch import nn
from torch._export.converter import TS2EPConverter

from explorer.bundle import export_module
from explorer.errors import ModelError
from explorer.load.files import corrupt, first_line, quiet_torch
from explorer.load.vetting import vet_pt2

EXPORT_HINT = (
    "export the model with torch.export and a dynamic batch dimension: "
    "torch.export.save(torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')"
)
DYNAMIC_BATCH_HINT = (
    "export it again with a dynamic batch dimension: torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), and avoid hard-coded batch sizes "
    "such as x.view(32, -1) (use x.flatten(1))"
)

def torchscript_module(
    data: bytes, name: str, input_shape: tuple[int, ...] | None
) -> tuple[torch.fx.GraphModule, tuple[int, ...]]:
    """Convert TorchScript into an analysable program (runs its code: guarded child only).

    ``TS2EPConverter`` (torch 2.13) runs the TorchScript graph and retraces it with
    ``torch.export``, but it lifts every weight as a *buffer* and emits the generic
    ``aten.convolution``; the engine finds prunable layers by ``aten.conv2d`` / ``aten.linear``
    ops on *parameters*. So we turn the TorchScript parameters back into ``nn.Parameter``s
    under their ``state_dict`` names, rewrite 2-D non-transposed convolutions as
    ``aten.conv2d`` (the same computation), and export the result once more with a dynamic
    batch dimension. Wrapping the ScriptModule and exporting it directly does not work: the
    TorchScript interpreter sees concrete sizes, so the batch dimension gets specialised.
    The converted program is checked against the TorchScript model on random inputs.
    """
    if input_shape is None:
        raise ModelError(f"{name} is a TorchScript model: input_shape is required.")
    input_shape = tuple(int(d) for d in input_shape)
    try:
        with quiet_torch():  # torch.jit.load warns that TorchScript is deprecated
            script = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # the TorchScript reader raises RuntimeError for most damage
        raise ModelError(f"{name}: {corrupt(exc)}") from None
    check_finite(script.state_dict(), name)
    example = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad():
            script(example)
    except Exception as exc:  # whatever the user's TorchScript code raises
        raise ModelError(
            f"{name}: the TorchScript model cannot run on inputs of shape {input_shape} per "
            f"sample: {first_line(exc)}. Check that input_shape is one sample's shape "
            "(without the batch dimension) and matches the data."
        ) from None
    try:
        with quiet_torch():
            program = TS2EPConverter(script, (example,)).convert()
            module = program.module(check_guards=False)
    except Exception as exc:  # the converter raises many internal types
        raise ModelError(
            f"{name}: this TorchScript model cannot be converted for analysis "
            f"({first_line(exc)}). Instead, {EXPORT_HINT}."
        ) from None
    _restore_parameters(module, dict(script.named_parameters()))
    _use_conv2d(module)
    module = plain(_reexport(module, example, name))
    probe = torch.randn((3, *input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = script(probe), module(probe)
    if not (
        isinstance(expected, torch.Tensor)
        and isinstance(got, torch.Tensor)
        and expected.shape == got.shape
        and torch.allclose(expected, got, atol=1e-5)
    ):
        raise ModelError(
            f"{name}: the converted TorchScript model does not reproduce the original's "
            f"outputs, so it cannot be analysed safely. Instead, {EXPORT_HINT}."
        )
    return module, input_shape


def _restore_parameters(module: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Turn the buffers the converter made of ``params`` back into parameters, same names.
    A parameter the graph never reads (a submodule ``forward`` does not call) has no
    owner in the converted graph and is left out, as the graph leaves it."""
    for pname in params:
        owner_name, _, leaf = pname.rpartition(".")
        try:
            owner = module.get_submodule(owner_name)
        except AttributeError:
            continue
        if leaf in owner._buffers:
            owner.register_parameter(leaf, nn.Parameter(owner._buffers.pop(leaf)))


def _use_conv2d(module: torch.fx.GraphModule) -> None:
    """Rewrite ``aten.convolution`` of 2-D, non-transposed convs as the equal ``aten.conv2d``."""
    aten = torch.ops.aten
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target is aten.convolution.default:
            x, weight, bias, stride, padding, dilation, transposed, _, groups = node.args
            if not transposed and len(stride) == 2:
                node.target = aten.conv2d.default
                node.args = (x, weight, bias, stride, padding, dilation, groups)
    module.recompile()


def exported_module(
    data: bytes, name: str, input_shape: tuple[int, ...] | None
) -> tuple[torch.fx.GraphModule, tuple[int, ...]]:
    """A ``torch.export`` program, read by the vetting reader; one with a static batch size
    is re-exported if it can be (runs the graph: guarded child only)."""
    with quiet_torch():
        program = vet_pt2(data, name)
    shape = _program_input_shape(program, name, input_shape)
    check_finite({**program.state_dict, **program.constants}, name)
    module = program.module(check_guards=False)
    if not isinstance(shape[0], torch.SymInt):
        example = torch.zeros((2, *shape[1:]))
        try:
            module = _reexport(module, example, name)
        except ModelError:
            raise ModelError(
                f"{name} was exported with a fixed batch size of {shape[0]}, and its graph "
                f"cannot run on other batch sizes; {DYNAMIC_BATCH_HINT}."
            ) from None
    return plain(module), tuple(int(d) for d in shape[1:])


def _program_input_shape(
    program: torch.export.ExportedProgram, name: str, input_shape: tuple[int, ...] | None
) -> tuple:
    """The user input's shape, batch first: the batch as exported (int or SymInt), the rest
    as ints (dynamic ones from ``input_shape`` or the saved example input)."""
    user = [
        s.arg.name
        for s in program.graph_signature.input_specs
        if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    if len(user) != 1 or not isinstance(vals.get(user[0]), torch.Tensor):
        raise ModelError(
            f"{name}: the program takes {len(user)} inputs; Pruning Explorer needs a model "
            "with exactly one input tensor (a batch of samples)."
        )
    shape = tuple(vals[user[0]].shape)
    if len(shape) < 2:
        raise ModelError(
            f"{name}: the program's input has shape {shape}; expected a batch of samples, "
            "(batch, *sample_shape)."
        )
    examples = program.example_inputs[0] if program.example_inputs else ()
    sample = []
    for i, dim in enumerate(shape[1:]):
        if isinstance(dim, int):
            sample.append(dim)
        elif input_shape is not None and len(input_shape) == len(shape) - 1:
            sample.append(int(input_shape[i]))
        elif examples and isinstance(examples[0], torch.Tensor):
            sample.append(int(examples[0].shape[i + 1]))
        else:
            raise ModelError(
                f"{name}: dimension {i + 1} of the program's input is dynamic and no example "
                "input was saved; give input_shape, one sample's shape (e.g. (1, 8, 8))."
            )
    return (shape[0], *sample)


def _reexport(module: nn.Module, example: torch.Tensor, name: str) -> torch.fx.GraphModule:
    """Export ``module`` with a dynamic batch; a clear error says why it cannot be."""
    try:
        with quiet_torch():
            return export_module(module, example)
    except ModelError as exc:
        cause = str(exc.__cause__ or exc)
        if "Constraints violated" in cause or "specialized" in cause:
            raise ModelError(
                f"{name}: the model only works for one batch size (torch.export found the "
                f"batch dimension fixed to a constant); {DYNAMIC_BATCH_HINT}."
            ) from None
        raise ModelError(f"{name}: {exc}. From the model's code, {EXPORT_HINT}.") from None


def plain(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``ExportedProgram.module()`` forbids ``eval()``/``train()`` by instance overrides.

    ``bundle_from_module`` calls ``model.eval()``; the exported graph has its mode baked in,
    so nn.Module's own methods (which only set ``training`` flags) are harmless.
    """
    for attr in ("eval", "train"):
        if attr in vars(module):
            delattr(module, attr)
    return module


def check_finite(tensors: Mapping[str, object], name: str) -> None:
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ModelError(
                    f"{name}: '{key}' has {bad} NaN or infinite value(s); the model cannot be "
                    "evaluated. Check the training run that produced it (a diverged loss?) "
                    "and save the weights again."
                )
