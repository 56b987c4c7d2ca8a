"""Trade-offs: every plan evaluated so far against the baselines; the Pareto front; pin, compare.

The front is chosen on the calibration part of the validation data and reported on the
held-out part (:mod:`explorer.decide.held_out`); the chart shows either part's accuracy.
Its x-axis is FLOPs and size (arithmetic), or the *measured* speed-up of each plan
(:func:`explorer.export.latency.speedups`), timed on demand as a job at the batch and
threads chosen and kept in ``st.session_state[MEASURED]`` per model content, batch and
threads.
"""

import os

import streamlit as st

from explorer.decide.breakage import compare_plans
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.tradeoff import BaselineCurves, baseline_curves, decision_front
from explorer.errors import ExplorerError
from explorer.evaluator import Evaluator
from explorer.export.latency import speedups
from explorer.limits import MAX_LATENCY_THREADS
from explorer.look.sentences import samples_noun
from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.ui import cluster, jobs, pins, state, texts
from explorer.ui.charts import tradeoffs as tradeoff_charts
from explorer.ui.format import compressed_bytes, count, describe, nbytes, percent, with_interval
from explorer.ui.layout import page_setup
from explorer.ui.views.decision_split import judge_of, note

MEASURED = "to_measured"  # session key: {(model key, batch, threads): {plan key: speed-up}}
BATCHES = (1, 8, 32, 128)
X_AXES = {"cost": "FLOPs and size", "measured": "measured speed-up"}


@st.cache_resource(show_spinner="Fitting the baselines to compression 2x ... 32x...",
                   max_entries=16)
def shared_baselines(model_key: str, judging: str, granularity: str,
                     _session) -> BaselineCurves:
    """The baseline curves of one model, shared by every session (they depend on nothing
    a user chooses but the granularity and the BatchNorm setting), measured on both parts
    of its data: at real size screened on each part's stratified subset (a reference line,
    not a choice); on the Ray cluster the setting names, if any (the same curves)."""
    judge = SplitEvaluator(_session.bundle, _session.data,
                           bn_calibration=state.bn_calibration(_session.model_id)[0])
    with cluster.sweeps(cluster.chosen()) as executor:
        return baseline_curves(judge, granularity, screen=judge.refines, executor=executor)


session = page_setup("Trade-offs", texts.TRADEOFFS)
NOUN = samples_noun(session.bundle.card)  # images, or a text model's sentences
PARTS = tradeoff_charts.parts(NOUN)
state.stop_without_labels(session.data, "The trade-off workspace plots accuracy.")
if session.data is None:
    st.info(state.NO_DATA_NOTE + " The trade-off workspace plots accuracy, so it needs data.")
    st.stop()

model_id, plan = session.model_id, session.plan
try:
    session.evaluate(plan)
    for pinned_plan in pins.pinned(model_id).values():
        session.evaluate(pinned_plan)
except ExplorerError as exc:
    st.error(f"A plan cannot be evaluated: {exc}")
    st.stop()


def label(p: Plan) -> str:
    return pins.name_of(model_id, p) or describe(p)


judge = judge_of(session)
history = session.history()
judged = [judge.evaluate(p) for p, _ in history]
points = [tradeoff_charts.PlanPoint(label(p), j, pinned=pins.name_of(model_id, p) is not None,
                                    current=p == plan) for (p, _), j in zip(history, judged,
                                                                            strict=True)]
fronts = {axis: decision_front(judged, cost) for axis, (_, cost) in tradeoff_charts.AXES.items()}

kinds = session.bundle.granularities
granularity = st.radio("Baselines at granularity", kinds, horizontal=True,
                       index=state.granularity_index(session.bundle, plan),
                       key="to_granularity",
                       help="uniform, global magnitude and random plans fitted to compression "
                            "ratios 2, 4, 8, 16 and 32 (Blalock et al. 2020)")
try:
    baselines = shared_baselines(*session.results_key, granularity, session)
except ExplorerError as exc:  # a Ray cluster that failed mid-sweep
    st.error(f"The baselines cannot be fitted: {exc}")
    st.stop()
for name, missed in baselines.unreachable.items():
    st.caption(f"{name} cannot reach compression "
               + ", ".join(f"{r:g}x" for r in missed) + f": {next(iter(missed.values()))}")
part = st.radio("Accuracy on", list(PARTS), horizontal=True, key="to_part",
                format_func=PARTS.get,
                help=f"held-out: the {NOUN} no choice saw (the numbers to trust); calibration: "
                     f"the {NOUN} the Pareto front is chosen on")
