"""The plan's vocabulary is one list: criterion names per granularity and the defaults live in
explorer.plan, which loads without torch or streamlit; the scorers match the names."""

import subprocess
import sys

import pytest

from explorer import cli
from explorer.criteria import REGISTRY, criterion
from explorer.errors import PlanError
from explorer.plan import CRITERIA, DEFAULT_CRITERION, GRANULARITIES, Plan, default_criterion
from explorer.ui.urls import plan_from_query


def test_importing_the_plan_loads_neither_torch_nor_streamlit():
    code = ("import sys, explorer.plan; "
            "print(sorted(m for m in ('torch', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_every_named_criterion_has_one_scorer_in_the_same_order():
    assert list(REGISTRY) == [(g, n) for g in GRANULARITIES for n in CRITERIA[g]]
    for g in GRANULARITIES:
        assert DEFAULT_CRITERION[g] in CRITERIA[g]
        assert criterion(g, DEFAULT_CRITERION[g]).granularity == g


def test_an_unknown_criterion_is_refused_naming_the_choices():
    with pytest.raises(PlanError, match="choose one of: l1, l2, activation"):
        Plan(granularity="neurons", criterion="magnitude")
    with pytest.raises(PlanError, match="choose one of: magnitude, wanda, taylor, random"):
        criterion("weights", "l1")


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_file_url_and_cli_take_the_same_default(granularity, capsys):
    expected = default_criterion(granularity)
    # a blocks plan is global (a block is dropped whole): it says so, with its amount
    scope = {"scope": "global", "amount": 0.5} if granularity == "blocks" else {}
    query = {"scope": "global", "amount": "50"} if granularity == "blocks" else {}
    assert Plan.from_dict({"version": 1, "granularity": granularity, **scope}).criterion \
        == expected
    assert plan_from_query({"g": granularity, **query}).criterion == expected
    code = cli.main(["sensitivity", "--model", "digits-mlp", "--granularity", granularity,
                     "--grid", "0,0.5", "--json"])
    refused = {"heads": "has no attention heads", "blocks": "has no transformer blocks"}
    if granularity in refused:  # heads' CLI default: tests/engine/load/test_minilm.py
        assert code == 2
        assert refused[granularity] in capsys.readouterr().err
        return
    assert code == 0
    assert f'"criterion": "{expected}"' in capsys.readouterr().out


def test_a_blocks_plan_without_its_global_scope_says_why():
    with pytest.raises(PlanError, match="A blocks plan is global"):
        Plan.from_dict({"version": 1, "granularity": "blocks"})


def test_an_explicit_null_criterion_is_still_refused():
    with pytest.raises(PlanError, match="criterion must be a criterion name"):
        Plan.from_bytes(b'{"version": 1, "criterion": null}')
