"""Lesson files: ``assets/lessons/NN-slug.md``, read and checked; a broken one is one message.

A file is front matter between two ``---`` lines, then the lesson's markdown, then a
``## Feedback`` heading and the feedback (``assets/lessons/README.md`` shows the format).
The front matter is a small, strict subset of YAML read here without a YAML library:
``key: value`` lines, and for ``params`` and ``choices`` a mapping of indented
``key: value`` lines below the key. Parameter values are numbers, ``[a, b]`` lists or text;
everything else is text. Anything outside that — an unknown key, a duplicate, a tab, a line
that is not ``key: value`` — is an error naming the file and the line.

Checks at load, before anything runs: the experiment exists, its parameters are right for
it and for the model (:func:`explorer.lessons.registry.check_params`), the choices are keys
the experiment can answer for, and the feedback quotes only the facts it computes. A file
that fails any check becomes a :class:`Broken` entry with one message; the others load.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from explorer.bundle import ModelBundle
from explorer.errors import ExplorerError, short
from explorer.lessons.outcome import Outcome
from explorer.lessons.registry import EXPERIMENTS, Experiment, check_params
from explorer.lessons.runs import Context
from explorer.load.demos import load_demo

LESSONS = Path(__file__).resolve().parents[2] / "assets" / "lessons"
NAME = re.compile(r"^(\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
KEY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_. -]*$")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
FEEDBACK = re.compile(r"^## Feedback[ \t]*$", re.MULTILINE)
FIELDS = ("title", "experiment", "params", "question", "choices")
MAPPINGS = ("params", "choices")
MAX_FILE_BYTES = 64 * 1024
MIN_CHOICES, MAX_CHOICES = 2, 8
ANSWER_FIELDS = ("answer", "answer_value")  # filled in from the right choices


class LessonError(ExplorerError):
    """A lesson file that cannot be used; the message names the file and what to fix."""


@dataclass(frozen=True)
class Lesson:
    """One checked lesson: its number and file, the experiment with checked ``params``, the
    question and its ``choices`` ((key, label) pairs), the lesson ``text`` and the
    ``feedback`` template (markdown)."""

    number: int
    path: Path
    title: str
    experiment: Experiment
    params: Mapping[str, object]
    question: str
    choices: tuple[tuple[str, str], ...]
    text: str
    feedback: str

    def run(self, context: Context) -> Outcome:
        return self.experiment(context, self.params)

    def right(self, outcome: Outcome) -> frozenset[str]:
        """The keys of the choices ``outcome``'s numbers make right (several on a tie)."""
        return outcome.answer.right([key for key, _ in self.choices])

    def label(self, key: str) -> str:
        return dict(self.choices)[key]

    def feedback_for(self, outcome: Outcome) -> str:
        """The feedback with the facts of ``outcome`` and the right answer filled in."""
        right = [key for key, _ in self.choices if key in self.right(outcome)]
        answer = " and ".join(f"**{self.label(key)}**" for key in right)
        value = outcome.answer.shown(outcome.answer.value(right[0]))
        return self.feedback.format_map({**outcome.facts, "answer": answer,
                                         "answer_value": value})


@dataclass(frozen=True)
class Broken:
    """A lesson file that did not load: its number (None when the name has none) and why."""

    number: int | None
    path: Path
    message: str

    @property
    def title(self) -> str:
        return self.path.name


Entry = Lesson | Broken