x_axis = st.radio("x-axis", list(X_AXES), horizontal=True, key="to_x",
                  format_func=X_AXES.get,
                  help="FLOPs and size: arithmetic, the theoretical gain; measured speed-up: "
                       "each plan timed on this machine (dense time / its fastest pruned "
                       "form's), on demand")


def _measure_work(plans: list[Plan], batch: int, threads: int) -> jobs.Work:
    evaluator = Evaluator(session.bundle, session.data, session.evaluator.scores,
                          memory_budget=0, estimate_samples=0)  # the job's own

    key = (session.key, batch, threads)

    def run(report: jobs.Reporter) -> tuple[tuple, dict[str, float]]:
        report(0, len(plans), "timing the plans")
        return key, speedups(session.bundle, plans, batch, threads, evaluator=evaluator,
                             progress=lambda d, t, _: report(d, t, f"timed {d} of {t} plans"),
                             cancelled=report.cancelled)

    return run


def measured_axis() -> None:
    """The measured speed-up chart, its batch and threads, and the job that times the plans."""
    c1, c2, c3 = st.columns([1, 1, 2])
    batch = c1.selectbox("Batch", BATCHES, key="to_lat_batch", help="inputs per timed forward")
    threads = c2.number_input("Threads", 1, min(os.cpu_count() or 1, MAX_LATENCY_THREADS), 1,
                              key="to_lat_threads", help="torch intra-op threads while timing")
    key = (session.key, int(batch), int(threads))
    measured = st.session_state.setdefault(MEASURED, {})
    job_key = f"to_latency::{session.model_id}"
    job = jobs.watch(job_key)
    if job is not None and not job.running:
        if job.error is not None:
            st.error(f"The measurement failed: {job.error}")
        else:  # kept for the settings it was started with
            measured.setdefault(job.result[0], {}).update(job.result[1])
        jobs.forget(job_key)
    done = measured.setdefault(key, {})
    todo = list({p.key: p for p, _ in history if p.key not in done}.values())
    running = (job := jobs.get(job_key)) is not None and job.running
    if c3.button(f"Measure {len(todo)} plan(s)", key="to_lat_measure",
                 disabled=running or not todo, help="each plan is timed for about a second"):
        try:
            jobs.start(job_key, "Measured speed-up", _measure_work(todo, int(batch),
                                                                   int(threads)))
        except jobs.JobRefused as exc:
            st.error(str(exc))
        else:
            st.rerun()
    values = [done.get(p.key) for p, _ in history]
    st.plotly_chart(tradeoff_charts.measured_speedup(points, values, judge.dense(), part,
                                                     int(batch), int(threads), NOUN),
                    key="to_measured_chart")
    st.caption(f"Measured: {sum(v is not None for v in values)} of {len(values)} plans, at "
               f"batch {batch} and {threads} thread(s), on this machine (shared: compare the "
               "ratios). A plan's speed-up is the dense model's time over its fastest pruned "
               "form's (masked, sparse or shrunk): masks alone run as slowly as the dense "
               "model, whatever their FLOPs say.")


if x_axis == "measured":
    measured_axis()
else:
    st.plotly_chart(tradeoff_charts.workspace(points, fronts, baselines, judge.dense(), part,
                                              NOUN),
                    key="workspace")
note(judge)
screened = {p.metrics.held_out.samples for curve in baselines.values() for p in curve
            if p.metrics.held_out.samples < judge.dense().held_out.samples}
if screened:
    st.caption(f"The baselines are estimates on a fixed stratified subset of each part "
               f"({max(screened)} held-out {NOUN}; error bars: 95% interval); your plans "
               f"ran on every {NOUN[:-1]}.")
st.caption(f"{len(history)} plans evaluated in this session (every slider position on the "
           "Prune page is one). Up and to the left is better; the orange line joins the plans "
           f"no other plan beats on both calibration accuracy and cost. On held-out {NOUN} a "
           "plan of the front can fall below another plan: the noise its choice fitted.")


def _row(name: str, m: Metrics, **accuracy: str) -> dict:
    return {"plan": name, **accuracy, "FLOPs": count(m.flops["effective"]),
            "speed-up": f"{m.speedup:.2f}x", "size": nbytes(compressed_bytes(m)),
            "compression": f"{m.compression_ratio:.2f}x"}


def _front_row(i: int) -> dict:
    calibration, held_out = judged[i]
    return _row(points[i].label, held_out, **{
        "held-out accuracy [95%]": with_interval(held_out),
        "calibration accuracy": percent(calibration.accuracy)})


