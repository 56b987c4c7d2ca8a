"""A bad plan file loaded in the sidebar: a warning that says why, the page intact, the plan
kept (issue 9, class 5: the app once replaced the whole page by a traceback)."""

from __future__ import annotations

from pagetest import metric, open_url

from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.format import percent

BAD_FILES = {
    "deep.json": (b"[" * 10_000 + b"]" * 10_000, "nested more than"),
    "big.json": (b'{"version": 1, "sparsity": {"fc1": ' + b"9" * 5000 + b"}}",
                 "5,000 digits"),
    "utf16.json": ('{"version": 1}'.encode("utf-16"), "not UTF-8"),
    "list.json": (b'{"version": 1, "criterion": ["magnitude"]}', "criterion must be"),
    "global.json": (b'{"version": 1, "scope": "global", "sparsity": {"classifier.1": 0.5}}',
                    "sparsity does not belong"),
    "many.json": (b'{"version": 1, "sparsity": {' + b", ".join(
        b'"x%d": 0.5' % i for i in range(5000)) + b"}}", "and 4,995 more"),
}


def test_bad_plan_files_warn_and_leave_the_page_and_plan_intact(cnn, digits):
    at = open_url("prune", model="digits-cnn")
    good = Plan(sparsity={"classifier.1": 0.75})
    at.file_uploader(key="plan_file").set_value(("p.json", good.to_json().encode(),
                                                 "application/json"))
    at.run()
    assert at.session_state["plan"] == good
    want = percent(Evaluator(cnn, digits).evaluate(good).accuracy)
    for name, (content, gist) in BAD_FILES.items():
        at.file_uploader(key="plan_file").set_value((name, content, "application/json"))
        at.run()
        assert not at.exception, (name, at.exception)
        warnings = [w.value for w in at.warning if "plan file was not loaded" in w.value]
        assert len(warnings) == 1 and gist in warnings[0], (name, warnings)
        assert len(warnings[0]) < 600, name
        assert at.session_state["plan"] == good, name
        assert metric(at, "Accuracy") == want, name
