"""Learn: guided lessons, one idea each, with a prediction first and a live experiment.

The lessons are the markdown files in ``assets/lessons/`` (:mod:`explorer.lessons.files`),
checked on this page's first run and again whenever a file changes; a broken file shows its
message where its lesson would be. A lesson's experiment runs through the real engine when
the learner reveals the answer, once per server (``st.cache_resource``: the demos are fixed,
so every session gets the same numbers). Progress — the current lesson and the answers
given — is kept in session state across page switches, and the current lesson in the URL
(``?lesson=N``), so a teacher can share a link to lesson N.
"""

import streamlit as st

from explorer.errors import ExplorerError
from explorer.lessons.files import LESSONS, Broken, Lesson, load_lessons
from explorer.lessons.outcome import Outcome
from explorer.lessons.runs import Context
from explorer.ui import state
from explorer.ui.charts import learn as charts
from explorer.ui.format import describe, percent

PROGRESS = "learn_progress"  # session key: {"current": lesson number, "answers": {n: key}}
TOC_KEY = "learn_toc"
CHOICE_PREFIX = "learn_choice::"  # + lesson number: that lesson's prediction radio
PAGES = {"Prune": "app_pages/prune.py", "Weights": "app_pages/weights.py",
         "Sensitivity": "app_pages/sensitivity.py", "Fine-tune": "app_pages/finetune.py",
         "Trade-offs": "app_pages/tradeoffs.py"}


def _signature() -> tuple:
    """What the lesson files are now (names, sizes, times): a new one re-checks them."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(LESSONS.glob("*.md")))


@st.cache_resource(show_spinner="Checking the lesson files...", max_entries=4)
def _lessons(signature: tuple) -> tuple[Lesson | Broken, ...]:
    return load_lessons(LESSONS, state.shared_demo)


@st.cache_resource(show_spinner=False, max_entries=32)
def _outcome(key: str, _lesson: Lesson) -> Outcome | str:
    """The lesson's experiment (keyed by its name and parameters), or its error message."""
    try:
        return _lesson.run(Context(state.shared_demo, state.shared_digits()))
    except ExplorerError as exc:
        return str(exc)


def _go(number: int) -> None:
    st.session_state[PROGRESS]["current"] = number
    st.query_params["lesson"] = str(number)


def _on_toc() -> None:
    _go(st.session_state[TOC_KEY])


def _reveal(number: int) -> None:
    choice = st.session_state.get(CHOICE_PREFIX + str(number))
    if choice is not None:
        st.session_state[PROGRESS]["answers"][number] = choice


def _forget(number: int) -> None:
    st.session_state[PROGRESS]["answers"].pop(number, None)
    st.session_state.pop(CHOICE_PREFIX + str(number), None)


def _current(numbers: list[int]) -> dict:
    """This session's progress, its current lesson taken from the URL where it names one."""
    progress = st.session_state.setdefault(PROGRESS, {"current": numbers[0], "answers": {}})
    asked = st.query_params.get("lesson")
    if asked is not None:
        wanted = int(asked) if asked.isdigit() else None
        if wanted in numbers:
            progress["current"] = wanted
        else:
            st.warning(f"The link asks for lesson {asked[:20]!r}, which does not exist; the "
                       f"lessons are numbered {numbers[0]} to {numbers[-1]}.")
    if progress["current"] not in numbers:
        progress["current"] = numbers[0]
    if st.query_params.get("lesson") != str(progress["current"]):
        st.query_params["lesson"] = str(progress["current"])
    return progress


def _contents(entries: dict[int, Lesson | Broken], progress: dict) -> None:
    answered = progress["answers"]
    st.session_state[TOC_KEY] = progress["current"]
    st.radio("Lessons", list(entries), key=TOC_KEY, on_change=_on_toc,
             format_func=lambda n: f"{n}. {entries[n].title}" + (" ✓" if n in answered else ""))
    st.progress(len(answered) / len(entries), text=f"{len(answered)} of {len(entries)} answered")


