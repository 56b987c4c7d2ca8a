"""One session's state, shared by every page: model, data, plan, history, undo.

The loaded model, its score cache and the demo data are ``st.cache_resource`` objects
shared by all browser sessions and never written. Every cache shared between sessions is
keyed by :attr:`Session.key`, a digest of the model's and the data's *content*: two users'
uploads of the same file name are different models, and an object's ``id()`` is reused
after it is collected, so neither a name nor an identity may key what another session reads.
Each session owns its evaluator (which remembers its last plan), its plan, the plans it
evaluated and its undo stack. The plan is the one source of truth: sliders, the URL and the
sidebar are drawn from it on every run. It is mirrored into the URL so a reload or a shared
link reproduces the view; an upload's link keeps its plan and asks for the file again.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import streamlit as st
import torch

from explorer.batchnorm import CALIBRATION_IMAGES, calibration_for
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet, digits_validation, stratified_subset
from explorer.errors import ExplorerError
from explorer.evaluator import Evaluator
from explorer.finetune.retrain import weights_digest
from explorer.limits import SMALL_EVALUATION_FLOPS
from explorer.load.data_file import (
    DataShape,
    check_compatible,
    load_data_bytes,
    peek_data_bytes,
    require_digits_input,
    with_padding,
)
from explorer.load.demos import load_demo, load_pretrained
from explorer.load.memory import UPLOADS, check_memory
from explorer.load.model_file import load_model_bytes
from explorer.load.transformers import EXTRA_COMMAND, extra_installed
from explorer.load.zoo import PRETRAINED, ZOO
from explorer.masks import ScoreCache
from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.progress import Progress
from explorer.ui.urls import UPLOAD_PREFIX, plan_from_query, plan_to_query, upload_name

DEFAULT_MODEL = "digits-cnn"
HISTORY_LIMIT = 500

# Session-state keys every page shares (a page's own widget keys are named in the page).
MODEL_KEY = "model"  # the current model's id
PLAN_KEY = "plan"  # the current Plan: sliders, URL and sidebar are drawn from it
UNDO_KEY = "undo"  # plans to go back to
HISTORY_KEY = "history"  # {model id: {plan key: (Plan, Metrics)}} evaluated in this session
EVALUATORS_KEY = "evaluators"  # {model id: this session's Evaluator}
UPLOADS_KEY = "uploads"  # {model id: entry}: uploads and models made in this session
NOTICE_KEY = "notice"  # one message the next page draw shows at its top
LINK_ERROR_KEY = "link_error"  # why the model asked for cannot be loaded here (an error)
PICKER_KEY = "model_picker"  # the sidebar's model picker
PLAN_FILE_KEY = "plan_file"  # the sidebar's plan uploader
PENDING_KEY = "pending_upload"  # a link's upload not loaded yet: {"name": ..., "plan": ...}
SLIDER_PREFIX = "sparsity::"  # + layer name: the Prune page's slider of that layer
JUDGES_KEY = "split_evaluators"  # {model id: (bundle, data, SplitEvaluator)}
DEVICE_KEY = "device"  # where this session's evaluations run: "cuda" or "cpu" (unset: auto)
DEVICE_PICKER_KEY = "device_picker"  # the sidebar's device choice (shown only with CUDA)
BUDGET_KEY = "memory_budget"  # bytes an evaluator keeps for resuming (unset: the default)
BUDGET_PICKER_KEY = "memory_budget_picker"  # the sidebar's memory choice
BN_KEY = "bn_recalibration"  # False: judge plans with raw BatchNorm statistics (unset: True)
RAY_KEY = "ray_address"  # where sweeps run: a Ray address (unset or None: this process)
RAY_ERROR_KEY = "ray_address_error"  # why the last Ray address typed was refused


@st.cache_resource(show_spinner="Loading the demo model...")
def shared_demo(name: str) -> ModelBundle:
    return load_demo(name)


@st.cache_resource(show_spinner="Loading the pretrained model and its sentences (10-25 s)...")
def shared_pretrained(name: str) -> tuple[ModelBundle, ValidationSet, str]:
    """A pretrained model, the labelled set it comes with and that set's digest."""
    bundle, data = load_pretrained(name)
    return bundle, data, data_digest(data)


@st.cache_resource(show_spinner=False)
def shared_digits() -> ValidationSet:
    return digits_validation()


