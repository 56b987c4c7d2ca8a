"""A transformer uploaded as a .pt2 program with token-id sentences, in AppTest: it loads, and
the Prune page prunes its feed-forward neurons (found on the graph) at the engine's numbers.
"""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from pagetest import PAGES as PAGE_DIR
from pagetest import metric, open_url
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.load.data_file import load_data
from explorer.load.model_file import load_model_bytes
from explorer.plan import Plan
from explorer.ui import state
from explorer.ui.format import count, percent

pytest.importorskip("transformers")
from tiny_bert import tiny_bert  # noqa: E402

FFN = [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(2)]


@pytest.fixture
def upload(tmp_path):
    """(the Model page after uploading the tiny BERT and its sentences, the bundle, the
    data as the engine reads them)."""
    python, data = tiny_bert(sentences=40)
    program = torch.export.export(python.model, (data.x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    np.savez(tmp_path / "sentences.npz", x=data.x.numpy(), y=data.y.numpy())
    at = open_url("model", model="digits-cnn")
    at.file_uploader(key="upload_model").set_value(
        ("bert.pt2", buffer.getvalue(), "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value(
        ("sentences.npz", (tmp_path / "sentences.npz").read_bytes(),
         "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.session_state[state.MODEL_KEY].startswith("upload:")
    yield (at, load_model_bytes(buffer.getvalue(), "bert.pt2"),
           load_data(tmp_path / "sentences.npz"))
    del at
    gc.collect()  # the session's upload goes back to the server's ledger before the next test


def test_the_prune_page_prunes_an_uploaded_transformers_feed_forward_neurons(upload):
    uploaded, bundle, data = upload
    plan = Plan(granularity="neurons", criterion="l1", sparsity=dict.fromkeys(FFN, 0.5))
    at = AppTest.from_file(str(PAGE_DIR / "prune.py"), default_timeout=120)
    for key in (state.MODEL_KEY, state.UPLOADS_KEY):
        at.session_state[key] = uploaded.session_state[key]
    at.session_state[state.PLAN_KEY] = plan
    at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
    want = Evaluator(bundle, data).evaluate(plan)
    assert want.flops["effective"] < bundle.flops
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert metric(at, "FLOPs per sample") == count(want.flops["effective"])
    sliders = {s.key: s.value for s in at.slider}
    assert any(FFN[0] in key for key in sliders), sliders
