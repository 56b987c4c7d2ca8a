"""One session's :class:`~explorer.decide.held_out.SplitEvaluator` per model, and the note that
says which samples choose and which report (the Sensitivity and Trade-offs pages).

Per session, not shared: its score cache is computed on the calibration part, and a
session's uploads must never lend another session their numbers.
"""

from __future__ import annotations

import streamlit as st

from explorer.decide.held_out import SplitEvaluator
from explorer.look.sentences import samples_noun
from explorer.ui import state
from explorer.ui.state import Session


def judge_of(session: Session) -> SplitEvaluator:
    """The session's split evaluator for its model (a new one when the model or data under
    that id changed)."""
    store = st.session_state.setdefault(state.JUDGES_KEY, {})
    entry = store.get(session.model_id)
    if entry is None or entry[0] is not session.bundle or entry[1] is not session.data:
        entry = store[session.model_id] = (session.bundle, session.data,
                                           SplitEvaluator(session.bundle, session.data,
                                                          **state.evaluator_settings()))
    return entry[2]


def note(judge: SplitEvaluator) -> None:
    """The one-line caption: how many samples choose, which, and how many report."""
    if judge.split is not None:
        st.caption(judge.split.describe(samples_noun(judge.bundle.card)))
