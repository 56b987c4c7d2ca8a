"""Prune: sliders per layer (or one global fraction), live metrics and the trade-off so far.

The plan in session state is the one truth: a slider's change sets its layer in the plan,
and every run draws every slider from the plan (writing a widget's value only where it
differs, so a key press still in flight in the browser is not overwritten).
"""

from dataclasses import replace

import streamlit as st

from explorer.errors import ExplorerError
from explorer.look.sentences import samples_noun
from explorer.metrics import Metrics
from explorer.plan import Plan, criterion_names, pattern_fits
from explorer.ui import state, texts
from explorer.ui.charts import prune as charts
from explorer.ui.format import percent
from explorer.ui.layout import page_setup
from explorer.ui.views import metric_cards

session = page_setup("Prune", texts.PRUNE)
bundle = session.bundle
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
GLOBAL_KEY = state.SLIDER_PREFIX + "__global__"
ALL_KEY = state.SLIDER_PREFIX + "__all__"
GRANULARITY_KEY, CRITERION_KEY, SCOPE_KEY, MERGE_KEY = (
    "pr_granularity", "pr_criterion", "pr_scope", "pr_merge")
PATTERN_KEY, PATTERN_LAYERS_KEY = "pr_pattern", "pr_pattern_layers"
PATTERNS = ("none", "2:4", "4:8")  # N:M sparsity for weights plans
BLOCKS_KEY = state.SLIDER_PREFIX + "__blocks__"
KINDS = bundle.plan_granularities  # blocks (global only) where the model has any


def _on_kind() -> None:
    plan = session.plan
    pattern = st.session_state.get(PATTERN_KEY) if plan.granularity == "weights" else None
    state.set_plan(plan.with_choices(
        bundle, st.session_state[GRANULARITY_KEY], st.session_state[CRITERION_KEY],
        st.session_state[SCOPE_KEY], bool(st.session_state.get(MERGE_KEY, plan.merge)),
        pattern=None if pattern in (None, "none") else pattern))


def _on_pattern_layers() -> None:
    plan = session.plan
    chosen = [n for n in st.session_state.get(PATTERN_LAYERS_KEY, []) if n in bundle.layer_names]
    state.set_plan(replace(plan, sparsity=dict.fromkeys(chosen, plan.pattern_fraction)))


def _pattern_controls(plan: Plan) -> None:
    """An N:M plan fixes each fraction: global covers every layer that fits, per layer the
    user picks the layers (no sliders: a fraction other than 1 - N/M is not the pattern)."""
    n, m = plan.nm
    fits = [la.name for la in bundle.layers if pattern_fits(la, m)]
    share = (f"keeps {n} of every {m} consecutive input weights "
             f"({percent(plan.pattern_fraction)} removed)")
    if plan.scope == "global":
        st.caption(f"{plan.pattern} {share} in every layer whose inputs split into groups of "
                   f"{m}: {', '.join(fits) or 'none'}; the others stay dense.")
        return
    _show(PATTERN_LAYERS_KEY, list(plan.pattern_layers(bundle)))
    st.multiselect(f"Layers with the {plan.pattern} pattern", fits, key=PATTERN_LAYERS_KEY,
                   on_change=_on_pattern_layers,
                   help=f"each chosen layer {share}; layers whose inputs do not split into "
                        f"groups of {m} cannot take it")


def _on_layer(name: str) -> None:
    # Read defensively: a change queued behind a model switch names a slider that is gone.
    value = st.session_state.get(state.SLIDER_PREFIX + name)
    if value is None or name not in bundle.layer_names:
        return
    plan = session.plan
    for member in bundle.linked(name, plan.granularity):
        plan = plan.with_sparsity(member, value / 100)
    state.set_plan(plan)


def _on_all() -> None:
    value = st.session_state.get(ALL_KEY)
    if value is None:
        return
    plan = session.plan
    names = bundle.prunable_layers(plan.granularity)
    state.set_plan(replace(plan, scope="layer", sparsity=dict.fromkeys(names, value / 100)))


def _on_global() -> None:
    value = st.session_state.get(GLOBAL_KEY)
    if value is not None:
        state.set_plan(replace(session.plan, scope="global", amount=value / 100))


