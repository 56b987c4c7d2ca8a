"""all-MiniLM-L6-v2 (``minilm``) in the app: offered with the transformers extra, every page
runs on it, and where a page draws input images for an image model it shows the sentences.

The model loads once for the whole module (this folder's conftest). References:
the tokenizer's own ``decode`` of the validation rows, a forward hook on the feed-forward
layer's GELU (``BertIntermediate``'s output) and the engine's :func:`breakage`.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from minilm_app import HALF, PAGES, checked, needs_extra, open_page
from safetensors.torch import load as safetensors_load
from streamlit.testing.v1 import AppTest

from explorer.decide.breakage import breakage
from explorer.evaluator import Evaluator
from explorer.load.transformers import EXTRA_COMMAND, MINILM, extra_installed
from explorer.plan import Plan
from explorer.ui.format import percent

ALL_PAGES = ("model", "weights", "activations", "similarity", "prune", "sensitivity", "compare",
             "tradeoffs", "broke", "finetune", "latency", "export", "learn")
FFN = "bert.encoder.layer.0.intermediate.dense"


@pytest.fixture(scope="module")
def decoded(minilm):
    """The tokenizer's decoding of each validation row (without [CLS], [SEP], padding)."""
    from transformers import AutoTokenizer

    from explorer.load.transformers import model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    framing = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}
    return [tokenizer.decode([int(i) for i in row if int(i) not in framing])
            for row in minilm[1].x]


@needs_extra
@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_page_runs_on_minilm_with_a_pruned_plan(page):
    at = checked(open_page(page))
    assert at.session_state["model"] == MINILM
    if page != "learn":  # lessons run on their own demo models: no sidebar
        assert MINILM in at.selectbox(key="model_picker").options
    assert not at.get("imgs")  # no picture of token ids anywhere


def hooked_means(bundle, x: torch.Tensor) -> torch.Tensor:
    """The feed-forward layer's GELU output per sentence (N, 1536), averaged over the
    sentence's tokens (padding, id 0, left out), from a forward hook on a private copy of
    the model."""
    model, caught = copy.deepcopy(bundle.model), {}
    block = dict(model.named_modules())[FFN.removesuffix(".dense")]
    block.register_forward_hook(lambda _m, _i, out: caught.setdefault("out", out.detach()))
    with torch.no_grad():
        model(x)
    tokens = (x != 0).unsqueeze(-1).to(caught["out"].dtype)
    return (caught["out"] * tokens).sum(dim=1) / tokens.sum(dim=1)


@needs_extra
@pytest.mark.parametrize("page", ["similarity", "activations"])
def test_a_neurons_top_samples_are_sentences_without_a_captum_button(
        page, minilm, decoded):
    bundle, data = minilm
    i, j = 7, 300
    state = ({"sim_layer": FFN, "sim_pair": {"layer": FFN, "i": i, "j": j}}
             if page == "similarity" else
             {f"act_layer::{MINILM}": FFN, "act_neuron": {"layer": FFN, "neuron": i}})
    at = checked(open_page(page, Plan(), **state))
    means = hooked_means(bundle, data.x)
    tables = [d.value for d in at.dataframe if "sentence" in d.value.columns]
    assert len(tables) == (2 if page == "similarity" else 1)
    shown = [list(t["#"]) for t in tables]
    for neuron, indices in zip((i, j), shown, strict=False):
        expected = torch.sort(means[:, neuron], descending=True, stable=True).indices[:8]
        assert indices == expected.tolist()
    for table in tables:
        assert list(table["sentence"]) == [decoded[k] for k in table["#"]]
    assert not any(c.key.startswith("dd_top::") for c in at.get("plotly_chart"))
    assert not [b for b in at.button if b.label == "Explain with captum"]
    assert any("No captum attribution for sentences" in c.value for c in at.caption)


@needs_extra
def test_flipped_predictions_are_sentences_with_topic_names(minilm, decoded):
    bundle, data = minilm
    engine = breakage(Evaluator(bundle, data), HALF)
    assert engine.flips, "half the weights should flip some topics"
    at = checked(open_page("broke"))
    table = next(d.value for d in at.dataframe if "sentence" in d.value.columns)
    topics = bundle.card["topics"]
    shown = engine.flipped("broken")[:len(table)]
    assert list(table["index"]) == [f.index for f in shown]
    assert list(table["sentence"]) == [decoded[f.index] for f in shown]
    assert list(table["true"]) == [topics[f.label] for f in shown]
    assert list(table["pruned"]) == [topics[f.plan] for f in shown]
    assert not at.get("imgs")


