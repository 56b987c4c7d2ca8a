"""Hostile model files never run their payload: vetted archives, the guarded child process.

Every payload here, if it ran, would create a marker file; each test asserts the marker does
not exist afterwards and that the loader said why the file was refused (or, for payloads in
places that are simply never unpickled, that the model loads with its own numbers).
"""

from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hostile_files import peak_growth, stored, write_zip
from torch import nn

from explorer.bundle import export_program
from explorer.cli import main
from explorer.errors import ModelError
from explorer.load.guard import run_guarded
from explorer.load.model_file import load_model, load_model_bytes
from explorer.load.sandbox import landlock_abi
from explorer.load.vetting import allowed_target


class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def clean_pt2(mlp) -> bytes:
    program = export_program(mlp.model, torch.zeros(2, 1, 8, 8))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def rewrite(archive: bytes, change: dict[str, bytes | None]) -> bytes:
    """``archive`` with members replaced (bytes), removed (None) or added."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    target.writestr(info.filename, change.pop(info.filename))
                else:
                    change.pop(info.filename)
            else:
                target.writestr(info, source.read(info))
        for name, data in change.items():
            target.writestr(name, data)
    return out.getvalue()


def member_json(archive: bytes, name: str) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(archive)).read(name))


MODEL = "archive/models/model.json"
WEIGHTS_CONFIG = "archive/data/weights/model_weights_config.json"


def refused(data: bytes, marker: Path, *words: str) -> str:
    with pytest.raises(ModelError) as caught:
        load_model_bytes(data, "evil.pt2")
    message = str(caught.value)
    assert not marker.exists(), "the payload ran"
    for word in words:
        assert word in message, message
    assert len(message) < 1000 and "Traceback" not in message
    return message


def test_clean_program_loads_with_the_models_numbers(clean_pt2, mlp):
    bundle = load_model_bytes(clean_pt2, "clean.pt2")
    x = torch.randn(7, 1, 8, 8)
    assert torch.allclose(bundle.program.run(x)[0], mlp.model(x), atol=1e-6)
    assert bundle.layer_names == mlp.layer_names


def test_pickled_weight_is_refused_before_it_is_unpickled(clean_pt2, tmp_path):
    marker = tmp_path / "weights-ran"
    config = member_json(clean_pt2, WEIGHTS_CONFIG)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    evil = rewrite(clean_pt2, {
        WEIGHTS_CONFIG: json.dumps(config).encode(),
        f"archive/data/weights/{first['path_name']}": pickle.dumps(Payload(marker)),
    })
    refused(evil, marker, "pickle")


def test_opaque_and_custom_object_constants_are_refused(clean_pt2, tmp_path):
    marker = tmp_path / "constant-ran"
    for member in ("archive/data/constants/opaque_obj_0", "archive/data/constants/custom_obj_0"):
        evil = rewrite(clean_pt2, {member: pickle.dumps(Payload(marker))})
        refused(evil, marker, "refused")


def test_pickled_sample_inputs_are_never_unpickled(clean_pt2, tmp_path, mlp):
    marker = tmp_path / "samples-ran"
    evil = rewrite(clean_pt2, {
        "archive/data/sample_inputs/model.pt": pickle.dumps(Payload(marker)),
    })
    bundle = load_model_bytes(evil, "samples.pt2")  # the samples are ignored, not run
    assert not marker.exists()
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(bundle.program.run(x)[0], mlp.model(x), atol=1e-6)


def test_graph_calling_a_python_function_is_refused(clean_pt2, tmp_path):
    marker = tmp_path / "graph-ran"
    model = member_json(clean_pt2, MODEL)
    model["graph_module"]["graph"]["nodes"][0]["target"] = "torch.save"
    refused(rewrite(clean_pt2, {MODEL: json.dumps(model).encode()}), marker,
            "allow-list", "torch.save")


def test_symbolic_size_that_is_python_code_is_refused(clean_pt2, tmp_path):
    marker = tmp_path / "sympy-ran"
    text = json.dumps(member_json(clean_pt2, MODEL))
    code = f"__import__('os').system('touch {marker}')"
    evil_model = text.replace("Symbol('s77', positive=True, integer=True)", code)
    assert evil_model != text
    refused(rewrite(clean_pt2, {MODEL: evil_model.encode()}), marker, "symbolic size")


def test_guard_code_and_compiled_libraries_are_refused(clean_pt2, tmp_path):
    marker = tmp_path / "guard-ran"
    model = member_json(clean_pt2, MODEL)
    model["guards_code"] = [f"__import__('os').system('touch {marker}')"]
    refused(rewrite(clean_pt2, {MODEL: json.dumps(model).encode()}), marker, "guard code")
    aoti = rewrite(clean_pt2, {"archive/data/aotinductor/model/model.so": b"\x7fELF"})
    refused(aoti, marker, "aotinductor")


def test_weight_claiming_more_values_than_its_bytes_is_refused(clean_pt2, tmp_path):
    config = member_json(clean_pt2, WEIGHTS_CONFIG)
    meta = next(iter(config["config"].values()))["tensor_meta"]
    meta["sizes"] = [{"as_int": 10**8}, {"as_int": 64}]
    meta["strides"] = [{"as_int": 0}, {"as_int": 1}]
    evil = rewrite(clean_pt2, {WEIGHTS_CONFIG: json.dumps(config).encode()})
    refused(evil, tmp_path / "none", "claims 6,400,000,000 values")


def test_allow_list_keeps_aten_compute_and_refuses_side_channels():
    for target in ("torch.ops.aten.linear.default", "torch.ops.aten.conv2d.default",
                   "torch.ops.aten.gelu.default", "_operator.getitem"):
        assert allowed_target(target), target
    for target in ("torch.ops.aten._print.default", "torch.save", "builtins.exec",
                   "torch.ops.aten.set_.source_Storage", "torch.ops.myns.op.default",
                   "torch.ops.aten.split.str", None):
        assert not allowed_target(target), target


class WritesAFile(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return self.fc(x.flatten(1))


class Loops(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):
            x = x + 1.0
        return self.fc(x.flatten(1))


class Allocates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        huge = torch.ones(4000000000)  # 16 GB
        return self.fc(x.flatten(1)) + huge[:10]


def scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


@pytest.mark.skipif(landlock_abi() == 0, reason="Landlock is not available on this kernel")
def test_torchscript_that_writes_a_file_cannot(tmp_path):
    marker = tmp_path / "written-by-torchscript"
    path = scripted(WritesAFile(str(marker)), tmp_path / "writer.pt")
    with pytest.raises(ModelError):  # the write is denied; the model also cannot be traced
        load_model(path, input_shape=(1, 8, 8))
    assert not marker.exists()
    control = tmp_path / "written-unguarded"  # the same code, run here, does write
    torch.jit.load(str(scripted(WritesAFile(str(control)), tmp_path / "c.pt")))(
        torch.zeros(1, 1, 8, 8))
    assert control.exists()


def test_torchscript_that_loops_is_stopped_at_the_deadline(tmp_path):
    data = scripted(Loops(), tmp_path / "loop.pt").read_bytes()
    started = time.monotonic()
    with pytest.raises(ModelError, match="did not finish within 10 s"):
        run_guarded("torchscript", data, "loop.pt", (1, 8, 8), seconds=10)
    assert time.monotonic() - started < 30


def test_torchscript_that_allocates_too_much_is_stopped(tmp_path):
    data = scripted(Allocates(), tmp_path / "big.pt").read_bytes()
    with pytest.raises(ModelError) as caught:
        run_guarded("torchscript", data, "big.pt", (1, 8, 8), memory_bytes=3 << 30)
    assert "memory" in str(caught.value) or "could not be loaded" in str(caught.value)


def test_torchscript_archive_naming_python_globals_is_refused_unloaded(tmp_path, mlp):
    marker = tmp_path / "pickle-ran"
    path = scripted(mlp.model, tmp_path / "mlp.pt")
    data = path.read_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    evil = rewrite(data, {pkl: pickle.dumps(Payload(marker), protocol=2)})
    with pytest.raises(ModelError, match="names the Python object .* open"):
        load_model_bytes(evil, "evil.pt", input_shape=(1, 8, 8))
    assert not marker.exists()


def test_cli_refuses_a_hostile_program_in_one_line(clean_pt2, tmp_path, capsys):
    marker = tmp_path / "cli-ran"
    config = member_json(clean_pt2, WEIGHTS_CONFIG)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    evil = tmp_path / "evil.pt2"
    evil.write_bytes(rewrite(clean_pt2, {
        WEIGHTS_CONFIG: json.dumps(config).encode(),
        f"archive/data/weights/{first['path_name']}": pickle.dumps(Payload(marker)),
    }))
    assert main(["evaluate", "--model", str(evil), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pickle" in err and "Traceback" not in err
    assert not marker.exists()


def test_state_dict_claiming_a_huge_weight_is_refused_without_allocating(tmp_path, mlp):
    weights = {k: v.clone() for k, v in mlp.model.state_dict().items()}
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = torch.zeros(1).expand(10**5, 10**5)  # claims 40 GB, stores 4 bytes
    path = tmp_path / "huge.pt"
    torch.save(weights, path)
    with peak_growth() as growth, pytest.raises(ModelError, match="mis-shaped"):
        load_model(path)
    assert growth.mib < 200


def test_archive_listing_too_many_members_is_refused_before_it_is_parsed(tmp_path):
    path = write_zip(tmp_path / "many.pt2", [stored(b"", "archive/version")], listed=65_000)
    with peak_growth() as growth, pytest.raises(ModelError, match="65,000 members"):
        load_model(path)
    assert growth.mib < 200


def test_many_entries_viewing_one_payload_are_bounded(clean_pt2):
    config = member_json(clean_pt2, WEIGHTS_CONFIG)
    first = next(iter(config["config"].values()))
    config["config"].update({f"copy.{i}": first for i in range(6000)})  # 6,000 x 77 kB
    evil = rewrite(clean_pt2, {WEIGHTS_CONFIG: json.dumps(config).encode()})
    with peak_growth() as growth, pytest.raises(ModelError, match="add up to more than"):
        load_model_bytes(evil, "copies.pt2")
    assert growth.mib < 600
