"""Sensitivity: each prunable unit pruned alone over a grid, scanned in the background.

The scan (:func:`explorer.decide.sensitivity.sensitivity`) runs as a job (:mod:`explorer.ui.jobs`)
with its own evaluator: a progress bar, Cancel, and the curves drawn as they come while the
rest of the page stays usable. The scan runs on the calibration part of the validation data
(:mod:`explorer.decide.held_out`): the plans suggested from it are reported on the held-out part.
Finished scans go into a cache every session shares
(:mod:`explorer.ui.scan_cache`); a cancelled one never does. The last finished scan of each
model is kept in ``st.session_state["sensitivity"][model id]`` for the sections below the
charts.
"""

import time
from dataclasses import dataclass

import streamlit as st
import torch

from explorer.decide.sensitivity import (
    BLOCK_GRID,
    DEFAULT_GRID,
    Sensitivity,
    base_problem,
    scan_base,
    sensitivity,
)
from explorer.evaluator import Evaluator
from explorer.look.sentences import samples_noun
from explorer.plan import Plan, criterion_names, default_criterion, dense_plan
from explorer.ui import cluster, jobs, scan_cache, state, texts
from explorer.ui.charts import sensitivity as sensitivity_charts
from explorer.ui.format import percent
from explorer.ui.layout import page_setup
from explorer.ui.views import suggest as suggest_view
from explorer.ui.views.decision_split import judge_of, note

STEPS = {"5%": DEFAULT_GRID, "10%": tuple(round(i / 10, 2) for i in range(10))}
DENSE_BASE, PLAN_BASE = "dense", "the current plan"
LAST = "sensitivity"  # session key: {model id: the last finished Sensitivity}
SHOWN = "sens_shown"  # session key: {model id: Shown}


@dataclass(frozen=True)
class Shown:
    """The scan the page draws for a model: its cache key, result, seconds and how it came."""

    key: tuple
    result: Sensitivity | None
    seconds: float
    source: str  # "computed", "cached" or "failed"
    error: str = ""


session = page_setup("Sensitivity", texts.SENSITIVITY)
bundle, data = session.bundle, session.data
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
state.stop_without_labels(session.data, "A sensitivity scan measures how accuracy falls.")
if data is None:
    st.info(f"{state.NO_DATA_NOTE}\n\nA sensitivity scan measures how accuracy falls as each "
            "layer is pruned, so there is nothing to scan on this model.")
    st.stop()

JOB = f"sensitivity::{session.model_id}"
judge = judge_of(session)  # the scan runs on its calibration part
scans = scan_cache.shared_scans()
shown_by_model = st.session_state.setdefault(SHOWN, {})


def _work(key: tuple, evaluator: Evaluator, base: Plan, grid: tuple[float, ...],
          screen: bool, address: str | None) -> jobs.Work:
    """The job: the scan, reporting "unit k of n" and the curves so far; cached when whole.
    ``address``: the Ray cluster it runs on (None: here; :mod:`explorer.ui.cluster`)."""
    granularity, criterion = base.granularity, base.criterion
    units = evaluator.bundle.units(granularity)
    total = len(units) * len(grid)

    def run(report: jobs.Reporter) -> tuple[tuple, Sensitivity, float]:
        def progress(done: int, total: int, so_far: Sensitivity) -> None:
            current = so_far.units[-1]
            report(done, total, f"unit {len(so_far.units)} of {len(units)} ({current.unit}): "
                   f"{len(current.fractions)} of {len(grid)} fractions", so_far)

        # One intra-op thread (OpenMP keeps it per thread: the job's own): the page and
        # other sessions keep the other cores, and on a busy machine two threads spin-wait
        # on each other (digits-resnet neuron scan, load 9 on 2 cores: 10 s vs 0.4 s).
        torch.set_num_threads(1)
        report(0, total, f"unit 1 of {len(units)}: starting")
        start = time.perf_counter()
        with cluster.sweeps(address) as executor:
            result = sensitivity(evaluator, granularity, criterion, grid, base,
                                 progress=progress, cancelled=report.cancelled, screen=screen,
                                 executor=executor)
        seconds = time.perf_counter() - start
        scans.put(key, result, seconds)
        return key, result, seconds

    return run


def _start(key: tuple, base: Plan, grid: tuple[float, ...], screen: bool) -> None:
    evaluator = Evaluator(bundle, judge.split.calibration, judge.scores,  # the job's own
                          **state.evaluator_settings())
    jobs.start(JOB, "Sensitivity scan", _work(key, evaluator, base, grid, screen,
                                              cluster.chosen()))


def _finish(job: jobs.Job) -> None:
    """A job that has ended becomes the shown scan (finished, cancelled or failed)."""
    if job.error is not None:
        shown_by_model[session.model_id] = Shown((), None, job.seconds or 0.0, "failed",
                                                 job.error)
    else:
        key, result, seconds = job.result
        shown_by_model[session.model_id] = Shown(key, result, seconds, "computed")
        if not result.cancelled:
            st.session_state.setdefault(LAST, {})[session.model_id] = result
    jobs.forget(JOB)


