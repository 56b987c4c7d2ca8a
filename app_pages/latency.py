"""Latency: the current plan's measured speed-up beside its theoretical (FLOPs) speed-up.

Measuring takes seconds (each form is timed for about a second), so it runs as a job
(:mod:`explorer.ui.jobs`) with its own evaluator: progress, Cancel, the page stays usable.
The last result per model is kept in ``st.session_state[RESULTS]`` with the plan, batch and
threads it was measured for; a result for another plan is shown with a note, not hidden.
"""

import os

import pandas as pd
import streamlit as st

from explorer.evaluator import Evaluator
from explorer.export.latency import FORMS, Latency, measure
from explorer.limits import MAX_LATENCY_BATCH, MAX_LATENCY_THREADS
from explorer.plan import Plan
from explorer.ui import jobs, texts
from explorer.ui.charts import latency as latency_charts
from explorer.ui.layout import page_setup, plan_summary

RESULTS = "latency_results"  # session key: {model id: (session key, Plan, Latency)}
FAILURES = "latency_failures"  # session key: {model id: why the last measurement failed}
BATCHES = (1, 8, 32, 128, MAX_LATENCY_BATCH)
TINY_MS = 0.5  # a forward pass this short is mostly overhead and noise

session = page_setup("Latency", texts.LATENCY)
bundle, plan = session.bundle, session.plan
JOB = f"latency::{session.model_id}"
results = st.session_state.setdefault(RESULTS, {})
failures = st.session_state.setdefault(FAILURES, {})  # kept until the next Measure


def _work(plan: Plan, batch: int, threads: int) -> jobs.Work:
    evaluator = Evaluator(bundle, session.data, session.evaluator.scores, memory_budget=0,
                          estimate_samples=0)  # the job's own: masks and costs only
    key = session.key

    def run(report: jobs.Reporter) -> tuple[str, Plan, Latency]:
        def progress(done: int, total: int, step: object) -> None:
            report(done, total, f"timed {step}")

        report(0, 1, "building the pruned forms")
        result = measure(bundle, plan, batch, threads, evaluator=evaluator,
                         progress=progress, cancelled=report.cancelled)
        return key, plan, result

    return run


def _forms_table(result: Latency) -> pd.DataFrame:
    rows = []
    for form in FORMS:
        t = result.latency_ms[form]
        note = "" if t else result.notes.get(form, "not measured")
        if form == "onnx" and t and result.onnx_dense:
            note = (f"{result.onnx_speedup:.2f}x the dense model in ONNX Runtime "
                    f"({result.onnx_dense.p50:.3f} ms)")
        rows.append({"form": form, "p50 (ms)": t.p50 if t else None,
                     "p95 (ms)": t.p95 if t else None, "note": note})
    return pd.DataFrame(rows)


def _layers_table(result: Latency) -> pd.DataFrame:
    return pd.DataFrame([{"layer": la.name, "dense (ms)": la.dense_ms,
                          f"{result.form} (ms)": la.pruned_ms,
                          "time share": f"{la.time_share:.1%}",
                          "FLOPs share": f"{la.flops_share:.1%}"} for la in result.layers])


def _draw(measured_plan: Plan, result: Latency) -> None:
    if measured_plan.key != plan.key:
        st.warning("Measured for an earlier plan (" + plan_summary(measured_plan) + "); press "
                   "**Measure** for the current one.")
    if result.cancelled:
        st.warning("Cancelled: only the forms timed before it stopped are shown.")
    left, right = st.columns(2)
    left.metric("Theoretical speed-up (FLOPs)", f"{result.theoretical:.2f}x")
    right.metric("Measured speed-up", "n/a" if result.cancelled else f"{result.measured:.2f}x",
                 help="torch's dense p50 / the fastest pruned torch form's p50 (ONNX Runtime "
                      "is compared with the dense model in ONNX Runtime, in the table)")
    st.caption(f"Batch {result.batch}, {result.threads} thread(s); fastest pruned form: "
               f"**{result.form or 'none'}**. Times are medians (p50) and 95th percentiles "
               "of torch.utils.benchmark blocks on this machine, shared with other users: "
               "compare the ratios, not the milliseconds.")
    dense = result.latency_ms["dense"]
    if dense is not None and dense.p50 < TINY_MS:
        st.info(f"The dense model takes {dense.p50:.3f} ms per batch: at this size Python's "
                "call overhead and the machine's load decide the figures, not the FLOPs. "
                "Try a larger batch.")
    st.dataframe(_forms_table(result), hide_index=True, key="latency_forms")
    if result.layers:
        st.plotly_chart(latency_charts.layer_shares(result), key="latency_layers")
        st.dataframe(_layers_table(result), hide_index=True, key="latency_layer_table")
    elif "layers" in result.notes:
        st.info(f"No per-layer times: {result.notes['layers']}.")


left, right = st.columns([1, 3], gap="large")
with left:
    st.caption(plan_summary(plan))
    batch = st.select_slider("Batch size", BATCHES, value=1, key="latency_batch",
                             persist_state="session", help="inputs per forward pass")
    cores = min(os.cpu_count() or 1, MAX_LATENCY_THREADS)
    threads = st.number_input("Threads", 1, cores, 1, key="latency_threads",
                              persist_state="session",
                              help="torch intra-op threads while timing (this machine has "
                                   f"{cores} cores, shared by every session)")
    running = (job := jobs.get(JOB)) is not None and job.running
    if st.button("Measure", type="primary", key="latency_measure", disabled=running,
                 help="a measurement is running" if running else "takes a few seconds",
                 width="stretch"):
        try:
            jobs.start(JOB, "Latency", _work(plan, int(batch), int(threads)))
        except jobs.JobRefused as exc:
            st.error(str(exc))
        else:
            failures.pop(session.model_id, None)
            st.rerun()

with right:
    job = jobs.watch(JOB)
    if job is not None and not job.running:
        if job.error is not None:
            failures[session.model_id] = job.error
        else:
            results[session.model_id] = job.result
        jobs.forget(JOB)
    shown = results.get(session.model_id)
    if job is None or not job.running:
        if session.model_id in failures:
            st.error(f"The measurement failed: {failures[session.model_id]}")
        elif shown is None or shown[0] != session.key:
            st.info("Choose a batch size and threads and press **Measure**: the dense model "
                    "and each form of the current plan are timed for about a second each.")
        else:
            _draw(shown[1], shown[2])