@st.cache_resource(show_spinner=False)
def shared_digits_digest() -> str:
    return data_digest(shared_digits())


@st.cache_resource(show_spinner=False)
def shared_scores(key: str, _bundle: ModelBundle, _data: ValidationSet | None) -> ScoreCache:
    """One score cache per model and data content (:attr:`Session.key`) for every session."""
    return ScoreCache(_bundle, _data)


@st.cache_resource(show_spinner="Loading the uploaded model...", max_entries=8)
def shared_upload(digest: str, _data: bytes, filename: str, input_shape: tuple | None):
    return load_model_bytes(_data, filename, input_shape=input_shape)


NO_DATA_NOTE = (
    "Architecture-only model: its weights are random (fixed seed) and it has no validation "
    "data, so accuracy and loss are not available. Use it to explore FLOPs, size and "
    "structure; a trained model uploaded with its data (Model page) gets an accuracy."
)
NO_LABELS_NOTE = (
    "This validation data has no labels (x alone), so accuracy and loss are not available; "
    "the Prune page shows how close each plan stays to the dense model instead (top-1 "
    "agreement, KL, cosine). Upload the data with y for accuracy."
)


def stop_without_labels(data: ValidationSet | None, why: str) -> None:
    """On a page that measures accuracy: data without labels says so (and ``why`` the page
    needs them), and the page stops there."""
    if data is not None and not data.labelled:
        st.info(f"{NO_LABELS_NOTE} {why}")
        st.stop()


@dataclass
class Session:
    """What a page works with: the model, its data, this session's evaluator and plan.

    ``data`` is None for an architecture-only model: pages that need data say so
    (:data:`NO_DATA_NOTE`) and metrics carry no accuracy or loss. ``key`` names the model's
    and the data's content: every cache shared between sessions is keyed by it.
    """

    model_id: str
    bundle: ModelBundle
    data: ValidationSet | None
    evaluator: Evaluator
    key: str

    @property
    def plan(self) -> Plan:
        return st.session_state[PLAN_KEY]

    def evaluate(self, plan: Plan | None = None, progress: Progress | None = None) -> Metrics:
        """Metrics of ``plan`` (default: the current plan); recorded in the history.
        ``progress`` hears the estimate and the refinement (see
        :meth:`~explorer.evaluator.Evaluator.evaluate`); a rerun it raises stops the
        evaluation there, and the newest plan's run starts."""
        plan = plan or self.plan
        metrics = self.evaluator.evaluate(plan, progress)
        history = st.session_state.setdefault(HISTORY_KEY, {}).setdefault(self.model_id, {})
        history[plan.key] = (plan, metrics)
        while len(history) > HISTORY_LIMIT:
            history.pop(next(iter(history)))
        return metrics

    def dense(self) -> Metrics:
        return self.evaluator.evaluate(Plan())

    @property
    def results_key(self) -> tuple[str, str]:
        """What a cached result (a scan, curves, an export) depends on: the model's and the
        data's content (:attr:`key`) and how plans are judged (BatchNorm raw, or
        recalibrated on which images: the evaluator's ``judging``)."""
        return self.key, self.evaluator.judging

    def history(self) -> list[tuple[Plan, Metrics]]:
        """The plans evaluated on this model, judged as the evaluator judges now (with or
        without BatchNorm recalibration: the two are never mixed in one chart)."""
        kept = st.session_state.get(HISTORY_KEY, {}).get(self.model_id, {}).values()
        return [(p, m) for p, m in kept if m.bn_recalibrated == self.evaluator.recalibrates]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def data_digest(data: ValidationSet | None) -> str:
    """A digest of the data's content: x and y (dtype, shape, bytes) and the class count."""
    if data is None:
        return "no-data"
    h = hashlib.sha256(f"{data.num_classes};".encode())
    for tensor in (t for t in (data.x, data.y) if t is not None):  # y None: no labels
        array = tensor.detach().contiguous().cpu().numpy()
        h.update(f"{array.dtype}{array.shape};".encode())
        h.update(array)
    return h.hexdigest()[:16]


