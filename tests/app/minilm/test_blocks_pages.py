"""Dropping whole blocks in the app: the Prune page's blocks control on minilm (its six
encoder layers) and digits-resnet (its one identity residual block), and the pages a blocks
plan reaches. References: a fresh Evaluator's figures for the same plan, the score cache's
block influence."""

from __future__ import annotations

import pytest
from minilm_app import PAGES, checked, needs_extra, open_page
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache
from explorer.plan import Plan
from explorer.ui.format import percent
from explorer.ui.state import SLIDER_PREFIX

BLOCKS = Plan(granularity="blocks", criterion="influence", scope="global", amount=2 / 6)


def blocks_table(at: AppTest):
    """The Prune page's table of blocks (block, score, dropped)."""
    return next(d.value for d in at.dataframe if "dropped" in d.value.columns)


@needs_extra
def test_the_prune_page_drops_the_lowest_influence_blocks(minilm):
    bundle, data = minilm
    at = checked(open_page("prune", Plan()))
    assert at.radio(key="pr_granularity").options[-1] == "blocks"
    at = checked(at.radio(key="pr_granularity").set_value("blocks").run())
    plan = at.session_state["plan"]
    assert (plan.granularity, plan.criterion, plan.scope) == ("blocks", "influence", "global")
    at = checked(at.slider(key=SLIDER_PREFIX + "__blocks__").set_value(2).run())
    plan = at.session_state["plan"]
    assert round(plan.amount * 6) == 2
    scores = ScoreCache(bundle, data)
    influence = {b.name: float(scores.get("blocks", "influence", b.name)[0][0])
                 for b in bundle.blocks}
    lowest = sorted(influence, key=influence.get)[:2]
    table = blocks_table(at)
    assert sorted(table.loc[table["dropped"], "block"]) == sorted(lowest)
    assert list(table["influence score"]) == pytest.approx([influence[b] for b in table["block"]])
    shown = Evaluator(bundle, data).evaluate(plan)
    accuracy = next(m.value for m in at.metric if m.label.startswith("Accuracy"))
    assert accuracy.lstrip("≈ ") == percent(shown.accuracy)


@needs_extra
@pytest.mark.parametrize("page", ["weights", "sensitivity", "compare", "tradeoffs", "broke",
                                  "export", "latency"])
def test_pages_a_blocks_plan_reaches_run_without_error(page):
    checked(open_page(page, BLOCKS))


def test_digits_resnet_offers_its_one_identity_block():
    at = AppTest.from_file(str(PAGES / "prune.py"), default_timeout=60)
    at.session_state["model"] = "digits-resnet"
    at.session_state["plan"] = Plan(granularity="blocks", criterion="random", scope="global",
                                    amount=0.9)
    at.session_state["undo"] = []
    at = checked(at.run())
    assert at.slider(key=SLIDER_PREFIX + "__blocks__").max == 1
    table = blocks_table(at)
    assert list(table["block"]) == ["layer1"] and list(table["dropped"]) == [True]
