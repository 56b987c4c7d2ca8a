"""Untrusted model archives, vetted member by member before any torch loader sees them.

``torch.export.load`` unpickles sample inputs, pickled weights and constants, custom and
opaque objects with ``weights_only=False``, loads AOTInductor shared libraries, and parses
the symbolic-shape strings of the graph with ``sympy.sympify`` (an ``eval``). Each of those
runs code chosen by whoever wrote the file. So a ``.pt2`` archive is read here instead:

* every member's name must be one of a ``torch.export.save`` archive's (weights, constants,
  configs, the model's JSON, sample inputs); anything else (AOTInductor libraries, custom
  objects, pickled payloads, legacy formats) refuses the file;
* weights and constants are raw tensor bytes, checked against their declared dtype, shape
  and strides (no view reaching past its bytes, no stride-0 expansion);
* the graph is JSON, checked against an allow-list of operations (ATen operators without
  file or string side channels, and a few ``operator`` functions on sizes) and of symbolic
  expressions (names, numbers, arithmetic) *before* torch deserialises it; node metadata
  (stack traces, module paths) is dropped, since nothing here needs it;
* sample inputs are read with ``torch.load(weights_only=True)`` or not at all.

TorchScript archives hold a program (TorchScript code runs while loading), so for them
:func:`vet_torchscript` only checks the archive's members and the globals its pickles name;
the program itself runs only in the guarded child process (:mod:`explorer.load.guard`).
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import tokenize
import zipfile
from collections.abc import Iterator
from typing import Any

import torch

from explorer.errors import ModelError, name_some, short
from explorer.limits import MAX_MODEL_FILE_BYTES
from explorer.load.files import first_line, view_reach

MAX_JSON_BYTES = 64 << 20
MAX_TENSOR_BYTES = 2 * MAX_MODEL_FILE_BYTES  # weights or constants once copied out
ALLOWED_STRING_ARGS = frozenset({
    "approximate", "rounding_mode", "indexing", "padding", "reduce", "mode", "norm",
    "pad_mode", "side", "padding_side", "assert_msg",
})
DENIED_ATEN = frozenset({"_print", "set_", "from_file", "save", "_nested_tensor_from_mask"})
ALLOWED_PYTHON_TARGETS = frozenset({
    f"_operator.{name}" for name in (
        "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_",
    )
} | {f"torch.{name}" for name in ("sym_max", "sym_min", "sym_float", "sym_int", "sym_not")})
INPUT_KINDS = frozenset({"user_input", "parameter", "buffer", "tensor_constant"})
OUTPUT_KINDS = frozenset({"user_output"})
SYM_OPERATORS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**"})
SYM_FUNCTIONS = frozenset({
    "Max", "Min", "FloorDiv", "CeilDiv", "Mod", "PythonMod", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "TruncToInt", "FloorToInt", "CeilToInt", "ToFloat",
    "IntTrueDiv", "FloatTrueDiv", "PowByNatural", "FloatPow", "Integer", "True", "False",
    "oo", "Piecewise", "ModularIndexing", "CleanDiv", "Symbol", "Mul", "Add", "Pow",
    "Rational", "positive", "integer", "nonnegative", "real", "finite", "infinite",
})
SYMBOL = re.compile(r"[suqdf]\d+|c\d+")
TORCHSCRIPT_GLOBALS = re.compile(
    r"(__torch__(\.[\w]+)*|torch\._utils|torch|collections|torch\.jit\._pickle)"
    r" (_rebuild_tensor_v2|_rebuild_parameter|_rebuild_qtensor|OrderedDict|\w+Storage|"
    r"build_\w+|restore_type_tag|[\w]+)"
)
TORCHSCRIPT_MEMBERS = re.compile(
    r"data\.pkl|constants\.pkl|traced_inputs\.pkl|traced_inputs/\d+|version|byteorder|"
    r"code/.+|data/\d+|constants/\d+|extra/.+|\.data/.+"
)
TENSOR_DTYPES = {  # torch._export.serde.schema.ScalarType values
    1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64,
    6: torch.float16, 7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16,
}
STRIDED = 7  # schema.Layout.Strided
WEIGHTS = "data/weights/"
CONSTANTS = "data/constants/"
REFUSED_HINT = (
    "Save the model again with torch.export.save(torch.export.export(model, (x,)), path) "
    "from plain PyTorch modules (no custom operators, custom classes or AOTInductor)"
)


def vet_pt2(data: bytes, name: str) -> torch.export.ExportedProgram:
    """The ``torch.export`` program in ``data`` (a ``.pt2`` archive's bytes), read without
    running anything the file chose; a :class:`ModelError` says what was refused."""
    model, state_dict, constants, samples = _vetted_parts(data, name)
    from torch._export.serde.schema import ExportedProgram as Schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    try:
        serialized = _dict_to_dataclass(Schema, model)
        return ExportedProgramDeserializer(None).deserialize(
            serialized, state_dict, constants, samples
        )
    except ModelError:
        raise
    except Exception as exc:  # the deserializer raises many internal types
        raise ModelError(
            f"{name}: the torch.export program cannot be read ({_gist(exc)}); it must come "
            f"from torch {torch.__version__.split('+')[0]}'s torch.export.save."
        ) from None


def check_pt2(data: bytes, name: str) -> None:
    """Raise a :class:`ModelError` unless ``data`` passes :func:`vet_pt2`'s checks (the
    program is not built)."""
    _vetted_parts(data, name)


def _vetted_parts(data: bytes, name: str) -> tuple[dict, dict, dict, tuple]:
    """The program's JSON (checked), weights, constants and sample inputs."""
    archive = _open_zip(data, name)
    root, _ = _members(archive, name)
    model = _read_json(archive, f"{root}models/model.json", name)
    _vet_program(model, name)
    state_dict = _tensors(archive, root, WEIGHTS, "model_weights_config.json", name)
    constants = _tensors(archive, root, CONSTANTS, "model_constants_config.json", name)
    samples = _sample_inputs(archive, f"{root}data/sample_inputs/model.pt")
    return model, state_dict, constants, samples


