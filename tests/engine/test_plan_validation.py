"""Hostile and malformed plans (issue 9, class 5): each gets one short PlanError, through the
engine (bytes, dicts, the constructor, the URL) and through the CLI (exit 2, one line on
stderr, no traceback); every plan that loaded before still loads identically."""

from __future__ import annotations

import json
import time

import pytest

from explorer.cli import main
from explorer.errors import PlanError
from explorer.limits import MAX_PLAN_FILE_BYTES, MAX_PLAN_LAYERS
from explorer.plan import Plan
from explorer.ui.urls import plan_from_query

MESSAGE_LIMIT = 400  # characters: one short line, whatever the input


def plan_json(**fields) -> bytes:
    return json.dumps({"version": 1, **fields}).encode()


MALFORMED = {
    # fields that do not belong to the scope: each once ran as the dense model
    "global plan with per-layer sparsity": (
        plan_json(scope="global", sparsity={"fc1": 0.5}), "sparsity does not belong"),
    "layer plan with an amount": (
        plan_json(scope="layer", amount=0.5), "amount does not belong"),
    "layer plan with layers": (
        plan_json(sparsity={"fc1": 0.5}, layers=["fc1"]), "layers does not belong"),
    "global plan without an amount": (plan_json(scope="global"), "needs an amount"),
    "global plan over no layers": (
        plan_json(scope="global", amount=0.5, layers=[]), "non-empty list of layer names"),
    # types
    "version true": (b'{"version": true}', "Unsupported plan version true"),
    "version 1.0": (b'{"version": 1.0}', "Unsupported plan version 1.0"),
    "version as text": (b'{"version": "1"}', "Unsupported plan version '1'"),
    "no version": (b'{"sparsity": {}}', "version is missing"),
    "criterion as a list": (plan_json(criterion=["magnitude"]), "criterion must be"),
    "granularity as a number": (plan_json(granularity=3), "granularity must be one of"),
    "scope as a list": (plan_json(scope=["global"]), "scope must be one of"),
    "sparsity as a list": (plan_json(sparsity=[0.5]), "sparsity must be an object"),
    "sparsity null": (b'{"version": 1, "sparsity": null}', "fractions removed; got null"),
    "fraction as text": (plan_json(sparsity={"fc1": "0.5"}), "must be a number in [0, 1)"),
    "fraction negative": (plan_json(sparsity={"fc1": -0.1}), "must be a number in [0, 1)"),
    "fraction one": (plan_json(sparsity={"fc1": 1.0}), "must be a number in [0, 1)"),
    "fraction true": (plan_json(sparsity={"fc1": True}), "must be a number in [0, 1)"),
    "amount 1e5000": (b'{"version": 1, "scope": "global", "amount": 1e5000}',
                      "amount must be a number in [0, 1)"),
    "merge as 1": (plan_json(merge=1), "merge must be true or false"),
    "empty layer name": (plan_json(sparsity={"": 0.5}), "layer names in sparsity"),
    "layer name a number": (plan_json(scope="global", amount=0.5, layers=[3]),
                            "layer names in layers"),
    "layers as one string": (plan_json(scope="global", amount=0.5, layers="fc1"),
                             "layers must be a non-empty list"),
    "unknown field": (plan_json(sparsty={}), "Unknown plan field(s) 'sparsty'"),
    # JSON the parser must not choke on
    "NaN literal": (b'{"version": 1, "sparsity": {"fc1": NaN}}', "NaN"),
    "Infinity literal": (b'{"version": 1, "scope": "global", "amount": Infinity}', "Infinity"),
    "5,000-digit number": (b'{"version": 1, "sparsity": {"fc1": ' + b"9" * 5000 + b"}}",
                           "a number of 5,000 digits"),
    "nesting 10,000 deep": (b"[" * 10_000 + b"]" * 10_000, "nested more than"),
    "nesting inside a field": (b'{"version": 1, "sparsity": {"a": [[[[[[[[[1]]]]]]]]]}}',
                               "nested more than"),
    "a key given twice": (b'{"version": 1, "sparsity": {"fc1": 0.5, "fc1": 0.6}}',
                          "more than once"),
    "empty file": (b"", "empty"),
    "only whitespace": (b" \n\t ", "empty"),
    "not an object": (b"[1, 2]", "must be a JSON object"),
    "null": (b"null", "must be a JSON object"),
    "truncated JSON": (b'{"version": 1, "sparsity": {"fc', "not valid JSON"),
    # encodings
    "UTF-16 with its byte-order mark": ('{"version": 1}'.encode("utf-16"), "looks like UTF-16"),
    "UTF-16 without one": ('{"version": 1}'.encode("utf-16-le"), "looks like UTF-16"),
    "Latin-1 after a UTF-8 mark": (b"\xef\xbb\xbf" + '{"\xe9": 1}'.encode("latin-1"),
                                   "(byte 0xe9 at position 2)"),
    "Latin-1": ('{"version": 1, "sparsity": {"caf\xe9": 0.5}}'.encode("latin-1"),
                "not UTF-8 text (byte 0xe9"),
    # size
    "over the size limit": (b" " * MAX_PLAN_FILE_BYTES + b"{}", "may be at most"),
    "more layers than a plan may name": (
        plan_json(sparsity={f"l{i}": 0.1 for i in range(MAX_PLAN_LAYERS + 1)}),
        f"more than {MAX_PLAN_LAYERS:,} layers"),
}


