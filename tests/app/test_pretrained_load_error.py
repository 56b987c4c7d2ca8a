"""A pretrained model whose installed package fails to load: the page says so in one error
and shows the default model instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.errors import ModelError
from explorer.load.transformers import MINILM, extra_installed
from explorer.ui import state

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "model.py")


@pytest.mark.skipif(not extra_installed(), reason="minilm is offered only with the extra")
def test_a_pretrained_model_that_fails_to_load_is_one_error_and_the_default_model(
        monkeypatch):
    def broken(name):
        raise ModelError(f"'{name}' weights are unreadable.")

    monkeypatch.setattr(state, "load_pretrained", broken)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = MINILM
    at.run()
    assert not at.exception, "\n".join(at.exception[0].stack_trace) if at.exception else ""
    assert [e.value for e in at.error] == [
        "minilm could not be loaded: 'minilm' weights are unreadable. Showing digits-cnn."]
    assert at.session_state["model"] == state.DEFAULT_MODEL
    assert at.selectbox(key="model_picker").value == state.DEFAULT_MODEL