def vet_torchscript(data: bytes, name: str) -> None:
    """Refuse a TorchScript archive with unexpected members or pickles naming other globals
    than TorchScript's own (its code is then run only in the guarded child process)."""
    archive = _open_zip(data, name)
    for info in archive.infolist():
        parts = info.filename.split("/", 1)
        rest = parts[1] if len(parts) == 2 else ""
        if not TORCHSCRIPT_MEMBERS.fullmatch(rest):
            raise ModelError(
                f"{name}: unexpected member {short(info.filename)} in a TorchScript "
                "archive; the file is refused."
            )
        if rest.endswith(".pkl"):
            for found in _pickle_globals(archive.read(info), name):
                if not TORCHSCRIPT_GLOBALS.fullmatch(found):
                    raise ModelError(
                        f"{name}: its {rest} names the Python object {short(found)}, "
                        "which TorchScript files do not; the file is refused."
                    )


def _open_zip(data: bytes, name: str) -> zipfile.ZipFile:
    if len(data) > MAX_MODEL_FILE_BYTES:
        raise ModelError(
            f"{name}: {len(data):,} bytes is over the limit of {MAX_MODEL_FILE_BYTES:,} "
            "bytes for a model file."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"{name}: the file is corrupt or truncated ({_gist(exc)}).") from None
    declared = sum(info.file_size for info in infos)
    if declared > 4 * MAX_MODEL_FILE_BYTES:
        raise ModelError(
            f"{name}: the archive says it unpacks to {declared:,} bytes, more than a model "
            f"file may ({4 * MAX_MODEL_FILE_BYTES:,}); the file is refused."
        )
    return archive


def _members(archive: zipfile.ZipFile, name: str) -> tuple[str, set[str]]:
    """The archive's root folder and member names below it; refuses unknown members."""
    names = archive.namelist()
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
        raise ModelError(f"{name}: not a torch.export archive (members outside one folder).")
    root = f"{roots.pop()}/"
    rest = {n[len(root):] for n in names}
    allowed = re.compile(
        r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
        r"models/model\.json|data/sample_inputs/model\.pt|extra/[^/]+|"
        r"data/weights/(model_weights_config\.json|weight_\d+)|"
        r"data/constants/(model_constants_config\.json|tensor_\d+)"
    )
    unknown = sorted(n for n in rest if not allowed.fullmatch(n))
    if unknown:
        raise ModelError(
            f"{name}: the archive holds member(s) that are refused ({name_some(unknown)}): "
            f"compiled libraries, custom objects and pickled payloads can run code. "
            f"{REFUSED_HINT}."
        )
    if "models/model.json" not in rest:
        raise ModelError(f"{name}: the archive has no models/model.json; {REFUSED_HINT}.")
    return root, rest