def load_lessons(folder: Path = LESSONS,
                 bundle_of: Callable[[str], ModelBundle] = load_demo) -> tuple[Entry, ...]:
    """Every lesson file in ``folder`` (its README aside), in number order, each checked:
    a :class:`Lesson`, or a :class:`Broken` with its message. ``bundle_of`` gives the demo
    models the checks look at (the app passes its shared cache)."""
    found: list[Entry] = []
    taken: dict[int, str] = {}
    bundle_of = functools.cache(bundle_of)  # each model loaded once per call
    for path in sorted(folder.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        try:
            lesson = read_lesson(path, bundle_of)
            if lesson.number in taken:
                raise LessonError(f"{path.name}: lesson number {lesson.number:02d} is also "
                                  f"used by {taken[lesson.number]}; give each file its own.")
            taken[lesson.number] = path.name
            found.append(lesson)
        except ExplorerError as exc:
            match = NAME.match(path.name)
            found.append(Broken(int(match[1]) if match else None, path, str(exc)))
    return tuple(sorted(found, key=lambda item: (item.number is None, item.number or 0)))


def read_lesson(path: Path, bundle_of: Callable[[str], ModelBundle] = load_demo) -> Lesson:
    """One lesson file, checked (see the module docstring); a :class:`LessonError` (any
    :class:`ExplorerError`, prefixed with the file's name) if it cannot be used."""
    try:
        return _read(path, bundle_of)
    except LessonError:
        raise
    except ExplorerError as exc:
        raise LessonError(f"{path.name}: {exc}") from None


def _read(path: Path, bundle_of: Callable[[str], ModelBundle]) -> Lesson:
    match = NAME.match(path.name)
    if match is None:
        raise LessonError(f"{path.name[:80]}: a lesson file is named NN-slug.md "
                          "(two digits, a dash, lowercase words joined by dashes).")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LessonError(f"{path.name}: larger than {MAX_FILE_BYTES // 1024} KiB; a lesson "
                          "is a short text.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LessonError(f"{path.name}: not UTF-8 text.") from None
    fields, body = split_front_matter(text)
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise LessonError(f"{path.name}: the front matter lacks {', '.join(missing)}.")
    experiment = EXPERIMENTS.get(fields["experiment"])
    if experiment is None:
        raise LessonError(f"{path.name}: unknown experiment {short(fields['experiment'])}; "
                          f"choose one of: {', '.join(EXPERIMENTS)}.")
    params = check_params(experiment, fields["params"], bundle_of)
    choices = _choices(fields["choices"], experiment, bundle_of(params["model"]), params)
    lesson_text, feedback = _body(body, experiment)
    return Lesson(int(match[1]), path, fields["title"], experiment, params, fields["question"],
                  choices, lesson_text, feedback)


def split_front_matter(text: str) -> tuple[dict[str, object], str]:
    """(the front matter's fields, the body after it); :class:`ExplorerError` naming the
    line for anything outside the format."""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        raise ExplorerError("the file must start with a line '---' opening the front matter.")
    end = next((i for i, line in enumerate(lines[1:], 1) if line.rstrip() == "---"), None)
    if end is None:
        raise ExplorerError("the front matter has no closing '---' line.")
    fields: dict[str, object] = {}
    current: dict[str, object] | None = None
    for number, line in enumerate(lines[1:end], 2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            raise ExplorerError(f"front matter line {number}: a tab; indent with spaces.")
        nested = line.startswith(" ")
        key, value = _key_value(line.strip(), number)
        target = current if nested else fields
        if target is None:
            raise ExplorerError(f"front matter line {number}: indented, but no params: or "
                                "choices: above it.")
        if key in target:
            raise ExplorerError(f"front matter line {number}: {short(key)} is given twice.")
        if nested:
            target[key] = _scalar(value) if current is fields.get("params") else value
            continue
        if key not in FIELDS:
            raise ExplorerError(f"front matter line {number}: unknown field {short(key)}; "
                                f"the fields are: {', '.join(FIELDS)}.")
        if (key in MAPPINGS) != (value == ""):
            what = "indented lines below it" if key in MAPPINGS else "a value on its line"
            raise ExplorerError(f"front matter line {number}: {key} takes {what}.")
        current = fields[key] = {} if key in MAPPINGS else None
        if key not in MAPPINGS:
            fields[key] = value
    return fields, "\n".join(lines[end + 1:])


def _key_value(line: str, number: int) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep or not KEY.match(key.strip()):
        raise ExplorerError(f"front matter line {number}: expected 'key: value', got "
                            f"{short(line)}.")
    return key.strip(), _unquoted(value.strip())


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _scalar(value: str) -> object:
    """A parameter value: an int, a float, a ``[a, b]`` list of them or text."""
    if value.startswith("[") and value.endswith("]"):
        return [_scalar(v.strip()) for v in value[1:-1].split(",") if v.strip()]
    if NUMBER.match(value):
        return float(value) if "." in value else int(value)
    return value


def _choices(raw: dict[str, str], experiment: Experiment, bundle: ModelBundle,
             params: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    if not MIN_CHOICES <= len(raw) <= MAX_CHOICES:
        raise ExplorerError(f"choices must list {MIN_CHOICES} to {MAX_CHOICES} answers; "
                            f"got {len(raw)}.")
    keys = experiment.keys(bundle, params)
    if keys is None:
        bad = [k for k in raw if not NUMBER.match(k)]
        rule = "numbers (the right one is the nearest to the measured value)"
    else:
        bad = [k for k in raw if k not in keys]
        rule = f"one of: {', '.join(keys)}"
    if bad:
        raise ExplorerError(f"choice {short(bad[0])} is not an answer experiment "
                            f"{experiment.name} can give; its choices are {rule}.")
    empty = [k for k, label in raw.items() if not label]
    if empty:
        raise ExplorerError(f"choice {short(empty[0])} has no text; write 'key: what it says'.")
    return tuple(raw.items())


def _body(body: str, experiment: Experiment) -> tuple[str, str]:
    parts = FEEDBACK.split(body)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ExplorerError("the text needs the lesson, then one '## Feedback' heading and "
                            "the feedback below it.")
    allowed = {*experiment.facts, *ANSWER_FIELDS}
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in
                  string.Formatter().parse(parts[1]) if name is not None]
    except ValueError as exc:
        raise ExplorerError(f"the feedback has a stray brace ({exc}); write {{{{ for a "
                            "literal {.") from None
    for name, spec, conv in fields:
        if name not in allowed or spec or conv:
            raise ExplorerError(
                f"the feedback quotes {{{short(name)}}}, which experiment {experiment.name} "
                f"does not give; it gives: {', '.join(sorted(allowed))}.")
    return parts[0].strip(), parts[1].strip()
