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
from explorer.load.data_file import load_data, peek_data, with_padding
from explorer.load.model_file import load_model_bytes
from explorer.plan import Plan
from explorer.ui import state
from explorer.ui.format import count, percent

pytest.importorskip("transformers")
from tiny_bert import tiny_bert  # noqa: E402

FFN = [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(2)]


@pytest.fixture(params=[None, 0], ids=["no-pad-id", "pad-id"])
def upload(tmp_path, request):
    """(the Model page after uploading the tiny BERT and its sentences, the bundle, the
    data as the engine reads them); the sentences name their padding token or not."""
    python, data = tiny_bert(sentences=40)
    program = torch.export.export(python.model, (data.x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    padding = {} if request.param is None else {"pad_id": request.param}
    np.savez(tmp_path / "sentences.npz", x=data.x.numpy(), y=data.y.numpy(), **padding)
    at = open_url("model", model="digits-cnn")
    at.file_uploader(key="upload_model").set_value(
        ("bert.pt2", buffer.getvalue(), "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value(
        ("sentences.npz", (tmp_path / "sentences.npz").read_bytes(),
         "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.session_state[state.MODEL_KEY].startswith("upload:")
    bundle = with_padding(load_model_bytes(buffer.getvalue(), "bert.pt2"),
                          peek_data(tmp_path / "sentences.npz"))
    yield at, bundle, load_data(tmp_path / "sentences.npz")
    del at
    gc.collect()  # the session's upload goes back to the server's ledger before the next test


def removed(masks) -> dict[str, list[int]]:
    return {layer: sorted(int(i) for i in ids) for layer, ids in masks.removed_neurons.items()}


def test_the_prune_page_prunes_an_uploaded_transformers_feed_forward_neurons(upload):
    uploaded, bundle, data = upload
    padded = bundle.card.get("pad_id") is not None
    captions = " ".join(c.value for c in uploaded.caption)
    assert ("Token ids padded with 0" in captions) is padded
    # by activation: which neurons go depends on whether the padding is counted
    plan = Plan(granularity="neurons", criterion="activation",
                sparsity=dict.fromkeys(FFN, 0.5))
    at = AppTest.from_file(str(PAGE_DIR / "prune.py"), default_timeout=120)
    for key in (state.MODEL_KEY, state.UPLOADS_KEY):
        at.session_state[key] = uploaded.session_state[key]
    at.session_state[state.PLAN_KEY] = plan
    at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
    want = Evaluator(bundle, data).evaluate(plan)
    evaluator = at.session_state[state.EVALUATORS_KEY][at.session_state[state.MODEL_KEY]]
    assert removed(evaluator.masks(plan)) == removed(Evaluator(bundle, data).masks(plan))
    assert want.flops["effective"] < bundle.flops
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert metric(at, "FLOPs per sample") == count(want.flops["effective"])
    sliders = {s.key: s.value for s in at.slider}
    assert any(FFN[0] in key for key in sliders), sliders
