"""What pruning broke: per-class accuracy, the confusion change and the flipped samples."""

import pandas as pd
import streamlit as st

from explorer.decide.breakage import FLIP_KINDS, Breakage, breakage
from explorer.errors import ExplorerError
from explorer.look.sentences import samples_noun, sentences
from explorer.plan import Plan
from explorer.ui import state, texts
from explorer.ui.charts import broke as broke_charts
from explorer.ui.format import percent
from explorer.ui.layout import page_setup

MAX_IMAGES = 40
ALL_CLASSES = "all"
RESULTS = "broke_results"  # session key: {(model, bundle, data, plan): Breakage}
RESULTS_KEPT = 8
KIND_LABELS = {
    "broken": "broken (dense right, pruned wrong)",
    "fixed": "fixed (dense wrong, pruned right)",
    "changed": "changed (both wrong, differently)",
}

session = page_setup("What pruning broke", texts.BROKE)
state.stop_without_labels(session.data, "Breakage is counted per true class.")
if session.data is None:
    st.info(f"{session.bundle.name} has no validation data, so there are no predictions to "
            "compare. Upload a trained model with its data on the Model page.")
    st.stop()

SAMPLES = samples_noun(session.bundle.card)
NAMES = session.bundle.card.get("topics")  # a text model's classes by name


def _breakage(plan: Plan) -> Breakage:
    """The plan's breakage, kept for this session (the filters rerun the page)."""
    results = st.session_state.setdefault(RESULTS, {})
    key = (*session.results_key, plan.key)
    if key not in results:
        results[key] = breakage(session.evaluator, plan)
        while len(results) > RESULTS_KEPT:
            results.pop(next(iter(results)))
    return results[key]


def _class_table(result: Breakage) -> pd.DataFrame:
    return pd.DataFrame({
        "class": broke_charts.class_labels(result, NAMES) if NAMES else result.classes,
        SAMPLES: result.support,
        "dense": result.class_accuracy_dense, "pruned": result.class_accuracy_plan,
        "change (pts)": result.class_accuracy_change * 100,
    })


def _flipped(result: Breakage) -> None:
    counts = result.counts()
    left, right = st.columns([3, 1])
    kind = left.radio("Show", FLIP_KINDS, key="broke_kind", horizontal=True,
                      format_func=lambda k: f"{KIND_LABELS[k]}: {counts[k]}")
    flips = result.flipped(kind)
    labels = sorted({f.label for f in flips})
    label = right.selectbox("True class", [ALL_CLASSES, *labels], key="broke_class")
    if label != ALL_CLASSES:
        flips = [f for f in flips if f.label == label]
    if not flips:
        st.info(f"No {kind} {SAMPLES}" + ("." if label == ALL_CLASSES else f" of class {label}."))
        return
    shown = flips[:MAX_IMAGES]
    st.caption(f"Showing {len(shown)} of {len(flips)} {kind} {SAMPLES} (validation index in "
               "brackets).")
    x = session.data.x[[f.index for f in shown]]
    texts = sentences(session.bundle.card, x)
    if texts is not None:  # a text model: the sentences, and the topics by name
        names = NAMES or range(session.data.num_classes)
        st.dataframe(pd.DataFrame([{"index": f.index, "true": names[f.label],
                                    "dense": names[f.dense], "pruned": names[f.plan],
                                    "sentence": text} for f, text in zip(shown, texts,
                                                                         strict=True)]),
                     hide_index=True, key="broke_flips")
        return
    images = broke_charts.as_images(x)
    if images is None:
        st.dataframe(pd.DataFrame([{"index": f.index, "true": f.label, "dense": f.dense,
                                    "pruned": f.plan} for f in shown]),
                     hide_index=True, key="broke_flips")
        return
    st.image([broke_charts.thumbnail(im) for im in images],
             caption=[broke_charts.caption(f) for f in shown], width=broke_charts.THUMBNAIL_PX)


plan = session.plan
try:
    metrics, dense = session.evaluate(plan), session.dense()
    result = _breakage(plan)
except ExplorerError as exc:
    st.error(f"This plan cannot be evaluated: {exc}")
    st.stop()

if metrics.nonzero_params == dense.nonzero_params:
    st.info("The current plan removes nothing, so the pruned model is the dense one. "
            "Choose what to remove on the **Prune** page (or load a plan in the sidebar).")
counts = result.counts()
cols = st.columns(5)
cols[0].metric("Dense accuracy", percent(result.accuracy_dense))
cols[1].metric("Pruned accuracy", percent(result.accuracy_plan),
               f"{(result.accuracy_plan - result.accuracy_dense) * 100:+.2f} pts",
               help=f"on {result.samples} validation {SAMPLES}")
cols[2].metric("Broken", counts["broken"], help=KIND_LABELS["broken"])
cols[3].metric("Fixed", counts["fixed"], help=KIND_LABELS["fixed"])
cols[4].metric("Changed", counts["changed"], help=KIND_LABELS["changed"])

if not result.flips:
    st.success(f"Nothing flipped: every validation {SAMPLES[:-1]} gets the same prediction "
               "from the pruned model as from the dense one.")
left, right = st.columns(2, gap="large")
with left:
    st.plotly_chart(broke_charts.class_accuracy(result, NAMES), key="broke_classes")
    with st.expander("Per-class numbers"):
        st.dataframe(_class_table(result).style.format(
            {"dense": "{:.2%}", "pruned": "{:.2%}", "change (pts)": "{:+.2f}"}, na_rep="-"),
            hide_index=True, key="broke_class_table")
with right:
    if result.flips:
        st.plotly_chart(broke_charts.confusion_change(result, NAMES), key="broke_confusion")
    else:
        st.caption("No confusion change to draw.")

if result.flips:
    st.subheader(f"Flipped {SAMPLES}")
    _flipped(result)
