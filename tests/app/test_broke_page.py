"""The "What pruning broke" page in AppTest: its numbers, heatmap and images are the engine's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from explorer.bundle import bundle_from_module
from explorer.data import ValidationSet
from explorer.decide.breakage import breakage
from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.charts import broke as broke_charts
from explorer.ui.format import percent

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "broke.py")
PRUNED = Plan(scope="global", amount=0.9)  # the CNN: some broken, some fixed, one changed


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def table_with(at, *columns: str):
    """The page's one dataframe that has ``columns``."""
    (table,) = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    return table


def captions(at) -> list[str]:
    images = at.get("image")
    return images[0].captions if images else []


def test_a_pruned_plan_shows_the_engines_classes_confusion_and_flips(
        open_page, charts, cnn, digits):
    engine = breakage(Evaluator(cnn, digits), PRUNED)
    counts = engine.counts()
    assert 0 < counts["broken"] <= 40 and counts["fixed"] > 0 and counts["changed"] > 0

    at = open_page("broke", "digits-cnn", PRUNED)
    assert not at.exception, at.exception
    assert metric(at, "Dense accuracy") == percent(engine.accuracy_dense)
    assert metric(at, "Pruned accuracy") == percent(Evaluator(cnn, digits).evaluate(
        PRUNED).accuracy)
    for kind in ("broken", "fixed", "changed"):
        assert metric(at, kind.capitalize()) == str(counts[kind])

    figures = charts.of(at)
    bars = figures["broke_classes"]
    np.testing.assert_allclose(charts.traces(bars, "dense")[0]["y"],
                               engine.class_accuracy_dense * 100)
    np.testing.assert_allclose(charts.traces(bars, "pruned")[0]["y"],
                               engine.class_accuracy_plan * 100)
    heat = figures["broke_confusion"]["data"][0]
    np.testing.assert_array_equal(np.asarray(heat["z"]), engine.confusion_change)

    table = table_with(at, "change (pts)")
    assert list(table["class"]) == list(range(10))
    np.testing.assert_allclose(table["pruned"], engine.class_accuracy_plan)
    np.testing.assert_array_equal(table["images"], engine.support)

    # the default filter: broken images, each captioned with its labels
    assert captions(at) == [broke_charts.caption(f) for f in engine.flipped("broken")]
    first = engine.flipped("broken")[0]
    assert f"true {first.label} · dense {first.dense} · pruned {first.plan}" in captions(at)[0]
    assert first.dense == first.label != first.plan

    at.radio(key="broke_kind").set_value("fixed").run()
    assert captions(at) == [broke_charts.caption(f) for f in engine.flipped("fixed")]
    label = engine.flipped("fixed")[0].label
    at.selectbox(key="broke_class").set_value(label).run()
    assert captions(at) == [broke_charts.caption(f) for f in engine.flipped("fixed")
                            if f.label == label]
    assert not at.exception, at.exception


def test_many_flips_show_forty_images(open_page, cnn, digits):
    plan = Plan(scope="global", amount=0.95)
    broken = breakage(Evaluator(cnn, digits), plan).flipped("broken")
    assert len(broken) > 40
    at = open_page("broke", "digits-cnn", plan)
    assert captions(at) == [broke_charts.caption(f) for f in broken[:40]]
    assert any(c.value.startswith(f"Showing 40 of {len(broken)} broken") for c in at.caption)


def test_a_dense_plan_breaks_nothing(open_page, charts):
    at = open_page("broke", "digits-mlp", Plan())
    assert not at.exception, at.exception
    assert "removes nothing" in at.info[0].value
    assert at.success[0].value.startswith("Nothing flipped")
    assert metric(at, "Broken") == metric(at, "Fixed") == metric(at, "Changed") == "0"
    assert list(charts.of(at)) == ["broke_classes"]  # no confusion change to draw
    assert not at.get("image") and not at.radio


def test_an_architecture_only_model_has_no_predictions(open_page):
    at = open_page("broke", "resnet18", Plan())
    assert not at.exception, at.exception
    assert "no validation data" in at.info[0].value
    assert not at.get("plotly_chart") and not at.metric


def test_data_that_is_not_images_lists_the_flips(open_page):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    bundle = bundle_from_module(model, "tabular", (5,), source="upload")
    x = torch.randn(200, 5)
    data = ValidationSet(x, model(x).argmax(1).detach(), 4, "tabular-val")  # dense: all right
    plan = Plan(sparsity={"0": 0.9, "2": 0.9})
    engine = breakage(Evaluator(bundle, data), plan)
    assert engine.flipped("broken") and engine.accuracy_dense == 1.0

    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["uploads"] = {"upload:tabular.pt": {"bundle": bundle, "data": data}}
    at.session_state["model"] = "upload:tabular.pt"
    at.session_state["plan"] = plan
    at.session_state["undo"] = []
    at.run()
    assert not at.exception, at.exception
    assert not at.get("image")
    table = table_with(at, "pruned", "true")
    broken = engine.flipped("broken")[:40]
    assert list(table["index"]) == [f.index for f in broken]
    assert list(table["pruned"]) == [f.plan for f in broken]


@pytest.mark.parametrize(("shape", "expected"), [
    ((3, 1, 8, 8), (3, 8, 8)), ((3, 64), (3, 8, 8)), ((3, 3, 5, 7), (3, 5, 7, 3)),
    ((3, 6, 6), (3, 6, 6)), ((3, 5), None), ((3, 36), None), ((3, 2, 4, 4), None),
])
def test_which_samples_are_drawn_as_images(shape, expected):
    x = torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape)
    images = broke_charts.as_images(x)
    assert (images is None) if expected is None else images.shape == expected
    if shape == (3, 64):
        np.testing.assert_array_equal(images[1], x[1].reshape(8, 8).numpy())
        thumb = broke_charts.thumbnail(images[1])
        px = broke_charts.THUMBNAIL_PX // 8
        assert thumb.shape == (8 * px, 8 * px) and thumb.dtype == np.uint8
        assert thumb[0, 0] == 0 and thumb[-1, -1] == 255 and (thumb[:px, :px] == 0).all()
        assert (thumb[:px, px] == thumb[0, px]).all() and thumb[0, px] > 0