st.subheader("The Pareto front")
axis = st.radio("Cost", list(tradeoff_charts.AXES), horizontal=True, key="to_axis",
                format_func=lambda a: tradeoff_charts.AXES[a][0])
front = sorted(fronts[axis], key=lambda i: tradeoff_charts.AXES[axis][1](history[i][1]))
st.dataframe([_front_row(i) for i in front], hide_index=True)
if front:
    labels = {points[i].label: i for i in front}
    # keyed by the front itself: a remembered choice never points at another plan
    chosen = labels[st.selectbox("A plan on the front", list(labels),
                                 key=f"to_front_pick::{hash(tuple(labels))}")]
    st.button("Load it into the sliders", key="to_front_load",
              on_click=state.set_plan, args=(history[chosen][0],))

st.subheader("Pinned plans")
left, right = st.columns([2, 1])
name = left.text_input("Name for the current plan", key="to_pin_name",
                       placeholder=f"plan {len(pins.pinned(model_id)) + 1}")
right.button("Pin the current plan", key="to_pin", width="stretch",
             on_click=lambda: pins.pin(model_id, st.session_state["to_pin_name"],
                                       st.session_state[state.PLAN_KEY]))
pinned = pins.pinned(model_id)
if pinned:
    st.dataframe([_row(n, m, **{f"accuracy (all {m.samples} {NOUN})": percent(m.accuracy)})
                  for n, m in ((n, session.evaluate(p)) for n, p in pinned.items())],
                 hide_index=True)
    which = st.selectbox("Pinned plan", list(pinned), key="to_pinned_pick")
    c1, c2 = st.columns(2)
    c1.button("Load into the sliders", key="to_pinned_load", width="stretch",
              on_click=state.set_plan, args=(pinned[which],))
    c2.button("Unpin", key="to_unpin", width="stretch", on_click=pins.unpin,
              args=(model_id, which))
else:
    st.caption("Pin plans to name them, find them on the chart and compare them below.")

st.subheader("Compare two plans")
options = {"dense model": Plan(), "current plan": plan, **pinned}
names = list(options)
a_col, b_col = st.columns(2)
name_a = a_col.selectbox("Plan A", names, index=0, key="to_a")
name_b = b_col.selectbox("Plan B", names, index=min(len(names) - 1, 2 if pinned else 1),
                         key="to_b")
try:
    comparison = compare_plans(session.evaluator, options[name_a], options[name_b],
                               names=(name_a, name_b))
except ExplorerError as exc:
    st.error(f"These plans cannot be compared: {exc}")
    st.stop()
ma, mb = comparison.metrics_a, comparison.metrics_b
st.dataframe([
    {"": "accuracy", name_a: percent(ma.accuracy), name_b: percent(mb.accuracy),
     "B - A": f"{(mb.accuracy - ma.accuracy) * 100:+.2f} pts"},
    {"": "loss", name_a: f"{ma.loss:.4f}", name_b: f"{mb.loss:.4f}",
     "B - A": f"{mb.loss - ma.loss:+.4f}"},
    {"": "FLOPs per sample", name_a: count(ma.flops["effective"]),
     name_b: count(mb.flops["effective"]),
     "B - A": f"{mb.flops['effective'] - ma.flops['effective']:+,}"},
    {"": "size", name_a: nbytes(compressed_bytes(ma)), name_b: nbytes(compressed_bytes(mb)),
     "B - A": f"{compressed_bytes(mb) - compressed_bytes(ma):+,} B"},
    {"": "nonzero parameters", name_a: count(ma.nonzero_params),
     name_b: count(mb.nonzero_params), "B - A": f"{mb.nonzero_params - ma.nonzero_params:+,}"},
], hide_index=True, key="to_compare_metrics")
st.dataframe([
    {"layer": row.layer, "kind": row.kind,
     f"removed % ({name_a})": round(row.sparsity_a * 100, 1),
     f"removed % ({name_b})": round(row.sparsity_b * 100, 1),
     f"neurons kept ({name_a})": row.neurons_kept_a,
     f"neurons kept ({name_b})": row.neurons_kept_b,
     f"FLOPs ({name_a})": row.flops_a, f"FLOPs ({name_b})": row.flops_b}
    for row in comparison.layers
], hide_index=True, key="to_compare_layers")
if comparison.support is not None:
    classes = list(range(len(comparison.support)))
    st.plotly_chart(tradeoff_charts.per_class(classes, {
        name_a: comparison.class_accuracy_a, name_b: comparison.class_accuracy_b}),
        key="to_per_class")
