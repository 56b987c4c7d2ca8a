"""One session's state, shared by every page: model, data, plan, history, undo.

The loaded model, its score cache and the demo data are ``st.cache_resource`` objects
shared by all browser sessions and never written. Each session owns its evaluator (which
remembers its last plan), its plan, the plans it evaluated and its undo stack. The plan is
mirrored into the URL so a reload or a shared link reproduces the view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet, digits_validation
from explorer.datafiles import (
    DataShape,
    check_compatible,
    load_data_bytes,
    peek_data_bytes,
    require_digits_input,
)
from explorer.errors import ExplorerError
from explorer.evaluator import Evaluator
from explorer.io import load_model_bytes
from explorer.masks import ScoreCache
from explorer.memory import UPLOADS, check_memory
from explorer.metrics import Metrics
from explorer.models import load_demo
from explorer.plan import Plan
from explorer.ui.urls import plan_from_query, plan_to_query
from explorer.zoo import ZOO

DEFAULT_MODEL = "digits-cnn"
UPLOAD_PREFIX = "upload:"
SLIDER_PREFIX = "sparsity::"
HISTORY_LIMIT = 500


@st.cache_resource(show_spinner="Loading the demo model...")
def shared_demo(name: str) -> ModelBundle:
    return load_demo(name)


@st.cache_resource(show_spinner=False)
def shared_digits() -> ValidationSet:
    return digits_validation()


@st.cache_resource(show_spinner=False)
def shared_scores(model_id: str, _bundle: ModelBundle, _data: ValidationSet | None) -> ScoreCache:
    """One score cache per model (and its validation data) for every session."""
    return ScoreCache(_bundle, _data)


@st.cache_resource(show_spinner="Loading the uploaded model...", max_entries=8)
def shared_upload(digest: str, _data: bytes, filename: str, input_shape: tuple | None):
    return load_model_bytes(_data, filename, input_shape=input_shape)


NO_DATA_NOTE = (
    "Architecture-only model: its weights are random (fixed seed) and it has no validation "
    "data, so accuracy and loss are not available. Use it to explore FLOPs, size and "
    "structure; a trained model uploaded with its data (Model page) gets an accuracy."
)


@dataclass
class Session:
    """What a page works with: the model, its data, this session's evaluator and plan.

    ``data`` is None for an architecture-only model: pages that need data say so
    (:data:`NO_DATA_NOTE`) and metrics carry no accuracy or loss.
    """

    model_id: str
    bundle: ModelBundle
    data: ValidationSet | None
    evaluator: Evaluator

    @property
    def plan(self) -> Plan:
        return st.session_state["plan"]

    def evaluate(self, plan: Plan | None = None) -> Metrics:
        """Metrics of ``plan`` (default: the current plan); recorded in the history."""
        plan = plan or self.plan
        metrics = self.evaluator.evaluate(plan)
        history = st.session_state.setdefault("history", {}).setdefault(self.model_id, {})
        history[plan.to_json()] = (plan, metrics)
        while len(history) > HISTORY_LIMIT:
            history.pop(next(iter(history)))
        return metrics

    def dense(self) -> Metrics:
        return self.evaluator.evaluate(Plan())

    def history(self) -> list[tuple[Plan, Metrics]]:
        return list(st.session_state.get("history", {}).get(self.model_id, {}).values())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _init_from_url() -> None:
    """On a session's first run, take model and plan from the URL (bad values: a warning)."""
    if "plan" in st.session_state:
        return
    params = st.query_params.to_dict()
    model = params.get("model", DEFAULT_MODEL)
    st.session_state["model"] = model if model in ZOO else DEFAULT_MODEL
    try:
        st.session_state["plan"] = plan_from_query(params)
    except ExplorerError as exc:
        st.session_state["plan"] = Plan()
        st.session_state["notice"] = f"The plan in the link was ignored: {exc}"
    st.session_state["undo"] = []


def model_choices() -> list[str]:
    uploads = list(st.session_state.get("uploads", {}))
    return [*ZOO, *uploads]


def _bundle_and_data(model_id: str) -> tuple[ModelBundle, ValidationSet | None]:
    if model_id.startswith(UPLOAD_PREFIX):
        upload = st.session_state["uploads"][model_id]
        return upload["bundle"], upload["data"]
    if ZOO[model_id].architecture_only:
        return shared_demo(model_id), None
    return shared_demo(model_id), shared_digits()