def _init_from_url() -> None:
    """On a session's first run, take model and plan from the URL (bad values: a warning).

    An upload's link cannot bring its file: the session starts on the default model and
    keeps the link's plan until the file is uploaded again (:data:`PENDING_KEY`).
    """
    if PLAN_KEY in st.session_state:
        return
    params = st.query_params.to_dict()
    model = params.get("model", DEFAULT_MODEL)
    st.session_state[MODEL_KEY] = model if model in named_models() else DEFAULT_MODEL
    st.session_state[UNDO_KEY] = []
    if model in PRETRAINED and model not in named_models():
        st.session_state[LINK_ERROR_KEY] = (
            f"The link's model {model!r} needs the optional transformers extra, which this "
            f"server does not have: run {EXTRA_COMMAND} and restart the app. Showing "
            f"{DEFAULT_MODEL}.")
    elif model not in ZOO and upload_name(model) is None:
        st.session_state[NOTICE_KEY] = (f"The link's model {model[:80]!r} is not a demo model; "
                                      f"showing {DEFAULT_MODEL}.")
    try:
        plan = plan_from_query(params)
    except ExplorerError as exc:
        plan = Plan()
        st.session_state[NOTICE_KEY] = f"The plan in the link was ignored: {exc}"
    name = upload_name(model)
    if name is None:
        st.session_state[PLAN_KEY] = plan
        return
    st.session_state[PLAN_KEY] = Plan()
    st.session_state[PENDING_KEY] = {"name": name, "plan": plan}


def pending_upload_note() -> str | None:
    """What a session opened from an upload's link must be told (None if nothing)."""
    pending = st.session_state.get(PENDING_KEY)
    if pending is None:
        return None
    plan = pending["plan"]
    what = "its plan" if not plan.removes_nothing else "it"
    return (f"This link is for an uploaded model, **{pending['name']}**, and uploaded files "
            "are not kept between sessions: upload it again on the Model page (Upload your "
            f"own model) and {what} from the link is applied. Until then you see "
            f"{DEFAULT_MODEL}; changing the plan or the model here drops the link's plan.")


def named_models() -> list[str]:
    """The models a name loads here: the demo zoo, and the pretrained models whose extra is
    installed (without it they are not offered; a link to one says which command adds it)."""
    return [*ZOO, *(name for name in PRETRAINED if extra_installed())]


def model_choices() -> list[str]:
    uploads = list(st.session_state.get(UPLOADS_KEY, {}))
    return [*named_models(), *uploads]


def _registered_key(entry: dict) -> str:
    """An upload's key (its file's digest); a model made here: its name and weights."""
    if "key" not in entry:
        bundle = entry["bundle"]
        entry["key"] = (f"made:{digest(bundle.name.encode())}:{weights_digest(bundle.model)}"
                        f":{data_digest(entry['data'])}")
    return entry["key"]


def _bundle_and_data(model_id: str) -> tuple[ModelBundle, ValidationSet | None, str]:
    if model_id.startswith(UPLOAD_PREFIX):
        upload = st.session_state[UPLOADS_KEY][model_id]
        return upload["bundle"], upload["data"], _registered_key(upload)
    if model_id in PRETRAINED:  # the package's weights and the shipped corpus are fixed
        bundle, data, data_key = shared_pretrained(model_id)
        return bundle, data, f"pretrained:{model_id}:{data_key}"
    if ZOO[model_id].architecture_only:  # shipped weights are fixed: the name is the content
        return shared_demo(model_id), None, f"demo:{model_id}:no-data"
    return shared_demo(model_id), shared_digits(), f"demo:{model_id}:{shared_digits_digest()}"


def current_session() -> Session:
    """The session for this run: state from the URL on first run, plan checked vs the model."""
    _init_from_url()
    model_id = st.session_state[MODEL_KEY]
    if model_id not in model_choices():
        model_id = st.session_state[MODEL_KEY] = DEFAULT_MODEL
    try:
        bundle, data, key = _bundle_and_data(model_id)
    except ExplorerError as exc:  # a pretrained model whose installed package fails to load
        st.session_state[LINK_ERROR_KEY] = (f"{model_id} could not be loaded: {exc} "
                                            f"Showing {DEFAULT_MODEL}.")
        model_id = st.session_state[MODEL_KEY] = DEFAULT_MODEL
        st.session_state[PLAN_KEY] = Plan()
        bundle, data, key = _bundle_and_data(model_id)
    torch.set_num_threads(run_threads(bundle, data))
    evaluators = st.session_state.setdefault(EVALUATORS_KEY, {})
    if model_id not in evaluators:
        evaluators[model_id] = Evaluator(bundle, data, shared_scores(key, bundle, data),
                                         **evaluator_settings())
    try:
        st.session_state[PLAN_KEY].check(bundle)
    except ExplorerError as exc:
        st.session_state[PLAN_KEY] = Plan()
        st.session_state[NOTICE_KEY] = f"The plan did not fit {bundle.name} and was reset: {exc}"
    session = Session(model_id, bundle, data, evaluators[model_id], key)
    sync_url(session)
    return session