def _read_json(archive: zipfile.ZipFile, member: str, name: str) -> Any:
    info = archive.getinfo(member)
    if info.file_size > MAX_JSON_BYTES:
        raise ModelError(f"{name}: {member} is larger than {MAX_JSON_BYTES:,} bytes.")
    try:
        return json.loads(archive.read(info)[: MAX_JSON_BYTES + 1])
    except (ValueError, RecursionError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{name}: {member} is not valid JSON ({_gist(exc)}).") from None


def _vet_program(model: Any, name: str) -> None:
    """Check the serialized program before torch deserialises it; drop node metadata."""
    module = model.get("graph_module") if isinstance(model, dict) else None
    graph = module.get("graph") if isinstance(module, dict) else None
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ModelError(f"{name}: models/model.json is not a torch.export program.")
    if model.get("guards_code"):
        raise ModelError(f"{name}: the program carries guard code, which is refused "
                         "(guards are Python source run on every call).")
    if graph.get("custom_obj_values"):
        raise ModelError(f"{name}: the program uses custom objects (torchbind), which are "
                         f"refused; {REFUSED_HINT}.")
    refused = sorted({str(node.get("target")) for node in graph["nodes"]
                      if not isinstance(node, dict) or not allowed_target(node.get("target"))})
    if refused:
        raise ModelError(
            f"{name}: the graph calls operation(s) outside the allow-list ({name_some(refused)}). "
            "Only standard ATen tensor operations are run; " + REFUSED_HINT + "."
        )
    for node in graph["nodes"]:
        node["metadata"] = {}
    _vet_signature(module.get("signature"), name)
    for key in (model.get("range_constraints") or {}):
        _vet_symbolic(key, name)
    for text in _values_of(model, "expr_str"):
        _vet_symbolic(text, name)


def _vet_signature(signature: Any, name: str) -> None:
    if not isinstance(signature, dict):
        raise ModelError(f"{name}: the program has no signature.")
    for field, kinds in (("input_specs", INPUT_KINDS), ("output_specs", OUTPUT_KINDS)):
        for spec in signature.get(field) or []:
            kind = next(iter(spec), None) if isinstance(spec, dict) else None
            if kind not in kinds:
                raise ModelError(
                    f"{name}: the program has a {field[:-6]} of kind {short(str(kind))} "
                    "(only tensors, parameters, buffers and constants are read, and the "
                    "model may not write its buffers: export it in eval mode)."
                )


def allowed_target(target: object) -> bool:
    """Whether a serialized node target may run: an ATen operator without string side
    channels (files, printing), or a size arithmetic function."""
    if not isinstance(target, str):
        return False
    if target in ALLOWED_PYTHON_TARGETS:
        return True
    match = re.fullmatch(r"torch\.ops\.aten\.(\w+)\.(\w+)", target)
    if not match or match.group(1) in DENIED_ATEN:
        return False
    try:
        schema = getattr(getattr(torch.ops.aten, match.group(1)), match.group(2))._schema
    except (AttributeError, RuntimeError):
        return False
    return all(
        "str" not in str(arg.type) or arg.name in ALLOWED_STRING_ARGS
        for arg in schema.arguments
    ) and not any("Storage" in str(arg.type) for arg in schema.arguments)


def _vet_symbolic(text: object, name: str) -> None:
    """A symbolic size expression, as torch writes it (``Symbol('s77', positive=True,
    integer=True)``, ``2*s0 + 1``, ``Max(1, s3)``): only known sympy names, symbol names,
    numbers and arithmetic. torch parses it with ``sympy.sympify``, which evaluates Python."""
    if not (isinstance(text, str) and len(text) < 4096 and _plain_arithmetic(text)):
        raise ModelError(
            f"{name}: the program has a symbolic size {short(str(text))} that is not a "
            "plain arithmetic expression; the file is refused."
        )


def _plain_arithmetic(text: str) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for token in tokens:
        if token.type == tokenize.NAME:
            ok = token.string in SYM_FUNCTIONS or SYMBOL.fullmatch(token.string)
        elif token.type == tokenize.STRING:
            ok = re.fullmatch(r"'[a-z]\d+'|\"[a-z]\d+\"", token.string)
        elif token.type == tokenize.OP:
            ok = token.string in SYM_OPERATORS
        else:
            ok = token.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.ENDMARKER)
        if not ok:
            return False
    return True


