"""The Export page in AppTest: one download per file, and the files load back to the metrics."""

from __future__ import annotations

import json

import pytest
from pagetest import metric
from safetensors.torch import load
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.load.model_file import load_model_bytes
from explorer.plan import Plan
from explorer.ui.format import count, percent

CNN_WEIGHTS = Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9})
CNN_NEURONS = Plan(granularity="neurons", criterion="l1",
                   sparsity={"features.2": 0.5, "classifier.1": 0.25})
ZIP = "Download all (zip)"


@pytest.fixture
def downloads(monkeypatch):
    """``downloads(at)``: what each download button of the last run serves, as
    ``{label: (file name, bytes)}`` (None for data made only on click, like the zip)."""
    stores: list[MemoryMediaFileStorage] = []

    class Recorded(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr("streamlit.testing.v1.app_test.MemoryMediaFileStorage", Recorded)

    def read(at: AppTest) -> dict[str, tuple[str, bytes] | None]:
        out = {}
        for button in at.main.get("download_button"):  # not the sidebar's plan button
            url = button.proto.url
            if not url:
                out[button.label] = None
                continue
            served = stores[-1].get_file(url.rsplit("/", 1)[-1])
            out[button.label] = (served.filename, served.content)
        return out

    return read


def reloaded(data: bytes, name: str, digits):
    """An export read back as a user would, evaluated with no plan."""
    return Evaluator(load_model_bytes(data, name), digits).evaluate(Plan())


def round_trip(at: AppTest) -> AppTest:
    """Press the round-trip button, let its background job end, draw the result."""
    at.button(key="ex_round_trip").click().run()
    for job in at.session_state["jobs"].values():
        assert job.wait(120), "the round trip did not end"
    return at.run()


def test_weight_plan_offers_its_files_and_they_load_back(open_page, downloads, cnn, digits):
    at = open_page("export", "digits-cnn", CNN_WEIGHTS)
    assert not at.exception and not at.error
    shown = Evaluator(cnn, digits).evaluate(CNN_WEIGHTS)
    assert metric(at, "Accuracy") == percent(shown.accuracy)
    assert metric(at, "FLOPs per sample") == count(shown.flops["effective"])
    assert metric(at, "Compression") == f"{shown.compression_ratio:.2f}x"

    files = downloads(at)
    assert list(files) == ["plan.json", "pruned.safetensors", "apply_plan.py",
                           "pruning_ratio_dict.json", ZIP]
    assert all(files[label][0] == label for label in files if label != ZIP)
    assert Plan.from_json(files["plan.json"][1]) == CNN_WEIGHTS
    back = reloaded(files["pruned.safetensors"][1], "pruned.safetensors", digits)
    assert back.correct == shown.correct and back.nonzero_params == shown.nonzero_params
    ratios = json.loads(files["pruning_ratio_dict.json"][1])["pruning_ratio_dict"]
    assert ratios.keys() == CNN_WEIGHTS.sparsity.keys()
    # the sizes shown are the files' real sizes
    assert any(f"{len(files['pruned.safetensors'][1]):,} bytes" in m.value for m in at.markdown)
    # why there is no shrunk model, nor masks file, for a magnitude weight plan
    notes = " ".join(c.value for c in at.caption)
    assert "shrunk.pt2" in notes and "weight plan" in notes and "masks.safetensors" in notes
    assert [c.language for c in at.code] == ["json", "python"]
    assert "l1_unstructured" in at.code[1].value
    assert at.code[1].value.strip() == files["apply_plan.py"][1].decode().strip()


def test_neuron_plan_offers_the_shrunk_model_and_the_round_trip_agrees(
        open_page, downloads, cnn, digits):
    at = open_page("export", "digits-cnn", CNN_NEURONS)
    assert not at.exception and not at.error
    files = downloads(at)
    assert list(files) == ["plan.json", "pruned.safetensors", "shrunk.pt2", "masks.safetensors",
                           "apply_plan.py", "pruning_ratio_dict.json", ZIP]
    assert files[ZIP] is None  # zipped on click (the browser test opens it)
    shown = Evaluator(cnn, digits).evaluate(CNN_NEURONS)
    small = load_model_bytes(files["shrunk.pt2"][1], "shrunk.pt2")
    assert small.param_count < cnn.param_count
    assert Evaluator(small, digits).evaluate(Plan()).correct == shown.correct

    at = round_trip(at)
    assert not at.exception and not at.error
    table = at.dataframe[0].value.set_index("figure")
    assert list(table.columns) == ["shown for the plan", "pruned.safetensors reloaded",
                                   "shrunk.pt2 reloaded", "equal"]
    assert table.loc["Accuracy"].tolist()[:3] == [percent(shown.accuracy)] * 3
    assert table.loc["Nonzero parameters"].tolist()[:3] == [count(shown.nonzero_params)] * 3
    assert table.loc["FLOPs per sample"].tolist()[:3] == [count(shown.flops["effective"])] * 3
    assert (table["equal"] == "yes").all()
    assert at.success and "load back" in at.success[0].value


def test_exports_are_made_once_per_plan(open_page):
    at = open_page("export", "digits-mlp", Plan(sparsity={"fc1": 0.5}))
    first = at.session_state["ex_files"]
    made = next(iter(first.values()))
    at.run()
    assert next(iter(at.session_state["ex_files"].values())) is made  # not remade
    at.session_state["plan"] = Plan(sparsity={"fc1": 0.7})
    at.run()
    assert len(at.session_state["ex_files"]) == 2


def test_dense_plan_says_nothing_is_pruned(open_page, downloads, mlp):
    at = open_page("export", "digits-mlp", Plan())
    assert any("removes nothing" in i.value for i in at.info)
    files = downloads(at)
    assert "pruned.safetensors" in files
    state = load_model_bytes(files["pruned.safetensors"][1], "pruned.safetensors").model
    assert all((state.state_dict()[k] == v).all() for k, v in mlp.model.state_dict().items())


def test_architecture_only_model_exports_without_data(open_page, downloads):
    plan = Plan(sparsity={"layer1.0.conv1": 0.5, "fc": 0.8})
    at = open_page("export", "resnet18-cifar", plan)
    assert not at.exception and not at.error
    assert metric(at, "Accuracy") == "n/a"
    files = downloads(at)
    assert {"plan.json", "pruned.safetensors", "apply_plan.py"} <= files.keys()
    weight = load(files["pruned.safetensors"][1])["fc.weight"]
    assert (weight == 0).sum().item() == round(0.8 * weight.numel())

    # a data-driven criterion cannot be applied without data: said once, plan.json offered
    at.session_state["plan"] = Plan(granularity="neurons", criterion="activation",
                                    sparsity={"layer1.0.conv1": 0.5})
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and "validation data" in errors[0]
    assert "pruned.safetensors" in errors[1] and "same reason" in errors[1]
    assert list(downloads(at)) == ["plan.json", ZIP]