TORCH_THREADS = torch.get_num_threads()  # torch's default in this process, before any run


def run_threads(bundle: ModelBundle, data: ValidationSet | None) -> int:
    """torch intra-op threads for this script run (its own thread): one for a small
    evaluation, torch's default for a large one (see
    :data:`~explorer.limits.SMALL_EVALUATION_FLOPS`)."""
    work = bundle.flops * (0 if data is None else len(data))
    return 1 if work < SMALL_EVALUATION_FLOPS else TORCH_THREADS


def evaluator_settings() -> dict:
    """This session's settings for every evaluator it builds for the current model: memory
    budget, device and the images BatchNorm is recalibrated on (:func:`bn_calibration`)."""
    return {"memory_budget": st.session_state.get(BUDGET_KEY),
            "device": st.session_state.get(DEVICE_KEY),
            "bn_calibration": bn_calibration(st.session_state[MODEL_KEY])[0]}


def bn_calibration(model_id: str) -> tuple[ValidationSet | None, str | None]:
    """The images model ``model_id``'s BatchNorms are recalibrated on, and a note when a
    BatchNorm model has none (:func:`explorer.batchnorm.calibration_for`): the digits
    training split for the digits data, an upload's calibration file, or none."""
    bundle, data, _ = _bundle_and_data(model_id)
    if data is None:
        return None, None
    upload = st.session_state.get(UPLOADS_KEY, {}).get(model_id, {})
    return calibration_for(bundle, upload.get("calibration"),
                           validation_is_digits=data is shared_digits(),
                           enabled=st.session_state.get(BN_KEY, True))


def drop_evaluators() -> None:
    """Forget this session's evaluators: the next page run builds them with the current
    settings (their remembered metrics go; the shared score caches stay)."""
    st.session_state.pop(EVALUATORS_KEY, None)
    st.session_state.pop(JUDGES_KEY, None)


def sync_url(session: Session) -> None:
    """Mirror model and plan into the query string (only when they changed).

    An upload is named ``model=upload:<file name>`` with its plan, so a reload can ask for
    the file and keep the plan. While a link's upload is pending, its link stays as it was.
    """
    if PENDING_KEY in st.session_state:
        return
    model = session.model_id
    if model.startswith(UPLOAD_PREFIX):
        model = UPLOAD_PREFIX + st.session_state[UPLOADS_KEY][model].get(
            "name", model.removeprefix(UPLOAD_PREFIX))
    wanted = {"model": model, **plan_to_query(session.plan)}
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def granularity_index(bundle: ModelBundle, plan: Plan) -> int:
    """Where ``plan``'s granularity is among the per-layer ones a page offers
    (``bundle.granularities``); 0 (weights) for a blocks plan, which only the Prune page
    sets."""
    kinds = bundle.granularities
    return kinds.index(plan.granularity) if plan.granularity in kinds else 0


def set_plan(plan: Plan, *, undoable: bool = True) -> None:
    """Make ``plan`` current; the previous one goes on the undo stack.

    Widgets are not touched here: a slider change may still be queued behind this one, and
    deleting its key would lose it. The Prune page draws its sliders from the plan.
    """
    current = st.session_state.get(PLAN_KEY)
    if current is not None and current == plan:
        return
    if undoable and current is not None:
        st.session_state.setdefault(UNDO_KEY, []).append(current)
    st.session_state[PLAN_KEY] = plan
    st.session_state.pop(PENDING_KEY, None)


def undo() -> None:
    stack = st.session_state.get(UNDO_KEY, [])
    if stack:
        set_plan(stack.pop(), undoable=False)


def reset() -> None:
    current = st.session_state.get(PLAN_KEY, Plan())
    set_plan(Plan(granularity=current.granularity, criterion=current.criterion))


def choose_model(model_id: str) -> None:
    """Switch model: the plan (whose layer names belong to the old model) starts afresh."""
    if model_id == st.session_state.get(MODEL_KEY):
        return
    st.session_state[MODEL_KEY] = model_id
    st.session_state[PLAN_KEY] = Plan()
    st.session_state[UNDO_KEY] = []
    st.session_state.pop(PENDING_KEY, None)