def _cancelled_note(result: Sensitivity) -> str:
    n = len(bundle.units(result.granularity))
    note = f"Cancelled after {len(result.whole_units)} of {n} units"
    cut = [u for u in result.units if len(u.fractions) < len(result.grid)]
    if cut:
        note += (f" ({sensitivity_charts.unit_label(cut[0])} stopped after "
                 f"{cut[0].fractions[-1]:.0%} removed)")
    return note + ": the partial result below is not kept as a finished scan."


def _draw(result: Sensitivity, seconds: float, source: str) -> None:
    """The charts of one scan (finished, cached or partial) and what it left out."""
    if result.cancelled:
        st.warning(_cancelled_note(result))
    dense, held_out = judge.dense()
    base = None if result.base.removes_nothing else judge.calibration.evaluate(result.base)
    evaluations = sum(len(u.fractions) for u in result.units)
    where = "from the cache (computed earlier in" if source == "cached" else "in"
    closing = ")" if source == "cached" else ""
    what = ("blocks, each dropped alone from the dense model"
            if result.granularity == "blocks" else
            f"{result.granularity} by {result.criterion}, other layers "
            f"{'dense' if base is None else 'as in the plan'}")
    st.caption(f"{what}; {evaluations} evaluations "
               f"{where} {seconds:.1f} s{closing} on {dense.samples} calibration {NOUN}; "
               f"dense accuracy {percent(dense.accuracy)} on them, "
               f"{percent(held_out.accuracy)} on the {held_out.samples} held-out {NOUN}.")
    if not result.exact:
        st.caption(f"**Screened**: each point is an estimate on {result.samples:,} of the "
                   f"{dense.samples:,} calibration {NOUN} (a fixed stratified subset; one "
                   f"{NOUN[:-1]} is {1 / result.samples:.2%}), except each unit's tolerance - "
                   "the largest fraction still holding up on the subset and the next one - "
                   f"which ran on every {NOUN[:-1]} (filled markers). Tick **Exact points** for "
                   "full evaluations; a suggestion's plan is always checked on every "
                   f"{NOUN[:-1]}.")
    note(judge)
    if source == "cached":
        st.info("**Cached**: this scan was computed before (in this or another session). "
                "Press **Recompute** to run it again.")
    if not result.units:
        st.info("No unit was scanned before the scan stopped.")
    else:
        measure = st.radio("Show", tuple(sensitivity_charts.MEASURES), key="sens_measure",
                           horizontal=True, persist_state="session")
        value = {"accuracy": lambda m: m.accuracy, "loss": lambda m: m.loss}[measure]
        if result.granularity == "blocks":
            st.plotly_chart(sensitivity_charts.block_bars(result, measure, value(dense), NOUN),
                            key="sens_blocks")
            _block_table(result, dense)
        else:
            _curves(result, measure, value, dense, base)
    if result.skipped:
        with st.expander(f"Skipped layers ({len(result.skipped)})"):
            for name, reason in result.skipped.items():
                st.markdown(f"- **{name}**: {reason}")


def _curves(result: Sensitivity, measure: str, value, dense, base) -> None:
    """A per-layer scan: a line per unit, and the drop heatmap."""
    st.plotly_chart(sensitivity_charts.unit_lines(
        result, measure, value(dense), None if base is None else value(base), NOUN),
        key="sens_lines")
    reference = dense if base is None else base
    st.plotly_chart(sensitivity_charts.drop_heatmap(
        result, reference.accuracy, "dense" if base is None else "the base plan"),
        key="sens_heatmap")


def _block_table(result: Sensitivity, dense) -> None:
    """A blocks scan's numbers: each block dropped, least harmful first."""
    rows = [{"block dropped": c.unit, "accuracy": percent(c.accuracy[-1]),
             "drop (pts)": round((dense.accuracy - c.accuracy[-1]) * 100, 2),
             "loss": round(c.loss[-1], 4), "FLOPs per sample": c.flops_effective[-1]}
            for c in result.whole_units]
    st.dataframe(sorted(rows, key=lambda r: r["drop (pts)"]), hide_index=True,
                 key="sens_block_table")


def _suggest(result: Sensitivity) -> None:
    """The "Suggest a plan" section, for a finished scan from the dense model."""
    if result.granularity == "blocks":
        st.caption("A suggestion sets a fraction per layer; blocks are dropped whole. To "
                   "drop the least harmful blocks, set **Blocks dropped** on the Prune page.")
    elif result.cancelled:
        st.caption("Suggesting a plan needs a finished scan: run it to the end.")
    elif not result.base.removes_nothing:
        st.caption("Suggesting a plan starts from the dense model: run the scan with the "
                   "other layers dense.")
    else:
        suggest_view.section(session, result)