def _predict(lesson: Lesson, answer: str | None) -> None:
    """The question; until it is answered, the Reveal button and nothing of the result."""
    st.subheader("Predict first")
    key = CHOICE_PREFIX + str(lesson.number)
    if answer is not None:
        st.session_state[key] = answer
    extra = {} if key in st.session_state else {"index": None}
    choice = st.radio(lesson.question, [k for k, _ in lesson.choices], key=key,
                      format_func=lesson.label, disabled=answer is not None, **extra)
    if answer is None:
        st.button("Reveal", type="primary", key=f"learn_reveal::{lesson.number}",
                  disabled=choice is None, on_click=_reveal, args=(lesson.number,))
        st.caption("Choose your prediction first: the experiment's result appears after it.")


def _result(lesson: Lesson, answer: str) -> None:
    with st.spinner(f"Running the experiment ({lesson.experiment.summary})..."):
        outcome = _outcome(f"{lesson.experiment.name}:{sorted(lesson.params.items())!r}",
                           lesson)
    if isinstance(outcome, str):
        st.error(f"The experiment did not run: {outcome}")
        return
    right = lesson.right(outcome)
    names = " and ".join(f"**{lesson.label(k)}**" for k, _ in lesson.choices if k in right)
    if answer in right:
        st.success(f"Right: {names}.", icon=":material/check_circle:")
    else:
        st.warning(f"You predicted **{lesson.label(answer)}**; the numbers make {names} right.")
    st.dataframe(charts.table(outcome), hide_index=True, key="learn_table")
    st.plotly_chart(charts.figure(outcome.chart), key="learn_chart")
    st.markdown(lesson.feedback_for(outcome))
    st.caption(f"Experiment: {lesson.experiment.summary}, on {outcome.model}; it ran in "
               f"{outcome.seconds:.1f} s. The plan it opens: {describe(outcome.plan)}, "
               f"accuracy {percent(outcome.plan_accuracy)}.")
    left, right_col = st.columns(2)
    if left.button(f"Open this in the {outcome.page} page", type="primary",
                   key=f"learn_open::{lesson.number}", width="stretch"):
        state.choose_model(outcome.model)
        state.set_plan(outcome.plan)
        st.switch_page(PAGES[outcome.page])
    right_col.button("Predict again", key=f"learn_forget::{lesson.number}", width="stretch",
                     on_click=_forget, args=(lesson.number,))


def _lesson(entry: Lesson | Broken, progress: dict) -> None:
    if isinstance(entry, Broken):
        st.header(f"{entry.number}. {entry.title}")
        st.error(f"This lesson's file cannot be used: {entry.message}")
        return
    st.header(f"{entry.number}. {entry.title}")
    st.markdown(entry.text)
    answer = progress["answers"].get(entry.number)
    _predict(entry, answer)
    if answer is not None:
        _result(entry, answer)


def _steps(numbers: list[int], current: int) -> None:
    at = numbers.index(current)
    back, _, forward = st.columns([1, 2, 1])
    if at > 0:
        back.button("Previous lesson", key="learn_prev", on_click=_go, args=(numbers[at - 1],))
    if at + 1 < len(numbers):
        forward.button("Next lesson", key="learn_next", on_click=_go, args=(numbers[at + 1],))


st.title("Learn")
st.caption("Lessons on pruning, one idea each: read, predict, then see the experiment run "
           "on a demo model through the same engine as every page.")
entries = _lessons(_signature())
numbered = {e.number: e for e in entries if e.number is not None}
for broken in (e for e in entries if e.number is None):
    st.error(f"A lesson file cannot be used: {broken.message}")
if not numbered:
    st.info(f"No lessons found in {LESSONS}.")
    st.stop()
progress = _current(list(numbered))
toc, main = st.columns([1, 3], gap="large")
with toc:
    _contents(numbered, progress)
with main:
    _lesson(numbered[progress["current"]], progress)
    _steps(list(numbered), progress["current"])
