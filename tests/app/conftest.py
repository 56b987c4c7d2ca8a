"""AppTest helpers: fresh Streamlit caches per test, a page opened on a model, its figures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from explorer.plan import Plan

PAGES = Path(__file__).resolve().parents[2] / "app_pages"


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Streamlit caches outlive an AppTest (one process): each test starts from none."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def open_page():
    """``open_page(page, model, plan)``: the page's AppTest after its first run."""

    def run(page: str, model: str, plan: Plan | None = None) -> AppTest:
        at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=60)
        at.session_state["model"] = model
        at.session_state["plan"] = plan or Plan()
        at.session_state["undo"] = []
        return at.run()

    return run


class Charts:
    """Reading a page's plotly charts back from AppTest (the proto's ``spec`` is the JSON)."""

    @staticmethod
    def of(at: AppTest) -> dict[str, dict]:
        """Every plotly chart by its widget key, as a figure dict with numpy arrays."""
        return {c.key: _decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")}

    @staticmethod
    def sizes(at: AppTest) -> dict[str, int]:
        """Bytes of each chart's JSON as sent to the browser."""
        return {c.key: len(c.proto.spec.encode()) for c in at.get("plotly_chart")}

    @staticmethod
    def traces(figure: dict, name: str) -> list[dict]:
        """The figure's traces called ``name``."""
        return [t for t in figure["data"] if t.get("name") == name]


@pytest.fixture
def charts() -> type[Charts]:
    return Charts


def _decode(obj):
    """Plotly's typed arrays (``{"dtype", "bdata", "shape"}``, base64) to numpy arrays."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            array = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
            shape = obj.get("shape")
            if shape:
                array = array.reshape([int(n) for n in str(shape).split(",")])
            return array
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj
