"""Lesson files and their experiments: the shipped lessons load and run on the real engine,
their computed answers agree with independent evaluations, and a broken file is one message.

References are computed here from the engine's public pieces (a fresh Evaluator on the demo,
torch's kthvalue for a threshold, a rerun of the fine-tuning), never read off the outcome.
"""

from __future__ import annotations

import functools
import math
import shutil

import pytest
import torch

from explorer.data import digits_train
from explorer.decide.targets import uniform_plan
from explorer.evaluator import Evaluator
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning
from explorer.finetune.retrain import retrain
from explorer.lessons.files import LESSONS, Broken, Lesson, load_lessons, split_front_matter
from explorer.lessons.outcome import Answer
from explorer.lessons.registry import EXPERIMENTS
from explorer.lessons.runs import Context
from explorer.load.demos import load_demo
from explorer.plan import Plan

bundle_of = functools.cache(load_demo)
EXPECTED_EXPERIMENTS = ["weights_vs_neurons", "magnitude_threshold", "sensitivity", "criteria",
                        "finetune", "tradeoff", "lottery"]  # the issue's order


@pytest.fixture(scope="module")
def lessons() -> dict[int, Lesson]:
    entries = load_lessons(LESSONS, bundle_of)
    broken = [e.message for e in entries if isinstance(e, Broken)]
    assert not broken, broken
    return {e.number: e for e in entries}


@pytest.fixture(scope="module")
def outcomes(lessons, digits):
    context = Context(bundle_of, digits)
    return {n: lesson.run(context) for n, lesson in lessons.items()}


@pytest.fixture(scope="module")
def accuracy(digits):
    """``accuracy(model, plan)`` by evaluators of the test's own (its own model loads)."""
    evaluators: dict[str, Evaluator] = {}

    def measure(model: str, plan: Plan) -> float:
        if model not in evaluators:
            evaluators[model] = Evaluator(load_demo(model), digits)
        return evaluators[model].evaluate(plan).accuracy

    return measure


def test_the_shipped_lessons_are_the_issues_seven_in_order(lessons):
    assert list(lessons) == list(range(1, 8))
    assert [lessons[n].experiment.name for n in lessons] == EXPECTED_EXPERIMENTS


@pytest.mark.parametrize("number", range(1, 8))
def test_each_lesson_runs_and_its_feedback_is_filled_from_its_facts(lessons, outcomes, number,
                                                                     accuracy):
    lesson, outcome = lessons[number], outcomes[number]
    assert set(outcome.facts) == set(lesson.experiment.facts)
    right = lesson.right(outcome)
    assert right and right <= {k for k, _ in lesson.choices}
    text = lesson.feedback_for(outcome)
    assert "{" not in text and all(f"**{lesson.label(k)}**" in text for k in right)
    assert outcome.page == lesson.experiment.page
    # the plan the button opens, measured by a fresh evaluator on the shipped model
    assert outcome.plan_accuracy == accuracy(outcome.model, outcome.plan)
    assert [set(row) for row in outcome.table] == [{c.name for c in outcome.columns}] * len(
        outcome.table)


def test_lesson_1_weights_against_neurons(lessons, outcomes, mlp, digits):
    outcome, fraction = outcomes[1], lessons[1].params["fraction"]
    evaluator = Evaluator(mlp, digits)
    want = {"weights": evaluator.evaluate(uniform_plan(mlp, "weights", "magnitude", fraction)),
            "neurons": evaluator.evaluate(uniform_plan(mlp, "neurons", "l1", fraction))}
    assert dict(outcome.answer.values) == {k: m.accuracy for k, m in want.items()}
    assert lessons[1].right(outcome) == {max(want, key=lambda k: want[k].accuracy)}
    neurons = want["neurons"]
    removed = 1 - neurons.nonzero_params / neurons.params
    assert outcome.facts["neurons_removed"] == f"{removed * 100:.2f}%"