def _show(key: str, value) -> None:
    """Draw widget ``key`` at the plan's ``value``: written only where it differs, so a
    slider the user is moving keeps its own (newer) position in the browser."""
    if st.session_state.get(key) != value:
        st.session_state[key] = value


def _percent(fraction: float) -> int:
    return min(round(fraction * 100), 99)  # the sliders' range; a plan allows up to < 100%


def _controls(plan: Plan) -> None:
    _show(GRANULARITY_KEY, plan.granularity)
    _show(CRITERION_KEY, plan.criterion)
    _show(SCOPE_KEY, plan.scope)
    st.radio("Granularity", KINDS, key=GRANULARITY_KEY, on_change=_on_kind,
             horizontal=True, help="weights: unstructured sparsity; neurons: smaller layers"
                                   + ("; heads: attention heads" if bundle.heads else "")
                                   + ("; blocks: whole blocks dropped" if bundle.blocks else ""))
    st.selectbox("Criterion", criterion_names(plan.granularity), key=CRITERION_KEY,
                 on_change=_on_kind, help="how importance is scored; lowest go first")
    if plan.granularity == "weights":
        _show(PATTERN_KEY, plan.pattern or "none")
        st.radio("N:M pattern", PATTERNS, key=PATTERN_KEY, on_change=_on_kind, horizontal=True,
                 help="semi-structured sparsity: N kept in every M consecutive input weights "
                      "(2:4 is what sparse tensor cores accelerate)")
    if plan.criterion == "redundancy":
        _show(MERGE_KEY, plan.merge)
        st.checkbox("Merge into the twin", key=MERGE_KEY, on_change=_on_kind,
                    help="add a removed neuron's outgoing weights to its most similar kept "
                         "neuron's, instead of dropping them")
    if plan.granularity == "blocks":
        _block_controls(plan)
        return
    st.radio("Scope", ("layer", "global"), key=SCOPE_KEY, on_change=_on_kind,
             horizontal=True, help="a fraction per layer, or one threshold across layers")
    if plan.pattern is not None:
        _pattern_controls(plan)
        return
    if plan.scope == "global":
        _show(GLOBAL_KEY, _percent(plan.amount))
        st.slider("Removed overall (%)", 0, 99, key=GLOBAL_KEY, on_change=_on_global)
        return
    st.session_state.setdefault(ALL_KEY, 0)  # a control, not part of the plan
    st.slider("Set every layer to (%)", 0, 99, key=ALL_KEY, on_change=_on_all,
              help="moves all layer sliders at once")
    if plan.granularity == "heads":
        _head_sliders(plan)
        return
    for layer in bundle.layers:
        key = state.SLIDER_PREFIX + layer.name
        blocked = plan.granularity == "neurons" and not layer.neuron_prunable
        linked = [n for n in bundle.linked(layer.name, plan.granularity) if n != layer.name]
        _show(key, _percent(plan.fraction(layer.name)))
        unit = "neurons" if plan.granularity == "neurons" else "weights"
        note = None
        if blocked:
            note = f"cannot remove neurons: {layer.neuron_reason}"
        elif linked:
            note = (f"linked with {', '.join(linked)}: their channels are added together, "
                    "so they lose the same neurons")
        label = f"{layer.name} ({layer.kind}, {unit} removed %)"
        st.slider(label + (" [linked]" if linked else ""), 0, 99, key=key, on_change=_on_layer,
                  args=(layer.name,), disabled=blocked, help=note)
    if plan.granularity == "neurons":
        _groups()


def _head_sliders(plan: Plan) -> None:
    """One slider per attention: its query, key, value and output projection lose the same
    heads (the plan names all four with the slider's fraction)."""
    for group in bundle.heads:
        key = state.SLIDER_PREFIX + group.name
        _show(key, _percent(plan.fraction(group.name)))
        st.slider(f"{group.module} ({group.heads} heads, heads removed %) [linked]", 0, 99,
                  key=key, on_change=_on_layer, args=(group.name,),
                  help=f"one unit: {', '.join(group.layers)} lose the same heads (each head's "
                       f"{group.head_dim} rows of the query, key and value and its "
                       f"{group.head_dim} columns of the output projection)")
    others = len(bundle.layers) - len(bundle.prunable_layers("heads"))
    st.caption(f"Only attentions lose heads: the other {others} layers stay whole in a heads "
               "plan (granularity neurons prunes the feed-forward layers' neurons).")