@pytest.mark.parametrize(("data", "gist"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_plan_bytes_get_one_short_message(data, gist):
    with pytest.raises(PlanError) as info:
        Plan.from_bytes(data)
    message = str(info.value)
    assert gist in message
    assert len(message) < MESSAGE_LIMIT and "\n" not in message


@pytest.mark.parametrize(("data", "gist"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_plan_files_exit_2_with_one_line(data, gist, tmp_path, capsys):
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    code = main(["evaluate", "--model", "digits-mlp", "--plan", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert gist in captured.err and "Traceback" not in captured.err


def test_every_bad_fraction_is_counted_but_few_are_named():
    data = plan_json(sparsity={f"layer{i}": 2 for i in range(5000)})
    with pytest.raises(PlanError) as info:
        Plan.from_bytes(data)
    message = str(info.value)
    assert "'layer0': 2" in message and "'layer4': 2" in message
    assert "'layer5'" not in message and "4,995 more" in message


def test_a_megabyte_layer_name_is_cut_short():
    with pytest.raises(PlanError) as info:
        Plan.from_bytes(plan_json(sparsity={"x" * 900_000: 1.5}))
    assert len(str(info.value)) < MESSAGE_LIMIT and "..." in str(info.value)


def test_a_million_unknown_layers_give_a_message_under_2_kb(cnn):
    million = dict.fromkeys(map(str, range(1_000_000)), 0.5)
    with pytest.raises(PlanError, match="1,000,000 layers") as info:
        Plan(sparsity=million)  # the constructor refuses it before naming anything
    assert len(str(info.value)) < 2048
    most = {f"layer{i}": 0.5 for i in range(MAX_PLAN_LAYERS)}
    with pytest.raises(PlanError) as info:
        Plan(sparsity=most).check(cnn)
    message = str(info.value)
    assert len(message) < 2048
    assert "'layer0', 'layer1', 'layer2', 'layer3', 'layer4' and 9,995 more" in message
    assert "features.0" in message  # the layers the model does have
    as_file = b'{"version": 1, "sparsity": {' + b", ".join(
        b'"%d": 0.5' % i for i in range(1_000_000)) + b"}}"
    with pytest.raises(PlanError, match="may be at most") as info:
        Plan.from_bytes(as_file)
    assert len(str(info.value)) < 2048


def test_deep_nesting_is_refused_without_recursing():
    start = time.perf_counter()
    with pytest.raises(PlanError, match="nested more than"):
        Plan.from_bytes(b'{"version": 1, "sparsity": ' + b"[" * 400_000 + b"]" * 400_000 + b"}")
    assert time.perf_counter() - start < 2.0


def test_brackets_inside_names_do_not_count_as_nesting():
    name = "a[[[[[[[[[[{{{{{{{{{{\\\"]]"
    data = b'{"version": 1, "sparsity": {"' + name.encode() + b'": 0.5}}'
    assert Plan.from_bytes(data).sparsity == {'a[[[[[[[[[[{{{{{{{{{{"]]': 0.5}


def test_a_huge_plan_file_is_refused_by_its_size_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "plan.json"
    with path.open("wb") as f:
        f.truncate(5 * 1024**3)  # a sparse 5 GB file: reading it would take minutes
    start = time.perf_counter()
    code = main(["evaluate", "--model", "digits-mlp", "--plan", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "5,368,709,120 bytes" in err and "may be at most" in err
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("plan", [
    Plan(),
    Plan(sparsity={"fc1": 0.5, "fc2": 0.25}),
    Plan(granularity="neurons", criterion="l2", sparsity={"fc1": 0.5}),
    Plan(granularity="neurons", criterion="redundancy", sparsity={"fc1": 0.5}, merge=True),
    Plan(scope="global", amount=0.8),
    Plan(scope="global", amount=0.0, layers=("fc1",)),
    Plan(granularity="weights", criterion="taylor", scope="global", amount=0.3),
], ids=str)
def test_valid_plans_load_identically_from_any_encoding_of_their_json(plan):
    text = plan.to_json()
    for data in (text, text.encode(), b"\xef\xbb\xbf" + text.encode(),
                 json.dumps(plan.to_dict()).encode()):
        again = Plan.from_bytes(data)
        assert again == plan and again.to_dict() == plan.to_dict()


def test_defaults_and_the_readme_forms_still_load():
    assert Plan.from_bytes(b'{"version": 1}') == Plan()
    neurons = Plan.from_bytes(b'{"version": 1, "granularity": "neurons"}')
    assert neurons.criterion == "l1"
    explicit = Plan.from_bytes(b'{"version": 1, "merge": false, "sparsity": {"fc1": 0}}')
    assert explicit == Plan() and explicit.fraction("fc1") == 0.0
    glob = Plan.from_bytes(b'{"version": 1, "scope": "global", "amount": 0.8, "layers": null}')
    assert glob == Plan(scope="global", amount=0.8) and glob.layers is None


@pytest.mark.parametrize(("kwargs", "gist"), [
    ({"sparsity": {"fc1": float("nan")}}, "must be a number in [0, 1)"),
    ({"scope": "global", "amount": float("inf")}, "amount must be"),
    ({"scope": "global", "amount": 10**400}, "amount must be"),
    ({"scope": "global", "amount": True}, "amount must be"),
    ({"scope": "global", "amount": 0.5, "layers": ()}, "at least one layer"),
    ({"scope": "global", "amount": 0.5, "layers": "fc1"}, "list of layer names"),
    ({"criterion": ["magnitude"]}, "criterion must be"),
    ({"criterion": "x" * 100_000}, "No criterion"),
    ({"granularity": "y" * 100_000}, "granularity must be one of"),
    ({"merge": 1}, "merge must be true or false"),
], ids=lambda v: str(v)[:30])
def test_the_constructor_refuses_what_python_callers_pass(kwargs, gist):
    with pytest.raises(PlanError) as info:
        Plan(**kwargs)
    assert gist in str(info.value) and len(str(info.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize(("query", "gist"), [
    ({"scope": "global", "amount": "1e5000"}, "amount must be"),
    ({"s": "fc1:nan"}, "sparsity of layer 'fc1'"),
    ({"s": "fc1:inf"}, "sparsity of layer 'fc1'"),
    ({"scope": "layer", "amount": "50"}, "amount= does not belong"),
    ({"scope": "global", "amount": "50", "s": "fc1:10"}, "s= does not belong"),
    ({"s": "x" * 100_000}, "should look like layer:percent"),
    ({"s": ",".join(f"l{i}:5" for i in range(MAX_PLAN_LAYERS + 1))}, "may name at most"),
], ids=lambda v: str(v)[:30])
def test_url_plans_go_through_the_same_checks(query, gist):
    with pytest.raises(PlanError) as info:
        plan_from_query(query)
    assert gist in str(info.value) and len(str(info.value)) < MESSAGE_LIMIT