def test_lesson_2_threshold_is_the_kth_smallest_weight_and_the_nearest_guess_wins(
        lessons, outcomes, mlp, accuracy):
    lesson, outcome = lessons[2], outcomes[2]
    layer, fraction = lesson.params["layer"], lesson.params["fraction"]
    w = mlp.params()[mlp.layer(layer).weight].detach().abs().flatten()
    k = round(fraction * w.numel())
    assert outcome.facts["threshold"] == f"{float(torch.kthvalue(w, k).values):.4f}"
    drop = (accuracy("digits-mlp", Plan())
            - accuracy("digits-mlp", Plan(sparsity={layer: fraction}))) * 100
    assert outcome.answer.measured == pytest.approx(drop, abs=1e-9)
    keys = [key for key, _ in lesson.choices]
    nearest = min(abs(float(key) - drop) for key in keys)
    assert lesson.right(outcome) == {key for key in keys if abs(float(key) - drop) == nearest}
    assert outcome.chart.marker == pytest.approx(float(torch.kthvalue(w, k).values))
    assert sum(outcome.chart.series[0].y) == w.numel()  # the histogram counts every weight


def test_lesson_3_most_sensitive_layer_from_independent_evaluations(lessons, outcomes, cnn,
                                                                    accuracy):
    lesson, outcome = lessons[3], outcomes[3]
    fraction = lesson.params["fraction"]
    alone = {name: accuracy("digits-cnn", Plan(sparsity={name: fraction}))
             for name in cnn.layer_names}
    assert dict(outcome.answer.values) == alone
    offered = [key for key, _ in lesson.choices]
    worst = min(alone[k] for k in offered)
    assert lesson.right(outcome) == {k for k in offered if alone[k] == worst}
    uniform = uniform_plan(cnn, "weights", "magnitude", fraction)
    assert outcome.plan == uniform and outcome.table[-1]["accuracy"] == accuracy(
        "digits-cnn", uniform)


def test_lesson_4_criteria_accuracy_per_criterion(lessons, outcomes, accuracy):
    lesson, outcome = lessons[4], outcomes[4]
    layer, fraction, granularity = (lesson.params[k] for k in ("layer", "fraction", "granularity"))
    for criterion, value in outcome.answer.values.items():
        plan = Plan(granularity=granularity, criterion=criterion, sparsity={layer: fraction})
        assert value == accuracy("digits-cnn", plan), criterion
    best = max(outcome.answer.values.values())
    assert outcome.plan.criterion in {c for c, v in outcome.answer.values.items() if v == best}


def test_lesson_5_finetuning_numbers_are_the_retrain_engines(lessons, outcomes, mlp, digits,
                                                            accuracy):
    lesson, outcome = lessons[5], outcomes[5]
    fraction, steps, epochs = (lesson.params[k] for k in ("fraction", "steps", "epochs_per_step"))
    plan = uniform_plan(mlp, "weights", "magnitude", fraction)
    once = retrain(Finetuning(mlp, plan, digits_train(), digits, FinetuneSettings(steps * epochs)))
    assert outcome.answer.values["once"] == once.metrics.accuracy
    assert outcome.answer.values["none"] == accuracy("digits-mlp", plan)


def test_lesson_6_baselines_reach_the_ratio_and_measure_as_the_evaluator(lessons, outcomes,
                                                                         digits):
    lesson, outcome = lessons[6], outcomes[6]
    ratio = lesson.params["ratio"]
    rows = {row["plan"]: row for row in outcome.table}
    assert set(rows) == {"uniform", "global magnitude", "random"}
    for name, row in rows.items():
        assert row["compression"] >= ratio and row["accuracy"] == outcome.answer.values[name]
        assert row["measured time"] > 0
    assert outcome.plan_accuracy == max(outcome.answer.values.values())
    metrics = Evaluator(load_demo("digits-cnn"), digits).evaluate(outcome.plan)
    assert metrics.compression_ratio >= ratio


def test_lesson_7_lottery_table_and_answer_follow_the_last_round(lessons, outcomes, mlp):
    lesson, outcome = lessons[7], outcomes[7]
    rounds, rate = lesson.params["rounds"], lesson.params["rate"]
    assert [row["round"] for row in outcome.table] == [str(r) for r in range(rounds + 1)]
    last = outcome.table[-1]
    assert last["kept"] == pytest.approx((1 - rate) ** rounds, abs=1e-3)
    assert dict(outcome.answer.values) == {"ticket": last["ticket"], "reinit": last["reinit"]}
    plan = uniform_plan(mlp, "weights", "magnitude", 1 - (1 - rate) ** rounds)
    assert outcome.plan == plan


def test_answer_ties_make_every_tied_choice_right():
    assert Answer("highest", {"a": 0.5, "b": 0.5, "c": 0.4}).right(["a", "b", "c"]) == {"a", "b"}
    assert Answer("lowest", {"a": 0.5, "b": 0.4}).right(["a", "b"]) == {"b"}
    assert Answer("nearest", measured=3.0).right(["0", "5", "6"]) == {"5"}
    assert Answer("nearest", measured=2.5).right(["0", "5"]) == {"0", "5"}
    # among the choices offered only: the best overall may not be one of them
    assert Answer("highest", {"a": 0.9, "b": 0.5, "c": 0.4}).right(["b", "c"]) == {"b"}


