"""BatchNorm recalibration in the app (issue 16): a BatchNorm model's pruned plans are judged
with re-estimated statistics by default, the raw figure is one click away in the sidebar,
and an upload without calibration images says why its numbers stay raw."""

from __future__ import annotations

import copy
import io

import numpy as np
import torch
from pagetest import metric, open_url
from streamlit.testing.v1 import AppTest

from explorer.data import digits_train
from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.format import percent
from explorer.ui.layout import BN_PICKER_KEY
from explorer.ui.urls import plan_to_query

PLAN = Plan(granularity="neurons", criterion="l1", scope="global", amount=0.3)


def toggles(at: AppTest) -> list:
    return [t for t in at.sidebar.toggle if t.key == BN_PICKER_KEY]


def test_recalibrated_by_default_and_raw_one_click_away(resnet, digits):
    at = open_url("prune", model="digits-resnet", **plan_to_query(PLAN))
    recalibrated = Evaluator(resnet, digits, bn_calibration=digits_train()).evaluate(PLAN)
    raw = Evaluator(resnet, digits).evaluate(PLAN)
    assert recalibrated.accuracy > raw.accuracy + 0.3
    assert metric(at, "Accuracy") == percent(recalibrated.accuracy)
    assert any("BatchNorm recalibrated" in c.value for c in at.caption)
    [toggle] = toggles(at)
    assert toggle.value is True
    toggle.set_value(False).run()
    assert not at.exception, at.exception
    assert metric(at, "Accuracy") == percent(raw.accuracy)
    assert not any("BatchNorm recalibrated" in c.value for c in at.caption)
    toggles(at)[0].set_value(True).run()
    assert metric(at, "Accuracy") == percent(recalibrated.accuracy)


def test_no_setting_without_batchnorm():
    at = open_url("prune", model="digits-cnn", **plan_to_query(PLAN))
    assert toggles(at) == []


def _npz(data) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=data.x.numpy(), y=data.y.numpy())
    return buffer.getvalue()


def test_an_upload_without_calibration_images_says_so(resnet, digits):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(copy.deepcopy(resnet.model).eval()), buffer)
    model = ("resnet.pt", buffer.getvalue(), "application/octet-stream")
    data = ("val.npz", _npz(digits), "application/octet-stream")
    at = open_url("model", model="digits-cnn")
    at.file_uploader(key="upload_model").set_value(model)
    at.file_uploader(key="upload_data").set_value(data)
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception, at.exception
    assert toggles(at) == []
    [note] = [c.value for c in at.sidebar.caption if "BatchNorm" in c.value]
    assert "no calibration images" in note

    at.file_uploader(key="upload_model").set_value(model)  # again, with calibration images
    at.file_uploader(key="upload_data").set_value(data)
    at.file_uploader(key="upload_calibration").set_value(
        ("train.npz", _npz(digits_train()), "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception, at.exception
    assert [t.value for t in toggles(at)] == [True]
    assert not [c.value for c in at.sidebar.caption if "no calibration images" in c.value]


def test_results_computed_one_way_are_not_served_the_other():
    """Curves computed with recalibrated BatchNorm are not shown as computed once the
    toggle says raw: the Compare page asks to compute them again."""
    from pathlib import Path

    page = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")
    at = AppTest.from_file(page, default_timeout=120)
    at.query_params["model"] = "digits-resnet"
    at.run()
    at.selectbox(key="cmp_layer::digits-resnet::weights").set_value("fc").run()
    at.button(key="cmp_compute").click().run()
    assert not at.exception, at.exception
    at.run()
    assert [b.key for b in at.main.button] == [] and at.get("plotly_chart")  # computed
    toggles(at)[0].set_value(False).run()
    assert not at.exception, at.exception
    assert [b.key for b in at.main.button] == ["cmp_compute"]  # raw: not computed yet
    toggles(at)[0].set_value(True).run()
    assert [b.key for b in at.main.button] == []  # recalibrated again: the stored curves