def _upload_id(name: str, key: str) -> str:
    """The picker id of an upload: its file name; ``name (2)``... for other bytes."""
    uploads = st.session_state.get(UPLOADS_KEY, {})
    candidates = (UPLOAD_PREFIX + name + (f" ({n})" if n > 1 else "") for n in itertools.count(1))
    return next(c for c in candidates if c not in uploads or uploads[c].get("key") == key)


def add_upload(model_file, data_file, calibration_file=None) -> str:
    """Load an uploaded model (and data); on failure raise, leaving the current model loaded.

    Returns the new model's id. ``model_file`` / ``data_file`` / ``calibration_file`` are
    Streamlit UploadedFiles (anything with ``.name`` and ``.getvalue()``); the calibration
    images (for BatchNorm recalibration, never the validation images) are kept as the fixed
    subset recalibration uses. If this session was opened from an upload's link, the link's
    plan is applied when this is that file and the plan fits.
    """
    # Data headers first, then the model, then the memory check (this session's and the
    # server's), and only then the data's values.
    raw_data = data_file.getvalue() if data_file is not None else None
    peeked = peek_data_bytes(raw_data, data_file.name) if raw_data is not None else None
    raw = model_file.getvalue()
    model_digest = digest(raw)
    bundle = shared_upload(model_digest, raw, model_file.name,
                           peeked.sample_shape if peeked else None)
    if peeked is not None:
        bundle = with_padding(bundle, peeked)  # a copy: the shared bundle stays as loaded
    else:
        require_digits_input(bundle)
        data = shared_digits()
    held = UPLOADS.reserve(check_memory(bundle, peeked or DataShape.of(data)).total)
    try:
        if peeked is not None:
            data = load_data_bytes(raw_data, data_file.name)
        check_compatible(bundle, data)
        calibration = None if calibration_file is None else _calibration_upload(
            bundle, calibration_file)
    except ExplorerError:
        held.release()
        raise
    key = f"upload:{model_digest}:{data_digest(data)}"
    if bundle.card.get("pad_id") is not None:  # per-token statistics leave it out
        key += f":pad{bundle.card['pad_id']}"
    model_id = _upload_id(model_file.name, key)
    # the reservation ("memory") returns its bytes when this entry is dropped
    st.session_state.setdefault(UPLOADS_KEY, {})[model_id] = {
        "bundle": bundle, "data": data, "key": key, "name": model_file.name,
        "memory": held, "calibration": calibration}
    st.session_state.get(EVALUATORS_KEY, {}).pop(model_id, None)
    pending = st.session_state.pop(PENDING_KEY, None)
    choose_model(model_id)
    if pending is not None and pending["name"] == model_file.name:
        _apply_link_plan(pending["plan"], bundle)
    return model_id


def _calibration_upload(bundle: ModelBundle, file) -> ValidationSet:
    """An upload's calibration images: checked like validation data, kept as the fixed
    subset recalibration runs on (a few hundred images, whatever the file holds)."""
    raw = file.getvalue()
    check_memory(bundle, peek_data_bytes(raw, file.name))
    loaded = load_data_bytes(raw, file.name)
    check_compatible(bundle, loaded)
    if len(loaded) <= CALIBRATION_IMAGES:
        return loaded
    return stratified_subset(loaded, CALIBRATION_IMAGES)


def _apply_link_plan(plan: Plan, bundle: ModelBundle) -> None:
    try:
        plan.check(bundle)
    except ExplorerError as exc:
        st.session_state[NOTICE_KEY] = f"The link's plan did not fit and was not applied: {exc}"
        return
    st.session_state[PLAN_KEY] = plan


def add_model(model_id: str, bundle: ModelBundle, data: ValidationSet | None) -> str:
    """Register a model made in this session (a fine-tuned one) like an upload, and select it.

    The sidebar picker, every page and the Export page then work with it. Its shared caches
    are keyed by its name and a digest of its weights and data. ``model_id`` gets the upload
    prefix. Returns the id.
    """
    if not model_id.startswith(UPLOAD_PREFIX):
        model_id = UPLOAD_PREFIX + model_id
    st.session_state.setdefault(UPLOADS_KEY, {})[model_id] = {"bundle": bundle, "data": data}
    st.session_state.get(EVALUATORS_KEY, {}).pop(model_id, None)
    choose_model(model_id)
    return model_id
