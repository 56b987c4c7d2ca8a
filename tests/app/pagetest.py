"""Opening a page the way a link does (query parameters) and reading its metrics."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "app_pages"


def open_url(page: str, **query: str) -> AppTest:
    """The page's AppTest after its first run, opened with ``query`` in the URL."""
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)