def _on_blocks() -> None:
    count = st.session_state.get(BLOCKS_KEY)
    if count is not None:
        share = min(count / len(bundle.blocks), 0.999)  # round(share x blocks) == count
        state.set_plan(replace(session.plan, scope="global", amount=share))


def _block_controls(plan: Plan) -> None:
    """A blocks plan is global: how many blocks to drop; the criterion picks which. The
    table lists each block's score (lowest dropped first) and whether it is dropped."""
    n = len(bundle.blocks)
    _show(BLOCKS_KEY, round(plan.amount * n))
    st.slider("Blocks dropped", 0, n, key=BLOCKS_KEY, on_change=_on_blocks,
              help="a dropped block passes its input on, as the model without it does; "
                   "the criterion's lowest-scored blocks go first")
    try:
        dropped = set(session.evaluator.masks(plan).dropped_blocks)
        scores = {b.name: float(session.evaluator.scores.get("blocks", plan.criterion,
                                                              b.name)[0][0])
                  for b in bundle.blocks}
    except ExplorerError as exc:
        st.error(f"This plan cannot be evaluated: {exc}")
        return
    st.dataframe([{"block": b.name, f"{plan.criterion} score": scores[b.name],
                   "dropped": b.name in dropped} for b in bundle.blocks],
                 hide_index=True, key="pr_blocks")


def _groups() -> None:
    """What each coupled group contains: the layers and every parameter slice that follows."""
    coupled = [g for g, members in bundle.units("neurons").items() if len(members) > 1]
    if not coupled:
        return
    with st.expander(f"Coupled groups ({len(coupled)})"):
        for g in coupled:
            members = bundle.group(g)
            params = ", ".join(f"{d.param}[{'out' if d.dim == 0 else 'in'}]"
                               for d in members[0].dependents)
            st.markdown(f"**{' + '.join(la.name for la in members)}** "
                        f"({members[0].neurons} channels): {params}")


def _metrics(plan: Plan) -> tuple[Metrics, Metrics] | None:
    """The plan's cards, and its metrics with the dense model's (None: it cannot be
    evaluated). On a large validation set first an estimate on a stratified subset, then
    the exact value once every batch ran; a slider moved meanwhile reruns the page at the
    next batch: the newest plan wins, moves do not queue."""
    # The placeholder is made at the first estimate, not before: made up front, it would
    # blank the previous plan's cards for as long as the estimate takes.
    refining: dict = {}
    total = len(session.data) if session.data is not None else 0

    def show(done: int, batches: int, so_far: Metrics) -> None:
        if so_far.samples == session.evaluator.estimate_samples:
            refining["slot"] = st.empty()
            with refining["slot"].container():
                _cards(so_far, dense, estimate=True)
                refining["bar"] = st.progress(done / batches)
        elif "bar" in refining:
            refining["bar"].progress(done / batches,
                                     f"refining: {so_far.samples:,} of {total:,} {NOUN}")

    try:
        dense = session.dense()
        metrics = session.evaluate(plan, progress=show)
    except ExplorerError as exc:  # e.g. a data-driven criterion on an architecture-only model
        st.error(f"This plan cannot be evaluated: {exc}")
        return None
    with refining["slot"].container() if "slot" in refining else st.container():
        _cards(metrics, dense)
    return metrics, dense


def _charts(plan: Plan, metrics: Metrics, dense: Metrics) -> None:
    st.plotly_chart(charts.per_layer(metrics), key="per_layer")
    if metrics.accuracy is not None:
        st.plotly_chart(charts.tradeoff(session.history(), plan, dense), key="tradeoff")


