"""What every page shares: the sidebar (model, plan file) and the page header."""

from __future__ import annotations

import streamlit as st

from explorer.errors import ExplorerError
from explorer.plan import Plan
from explorer.ui import state
from explorer.ui.state import Session


def page_setup(title: str, explanation: str) -> Session:
    """Load this session's model and plan, draw the sidebar and the page's header."""
    session = state.current_session()
    _sidebar(session)
    st.title(title)
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(explanation)
    notice = st.session_state.pop("notice", None)
    if notice:
        st.warning(notice)
    return session


def _label(model_id: str) -> str:
    if not model_id.startswith(state.UPLOAD_PREFIX):
        return model_id
    name = model_id.removeprefix(state.UPLOAD_PREFIX)
    made_here = "finetuned_from" in st.session_state["uploads"][model_id]["bundle"].card
    return name if made_here else f"{name} (uploaded)"  # a fine-tuned one says so already


def _on_pick() -> None:
    state.choose_model(st.session_state["model_picker"])


def _on_plan_file() -> None:
    upload = st.session_state.get("plan_file")
    if upload is None:
        return
    try:
        plan = Plan.from_bytes(upload.getvalue())  # size, encoding, depth, schema
        plan.check(state.current_session().bundle)
    except ExplorerError as exc:
        st.session_state["notice"] = f"The plan file was not loaded: {exc}"
        return
    state.set_plan(plan)


def _sidebar(session: Session) -> None:
    with st.sidebar:
        choices = state.model_choices()
        st.session_state["model_picker"] = session.model_id
        st.selectbox("Model", choices, key="model_picker", format_func=_label,
                     on_change=_on_pick, help="Upload your own on the Model page.")
        plan = session.plan
        st.caption(plan_summary(plan))
        st.download_button(
            "Download plan (JSON)", plan.to_json(), file_name="plan.json",
            mime="application/json", width="stretch",
        )
        st.file_uploader("Load a plan (JSON)", type=["json"], key="plan_file",
                         on_change=_on_plan_file)


def plan_summary(plan: Plan) -> str:
    """One line describing the plan, for the sidebar."""
    what = f"{plan.granularity} by {plan.criterion}"
    if plan.scope == "global":
        return f"Plan: {what}, {plan.amount:.0%} removed globally"
    pruned = {k: v for k, v in plan.sparsity.items() if v > 0}
    if not pruned:
        return f"Plan: {what}, nothing removed yet"
    return f"Plan: {what}, {len(pruned)} layer(s) pruned"
