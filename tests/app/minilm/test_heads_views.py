"""The attention-head views on minilm in AppTest: importance on the Model page, similarity
and one head's pattern on the Similarity page, one slider per attention on the Prune page.

References: each head's L1 norm summed by hand from the weights' slices, transformers' own
attention probabilities (``output_attentions=True``) and tokens
(``convert_ids_to_tokens``), the engine's head similarity, and an Evaluator of the plan.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minilm_app import PAGES, checked, needs_extra, open_page
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.look.heads import head_similarity
from explorer.plan import Plan
from explorer.ui.format import percent
from explorer.ui.state import SLIDER_PREFIX

pytestmark = needs_extra
HEADS, DIM, LAYERS = 12, 32, 6


def l1_by_hand(bundle, layer: int) -> np.ndarray:
    params = {k: v.detach().double() for k, v in bundle.params().items()}
    prefix = f"bert.encoder.layer.{layer}.attention."
    total = np.zeros(HEADS)
    for h in range(HEADS):
        rows = slice(h * DIM, (h + 1) * DIM)
        for part in ("self.query", "self.key", "self.value"):
            total[h] += float(params[prefix + part + ".weight"][rows].abs().sum())
        total[h] += float(params[prefix + "output.dense.weight"][:, rows].abs().sum())
    return total


def test_the_model_page_draws_every_heads_l1_score_by_layer(minilm, charts):
    bundle, _ = minilm
    at = checked(open_page("model", Plan()))
    heat = charts.of(at)["heads_importance"]["data"][0]
    z = np.asarray(heat["z"], dtype=float)
    assert z.shape == (LAYERS, HEADS)
    assert list(heat["y"]) == [f"layer {i}" for i in range(LAYERS)]
    for layer in range(LAYERS):
        np.testing.assert_allclose(z[layer], l1_by_hand(bundle, layer), rtol=1e-5)
    assert "head %{x}: score %{z" in heat["hovertemplate"] and "%{y}" in heat["hovertemplate"]
    ranks = np.asarray(heat["customdata"])[..., 1].astype(int)
    assert (ranks[0] == np.argsort(np.argsort(z[0], kind="stable"), kind="stable") + 1).all()


def test_the_similarity_page_shows_the_heads_similarity_and_a_heads_pattern(minilm, charts):
    bundle, data = minilm
    attention, head, sentence = "bert.encoder.layer.2.attention.self.query", 5, 11
    at = checked(open_page("similarity", Plan(), sim_units="heads", heads_attention=attention,
                           heads_head=head, heads_sentence=sentence))
    figures = charts.of(at)
    similarity = np.asarray(figures["heads_similarity"]["data"][0]["z"], dtype=float)
    np.testing.assert_allclose(similarity, head_similarity(bundle, data, attention), atol=1e-12)
    assert (np.diagonal(similarity) == 1).all()

    ids = data.x[sentence].long()
    real = ids != 0
    with torch.no_grad():
        out = bundle.model.bert(input_ids=ids[None], attention_mask=real.long()[None],
                                output_attentions=True)
    expected = out.attentions[2][0, head][real][:, real].numpy()
    pattern = figures["heads_pattern"]["data"][0]
    np.testing.assert_allclose(np.asarray(pattern["z"], dtype=float), expected, atol=1e-5)
    from transformers import AutoTokenizer

    from explorer.load.transformers import model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    words = tokenizer.convert_ids_to_tokens(ids[real].tolist())
    assert list(pattern["x"]) == [f"{w} ·{p}" for w, p in zip(
        words, real.nonzero().flatten().tolist(), strict=True)]
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert not any(c.key.startswith("sim_") for c in at.get("plotly_chart"))  # neurons hidden


def test_the_prune_page_offers_heads_with_one_linked_slider_per_attention(minilm):
    bundle, data = minilm
    at = checked(open_page("prune", Plan(granularity="heads", criterion="l1")))
    assert "heads" in at.radio(key="pr_granularity").options
    sliders = {s.key: s for s in at.slider if s.key.startswith(SLIDER_PREFIX)
               and not s.key.endswith("__")}
    assert sorted(sliders) == sorted(SLIDER_PREFIX + g.name for g in bundle.heads)
    group = bundle.heads[3]
    at = checked(sliders[SLIDER_PREFIX + group.name].set_value(50).run())
    plan = at.session_state["plan"]
    assert dict(plan.sparsity) == dict.fromkeys(group.layers, 0.5)
    shown = Evaluator(bundle, data).evaluate(plan)
    accuracy = next(m.value for m in at.metric if m.label.startswith("Accuracy"))
    assert accuracy.lstrip("≈ ") == percent(shown.accuracy)


def test_a_model_without_heads_offers_no_heads_view(open_page_plain):
    at = open_page_plain
    assert "heads" not in at.radio(key="pr_granularity").options


@pytest.fixture
def open_page_plain():

    at = AppTest.from_file(str(PAGES / "prune.py"), default_timeout=60)
    at.session_state["model"] = "digits-cnn"
    at.session_state["plan"] = Plan()
    at.session_state["undo"] = []
    return checked(at.run())