def current_session() -> Session:
    """The session for this run: state from the URL on first run, plan checked vs the model."""
    _init_from_url()
    model_id = st.session_state["model"]
    if model_id not in model_choices():
        model_id = st.session_state["model"] = DEFAULT_MODEL
    bundle, data = _bundle_and_data(model_id)
    evaluators = st.session_state.setdefault("evaluators", {})
    if model_id not in evaluators:
        evaluators[model_id] = Evaluator(bundle, data, shared_scores(model_id, bundle, data))
    try:
        st.session_state["plan"].check(bundle)
    except ExplorerError as exc:
        st.session_state["plan"] = Plan()
        st.session_state["notice"] = f"The plan did not fit {bundle.name} and was reset: {exc}"
    session = Session(model_id, bundle, data, evaluators[model_id])
    sync_url(session)
    return session


def sync_url(session: Session) -> None:
    """Mirror model and plan into the query string (only when they changed)."""
    wanted = {"model": session.model_id if session.model_id in ZOO else DEFAULT_MODEL,
              **plan_to_query(session.plan)}
    if session.model_id.startswith(UPLOAD_PREFIX):
        wanted = {"model": session.model_id.removeprefix(UPLOAD_PREFIX)}
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def set_plan(plan: Plan, *, undoable: bool = True) -> None:
    """Make ``plan`` current; the previous one goes on the undo stack; sliders follow."""
    current = st.session_state.get("plan")
    if current is not None and current == plan:
        return
    if undoable and current is not None:
        st.session_state.setdefault("undo", []).append(current)
    st.session_state["plan"] = plan
    forget_sliders()


def undo() -> None:
    stack = st.session_state.get("undo", [])
    if stack:
        set_plan(stack.pop(), undoable=False)


def reset() -> None:
    current = st.session_state.get("plan", Plan())
    set_plan(Plan(granularity=current.granularity, criterion=current.criterion))


def forget_sliders() -> None:
    """Drop slider values so they are drawn again from the plan."""
    for key in [k for k in st.session_state if str(k).startswith(SLIDER_PREFIX)]:
        del st.session_state[key]


def choose_model(model_id: str) -> None:
    """Switch model: the plan (whose layer names belong to the old model) starts afresh."""
    if model_id == st.session_state.get("model"):
        return
    st.session_state["model"] = model_id
    st.session_state["plan"] = Plan()
    st.session_state["undo"] = []
    forget_sliders()


def add_upload(model_file, data_file) -> str:
    """Load an uploaded model (and data); on failure raise, leaving the current model loaded.

    Returns the new model's id. ``model_file`` / ``data_file`` are Streamlit UploadedFiles.
    """
    # Data headers first, then the model, then the memory check (this session's and the
    # server's), and only then the data's values.
    raw_data = data_file.getvalue() if data_file is not None else None
    peeked = peek_data_bytes(raw_data, data_file.name) if raw_data is not None else None
    raw = model_file.getvalue()
    bundle = shared_upload(digest(raw), raw, model_file.name,
                           peeked.sample_shape if peeked else None)
    if peeked is None:
        require_digits_input(bundle)
        data = shared_digits()
    held = UPLOADS.reserve(check_memory(bundle, peeked or DataShape.of(data)).total)
    try:
        if peeked is not None:
            data = load_data_bytes(raw_data, data_file.name)
        check_compatible(bundle, data)
    except ExplorerError:
        held.release()
        raise
    model_id = f"{UPLOAD_PREFIX}{model_file.name}"
    st.session_state.setdefault("uploads", {})[model_id] = {
        "bundle": bundle, "data": data,
        "memory": held}  # the reservation returns its bytes when this entry is dropped
    st.session_state.get("evaluators", {}).pop(model_id, None)
    choose_model(model_id)
    return model_id


def add_model(model_id: str, bundle: ModelBundle, data: ValidationSet | None) -> str:
    """Register a model made in this session (a fine-tuned one) like an upload, and select it.

    The sidebar picker, every page and the Export page then work with it. ``model_id`` must
    name these weights uniquely (score caches are shared between sessions by id: include a
    digest of the weights); it gets the upload prefix. Returns the id.
    """
    if not model_id.startswith(UPLOAD_PREFIX):
        model_id = UPLOAD_PREFIX + model_id
    st.session_state.setdefault("uploads", {})[model_id] = {"bundle": bundle, "data": data}
    st.session_state.get("evaluators", {}).pop(model_id, None)
    choose_model(model_id)
    return model_id
