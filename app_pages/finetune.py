"""Fine-tune: retrain the pruned model with its masks fixed (or prune iteratively), live."""

import streamlit as st

from explorer.errors import ExplorerError
from explorer.export.save import default_suffix, model_bytes
from explorer.finetune.fixed_masks import (
    DEFAULT_LR,
    SCHEDULES,
    FinetuneSettings,
    Finetuning,
    default_training_data,
)
from explorer.finetune.retrain import Retrained, plan_reproduces, retrain
from explorer.limits import MAX_FINETUNE_EPOCHS, MAX_ITERATIVE_STEPS
from explorer.load.data_file import load_data_bytes, require_digits_input
from explorer.look.sentences import samples_noun
from explorer.ui import jobs, state, texts
from explorer.ui.charts import finetune as finetune_charts
from explorer.ui.format import count, percent
from explorer.ui.layout import page_setup, plan_summary

JOB = "finetune"
CONTEXT = "ft_context"  # session key: what the last run started from, and its file
ONCE, ITERATIVE = "fine-tune the plan", "iterative pruning"
DIGITS, UPLOAD = "digits training split", "upload a file"
RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)

session = page_setup("Fine-tune", texts.FINETUNE)
bundle, plan = session.bundle, session.plan
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
state.stop_without_labels(session.data, "Fine-tuning trains on labels.")
if session.data is None:
    st.info(f"{bundle.name} has no validation data: fine-tuning needs data to train on and to "
            "measure the accuracy it wins back. Upload a trained model with its data on the "
            "Model page.")
    st.stop()

try:
    pruned, dense = session.evaluate(plan), session.dense()
    removes_nothing = not session.evaluator.masks(plan).masks
except ExplorerError as exc:
    st.error(f"This plan cannot be fine-tuned: {exc}")
    st.stop()


def _digits_reason() -> str | None:
    """Why the digits training split cannot train this model (None: it can)."""
    try:
        require_digits_input(bundle, "training data")
    except ExplorerError as exc:
        return str(exc)
    return None


NOT_DIGITS = _digits_reason()
SOURCES = (UPLOAD,) if NOT_DIGITS else (DIGITS, UPLOAD)


def _training_data():
    """The training set chosen (raises ExplorerError with the reason if unusable)."""
    if st.session_state.get("ft_source", SOURCES[0]) == DIGITS:
        return default_training_data(bundle)
    upload = st.session_state.get("ft_train_file")
    if upload is None:
        raise ExplorerError("Choose a training data file first (.npz or .pt with x, y).")
    return load_data_bytes(upload.getvalue(), upload.name, bundle.num_classes)


def _start(settings: FinetuneSettings) -> None:
    train, val = _training_data(), session.data
    scores = state.shared_scores(session.key, bundle, val)  # thread-safe, shared
    # from the BatchNorm statistics the plan's metrics were judged with (here, not in the job)
    statistics = None if settings.iterative else session.evaluator.bn_statistics(plan)

    def work(report: jobs.Reporter) -> Retrained:  # no Streamlit, no shared evaluator here
        records = []

        def progress(done: int, total: int, record) -> None:
            records.append(record)
            report(done, total, f"validation accuracy {percent(record.val_accuracy)}",
                   list(records))

        return retrain(Finetuning(bundle, plan, train, val, settings, statistics),
                       progress=progress,
                       cancelled=report.cancelled, scores=scores)

    label = f"{'Iterative pruning' if settings.iterative else 'Fine-tuning'} of {bundle.name}"
    jobs.start(JOB, label, work)  # raises JobRefused when the bounds on jobs are reached
    st.session_state[CONTEXT] = {"model_id": session.model_id, "model": bundle.name,
                                 "plan": plan, "dense": dense.accuracy,
                                 "pruned": pruned.accuracy, "data": val, "file": None}


def _controls(running: bool) -> None:
    st.markdown(f"**{plan_summary(plan)}** · pruned accuracy {percent(pruned.accuracy)} "
                f"(dense {percent(dense.accuracy)}), {count(pruned.nonzero_params)} of "
                f"{count(pruned.params)} parameters left")
    if removes_nothing:
        st.info("This plan removes nothing: fine-tuning would train the dense model further "
                "(allowed, but it is not pruning). Choose sparsities on the Prune page first.")
    mode = st.radio("Mode", (ONCE, ITERATIVE), key="ft_mode", horizontal=True,
                    persist_state="session",
                    help="iterative: prune a step, fine-tune, repeat (Han et al. 2015)")
    iterative = mode == ITERATIVE
    epochs = st.number_input("Epochs per step" if iterative else "Epochs", 1,
                             MAX_FINETUNE_EPOCHS, 10, key="ft_epochs", persist_state="session")
    steps, schedule = None, SCHEDULES[0]
    if iterative:
        steps = st.number_input("Steps", 2, MAX_ITERATIVE_STEPS, 5, key="ft_steps",
                                persist_state="session")
        schedule = st.radio("Schedule", SCHEDULES, key="ft_schedule", horizontal=True,
                            persist_state="session", help="cubic (Zhu & Gupta 2017): big "
                            "steps first, small ones at the end; linear: equal steps")
    lr = st.select_slider("Learning rate", RATES, value=DEFAULT_LR, key="ft_lr",
                          format_func=lambda v: f"{v:g}", persist_state="session",
                          help="Adam, decayed to zero over each run by a cosine schedule")
    if st.session_state.get("ft_source") not in SOURCES:
        st.session_state["ft_source"] = SOURCES[0]
    source = st.radio("Training data", SOURCES, key="ft_source", horizontal=True,
                      persist_state="session",
                      help=f"never the validation {NOUN} the accuracy is measured on")
    if NOT_DIGITS:
        st.caption(f"No digits training split here: {NOT_DIGITS}")
    if source == UPLOAD:
        st.file_uploader("Training data (.npz or .pt with x, y)", type=["npz", "pt"],
                         key="ft_train_file")
    blocked = iterative and removes_nothing
    if blocked:
        st.warning("Iterative pruning needs a plan that removes something.")
    if st.button("Start", type="primary", key="ft_start", disabled=running or blocked):
        try:
            _start(FinetuneSettings(int(epochs), float(lr), int(steps) if steps else None,
                                    schedule))
        except ExplorerError as exc:
            st.error(f"Cannot start: {exc}")


