"""The Compare criteria page in AppTest: one line per criterion, the table equals the engine."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer import criteria
from explorer.decide import compare_criteria as compare
from explorer.evaluator import Evaluator

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = "digits-cnn"
    at.run()
    assert not at.exception, at.exception
    return at


def registered(granularity: str) -> list[str]:
    return [name for g, name in criteria.REGISTRY if g == granularity]


def test_page_loads_with_its_controls():
    at = open_page()
    assert at.title[0].value == "Compare criteria"
    assert [r.label for r in at.radio] == ["Granularity", "Sweep"]
    assert [b.label for b in at.button] == ["Compute curves"]
    assert not at.get("plotly_chart")  # nothing computed before the button


def test_layer_curves_show_every_criterion_and_the_engines_numbers(cnn, digits, charts):
    at = open_page()
    at.radio(key="cmp_granularity").set_value("neurons").run()
    layer_box = at.selectbox(key="cmp_layer::digits-cnn::neurons")
    assert "classifier.5" not in layer_box.options[-1]  # its neurons are the classes
    layer_box.set_value("features.2").run()
    at.button(key="cmp_compute").click().run()
    assert not at.exception, at.exception

    engine = compare.layer_curves(Evaluator(cnn, digits), "neurons", "features.2")
    assert list(engine) == registered("neurons") and "random" in engine
    figure = charts.of(at)["cmp_chart"]
    lines = {t["name"]: t for t in figure["data"]}
    assert list(lines) == registered("neurons")
    for name, points in engine.items():
        assert list(lines[name]["x"]) == [p.fraction * 100 for p in points]
        assert list(lines[name]["y"]) == [p.accuracy * 100 for p in points]
    dense = Evaluator(cnn, digits).evaluate(compare.Plan()).accuracy
    assert [s["y0"] for s in figure["layout"]["shapes"]] == [dense * 100]

    table = at.dataframe[0].value
    assert list(table["criterion"]) == registered("neurons")
    expected = compare.accuracy_table(engine)
    for _, row in table.iterrows():
        assert row["accuracy at 50% removed"] == expected[row["criterion"]][0.5]
        assert row["accuracy at 80% removed"] == expected[row["criterion"]][0.8]

    at.run()  # a rerun draws the stored curves without asking again
    assert not at.button and at.get("plotly_chart")


def test_global_mode(cnn, digits, charts):
    granularity = "weights"
    at = open_page()
    at.radio(key="cmp_granularity").set_value(granularity)
    at.radio(key="cmp_mode").set_value("whole model, global").run()
    assert not at.main.selectbox  # no layer to choose (the sidebar has its own)
    at.button(key="cmp_compute").click().run()
    assert not at.exception, at.exception
    engine = compare.global_curves(Evaluator(cnn, digits), granularity)
    lines = {t["name"]: t for t in charts.of(at)["cmp_chart"]["data"]}
    assert list(lines) == registered(granularity)
    for name, points in engine.items():
        assert list(lines[name]["y"]) == [p.accuracy * 100 for p in points]


def test_a_large_set_is_screened_and_says_so(charts):
    """An upload slow enough to answer in two steps: the page screens the curves on the
    stratified subset (error bars, open markers) and says which points ran on every image."""
    import torch
    from exported_models import exported, wide_cnn

    from explorer.data import ValidationSet
    from explorer.load.model_file import load_model_bytes
    from explorer.plan import Plan
    from explorer.ui import state

    bundle = load_model_bytes(exported(wide_cnn(256)), "wide.pt2", input_shape=(1, 8, 8))
    generator = torch.Generator().manual_seed(0)
    data = ValidationSet(torch.randn(1000, 1, 8, 8, generator=generator),
                         torch.randint(0, 10, (1000,), generator=generator), 10)
    at = AppTest.from_file(PAGE, default_timeout=300)
    model_id = state.UPLOAD_PREFIX + "wide.pt2"
    at.session_state[state.UPLOADS_KEY] = {model_id: {"bundle": bundle, "data": data}}
    at.session_state[state.MODEL_KEY] = model_id
    at.session_state[state.PLAN_KEY] = Plan()
    at.session_state[state.UNDO_KEY] = []
    at.run()
    assert not at.exception, at.exception
    last = bundle.layer_names[-1]  # a sweep of the classifier resumes from its input
    at.selectbox(key=f"cmp_layer::{model_id}::weights").set_value(last).run()
    at.button(key="cmp_compute").click().run()
    assert not at.exception, at.exception
    evaluator = Evaluator(bundle, data)
    assert evaluator.refines, "the model must be slow enough for an estimate phase"
    subset = evaluator.estimate_samples
    [caption] = [c.value for c in at.caption if "stratified subset" in c.value]
    assert f"subset of {subset} images" in caption and "ran on all 1000" in caption
    figure = charts.of(at)["cmp_chart"]
    for trace in figure["data"]:
        decided = [any(abs(x - 100 * f) < 1e-9 for f in compare.TABLE_FRACTIONS)
                   for x in trace["x"]]
        assert any(decided) and not all(decided)
        symbols = trace["marker"]["symbol"]
        assert symbols == ["circle" if d else "circle-open" for d in decided]
        bars = trace["error_y"]["array"]
        assert all((b == 0) == d for b, d in zip(bars, decided, strict=True))
    table = compare.accuracy_table(compare.layer_curves(evaluator, "weights", last))
    for _, row in at.dataframe[0].value.iterrows():  # ranked on every image
        assert row["accuracy at 50% removed"] == table[row["criterion"]][0.5]
        assert row["accuracy at 80% removed"] == table[row["criterion"]][0.8]
