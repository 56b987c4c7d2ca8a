"""minilm's page tests: the model loads once per test module (10-25 s), so these fixtures
keep Streamlit's caches between a module's tests instead of clearing them per test as
tests/app/conftest.py does."""

from __future__ import annotations

import pytest
import streamlit as st

from explorer.load.transformers import MINILM


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Overrides the per-test clearing of tests/app/conftest.py: minilm loads once."""
    yield


@pytest.fixture(scope="module", autouse=True)
def _module_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def minilm():
    """(bundle, validation set) of minilm, as the app's shared cache holds them."""
    from explorer.ui.state import shared_pretrained

    bundle, data, _ = shared_pretrained(MINILM)  # the app's own cached copy
    return bundle, data