def _values_of(tree: Any, key: str) -> Iterator[Any]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == key:
                    yield v
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _tensors(
    archive: zipfile.ZipFile, root: str, folder: str, config_name: str, name: str
) -> dict[str, torch.Tensor]:
    """Tensors from raw bytes, as the archive's config describes them (no pickled entry)."""
    member = f"{root}{folder}{config_name}"
    if member not in archive.namelist():
        return {}
    config = _read_json(archive, member, name)
    present = set(archive.namelist())
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ModelError(f"{name}: {folder}{config_name} is malformed.")
    storages: dict[str, torch.Tensor] = {}
    out, total = {}, 0
    for fqn, entry in entries.items():
        entry = entry if isinstance(entry, dict) else {}
        meta, path = entry.get("tensor_meta"), entry.get("path_name")
        if entry.get("use_pickle") is not False or not isinstance(meta, dict):
            raise ModelError(
                f"{name}: {short(str(fqn))} is stored as a pickle, which can run code "
                f"when loaded; the file is refused. {REFUSED_HINT}."
            )
        if not isinstance(path, str) or f"{root}{folder}{path}" not in present:
            raise ModelError(f"{name}: {short(str(fqn))} points to a missing member.")
        dtype = TENSOR_DTYPES.get(meta.get("dtype"))
        if dtype is None or meta.get("layout") != STRIDED:
            raise ModelError(
                f"{name}: {short(str(fqn))} has a dtype or layout that is not read "
                "(dense tensors of standard number types only)."
            )
        if path not in storages:
            raw = archive.read(f"{root}{folder}{path}")
            if len(raw) % torch.empty((), dtype=dtype).element_size():
                raise ModelError(f"{name}: {short(str(fqn))} has a truncated payload.")
            storages[path] = (torch.frombuffer(bytearray(raw), dtype=dtype) if raw
                              else torch.empty(0, dtype=dtype))
        # Many entries may view one payload, and each is copied: the copies are bounded.
        out[fqn] = _view(storages[path], meta, f"{name}: {short(str(fqn))}",
                         MAX_TENSOR_BYTES - total)
        total += out[fqn].numel() * out[fqn].element_size()
        if entry.get("is_param"):
            out[fqn] = torch.nn.Parameter(out[fqn], requires_grad=bool(meta.get("requires_grad")))
    return out


def _view(storage: torch.Tensor, meta: dict, what: str, budget: int) -> torch.Tensor:
    """A copy of the tensor ``meta`` describes on ``storage``: within its bytes, no element
    twice, at most ``budget`` bytes."""
    try:
        sizes = [int(s["as_int"]) for s in meta["sizes"]]
        strides = [int(s["as_int"]) for s in meta["strides"]]
        offset = int(meta["storage_offset"]["as_int"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{what} has a malformed or symbolic shape.") from None
    if len(sizes) != len(strides) or min([offset, *sizes, *strides]) < 0:
        raise ModelError(f"{what} has a malformed shape.")
    numel = 1
    for s in sizes:
        numel *= s
    if numel and (view_reach(sizes, strides, offset) > storage.numel()
                  or numel > storage.numel() - offset):
        raise ModelError(
            f"{what} claims {numel:,} values but its data holds {storage.numel():,}; "
            "the file is refused."
        )
    if numel * storage.element_size() > budget:
        raise ModelError(
            f"{what}: the archive's tensors add up to more than {MAX_TENSOR_BYTES:,} bytes "
            "once read; the file is refused."
        )
    if numel == 0:
        return torch.zeros(sizes, dtype=storage.dtype)
    return torch.as_strided(storage, sizes, strides, offset).clone()


def _sample_inputs(archive: zipfile.ZipFile, member: str) -> tuple:
    """Sample inputs, read as tensors only (``weights_only``); none when that fails."""
    if member not in archive.namelist():
        return ((), {})
    try:
        found = torch.load(io.BytesIO(archive.read(member)), weights_only=True)
    except Exception:  # anything but plain tensors: ignore them, never unpickle further
        return ((), {})
    return found if isinstance(found, tuple) else ((), {})


def _pickle_globals(data: bytes, name: str) -> Iterator[str]:
    """'module name' of every GLOBAL / STACK_GLOBAL a pickle names (parsed, never run)."""
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                yield str(arg).replace("\n", " ")
            elif opcode.name == "STACK_GLOBAL":
                yield " ".join(strings[-2:])
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception as exc:  # a damaged pickle
        raise ModelError(f"{name}: a pickle in the archive is damaged ({_gist(exc)}).") from None


def _gist(exc: BaseException) -> str:
    return first_line(exc)[:200]
