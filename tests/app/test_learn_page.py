"""The Learn page in AppTest: one lesson at a time, a prediction before the result, the
experiment's numbers equal to a fresh evaluator's for the same plan, progress in the URL and
in session state, a broken lesson file shown as its message while the others work.

Each lesson's expected plan is built here from the lesson's parameters with the engine's
plan helpers; its accuracy comes from a fresh :class:`Evaluator` on the shipped demo.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.decide.targets import Target, fit_fraction, uniform_plan
from explorer.decide.tradeoff import baseline_families
from explorer.evaluator import Evaluator
from explorer.lessons import files
from explorer.lessons.files import LESSONS, Lesson, load_lessons
from explorer.load.demos import load_demo
from explorer.plan import Plan, criterion_names
from explorer.ui.format import percent
from explorer.ui.layout import plan_summary

PAGE = Path(__file__).resolve().parents[2] / "app_pages" / "learn.py"
PAGES = {1: "prune", 2: "weights", 3: "sensitivity", 4: "prune", 5: "finetune",
         6: "tradeoffs", 7: "finetune"}


@pytest.fixture(scope="module")
def lessons() -> dict[int, Lesson]:
    return {lesson.number: lesson for lesson in load_lessons()}


def expected_plan(lesson: Lesson, evaluator: Evaluator) -> Plan:
    """The plan lesson ``lesson``'s button must open, built from its parameters."""
    p, bundle = lesson.params, evaluator.bundle
    match lesson.number:
        case 1 | 3 | 5:
            return uniform_plan(bundle, "weights", "magnitude", p["fraction"])
        case 2:
            return Plan(sparsity={p["layer"]: p["fraction"]})
        case 4:  # the criterion that keeps the most accuracy
            plans = [Plan(granularity="neurons", criterion=c, sparsity={p["layer"]: p["fraction"]})
                     for c in criterion_names("neurons")]
            return max(plans, key=lambda plan: evaluator.evaluate(plan).accuracy)
        case 6:  # the baseline that keeps the most accuracy at the ratio
            plans = [family(fit_fraction(evaluator, family, Target("size", p["ratio"])))
                     for family in baseline_families(bundle, "weights").values()]
            return max(plans, key=lambda plan: evaluator.evaluate(plan).accuracy)
        case 7:
            return uniform_plan(bundle, "weights", "magnitude", 1 - (1 - p["rate"]) ** p["rounds"])
    raise AssertionError(f"no expected plan for lesson {lesson.number}")


def open_lesson(number: int | str) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.query_params["lesson"] = str(number)
    at.run()
    assert not at.exception, at.exception
    return at


def reveal(at: AppTest, number: int, choice: str) -> AppTest:
    at.radio(key=f"learn_choice::{number}").set_value(choice).run()
    at.button(key=f"learn_reveal::{number}").click().run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("number", range(1, 8))
def test_a_lesson_from_prediction_to_the_plan(number, lessons, digits):
    lesson = lessons[number]
    at = open_lesson(number)
    assert at.query_params["lesson"] == str(number)
    assert at.header[0].value == f"{number}. {lesson.title}"
    # before the prediction: the question, a disabled Reveal, and nothing of the result
    assert at.radio(key=f"learn_choice::{number}").value is None
    assert at.button(key=f"learn_reveal::{number}").disabled
    assert not at.dataframe and not at.get("plotly_chart")
    assert not any("## Feedback" in m.value for m in at.markdown)
    choice = lesson.choices[-1][0]
    reveal(at, number, choice)
    evaluator = Evaluator(load_demo(lesson.params["model"]), digits)
    plan = expected_plan(lesson, evaluator)
    shown = percent(evaluator.evaluate(plan).accuracy)
    assert f"accuracy {shown}." in at.caption[-1].value
    if number != 7:  # the lottery table holds the lab's rounds, not the shipped model's plan
        assert shown in at.dataframe[0].value["accuracy"].tolist()
    verdicts = [*(("right", s.value) for s in at.success),
                *(("wrong", w.value) for w in at.warning)]
    assert len(verdicts) == 1
    kind, text = verdicts[0]
    assert text.startswith("Right: ") if kind == "right" else lesson.label(choice) in text
    feedback = at.markdown[-1].value
    assert "{" not in feedback and "**" in feedback  # filled in, the right answer in bold
    assert at.query_params["lesson"] == str(number)
    # the button puts the model and the plan in place, then switches page (which AppTest,
    # running one page file without app.py's navigation, cannot follow: it says so)
    at.button(key=f"learn_open::{number}").click().run()
    assert at.session_state["model"] == lesson.params["model"]
    assert at.session_state["plan"] == plan
    assert len(at.exception) == 1
    assert f"Could not find page: `app_pages/{PAGES[number]}.py`" in at.exception[0].message
    # that page, opened in this session as the browser would, shows the lesson's plan
    target = AppTest.from_file(str(PAGE.with_name(f"{PAGES[number]}.py")), default_timeout=120)
    for key in ("model", "plan", "undo"):
        target.session_state[key] = at.session_state[key]
    target.run()
    assert not target.exception, target.exception
    assert plan_summary(plan) in [c.value for c in target.sidebar.caption]


def test_progress_survives_moving_between_lessons_and_the_url_follows(lessons):
    at = reveal(open_lesson(1), 1, "weights")
    assert at.dataframe
    at.button(key="learn_next").click().run()
    assert at.query_params["lesson"] == "2" and at.header[0].value.startswith("2. ")
    assert not at.dataframe  # lesson 2 not answered yet
    at.radio(key="learn_toc").set_value(1).run()
    assert at.query_params["lesson"] == "1"
    assert at.radio(key="learn_choice::1").value == "weights"
    assert at.radio(key="learn_choice::1").disabled and at.dataframe  # still revealed
    assert at.session_state["learn_progress"]["answers"] == {1: "weights"}
    at.button(key="learn_forget::1").click().run()
    assert not at.dataframe and at.radio(key="learn_choice::1").value is None


def test_a_link_to_a_lesson_that_does_not_exist_says_so_and_opens_the_first():
    at = open_lesson("99")
    assert "lesson '99', which does not exist" in at.warning[0].value
    assert at.query_params["lesson"] == "1" and at.header[0].value.startswith("1. ")


def test_a_broken_lesson_file_shows_its_message_and_the_others_work(tmp_path, monkeypatch):
    for name in ("01-what-pruning-is.md", "03-layers-differ.md"):
        shutil.copy(LESSONS / name, tmp_path / name)
    text = (LESSONS / "02-magnitude-threshold.md").read_text()
    (tmp_path / "02-magnitude-threshold.md").write_text(text.replace("layer: fc1", "layer: fc9"))
    monkeypatch.setattr(files, "LESSONS", tmp_path)
    at = open_lesson(2)
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("This lesson's file cannot be used: 02-magnitude-threshold.md: ")
    assert "'fc9'" in message and "\n" not in message
    assert at.header[0].value == "2. 02-magnitude-threshold.md"
    at.radio(key="learn_toc").set_value(3).run()
    assert not at.error and at.header[0].value.startswith("3. ")
    reveal(at, 3, "features.0")
    assert at.dataframe and not at.exception