def test_front_matter_subset_reads_numbers_lists_text_and_comments():
    fields, body = split_front_matter(
        "---\n# a comment\ntitle: A: b\nexperiment: x\nparams:\n  fraction: 0.5\n"
        "  grid: [0.25, 0.5]\n  rounds: 3\n  layer: \"fc1\"\nquestion: q?\nchoices:\n"
        "  0.5: half\n  fc1: 'the first'\n---\nbody\n")
    assert fields == {"title": "A: b", "experiment": "x", "question": "q?",
                      "params": {"fraction": 0.5, "grid": [0.25, 0.5], "rounds": 3,
                                 "layer": "fc1"},
                      "choices": {"0.5": "half", "fc1": "the first"}}
    assert body == "body\n"


GOOD = LESSONS / "03-layers-differ.md"
BROKEN = {  # file name: (what is wrong in it, a phrase its message must hold)
    "04-no-close.md": (lambda t: t.replace("\n---\n", "\n", 1), "no closing '---'"),
    "05-tab.md": (lambda t: t.replace("  fraction: 0.8", "\tfraction: 0.8"), "a tab"),
    "06-unknown-field.md": (lambda t: t.replace("question:", "author: me\nquestion:"),
                            "unknown field 'author'"),
    "07-unknown-experiment.md": (lambda t: t.replace("experiment: sensitivity",
                                                     "experiment: pruning_magic"),
                                 "unknown experiment 'pruning_magic'"),
    "08-bad-fraction.md": (lambda t: t.replace("fraction: 0.8", "fraction: 1.5"),
                           "parameter fraction must be a number in [0, 1)"),
    "09-unknown-layer.md": (lambda t: t.replace("  features.0: features.0",
                                                "  conv9: conv9"),
                            "choice 'conv9' is not an answer"),
    "10-missing-model.md": (lambda t: t.replace("  model: digits-cnn\n", ""),
                            "needs the parameter model"),
    "11-bad-placeholder.md": (lambda t: t.replace("{least_sensitive}", "{the_best}"),
                              "quotes {'the_best'}"),
    "12-no-feedback.md": (lambda t: t.replace("## Feedback", "## Results"),
                          "one '## Feedback' heading"),
    "13-layer-param.md": (lambda t: t.replace("experiment: sensitivity",
                                              "experiment: magnitude_threshold").replace(
        "  fraction: 0.8", "  fraction: 0.8\n  layer: conv9"), "'conv9'"),
    "03-same-number.md": (lambda t: t, "lesson number 03 is also used by 03-layers-differ.md"),
    "lesson-three.md": (lambda t: t, "named NN-slug.md"),
}


def test_a_broken_file_is_one_message_naming_it_and_the_others_still_load(tmp_path):
    shutil.copy(GOOD, tmp_path / GOOD.name)
    text = GOOD.read_text()
    for name, (damage, _) in BROKEN.items():
        (tmp_path / name).write_text(damage(text))
    (tmp_path / "README.md").write_text("not a lesson")
    entries = load_lessons(tmp_path, bundle_of)
    good = [e for e in entries if isinstance(e, Lesson)]
    assert [e.path.name for e in good] == [GOOD.name]
    messages = {e.path.name: e.message for e in entries if isinstance(e, Broken)}
    assert set(messages) == set(BROKEN)
    for name, (_, phrase) in BROKEN.items():
        message = messages[name]
        assert message.startswith(f"{name}: ") and phrase in message, message
        assert "\n" not in message and len(message) < 400, message
    # broken files keep their number for the table of contents, in order
    assert [e.number for e in entries] == [3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, None]


def test_every_registered_experiment_is_documented_for_teachers():
    readme = (LESSONS / "README.md").read_text()
    assert all(f"| `{name}` |" in readme for name in EXPERIMENTS)
    for experiment in EXPERIMENTS.values():
        documented = readme.split(f"| `{experiment.name}` |")[1].split("\n")[0]
        assert all(p in documented for p in experiment.params), experiment.name


def test_the_lottery_lesson_stays_quick(outcomes):
    assert outcomes[7].seconds < 20 and math.isfinite(outcomes[7].seconds)
