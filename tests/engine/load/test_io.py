"""Loading user models: every format round-trips, every bad file gets one clear error.

Files are written in ``tmp_path`` from private copies of the demo models; the reference for
each loaded model is the original ``nn.Module``'s own logits on the digits validation set.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from explorer.data import digits_validation
from explorer.errors import ModelError
from explorer.load.demos import load_demo
from explorer.load.model_file import load_model, load_model_bytes, match_architecture
from explorer.load.zoo import DigitsCNN

# Saving TorchScript is part of the test set-up; its deprecation warnings are torch's.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:DeprecationWarning")

ARCHS = ["digits-mlp", "digits-cnn", "digits-resnet"]
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return digits_validation()


def own_copy(name: str) -> nn.Module:
    """A private copy of demo model ``name``: tests may change it freely."""
    return copy.deepcopy(load_demo(name).model).eval()


def logits(bundle, x: torch.Tensor) -> torch.Tensor:
    out, _ = bundle.program.run(x)
    return out


def reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def export_dynamic(model: nn.Module) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch")
    return torch.export.export(model, (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: batch},))


class FixedBatch(nn.Module):
    """The demo CNN with a hard-coded batch size of 2 in its reshape."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.classifier[1:](self.cnn.features(x).view(2, -1))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) + z.flatten(1))


class DataDependentLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        for _ in range(int(x.sum().item()) % 3):
            out = out + 1
        return out


# ----------------------------------------------------------------- models that load


@pytest.mark.parametrize("arch", ARCHS)
def test_torchscript_script_matches_original(tmp_path, digits, arch):
    model = own_copy(arch)
    path = tmp_path / "model.pt"
    torch.jit.script(model).save(str(path))
    bundle = load_model(path, input_shape=SHAPE)
    assert bundle.input_shape == SHAPE and bundle.num_classes == 10
    assert set(bundle.params()) == {k for k, _ in model.named_parameters()}
    assert bundle.layer_names == load_demo(arch).layer_names
    assert torch.allclose(logits(bundle, digits.x), reference(model, digits.x), atol=1e-5)