def _live(report: jobs.Report) -> None:
    dense = judge.dense().calibration.accuracy
    if report.partial is not None and report.partial.granularity == "blocks":
        st.plotly_chart(sensitivity_charts.block_bars(report.partial, "accuracy", dense, NOUN),
                        key="sens_live")
    else:
        st.plotly_chart(sensitivity_charts.unit_lines(report.partial, "accuracy", dense,
                                                      noun=NOUN), key="sens_live")


plan = session.plan
# Blocks where the model has any: each dropped alone from the dense model (kept, dropped).
KINDS = bundle.plan_granularities
left, right = st.columns([1, 3], gap="large")
with left:
    granularity = st.radio(
        "Granularity", KINDS, key="sens_granularity", horizontal=True,
        index=KINDS.index(plan.granularity) if plan.granularity in KINDS else 0,
        persist_state="session",
        help="weights: a unit is a layer; neurons: a unit is a group of coupled layers"
             + ("; heads: an attention's heads" if bundle.heads else "")
             + ("; blocks: each block dropped whole" if bundle.blocks else ""))
    blocks = granularity == "blocks"
    problem = None
    if blocks:  # no criterion, grid or base: a block is kept or dropped, from the dense model
        criterion, grid, exact = default_criterion("blocks"), BLOCK_GRID, True
        base = dense_plan("blocks")
        st.caption("Each block is dropped alone from the dense model (the layer-removal "
                   "ablation ShortGPT compares block influence with): the accuracy it "
                   "leaves says how much the model leans on that block.")
    else:
        criteria = criterion_names(granularity)
        criterion = st.selectbox(
            "Criterion", criteria, key=f"sens_criterion::{granularity}",
            persist_state="session",
            index=criteria.index(plan.criterion) if plan.criterion in criteria else 0,
            help="what is removed first in each unit: the lowest scores")
        step = st.radio("Grid step", tuple(STEPS), key="sens_step", horizontal=True,
                        persist_state="session",
                        help="fractions removed: 0% to 95% by 5%, or 0% to 90% by 10% "
                             "(faster)")
        choice = st.radio("Other layers", (DENSE_BASE, PLAN_BASE), key="sens_base",
                          persist_state="session",
                          help="while one unit is swept, the others are dense or as in your "
                               "plan")
        problem = base_problem(plan, granularity) if choice == PLAN_BASE else None
        if problem:
            st.warning(problem)
        elif choice == PLAN_BASE and plan.criterion != criterion:
            st.caption(f"The plan's fractions are kept; its criterion becomes {criterion}.")
        grid = STEPS[step]
        base = scan_base(plan if choice == PLAN_BASE and not problem else None, granularity,
                         criterion)
        calibration = judge.calibration
        exact = not calibration.refines or st.checkbox(
            "Exact points", key="sens_exact", persist_state="session",
            help=f"evaluate every point on all calibration {NOUN}; otherwise each point is "
                 f"screened on {calibration.estimate_samples:,} of them, much faster")
    units, skipped = bundle.units(granularity), bundle.unprunable(granularity)
    if not units:
        st.error(f"No layer of {bundle.name} can lose {granularity}.")
    key = (*session.results_key, granularity, criterion, grid, base.key, exact)
    if blocks:
        st.caption(f"{len(units)} blocks, each dropped once")
    else:
        st.caption(f"{len(units)} units x {len(grid)} fractions = {len(units) * len(grid)} "
                   "evaluations" + (f"; {len(skipped)} layers skipped" if skipped else ""))
    running = (job := jobs.get(JOB)) is not None and job.running
    cached = scans.get(key)
    blocked = running or problem is not None or not units
    why = "a scan is running: cancel it first" if running else None
    c1, c2 = st.columns(2)
    run = c1.button("Run", type="primary", key="sens_run", disabled=blocked, help=why,
                    width="stretch")
    recompute = c2.button("Recompute", key="sens_recompute", width="stretch",
                          disabled=blocked or cached is None,
                          help=why or "run this scan again although it is cached")
    if run and cached is not None:
        result, seconds = cached
        shown_by_model[session.model_id] = Shown(key, result, seconds, "cached")
        st.session_state.setdefault(LAST, {})[session.model_id] = result
    elif (run or recompute) and not blocked:
        try:
            _start(key, base, grid, screen=not exact)
        except jobs.JobRefused as exc:
            st.error(str(exc))
        else:
            st.rerun()  # draw the page again with the job running (Run disabled)

with right:
    job = jobs.watch(JOB, draw=_live)
    if job is not None and not job.running:
        _finish(job)
    if job is None or not job.running:
        shown = shown_by_model.get(session.model_id)
        if shown is None or (shown.key and shown.key[:2] != session.results_key):
            st.info("Choose the settings and press **Run**: each unit is pruned alone over "
                    "the grid while the other layers stay as chosen.")
        elif shown.error:
            st.error(f"The scan failed: {shown.error}")
        else:
            _draw(shown.result, shown.seconds, shown.source)
            _suggest(shown.result)
