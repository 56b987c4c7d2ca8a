"""What every page shares: the sidebar (model, plan file, device, memory, BatchNorm, where
sweeps run) and the page header."""

from __future__ import annotations

import streamlit as st
import torch

from explorer.batchnorm import norms_of
from explorer.errors import ExplorerError
from explorer.evaluator import default_memory_budget
from explorer.limits import MiB
from explorer.plan import Plan
from explorer.ui import cluster, state, texts
from explorer.ui.state import Session


def page_setup(title: str, explanation: str) -> Session:
    """Load this session's model and plan, draw the sidebar and the page's header."""
    session = state.current_session()
    _sidebar(session)
    st.title(title)
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(explanation)
    link_error = st.session_state.pop(state.LINK_ERROR_KEY, None)
    if link_error:
        st.error(link_error)
    notice = st.session_state.pop(state.NOTICE_KEY, None)
    if notice:
        st.warning(notice)
    pending = state.pending_upload_note()
    if pending:
        st.warning(pending, icon=":material/upload_file:")
    return session


def _label(model_id: str) -> str:
    if not model_id.startswith(state.UPLOAD_PREFIX):
        return model_id
    name = model_id.removeprefix(state.UPLOAD_PREFIX)
    made_here = "finetuned_from" in st.session_state[state.UPLOADS_KEY][model_id]["bundle"].card
    return name if made_here else f"{name} (uploaded)"  # a fine-tuned one says so already


def _on_pick() -> None:
    picked = st.session_state.get(state.PICKER_KEY)
    if picked in state.model_choices():
        state.choose_model(picked)


def _on_plan_file() -> None:
    upload = st.session_state.get(state.PLAN_FILE_KEY)
    if upload is None:
        return
    try:
        plan = Plan.from_bytes(upload.getvalue())  # size, encoding, depth, schema
        plan.check(state.current_session().bundle)
    except ExplorerError as exc:
        st.session_state[state.NOTICE_KEY] = f"The plan file was not loaded: {exc}"
        return
    state.set_plan(plan)


def _sidebar(session: Session) -> None:
    with st.sidebar:
        labels = {model_id: _label(model_id) for model_id in state.model_choices()}
        # Written on every run: after a page switch the key still holds the old page's
        # widget value, which the new page's picker would not take (it would show choice 0).
        st.session_state[state.PICKER_KEY] = session.model_id
        st.selectbox("Model", list(labels), key="model_picker", format_func=labels.__getitem__,
                     on_change=_on_pick, help="Upload your own on the Model page.")
        plan = session.plan
        st.caption(plan_summary(plan))
        st.download_button(
            "Download plan (JSON)", plan.to_json(), file_name="plan.json",
            mime="application/json", width="stretch",
        )
        st.file_uploader("Load a plan (JSON)", type=["json"], key="plan_file",
                         on_change=_on_plan_file)
        _device_setting()
        _memory_setting()
        _bn_setting(session)
        _ray_setting()


def _device_setting() -> None:
    """Where this session's evaluations run: a choice only where torch has a CUDA device."""
    if not torch.cuda.is_available():
        st.caption("Device: CPU (this machine's torch has no CUDA device)")
        return
    st.session_state[state.DEVICE_PICKER_KEY] = st.session_state.get(state.DEVICE_KEY, "cuda")
    st.selectbox("Device", ["cuda", "cpu"], key=state.DEVICE_PICKER_KEY, on_change=_on_device,
                 help="Where the model runs; the numbers are the same up to rounding.")


def _on_device() -> None:
    st.session_state[state.DEVICE_KEY] = st.session_state[state.DEVICE_PICKER_KEY]
    state.drop_evaluators()  # rebuilt on the new device


BUDGETS = {"auto": None, "none": 0, "64 MiB": 64 * MiB, "128 MiB": 128 * MiB,
           "256 MiB": 256 * MiB, "512 MiB": 512 * MiB}  # at most the default's cap


def _memory_setting() -> None:
    """How much memory this session's evaluators keep for resuming slider moves."""
    chosen = st.session_state.get(state.BUDGET_KEY)
    st.session_state[state.BUDGET_PICKER_KEY] = next(
        (label for label, value in BUDGETS.items() if value == chosen), "auto")
    st.selectbox(
        "Memory for fast slider moves", list(BUDGETS), key=state.BUDGET_PICKER_KEY,
        on_change=_on_budget,
        help=f"Activations kept so that a slider move recomputes only the layers after the "
             f"one it changed. auto: a sixteenth of the memory free now, at most 512 MiB "
             f"(here {default_memory_budget() // MiB} MiB); none: every move runs the whole "
             "network. More memory: faster moves on large validation sets.")


def _on_budget() -> None:
    st.session_state[state.BUDGET_KEY] = BUDGETS[st.session_state[state.BUDGET_PICKER_KEY]]
    state.drop_evaluators()  # rebuilt with the new budget


BN_PICKER_KEY = "bn_recalibration_picker"  # the sidebar's BatchNorm toggle


def _bn_setting(session: Session) -> None:
    """Whether pruned plans are judged with recalibrated BatchNorm statistics: shown only for
    a model with BatchNorm; without calibration images, the note saying why it cannot be."""
    if session.data is None or not norms_of(session.bundle.program):
        return
    _, note = state.bn_calibration(session.model_id)
    if note:
        st.caption(f"BatchNorm: raw statistics. {note}")
        return
    st.session_state[BN_PICKER_KEY] = st.session_state.get(state.BN_KEY, True)
    st.toggle("Recalibrate BatchNorm", key=BN_PICKER_KEY, on_change=_on_bn,
              help=texts.BN_RECALIBRATION)


def _on_bn() -> None:
    st.session_state[state.BN_KEY] = st.session_state[BN_PICKER_KEY]
    state.drop_evaluators()  # rebuilt with or without recalibration


RAY_PICKER_KEY = "ray_address_picker"  # the sidebar's "Run sweeps on" field


def _ray_setting() -> None:
    """Where sweeps run: this process, or a Ray cluster at an address; shown only where
    whoever started the server allowed it (:func:`explorer.ui.cluster.allowed`)."""
    if not cluster.allowed():
        return
    address, error = (st.session_state.get(k) for k in (state.RAY_KEY, state.RAY_ERROR_KEY))
    if not error:  # a refused address stays in the field, to be corrected
        st.session_state[RAY_PICKER_KEY] = address or ""
    st.text_input("Run sweeps on", key=RAY_PICKER_KEY, on_change=_on_ray,
                  placeholder="this process (or local, HOST:PORT)", help=cluster.HELP)
    if error:
        st.error(error)
    elif address:
        st.caption(f"Sweeps run on the Ray cluster at {address}.")


def _on_ray() -> None:
    cluster.choose(st.session_state[RAY_PICKER_KEY])


def plan_summary(plan: Plan) -> str:
    """One line describing the plan, for the sidebar."""
    what = f"{plan.granularity} by {plan.criterion}"
    if plan.scope == "global":
        return f"Plan: {what}, {plan.amount:.0%} removed globally"
    pruned = {k: v for k, v in plan.sparsity.items() if v > 0}
    if not pruned:
        return f"Plan: {what}, nothing removed yet"
    return f"Plan: {what}, {len(pruned)} layer(s) pruned"