def _cards(metrics: Metrics, dense: Metrics, estimate: bool = False) -> None:
    """Accuracy, loss, the cost cards and fidelity (drawn last: it never delays accuracy);
    an estimate's figures read "≈ ..." and its caption says on how many samples."""
    measured = metrics.accuracy is not None
    approx = "≈ " if estimate else ""
    cols = [*st.columns(3), *st.columns(3)]  # two rows: long numbers stay readable
    if measured:
        lo, hi = metrics.accuracy_ci
        cols[0].metric("Accuracy", approx + percent(metrics.accuracy),
                       f"{(metrics.accuracy - dense.accuracy) * 100:+.2f} pts",
                       help=f"95% Wilson interval {percent(lo)} - {percent(hi)} "
                            f"on {metrics.samples} {NOUN}" + _bn_basis(metrics))
        cols[1].metric("Loss", f"{approx}{metrics.loss:.4f}",
                       f"{metrics.loss - dense.loss:+.4f}", delta_color="inverse")
    elif metrics.fidelity is None:
        cols[0].metric("Accuracy", "n/a", help=state.NO_DATA_NOTE)
        cols[1].metric("Loss", "n/a", help=state.NO_DATA_NOTE)
    metric_cards.cost_cards(cols[2], cols[3], cols[4], metrics)
    unlabelled = not measured and metrics.fidelity is not None
    if metrics.fidelity is not None:  # beside accuracy; in its place where there are no labels
        _fidelity(cols[0] if unlabelled else cols[5], metrics, approx)
    if unlabelled and metrics.fidelity["agreement"] is not None:
        cols[1].metric("Cosine to dense", f"{approx}{metrics.fidelity['cosine']:.4f}",
                       help=f"mean cosine similarity of each {NOUN[:-1]}'s outputs to the dense "
                            "model's")
    sizes = "sizes in bytes: " + ", ".join(f"{k} {v:,}" for k, v in metrics.size_bytes.items())
    if estimate:
        interval = f"; 95% interval {percent(lo)} - {percent(hi)}" if measured else ""
        st.caption(f"Estimate on {metrics.samples:,} of {len(session.data):,} {NOUN} "
                   f"(a fixed stratified subset{interval}), refining on the rest")
    elif measured:
        st.caption(f"Accuracy 95% interval: {percent(lo)} - {percent(hi)}"
                   f"{_bn_basis(metrics)} · {sizes}")
    else:
        st.caption(f"{state.NO_LABELS_NOTE if unlabelled else state.NO_DATA_NOTE} · {sizes}")


def _fidelity(col, metrics: Metrics, approx: str) -> None:
    """The agreement card (cosine for outputs that are not class scores): how close the
    plan's outputs stay to the dense model's on the same samples, no labels needed."""
    f = metrics.fidelity
    why = (f"on {metrics.samples:,} {NOUN}, against the dense model's outputs (no labels "
           f"needed); mean cosine similarity of the outputs {f['cosine']:.4f}")
    if f["agreement"] is None:
        col.metric("Cosine to dense", f"{approx}{f['cosine']:.4f}", help=why)
        return
    col.metric("Agreement with dense", approx + percent(f["agreement"]),
               f"KL {f['kl']:.4f} nats", delta_color="off",
               help=f"share of {NOUN} whose top-1 class is the dense model's, {why}; "
                    "KL: mean KL(dense || pruned) of the softmax outputs" + _bn_basis(metrics))


def _bn_basis(metrics: Metrics) -> str:
    """Says that BatchNorm was recalibrated for this plan (the raw figure: the sidebar)."""
    if not metrics.bn_recalibrated:
        return ""
    return " · BatchNorm recalibrated for this plan (sidebar: raw)"


# Not a fragment: the sidebar's plan summary and download must follow every slider move,
# and a fragment cannot redraw the sidebar. The sidebar costs little beside the metrics.
# The cards come first where the evaluation is quick (no estimate phase): the browser
# redraws the page once per element it receives, so the fewer elements before the numbers,
# the sooner they show. Where it refines over seconds, the controls come first.
plan = session.plan
left, right = st.columns([1, 2], gap="large")
with right:
    cards, figures = st.container(), st.container()
quick = not session.evaluator.refines
if quick:
    with cards:
        shown = _metrics(plan)
with left:
    _controls(plan)
    b1, b2 = st.columns(2)
    b1.button("Undo", on_click=state.undo, disabled=not st.session_state.get(state.UNDO_KEY),
              width="stretch")
    b2.button("Reset", on_click=state.reset, width="stretch")
    st.download_button("Download this plan (JSON)", plan.to_json(), file_name="plan.json",
                       mime="application/json", width="stretch")
if not quick:
    with cards:
        shown = _metrics(plan)
if shown is not None:
    with figures:
        _charts(plan, *shown)
