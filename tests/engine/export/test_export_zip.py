"""The app's exports in memory: the same files as export_all, one failure costs only its file."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from safetensors.torch import load

from explorer.errors import ExplorerError
from explorer.evaluator import Evaluator
from explorer.export import outputs as export
from explorer.export.outputs import export_all, export_files, reload_metrics, zip_files
from explorer.load.demos import load_demo
from explorer.load.model_file import load_model_bytes
from explorer.plan import Plan

CNN_WEIGHTS = Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9})
CNN_NEURONS = Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.5})


@pytest.mark.parametrize("plan", [CNN_WEIGHTS, CNN_NEURONS])
def test_export_files_are_the_files_export_all_writes(cnn, digits, tmp_path, plan):
    made = export_files(cnn, plan, Evaluator(cnn, digits))
    written = export_all(cnn, plan, tmp_path)
    assert made.errors == {}
    assert list(made.files) == list(written)
    for name, path in written.items():
        if name != "shrunk.pt2":  # a zip archive naming its folder after the file
            assert made.files[name] == path.read_bytes(), name
    if "shrunk.pt2" in written:
        ours = load_model_bytes(made.files["shrunk.pt2"], "shrunk.pt2")
        theirs = load_model_bytes(written["shrunk.pt2"].read_bytes(), "shrunk.pt2")
        x = digits.x[:50]
        assert torch.equal(ours.model(x), theirs.model(x))


def test_zip_holds_every_file_unchanged(cnn):
    files = export_files(cnn, CNN_NEURONS).files
    with zipfile.ZipFile(io.BytesIO(zip_files(files))) as archive:
        assert archive.namelist() == list(files)
        assert all(archive.read(name) == data for name, data in files.items())
        assert archive.testzip() is None


@pytest.mark.parametrize(("name", "plan"), [
    ("digits-cnn", CNN_WEIGHTS), ("digits-cnn", CNN_NEURONS),
    ("digits-mlp", Plan(granularity="neurons", criterion="redundancy", merge=True,
                        sparsity={"fc1": 0.3, "fc2": 0.3})),
])
def test_reloaded_files_give_the_plans_metrics(request, digits, name, plan):
    bundle = request.getfixturevalue({"digits-cnn": "cnn", "digits-mlp": "mlp"}[name])
    evaluator = Evaluator(bundle, digits)
    shown = evaluator.evaluate(plan)
    reloaded = reload_metrics(export_files(bundle, plan, evaluator).files, digits)
    assert set(reloaded) == ({"pruned.safetensors", "shrunk.pt2"}
                             if plan.granularity == "neurons" else {"pruned.safetensors"})
    for file, got in reloaded.items():
        assert got.correct == shown.correct and got.accuracy == shown.accuracy, file
        assert got.loss == pytest.approx(shown.loss, rel=1e-4, abs=1e-5), file
        assert got.nonzero_params == shown.nonzero_params, file
        assert got.flops["effective"] == shown.flops["effective"], file
    if "shrunk.pt2" in reloaded:  # the smaller model really is smaller
        assert reloaded["shrunk.pt2"].params * 4 == shown.size_bytes["structured"]
        assert reloaded["shrunk.pt2"].flops["dense"] == shown.flops["effective"]


def test_pruned_weights_are_zero_where_the_masks_remove(cnn):
    files = export_files(cnn, CNN_WEIGHTS).files
    state = load(files["pruned.safetensors"])
    assert "masks.safetensors" not in files  # torch's own L1 selection reproduces the plan
    for layer, fraction in CNN_WEIGHTS.sparsity.items():
        weight = state[f"{layer}.weight"]
        original = cnn.model.get_parameter(f"{layer}.weight")
        assert (weight == 0).sum().item() == round(fraction * weight.numel())
        kept = weight != 0
        assert torch.equal(weight[kept], original.detach()[kept])
        # magnitude: every removed weight is no larger than every kept one
        assert original.detach().abs()[~kept].max() <= original.detach().abs()[kept].min()


def test_data_driven_criterion_without_data_leaves_the_plan_file():
    bundle = load_demo("resnet18-cifar")
    plan = Plan(granularity="neurons", criterion="activation",
                sparsity={"layer1.0.conv1": 0.5})
    made = export_files(bundle, plan)
    assert list(made.files) == ["plan.json"]
    assert json.loads(made.files["plan.json"]) == plan.to_dict()
    assert set(made.errors) == {"pruned.safetensors", "shrunk.pt2", "masks.safetensors",
                                "apply_plan.py", "pruning_ratio_dict.json"}
    assert all("validation data" in message for message in made.errors.values())


def test_an_exported_graph_upload_is_shrunk_on_its_graph(cnn, digits):
    """A model known only as an exported graph is shrunk on a copy of its graph: every file
    is made, and the shrunk program gives the plan's metrics with fewer parameters."""
    program = export_files(cnn, CNN_NEURONS).files["shrunk.pt2"]
    graph = load_model_bytes(program, "small.pt2")
    plan = Plan(granularity="neurons", criterion="l1", sparsity={graph.layer_names[0]: 0.5})
    evaluator = Evaluator(graph, digits)
    made = export_files(graph, plan, evaluator)
    assert made.errors == {}
    assert {"plan.json", "pruned.safetensors", "shrunk.pt2", "masks.safetensors",
            "apply_plan.py", "pruning_ratio_dict.json"} == set(made.files)
    shrunk = {"shrunk.pt2": made.files["shrunk.pt2"]}  # the weights need the definition
    shown, got = evaluator.evaluate(plan), reload_metrics(shrunk, digits)["shrunk.pt2"]
    assert got.correct == shown.correct and got.params * 4 == shown.size_bytes["structured"]
    assert got.flops["dense"] == shown.flops["effective"]


def test_a_torch_export_failure_is_one_line(cnn, monkeypatch):
    def fail(bundle, masks, buffers=None):
        raise RuntimeError("Dynamic control flow is not supported\n  File ...\n  more")

    monkeypatch.setattr(export, "shrunk_program", fail)
    made = export_files(cnn, CNN_NEURONS)
    assert made.errors["shrunk.pt2"] == ("torch.export could not export the shrunk model "
                                         "(RuntimeError: Dynamic control flow is not supported).")
    assert "pruned.safetensors" in made.files and "apply_plan.py" in made.files


def test_export_all_writes_the_rest_and_names_what_failed(cnn, monkeypatch, tmp_path):
    def fail(bundle, masks, buffers=None):
        raise RuntimeError("Dynamic control flow is not supported\n  File ...")

    monkeypatch.setattr(export, "shrunk_program", fail)
    with pytest.raises(ExplorerError, match=r"shrunk\.pt2: torch\.export could not export"):
        export.export_all(cnn, CNN_NEURONS, tmp_path / "out")
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == set(export_files(cnn, CNN_NEURONS).files)  # every other file
