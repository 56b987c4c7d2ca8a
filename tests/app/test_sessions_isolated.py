"""Sessions never see each other's work: caches are keyed by content, never by a file name.

Streamlit's ``cache_resource`` is shared by every AppTest in one process, as it is by every
browser session of one server. Two sessions upload different weights of digits-cnn under the
same name, ``model.safetensors``, and prune them with the same plan: each must show the
numbers the command line gives for its own file (before the fix the second session was
pruned with the first one's scores: the app showed 94.72% where the CLI gives 37.50%).
"""

from __future__ import annotations

import json

import pytest
import torch
from pagetest import PAGES, metric
from safetensors.torch import save, save_file
from streamlit.testing.v1 import AppTest
from test_model_page import open_page, upload

from explorer import cli
from explorer.plan import Plan
from explorer.ui.format import count, percent

NAME = "model.safetensors"
PLAN = Plan(sparsity={"classifier.1": 0.9, "features.2": 0.6})


def shuffled(state: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``state`` with the entries of each named weight shuffled (fixed seed): other
    magnitudes in the same layers, so a plan keeps other weights."""
    gen = torch.Generator().manual_seed(0)
    out = {k: v.clone() for k, v in state.items()}
    for name in names:
        flat = out[name].reshape(-1)
        out[name] = flat[torch.randperm(flat.numel(), generator=gen)].reshape(out[name].shape)
    return out


@pytest.fixture(scope="module")
def weights(cnn) -> dict[str, dict[str, torch.Tensor]]:
    trained = {k: v.detach().clone() for k, v in cnn.model.state_dict().items()}
    return {"trained": trained,
            "shuffled": shuffled(trained, ("classifier.1.weight", "features.2.weight"))}


def cli_metrics(tmp_path, state: dict[str, torch.Tensor], plan: Plan, capsys) -> dict:
    """What ``pruning-explorer evaluate --json`` reports for this file and plan."""
    model, plan_file = tmp_path / NAME, tmp_path / "plan.json"
    save_file(state, str(model))
    plan_file.write_text(plan.to_json())
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(model), "--plan", str(plan_file),
                     "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def prune_with(at: AppTest, plan: Plan) -> AppTest:
    """The Prune page in ``at``'s session (its uploads and model) with ``plan`` current.

    AppTest cannot follow st.navigation from one page file to another, so the session's
    state goes with it, as it does in the browser."""
    page = AppTest.from_file(str(PAGES / "prune.py"), default_timeout=60)
    for key in ("uploads", "model"):
        page.session_state[key] = at.session_state[key]
    page.session_state["plan"] = plan
    page.session_state["undo"] = []
    return page.run()


def shows(at: AppTest, expected: dict) -> None:
    assert not at.exception, at.exception
    assert metric(at, "Accuracy") == percent(expected["accuracy"])
    assert metric(at, "FLOPs per sample") == count(expected["flops"]["effective"])


def test_same_name_uploads_in_two_sessions_get_their_own_numbers(tmp_path, weights, capsys):
    want = {kind: cli_metrics(tmp_path, state, PLAN, capsys) for kind, state in weights.items()}
    assert abs(want["trained"]["accuracy"] - want["shuffled"]["accuracy"]) > 0.2

    first = upload(open_page(model="digits-cnn"), NAME, save(weights["trained"]))
    second = upload(open_page(model="digits-cnn"), NAME, save(weights["shuffled"]))
    assert first.session_state["model"] == second.session_state["model"] == "upload:" + NAME
    one, two = prune_with(first, PLAN), prune_with(second, PLAN)
    shows(one, want["trained"])
    shows(two, want["shuffled"])
    shows(one.run(), want["trained"])  # the first session's view is unchanged


def test_same_name_twice_in_one_session_is_two_models(tmp_path, weights, capsys):
    want = {kind: cli_metrics(tmp_path, state, PLAN, capsys) for kind, state in weights.items()}
    at = upload(open_page(model="digits-cnn"), NAME, save(weights["trained"]))
    upload(at, NAME, save(weights["shuffled"]))
    assert at.session_state["model"] == f"upload:{NAME} (2)"
    assert at.query_params["model"] == "upload:" + NAME  # the file's name, for a reload
    upload(at, NAME, save(weights["trained"]))  # the same bytes again: the first entry
    assert at.session_state["model"] == "upload:" + NAME
    assert set(at.session_state["uploads"]) == {"upload:" + NAME, f"upload:{NAME} (2)"}

    page = prune_with(at, PLAN)
    shows(page, want["trained"])
    page.selectbox(key="model_picker").set_value(f"upload:{NAME} (2)").run()
    page.session_state["plan"] = PLAN
    shows(page.run(), want["shuffled"])
