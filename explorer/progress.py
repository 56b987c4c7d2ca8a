"""How a long engine run reports progress and is stopped: one callback shape for every job.

A sensitivity scan, a criteria sweep, the trade-off baselines and a fine-tuning run take
seconds to minutes. They all report the same way, so the app's background jobs, the CLI and
a notebook drive any of them with the same two callables:

* ``progress(done, total, so_far)`` (:data:`Progress`), called after each step: ``done`` of
  ``total`` steps of the whole run, and what the run has so far where something is worth
  showing (the :class:`~explorer.decide.sensitivity.Sensitivity` so far, the
  :class:`~explorer.finetune.fixed_masks.EpochRecord` just finished, the criterion or baseline being
  swept), else None;
* ``cancelled()`` (:data:`Cancelled`), passed as the keyword ``cancelled`` and checked
  between steps: once it returns True the run stops and returns what it has, with
  ``cancelled=True`` on its result. A stopped run is never an error.

No torch or Streamlit here: the shapes are plain callables, so any caller can supply them.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, object], None]
Cancelled = Callable[[], bool]


def tick(progress: Progress | None, done: int, total: int, so_far: object = None) -> None:
    """Report ``done`` of ``total`` steps (and ``so_far``) to ``progress``, if there is one."""
    if progress is not None:
        progress(done, total, so_far)


def stop_now(cancelled: Cancelled | None) -> bool:
    """Whether the run should stop before its next step: ``cancelled()`` said so."""
    return cancelled is not None and cancelled()