def test_without_the_extra_minilm_is_not_offered_and_its_link_says_how_to_add_it(
        monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # find_spec: not importable
    assert not extra_installed()
    at = AppTest.from_file(str(PAGES / "model.py"), default_timeout=60)
    at.query_params["model"] = MINILM  # a link to it
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        f"The link's model 'minilm' needs the optional transformers extra, which this server "
        f"does not have: run {EXTRA_COMMAND} and restart the app. Showing digits-cnn."]
    assert at.session_state["model"] == "digits-cnn"
    assert MINILM not in at.selectbox(key="model_picker").options


@needs_extra
def test_the_export_round_trip_loads_the_pruned_weights_into_minilm(minilm):
    """A pretrained model's weights name no demo architecture: the round trip loads them
    into a copy of the model itself. Reference: the file's tensors swapped into the model
    with ``functional_call``, topic accuracy counted by hand."""
    bundle, data = minilm
    at = checked(open_page("export"))
    made = next(iter(at.session_state["ex_files"].values()))
    at.button(key="ex_round_trip").click().run()
    for job in at.session_state["jobs"].values():
        assert job.wait(300), "the round trip did not end"
    at = checked(at.run())
    state = safetensors_load(made.files["pruned.safetensors"])
    with torch.no_grad():
        logits = torch.func.functional_call(bundle.model, state, (data.x,))
    accuracy = float((logits.argmax(1) == data.y).double().mean())
    table = at.dataframe[0].value.set_index("figure")
    assert table.loc["Accuracy", "pruned.safetensors reloaded"] == percent(accuracy)
    assert (table["equal"] == "yes").all()
    assert at.success and "load back" in at.success[0].value


@needs_extra
def test_fine_tuning_minilm_asks_for_its_training_data_instead_of_offering_digits():
    at = checked(open_page("finetune"))
    assert at.radio(key="ft_source").options == ["upload a file"]
    assert any("No digits training split here: 'minilm' does not take 8x8 digits" in c.value
               for c in at.caption)
    at = at.button(key="ft_start").click().run()
    assert [e.value for e in at.error] == [
        "Cannot start: Choose a training data file first (.npz or .pt with x, y)."]


@needs_extra
def test_what_broke_names_the_topics_on_its_charts_and_table(minilm, charts):
    bundle, data = minilm
    engine = breakage(Evaluator(bundle, data), HALF)
    topics = bundle.card["topics"]
    at = checked(open_page("broke"))
    figures = charts.of(at)
    bars = charts.traces(figures["broke_classes"], "pruned")[0]
    assert list(bars["x"]) == topics
    np.testing.assert_allclose(bars["y"], engine.class_accuracy_plan * 100)
    heat = figures["broke_confusion"]["data"][0]
    assert list(heat["x"]) == topics and list(heat["y"]) == topics
    np.testing.assert_array_equal(np.asarray(heat["z"]), engine.confusion_change)
    table = next(d.value for d in at.dataframe if "sentences" in d.value.columns)
    assert list(table["class"]) == topics and list(table["sentences"]) == [20] * 10


@needs_extra
def test_the_model_page_counts_sentences(minilm):
    at = checked(open_page("model", Plan()))
    assert any(c.value.endswith("· 200 sentences") for c in at.caption)


def shown_texts(at: AppTest) -> list[str]:
    """Every text a page shows beside its charts: captions, markdown, headings, notes,
    metric labels and help texts, widgets' help and dataframe column names."""
    texts = [e.value for kind in ("caption", "markdown", "info", "warning", "subheader",
                                  "header", "success") for e in at.get(kind)]
    texts += [part for m in at.metric for part in (m.label, m.proto.help)]
    texts += [w.help or "" for kind in ("radio", "selectbox", "checkbox", "number_input")
              for w in at.get(kind)]
    texts += [str(c) for d in at.dataframe for c in d.value.columns]
    return texts


# page -> where it counts its samples on first opening (None: only after a scan or sweep)
SAYS_SENTENCES = {
    "model": "· 200 sentences",
    "activations": "on 200 validation sentences",
    "similarity": "over the validation sentences",
    "prune": "on 200 sentences",
    "sensitivity": None,
    "compare": None,
    "tradeoffs": "Chosen on 100 calibration sentences of the 200 topics-val sentences",
    "broke": "on 200 validation sentences",
    "finetune": "never the validation sentences",
    "export": "on 200 validation sentences",
}


@needs_extra
@pytest.mark.parametrize("page", SAYS_SENTENCES)
def test_a_text_models_pages_say_sentences_never_images(page):
    texts = shown_texts(checked(open_page(page)))
    assert not [t for t in texts if "image" in t.lower() or "pixel" in t.lower()]
    if SAYS_SENTENCES[page]:
        assert any(SAYS_SENTENCES[page] in t for t in texts), texts