def _live(report: jobs.Report) -> None:
    context = st.session_state.get(CONTEXT, {})
    st.plotly_chart(finetune_charts.curve(report.partial, context.get("dense"),
                                          context.get("pruned")), key="ft_live")


def _explore() -> None:
    job, context = jobs.get(JOB), st.session_state[CONTEXT]
    run: Retrained = job.result
    model_id = state.add_model(run.bundle.name, run.bundle, context["data"])
    if plan_reproduces(run, context["data"]):
        state.set_plan(run.plan, undoable=False)
    st.session_state["ft_explored"] = model_id


def _model_file(run: Retrained, context: dict) -> tuple[str, bytes]:
    """The fine-tuned weights as a file, made once per run."""
    if context.get("file") is None:
        suffix = default_suffix(run.bundle)
        name = run.bundle.name.replace(" ", "-") + suffix
        context["file"] = (name, model_bytes(run.bundle, suffix))
    return context["file"]


def _result(job: jobs.Job) -> None:
    context = st.session_state.get(CONTEXT, {})
    if job.status == "failed":
        st.error(f"Fine-tuning failed: {job.error}")
        return
    run: Retrained = job.result
    epochs = run.result.epochs
    st.subheader(f"Fine-tuned {context.get('model', '')}")
    why = f" because {job.stopped_because}" if job.stopped_because else ""
    if run.result.cancelled and epochs:
        st.warning(f"Cancelled{why} after {len(epochs)} of {epochs[-1].total} epochs: the "
                   "model is as trained so far (removed weights still zero).")
    elif run.result.cancelled:
        st.warning(f"Cancelled{why} before the first epoch ended: the model is the pruned "
                   "one, not fine-tuned.")
    after = run.metrics
    cols = st.columns(4)
    cols[0].metric("Dense accuracy", percent(context["dense"]))
    cols[1].metric("Pruned, not fine-tuned", percent(context["pruned"]),
                   f"{(context['pruned'] - context['dense']) * 100:+.2f} pts vs dense")
    cols[2].metric("Fine-tuned accuracy", percent(after.accuracy),
                   f"{(after.accuracy - context['dense']) * 100:+.2f} pts vs dense")
    cols[3].metric("Nonzero parameters", count(after.nonzero_params),
                   f"{after.compression_ratio:.2f}x compression", delta_color="off")
    settings = run.settings
    st.caption(f"{len(epochs)} epochs in {run.result.seconds:.1f} s · learning rate "
               f"{settings.lr:g}" + (f" · {settings.steps} steps, {settings.schedule} "
                                     "schedule" if settings.iterative else ""))
    if epochs:
        st.plotly_chart(finetune_charts.curve(epochs, context["dense"], context["pruned"]),
                        key="ft_curve")
    if run.result.steps:
        st.plotly_chart(finetune_charts.steps(run.result.steps, context["dense"]),
                        key="ft_step_chart")
    b1, b2 = st.columns(2)
    explored = st.session_state.get("ft_explored") == state.UPLOAD_PREFIX + run.bundle.name
    b1.button("Explore the fine-tuned model", key="ft_explore", on_click=_explore,
              type="primary", disabled=explored, width="stretch",
              help="add it to the sidebar's models and select it: every page (and Export) "
                   "then shows it")
    try:
        name, data = _model_file(run, context)
        b2.download_button(f"Download the weights ({name.rpartition('.')[2]})", data,
                           file_name=name, key="ft_download", width="stretch")
    except ExplorerError as exc:
        b2.error(f"The weights cannot be saved: {exc}")
    if explored:
        st.success(f"Now exploring **{run.bundle.name}** (sidebar): open any page to look "
                   "inside it, or Export to take it out.")


left, right = st.columns([1, 2], gap="large")
job = jobs.get(JOB)
with left:
    _controls(running=job is not None and job.running)
with right:
    job = jobs.watch(JOB, draw=_live)
    if job is None:
        st.info("Choose the settings and press **Start**: the training curve appears here "
                "while it runs.")
    elif not job.running and CONTEXT in st.session_state:
        _result(job)
