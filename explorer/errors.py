"""One exception family, raised at the boundary with a message that says what to do.

Pages and the CLI show ``str(error)`` to the user; they never show a traceback for these.
A message quotes user input only through :func:`short` and :func:`name_some`, so that a
hostile input (a million layer names, a megabyte-long name) cannot make a message huge.
"""

from __future__ import annotations

import reprlib
from collections.abc import Collection

from explorer.limits import MAX_NAMED_IN_MESSAGE

SHORT_CHARS = 40  # one quoted value in a message, at most
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 2, 3, 3, 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHORT_CHARS


class ExplorerError(Exception):
    """Anything the user can fix: a bad file, a bad plan, a model we cannot handle."""


class ModelError(ExplorerError):
    """The model file cannot be loaded or used (format, corruption, NaN weights, shapes)."""


class DataError(ExplorerError):
    """The validation data cannot be loaded or does not fit the model."""


class PlanError(ExplorerError):
    """The pruning plan is malformed or does not fit the model."""


class DeviceError(ExplorerError):
    """The compute device asked for (CUDA) is not available to this machine's torch."""


def short(value: object) -> str:
    """``repr(value)`` cut to about :data:`SHORT_CHARS` characters (never built in full)."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr refuses > 4,300 digits
        return f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"
    text = _REPR.repr(value)
    return text if len(text) <= SHORT_CHARS else text[: SHORT_CHARS - 3] + "..."


def name_some(items: Collection[object], limit: int = MAX_NAMED_IN_MESSAGE) -> str:
    """The first ``limit`` items, each :func:`short`, and how many more:
    ``'a', 'b', 'c', 'd', 'e' and 999,995 more``."""
    shown = [short(item) for _, item in zip(range(limit), items, strict=False)]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest:,} more" if rest > 0 else "")
