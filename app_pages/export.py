"""Export: the current plan as files to download, and a check that they load back the same."""

import hashlib
import math
import re

import pandas as pd
import streamlit as st

from explorer.errors import ExplorerError
from explorer.export.outputs import ExportFiles, export_files, reload_metrics, zip_files
from explorer.look.sentences import samples_noun
from explorer.metrics import Metrics
from explorer.ui import jobs, texts
from explorer.ui.format import count, percent
from explorer.ui.layout import page_setup, plan_summary
from explorer.ui.views import metric_cards

CACHE = "ex_files"  # session key: {(model key, plan JSON): ExportFiles}, newest last
CACHE_KEPT = 2  # a ResNet-18's weights are ~45 MB per file: keep few
ROUND_TRIP = "export_round_trip::"  # job key prefix; the plan and model digest follow

# What each file is and how to load it: (MIME type, one line).
ABOUT = {
    "plan.json": ("application/json",
                  "the plan: load it in the sidebar, or `pruning-explorer evaluate "
                  "--plan plan.json`"),
    "pruned.safetensors": ("application/octet-stream",
                           "the weights with the plan made permanent (zeros in place, same "
                           "shapes): `model.load_state_dict(safetensors.torch."
                           "load_file('pruned.safetensors'))`"),
    "shrunk.pt2": ("application/octet-stream",
                   "the physically smaller model, a torch.export program: "
                   "`torch.export.load('shrunk.pt2').module()`"),
    "masks.safetensors": ("application/octet-stream",
                          "the exact keep-masks (`mask/<parameter>`, merged values "
                          "`value/<parameter>`) that apply_plan.py reads from its folder"),
    "apply_plan.py": ("text/x-python",
                      "applies the plan to your copy of the model with torch.nn.utils.prune:"
                      " `python apply_plan.py --out pruned.safetensors`"),
    "pruning_ratio_dict.json": ("application/json",
                                "fraction removed per layer for Torch-Pruning's "
                                "`pruning_ratio_dict` (how to pass it is inside)"),
}
# Why a file is absent when nothing failed.
NOT_MADE = {
    "shrunk.pt2": "not made for a weight plan: removing single weights leaves every layer "
                  "its shape, so there is no smaller model (a neuron plan makes one)",
    "masks.safetensors": "not needed: torch's own L1 selection (prune.l1_unstructured, "
                         "global_unstructured) removes exactly this magnitude plan's weights",
}

session = page_setup("Export", texts.EXPORT)
bundle, plan = session.bundle, session.plan
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences


def _exports() -> ExportFiles:
    """This plan's files, made once per plan and model (not on every rerun)."""
    cache = st.session_state.setdefault(CACHE, {})
    key = (*session.results_key, plan.key)
    if key not in cache:
        with st.spinner(f"Making the exports of {bundle.name}..."):
            cache[key] = export_files(bundle, plan, session.evaluator)
        while len(cache) > CACHE_KEPT:
            cache.pop(next(iter(cache)))
    return cache[key]


def _metrics() -> Metrics | str:
    """Draw the plan's metrics and return them, or the message saying why there are none."""
    try:
        metrics = session.evaluate()
    except ExplorerError as exc:  # e.g. a data-driven criterion on an architecture-only model
        st.error(f"This plan cannot be evaluated: {exc}")
        return str(exc)
    cols = st.columns(4)
    if metrics.accuracy is None:
        cols[0].metric("Accuracy", "n/a", help="no validation data for this model")
    else:
        cols[0].metric("Accuracy", percent(metrics.accuracy),
                       help=f"on {metrics.samples} validation {NOUN}")
    metric_cards.cost_cards(cols[1], cols[2], cols[3], metrics)
    return metrics


def _zip_name() -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", bundle.name).strip("-.") or "model") + "-export.zip"


def _downloads(made: ExportFiles, said: str | None) -> None:
    """One button per file made; one error per reason (``said`` is already on the page)."""
    failures: dict[str, list[str]] = {}
    for name, message in made.errors.items():
        failures.setdefault(message, []).append(name)
    for message, names in failures.items():
        reason = ", for the same reason." if message == said else f". {message}"
        st.error(f"Not made: {', '.join(names)}{reason}")
    for name, (mime, about) in ABOUT.items():
        if name in made.files:
            data = made.files[name]
            button, text = st.columns([1, 3], vertical_alignment="center")
            button.download_button(name, data, file_name=name, mime=mime, key=f"ex_dl::{name}",
                                   on_click="ignore", icon=":material/download:",
                                   width="stretch")
            text.markdown(f"**{len(data):,} bytes** · {about}")
        elif name not in made.errors and name in NOT_MADE:
            st.caption(f"**{name}**: {NOT_MADE[name]}.")
    total = sum(len(data) for data in made.files.values())
    st.download_button("Download all (zip)", lambda: zip_files(made.files),
                       file_name=_zip_name(), mime="application/zip", key="ex_dl_zip",
                       on_click="ignore", type="primary", icon=":material/folder_zip:")
    st.caption(f"{len(made.files)} files, {total:,} bytes before compression; unpack them "
               "into one folder so apply_plan.py finds its files.")
    if "apply_plan.py" in made.files:
        with st.expander("apply_plan.py", expanded=False):
            st.code(made.files["apply_plan.py"].decode(), language="python")


