"""An upload with images and no labels (x alone) in AppTest: the Model page says why there is
no accuracy, the Prune page judges plans by their fidelity to the dense model (the engine's
numbers), and pages that measure accuracy say they need labels instead of failing."""

from __future__ import annotations

import numpy as np
import pytest
from pagetest import PAGES as PAGE_DIR
from pagetest import metric, open_url
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.load.data_file import load_data
from explorer.plan import Plan
from explorer.ui import state
from explorer.ui.format import percent

PAGES = ("prune", "sensitivity", "compare", "tradeoffs", "broke", "finetune")


@pytest.fixture
def uploaded(cnn, digits, tmp_path) -> AppTest:
    """The Model page after uploading digits-cnn's weights with the digits images alone."""
    np.savez(tmp_path / "images.npz", x=digits.x.numpy())
    weights = save({k: v.contiguous() for k, v in cnn.model.state_dict().items()})
    at = open_url("model", model="digits-cnn")
    at.file_uploader(key="upload_model").set_value(
        ("cnn.safetensors", weights, "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value(
        ("images.npz", (tmp_path / "images.npz").read_bytes(), "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    return at


def opened(page: str, uploaded: AppTest, plan: Plan) -> AppTest:
    """``page`` run in the upload's session (as the browser would open it there)."""
    at = AppTest.from_file(str(PAGE_DIR / f"{page}.py"), default_timeout=120)
    for key in (state.MODEL_KEY, state.UPLOADS_KEY):
        at.session_state[key] = uploaded.session_state[key]
    at.session_state[state.PLAN_KEY] = plan
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_model_page_says_there_are_no_labels(uploaded):
    assert uploaded.session_state[state.MODEL_KEY].startswith("upload:")
    assert metric(uploaded, "Baseline accuracy") == "n/a"
    assert state.NO_LABELS_NOTE in [i.value for i in uploaded.info]


def test_the_prune_page_shows_fidelity_in_place_of_accuracy(uploaded, cnn, tmp_path):
    plan = Plan(scope="global", amount=0.85)
    at = opened("prune", uploaded, plan)
    data = load_data(tmp_path / "images.npz")
    want = Evaluator(cnn, data).evaluate(plan).fidelity
    labels = [m.label for m in at.metric]
    assert "Accuracy" not in labels and "Loss" not in labels
    assert labels[0] == "Agreement with dense"  # the first card, where accuracy would be
    assert metric(at, "Agreement with dense") == percent(want["agreement"]) != percent(1.0)
    assert metric(at, "Cosine to dense") == f"{want['cosine']:.4f}"
    assert any(state.NO_LABELS_NOTE in c.value for c in at.caption)


@pytest.mark.parametrize("page", PAGES[1:])
def test_pages_that_measure_accuracy_say_they_need_labels(uploaded, page):
    at = opened(page, uploaded, Plan(sparsity={"features.2": 0.5}))
    assert any(i.value.startswith(state.NO_LABELS_NOTE) for i in at.info), page
