"""A reload (or a shared link) of an uploaded model: the plan stays, the file is asked for.

Uploaded files live in one session only. Before, a reload silently switched to digits-cnn
with an empty plan; now the URL names the upload (``model=upload:<file name>``) with its
plan, a new session says the file must be uploaded again, and applies the link's plan once
that file is back (if its layers fit).
"""

from __future__ import annotations

from pagetest import metric, open_url
from safetensors.torch import save
from test_model_page import upload

from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.format import percent
from explorer.ui.urls import plan_from_query

NAME = "mine.safetensors"
LINK = {"model": f"upload:{NAME}", "g": "weights", "c": "magnitude", "scope": "layer",
        "s": "classifier.1:90,features.2:50"}
LINK_PLAN = Plan(sparsity={"classifier.1": 0.9, "features.2": 0.5})


def weights(bundle) -> bytes:
    return save({k: v.detach().clone() for k, v in bundle.model.state_dict().items()})


def upload_notes(at) -> list[str]:
    return [w.value for w in at.warning if "upload it again" in w.value]


def test_upload_link_asks_for_the_file_and_keeps_the_plan(cnn, digits):
    at = open_url("model", **LINK)
    [note] = upload_notes(at)
    assert NAME in note and "digits-cnn" in note
    assert at.session_state["model"] == "digits-cnn"
    assert dict(at.query_params) == LINK  # a second reload still has the link
    form = next(e for e in at.expander if e.label == "Upload your own model")
    assert form.proto.expanded

    upload(at, NAME, weights(cnn))
    assert not at.exception and not at.error
    assert at.session_state["model"] == f"upload:{NAME}"
    assert at.session_state["plan"] == LINK_PLAN
    assert upload_notes(at) == []
    assert at.query_params["model"] == f"upload:{NAME}"
    assert plan_from_query(dict(at.query_params)) == LINK_PLAN
    dense = Evaluator(cnn, digits).evaluate(Plan())
    assert metric(at, "Baseline accuracy") == percent(dense.accuracy)


def test_a_file_whose_layers_do_not_fit_says_so(mlp):
    at = open_url("model", **LINK)
    upload(at, NAME, weights(mlp))
    assert at.session_state["model"] == f"upload:{NAME}"
    assert at.session_state["plan"] == Plan()
    assert any("did not fit" in w.value and "classifier.1" in w.value for w in at.warning)
    assert upload_notes(at) == []


def test_another_file_name_leaves_the_plan_out(cnn):
    at = open_url("model", **LINK)
    upload(at, "other.safetensors", weights(cnn))
    assert at.session_state["model"] == "upload:other.safetensors"
    assert at.session_state["plan"] == Plan()
    assert upload_notes(at) == []


def test_working_on_the_default_model_drops_the_link(cnn, digits):
    at = open_url("prune", **LINK)
    assert upload_notes(at)
    next(s for s in at.slider if s.label.startswith("classifier.3 (")).set_value(40).run()
    plan = Plan(sparsity={"classifier.3": 0.4})
    assert at.session_state["plan"] == plan
    assert upload_notes(at) == []
    assert at.query_params["model"] == "digits-cnn"
    assert plan_from_query(dict(at.query_params)) == plan
    assert metric(at, "Accuracy") == percent(Evaluator(cnn, digits).evaluate(plan).accuracy)


def test_a_bad_plan_in_an_upload_link_is_one_message():
    at = open_url("model", **{**LINK, "s": "classifier.1:lots"})
    assert not at.exception
    assert any("link was ignored" in w.value for w in at.warning)
    assert upload_notes(at)