def _round_trip_work(files: dict[str, bytes]):
    """The background job: load each model file back and evaluate it with no plan."""
    data = session.data  # read-only, shared; the job builds its own evaluators

    def work(report: jobs.Reporter) -> dict[str, Metrics]:
        out = {}
        for done, name in enumerate(files):
            if report.cancelled():
                break
            report(done, len(files), f"loading {name} back and evaluating it")
            out.update(reload_metrics({name: files[name]}, data, like=bundle))
        return out

    return work


FIGURES = {  # label: (the figure of a Metrics, how it reads)
    "Accuracy": (lambda m: m.accuracy, percent),
    "Loss": (lambda m: m.loss, lambda v: f"{v:.4f}"),
    "Nonzero parameters": (lambda m: m.nonzero_params, count),
    "FLOPs per sample": (lambda m: m.flops["effective"], count),
}


def _same(label: str, got: float, want: float) -> bool:
    if label == "Loss":  # summed in another order by another graph: float rounding
        return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5)
    return got == want


def _round_trip_table(shown: Metrics, reloaded: dict[str, Metrics]) -> tuple[pd.DataFrame, bool]:
    rows, everywhere = [], True
    for label, (figure, fmt) in FIGURES.items():
        want = figure(shown)
        if want is None:  # no data: accuracy and loss are unavailable on both sides
            continue
        row = {"figure": label, "shown for the plan": fmt(want)}
        same = True
        for name, metrics in reloaded.items():
            row[f"{name} reloaded"] = fmt(figure(metrics))
            same = same and _same(label, figure(metrics), want)
        row["equal"] = "yes" if same else "NO"
        everywhere = everywhere and same
        rows.append(row)
    return pd.DataFrame(rows), everywhere


def _round_trip(made: ExportFiles, shown: Metrics | str) -> None:
    st.subheader("Round trip")
    st.caption("Loads pruned.safetensors (and shrunk.pt2) back, the way a user would, and "
               "evaluates them with no plan: each export must give the figures shown above. "
               "It costs a model load and a forward pass per file.")
    files = {n: made.files[n] for n in ("pruned.safetensors", "shrunk.pt2") if n in made.files}
    if isinstance(shown, str) or not files:
        st.info("Nothing to check: the plan's metrics or its model files could not be made.")
        return
    key = ROUND_TRIP + hashlib.sha256(f"{session.key}\n{plan.key}".encode()).hexdigest()[:16]
    job = jobs.get(key)
    if st.button("Check the round trip", key="ex_round_trip",
                 disabled=job is not None and job.running):
        for old in [k for k in st.session_state.get(jobs.JOBS_KEY, {}) if k.startswith(ROUND_TRIP)]:
            jobs.forget(old)
        try:
            jobs.start(key, "Round trip", _round_trip_work(files))
        except jobs.JobRefused as exc:
            st.error(str(exc))
    job = jobs.watch(key)
    if job is None or job.running:
        return
    if job.error is not None:
        st.error(f"The round trip failed: {job.error}")
        return
    if job.status == "cancelled":
        st.info("The round trip was cancelled.")
        return
    table, same = _round_trip_table(shown, job.result)
    st.dataframe(table, hide_index=True, key="ex_round_trip_table")
    if same:
        st.success(f"The exports load back to the figures shown for the plan "
                   f"(checked in {job.seconds:.1f} s).")
    else:
        st.warning("An export does not give the figures shown for the plan (rows marked NO).")


st.markdown(f"**{bundle.name}** · {plan_summary(plan)}")
with st.expander("plan.json", expanded=False):
    st.code(plan.to_json(), language="json")
if plan.removes_nothing:
    st.info("This plan removes nothing: the files hold the model as it is (set a sparsity on "
            "the Prune page first). They are offered all the same.")
shown = _metrics()
st.subheader("Files")
made = _exports()
_downloads(made, shown if isinstance(shown, str) else None)
_round_trip(made, shown)