class WithUnusedPart(nn.Module):
    """digits-cnn beside a submodule its forward never calls (a leftover head, say)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.spare = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_torchscript_with_a_submodule_forward_never_calls_loads(tmp_path, digits):
    model = WithUnusedPart(own_copy("digits-cnn")).eval()
    path = tmp_path / "model.pt"
    torch.jit.script(model).save(str(path))
    bundle = load_model(path, input_shape=SHAPE)
    assert not any(name.startswith("spare.") for name in bundle.params())
    assert [n.removeprefix("model.") for n in bundle.layer_names] == load_demo(
        "digits-cnn").layer_names
    assert torch.allclose(logits(bundle, digits.x), reference(model, digits.x), atol=1e-5)


def test_torchscript_trace_matches_original(tmp_path, digits):
    model = own_copy("digits-cnn")
    path = tmp_path / "traced.pt"
    torch.jit.trace(model, torch.zeros(2, *SHAPE)).save(str(path))
    bundle = load_model(path, input_shape=SHAPE)
    assert bundle.layer_names == [
        "features.0",
        "features.2",
        "classifier.1",
        "classifier.3",
        "classifier.5",
    ]
    assert torch.allclose(logits(bundle, digits.x), reference(model, digits.x), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_program_matches_original(tmp_path, digits, arch):
    model = own_copy(arch)
    path = tmp_path / "model.pt2"
    torch.export.save(export_dynamic(model), path)
    bundle = load_model(path)
    assert bundle.input_shape == SHAPE
    assert set(bundle.params()) == {k for k, _ in model.named_parameters()}
    assert bundle.layer_names == load_demo(arch).layer_names
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))


def test_export_program_with_static_batch_that_is_batch_generic_loads(tmp_path, digits):
    model = own_copy("digits-cnn")
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(4, *SHAPE),)), path)
    bundle = load_model(path)
    assert bundle.input_shape == SHAPE
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))


@pytest.mark.parametrize("arch", ARCHS)
def test_safetensors_state_dict_autodetects_architecture(tmp_path, digits, arch):
    model = own_copy(arch)
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    bundle = load_model(path)
    assert bundle.card["architecture"] == arch
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_save_state_dict_loads(tmp_path, digits, suffix):
    model = own_copy("digits-resnet")
    path = tmp_path / f"weights{suffix}"
    torch.save(model.state_dict(), path)
    bundle = load_model(path, arch="digits-resnet")
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))
    assert load_model(path).card["architecture"] == "digits-resnet"


def test_training_checkpoint_wrapping_a_state_dict_loads(tmp_path, digits):
    model = own_copy("digits-mlp")
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, path)
    bundle = load_model(path)
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))


def test_match_architecture_picks_each_zoo_model():
    for arch in ARCHS:
        assert match_architecture(own_copy(arch).state_dict()) == arch


def test_model_bytes_upload(tmp_path, digits):
    model = own_copy("digits-cnn")
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    bundle = load_model_bytes(path.read_bytes(), "../../uploaded.safetensors")
    assert bundle.name == "uploaded.safetensors"
    assert torch.equal(logits(bundle, digits.x), reference(model, digits.x))


# ----------------------------------------------------------------- models that do not


def test_empty_model_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "nope.pt")


def test_truncated_zip_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(own_copy("digits-mlp").state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(own_copy("digits-mlp").state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match="truncated"):
        load_model(path)


def test_corrupt_safetensors_header(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(own_copy("digits-mlp").state_dict(), str(path))
    data = bytearray(path.read_bytes())
    data[9:30] = b"#" * 21
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(path)


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", bytes(range(256)) * 4])
def test_unknown_model_format(tmp_path, content):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a model file"):
        load_model(path)


def test_npz_is_not_a_model(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((2, 1, 8, 8)), y=np.zeros(2))
    with pytest.raises(ModelError, match="not a model file"):
        load_model(path)


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(own_copy("digits-cnn"), path)
    with pytest.raises(ModelError, match="pickled Python object") as info:
        load_model(path)
    assert "DigitsCNN" in str(info.value)
    assert "state_dict()" in str(info.value) and "torch.jit.script" in str(info.value)


def test_file_holding_no_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ModelError, match="expected a state_dict"):
        load_model(path)


def test_nan_weights_safetensors(tmp_path):
    state = own_copy("digits-cnn").state_dict()
    state["classifier.1.weight"] = state["classifier.1.weight"].clone()
    state["classifier.1.weight"][0, :3] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match=r"'classifier.1.weight' has 3 NaN or infinite"):
        load_model(path)


def test_inf_weights_torchscript(tmp_path):
    model = own_copy("digits-mlp")
    with torch.no_grad():
        model.fc2.bias[0] = float("inf")
    path = tmp_path / "inf.pt"
    torch.jit.script(model).save(str(path))
    with pytest.raises(ModelError, match=r"'fc2.bias' has 1 NaN or infinite"):
        load_model(path, input_shape=SHAPE)


def test_nan_weights_export_program(tmp_path):
    model = own_copy("digits-mlp")
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    path = tmp_path / "nan.pt2"
    torch.export.save(export_dynamic(model), path)
    with pytest.raises(ModelError, match="NaN"):
        load_model(path)


def test_autodetect_mismatch_names_closest_architecture(tmp_path):
    state = own_copy("digits-mlp").state_dict()
    del state["fc3.bias"]
    state["head.scale"] = torch.ones(1)
    path = tmp_path / "odd.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match="Closest is 'digits-mlp'") as info:
        load_model(path)
    assert "missing keys: fc3.bias" in str(info.value)
    assert "unexpected keys: head.scale" in str(info.value)


def test_misshaped_weights_are_described(tmp_path):
    path = tmp_path / "eleven.safetensors"
    save_file(DigitsCNN(classes=11).state_dict(), str(path))
    with pytest.raises(
        ModelError,
        match=r"classifier.5.weight \(file \(11, 128\), model "
        r"\(10, 128\)\)",
    ):
        load_model(path)


def test_wrong_arch_given(tmp_path):
    path = tmp_path / "cnn.safetensors"
    save_file(own_copy("digits-cnn").state_dict(), str(path))
    with pytest.raises(ModelError, match="do not fit the 'digits-mlp' architecture"):
        load_model(path, arch="digits-mlp")
    with pytest.raises(ModelError, match="Unknown demo model 'lenet'"):
        load_model(path, arch="lenet")


def test_torchscript_needs_input_shape(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.script(own_copy("digits-mlp")).save(str(path))
    with pytest.raises(ModelError, match="does not record the shape of its input"):
        load_model(path)


def test_torchscript_with_wrong_input_shape(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.script(own_copy("digits-cnn")).save(str(path))
    with pytest.raises(ModelError, match=r"cannot run on inputs of shape \(64,\)") as info:
        load_model(path, input_shape=(64,))
    assert "Expected 3D (unbatched) or 4D (batched) input to conv2d" in str(info.value)


def test_torchscript_with_fixed_batch_cannot_be_traced(tmp_path):
    path = tmp_path / "fixed.pt"
    torch.jit.trace(FixedBatch(own_copy("digits-cnn")), torch.zeros(2, *SHAPE)).save(str(path))
    with pytest.raises(ModelError, match="only works for one batch size") as info:
        load_model(path, input_shape=SHAPE)
    assert "dynamic_shapes" in str(info.value)


def test_torchscript_the_converter_cannot_handle(tmp_path):
    path = tmp_path / "loop.pt"
    torch.jit.script(DataDependentLoop()).save(str(path))
    with pytest.raises(ModelError, match="cannot be converted for analysis") as info:
        load_model(path, input_shape=SHAPE)
    assert "torch.export" in str(info.value)


def test_export_program_with_fixed_batch(tmp_path):
    path = tmp_path / "fixed.pt2"
    program = torch.export.export(FixedBatch(own_copy("digits-cnn")), (torch.zeros(2, *SHAPE),))
    torch.export.save(program, path)
    with pytest.raises(ModelError, match="fixed batch size of 2") as info:
        load_model(path)
    assert "dynamic_shapes" in str(info.value)


def test_export_program_with_two_inputs(tmp_path):
    path = tmp_path / "two.pt2"
    example = (torch.zeros(2, *SHAPE), torch.zeros(2, *SHAPE))
    torch.export.save(torch.export.export(TwoInputs(), example), path)
    with pytest.raises(ModelError, match="exactly one input tensor"):
        load_model(path)


def test_truncated_export_program(tmp_path):
    path = tmp_path / "model.pt2"
    torch.export.save(export_dynamic(own_copy("digits-mlp")), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(path)
