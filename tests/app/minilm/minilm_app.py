"""minilm in AppTest: opening a page on it (the fixtures are in this folder's conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.load.transformers import MINILM, extra_installed
from explorer.plan import Plan

PAGES = Path(__file__).resolve().parents[3] / "app_pages"
HALF = Plan(scope="global", amount=0.5)  # half the weights by magnitude: some topics flip
needs_extra = pytest.mark.skipif(not extra_installed(), reason="needs the transformers extra")


def open_page(page: str, plan: Plan = HALF, **state) -> AppTest:
    """The page on minilm with ``plan`` after its first run."""
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=180)
    at.session_state["model"] = MINILM
    at.session_state["plan"] = plan
    at.session_state["undo"] = []
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def checked(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at
