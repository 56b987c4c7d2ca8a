"""Measured latency beside theoretical FLOPs: what a pruned model costs when it runs.

A plan's theoretical speed-up (dense FLOPs / effective FLOPs, :mod:`explorer.metrics`)
assumes every removed weight saves its multiply-add. Run with dense kernels it saves
nothing: a 90% unstructured plan is as slow as the dense model. Blalock et al. 2020 (arXiv:
2003.03033) ask for both figures. :func:`measure` times the forms a plan can take:

* ``dense`` — the model as loaded;
* ``masked`` — a private copy with the removed weights as zeros (what
  ``torch.nn.utils.prune`` gives you): the same dense kernels;
* ``sparse`` — that copy with each pruned ``nn.Linear`` weight stored as CSR and run by
  ``torch.nn.functional.linear``'s sparse kernel (torch has no sparse convolution on the
  CPU); weight plans only, and measured, never assumed faster;
* ``shrunk`` — a neuron, heads or blocks plan's physically smaller model
  (:func:`explorer.export.shrink.shrink`);
* ``onnx`` — the shrunk model (else the masked one) exported to ONNX and run by ONNX
  Runtime on the CPU at the same thread count, where the optional ``onnx`` extra is
  installed (None otherwise, or where the export fails, with the reason in ``notes``). Its
  speed-up is against the dense model in ONNX Runtime (``onnx_dense``), timed alike: ONNX
  Runtime is much faster than torch's eager kernels on small models whatever was pruned, so
  the measured speed-up (``measured``, ``form``) compares torch's forms with torch's dense
  model only.

Each form is timed with ``torch.utils.benchmark.Timer`` (warm-up runs first, then
``blocked_autorange``, at the stated thread count) on one random batch, in three turns
interleaved with the other forms (a burst of load on a shared machine then hits every form,
not one), ``min_run_time`` seconds in all; p50 and p95 are quantiles of all its block
times. Per-layer times come from ``torch.profiler`` on the dense and on the fastest pruned
torch form: each prunable layer's module runs inside a ``record_function`` named after it,
so the two profiles match by module name. A model known only as an exported graph (a ``.pt2``
upload) has no layer modules that run; its convolutions and linear calls are matched to the
layers in execution order instead.
The shared model is never written: every form is a copy.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils import benchmark

from explorer.bundle import ModelBundle
from explorer.errors import ExplorerError, ModelError, short
from explorer.evaluator import torch_threads
from explorer.export.outputs import pruned_state_dict
from explorer.limits import MAX_LATENCY_BATCH, MAX_LATENCY_THREADS
from explorer.masks import Masks
from explorer.metrics import Metrics, metrics_from
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, stop_now, tick

FORMS = ("dense", "masked", "sparse", "shrunk", "onnx")
TORCH_FORMS = ("masked", "sparse", "shrunk")  # what ``measured`` compares with torch's dense
ONNX_DENSE = "onnx_dense"  # the dense model in ONNX Runtime: the onnx form's own reference
WARMUP_RUNS = 3
PROFILE_RUNS = 5
ROUNDS = 3  # each form is timed in this many turns, interleaved with the others
LAYER_OPS = ("aten::conv2d", "aten::linear")  # one per prunable layer in an exported graph


@dataclass(frozen=True)
class Timing:
    """Milliseconds per forward pass of one batch: median and 95th percentile."""

    p50: float
    p95: float

    @classmethod
    def of(cls, times_ms: list[float]) -> Timing:
        times = torch.tensor(times_ms, dtype=torch.float64)
        return cls(p50=float(times.quantile(0.5)), p95=float(times.quantile(0.95)))

    def to_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p95": self.p95}


@dataclass(frozen=True)
class LayerTime:
    """One prunable layer: its time in the dense and in the fastest pruned form (ms per batch),
    its share of that pruned form's forward time and of the plan's effective FLOPs."""

    name: str
    dense_ms: float
    pruned_ms: float
    time_share: float
    flops_share: float


@dataclass(frozen=True)
class Latency:
    """What :func:`measure` found: each form's timing (None where the form does not apply,
    ``notes`` saying why), the theoretical and the measured speed-up, and per-layer times."""

    latency_ms: dict[str, Timing | None]
    theoretical: float
    measured: float
    form: str  # the fastest pruned torch form, whose p50 gives ``measured``
    batch: int
    threads: int
    layers: tuple[LayerTime, ...]
    notes: dict[str, str] = field(default_factory=dict)  # form or "layers" -> why
    cancelled: bool = False
    onnx_dense: Timing | None = None  # the dense model in ONNX Runtime
    onnx_speedup: float | None = None  # onnx_dense / onnx (p50s): pruning's gain in ORT

    def to_dict(self) -> dict:
        timings = {k: (t.to_dict() if t else None) for k, t in self.latency_ms.items()}
        timings[ONNX_DENSE] = self.onnx_dense.to_dict() if self.onnx_dense else None
        return {
            "latency_ms": timings,
            "speedup": {"theoretical": self.theoretical, "measured": self.measured,
                        "form": self.form, "onnx": self.onnx_speedup},
            "batch": self.batch, "threads": self.threads,
            "layers": [vars(la) for la in self.layers],
        }


class SparseLinear(nn.Module):
    """``nn.Linear`` with its weight stored as CSR: ``F.linear`` runs torch's sparse kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def measure(bundle: ModelBundle, plan: Plan, batch: int = 1, threads: int = 1,
            min_run_time: float = 0.5, evaluator=None, progress: Progress | None = None,
            cancelled: Cancelled | None = None, layers: bool = True,
            clock: Callable[[], float] = time.perf_counter) -> Latency:
    """Time ``plan``'s forms of ``bundle``'s model on a batch of ``batch`` random inputs
    (shape ``(batch, *bundle.input_shape)``) with ``threads`` intra-op threads.

    Args:
        bundle: the model (never written).
        plan: what to remove; a plan for another model fails with its :class:`PlanError`.
        batch: inputs per forward pass, 1 to :data:`~explorer.limits.MAX_LATENCY_BATCH`.
        threads: torch intra-op threads, 1 to :data:`~explorer.limits.MAX_LATENCY_THREADS`.
        min_run_time: seconds each form is timed for at least, over its turns (tests set
            it low).
        evaluator: an :class:`~explorer.evaluator.Evaluator` on ``bundle`` for its masks
            and costs (no accuracy is evaluated); default a data-free one (data-driven
            criteria then fail with its message).
        progress, cancelled: :mod:`explorer.progress`'s callbacks, one step per form and
            turn, one for the profile; a cancelled run returns the turns timed so far.
        layers: also profile per-layer times and time ONNX Runtime (False: the speed-up
            alone, e.g. to check a suggested plan: ``layers`` is then empty and ``onnx``
            None, since ``measured`` compares torch's forms only).
        clock: what the timings count: the wall clock (default), or e.g. ``time.thread_time``
            at one thread, the timing thread's CPU time, which other processes taking the
            core on a shared machine do not inflate.
    """
    from explorer.evaluator import Evaluator

    check_count(batch, "batch", MAX_LATENCY_BATCH)
    check_count(threads, "threads", MAX_LATENCY_THREADS)
    evaluator = evaluator or Evaluator(bundle, None)
    masks = evaluator.masks(plan)
    metrics = metrics_from(evaluator.costs.costs(masks))  # costs only: no accuracy pass
    modules, notes = pruned_forms(bundle, masks, onnx=layers)
    x = timing_inputs(bundle, batch)
    steps = [f for f in (*FORMS, ONNX_DENSE) if f == "dense" or modules.get(f) is not None]
    runnable = {"dense": bundle.model, **modules}
    times: dict[str, list[float]] = {f: [] for f in steps}
    total = ROUNDS * len(steps) + 1
    for r in range(ROUNDS):  # forms interleaved: a burst of load hits them all alike
        for i, form in enumerate(steps):
            if stop_now(cancelled):
                return _result(times, metrics.speedup, batch, threads, (), notes, True)
            times[form] += block_times(runnable[form], x, threads, min_run_time / ROUNDS,
                                       r == 0, clock)
            tick(progress, r * len(steps) + i + 1, total, form)
    best = min((f for f in TORCH_FORMS if f in times), key=lambda f: Timing.of(times[f]).p50)
    per_layer = layer_times(bundle, runnable[best], x, threads, metrics, notes) if layers \
        else ()
    tick(progress, total, total, "layers")
    return _result(times, metrics.speedup, batch, threads, per_layer, notes, False, best)


def timing_inputs(bundle: ModelBundle, batch: int) -> torch.Tensor:
    """The ``(batch, *bundle.input_shape)`` inputs every form is timed on, the same on every
    run: standard normal values, or, for a model that reads token ids (its card names a
    ``vocabulary`` and a ``pad_id``, as minilm's does), ids drawn from its vocabulary other
    than the padding id: random values would index outside the embedding, and padding
    would not be a sentence."""
    shape, generator = (batch, *bundle.input_shape), torch.Generator().manual_seed(0)
    vocabulary, pad = bundle.card.get("vocabulary"), bundle.card.get("pad_id")
    if not vocabulary or pad is None:
        return torch.randn(shape, generator=generator)
    ids = torch.randint(0, len(vocabulary) - 1, shape, generator=generator)
    return (ids + (ids >= pad)).float()  # every id but the padding one


def _result(times: dict[str, list[float]], theoretical: float, batch: int, threads: int,
            layers: tuple[LayerTime, ...], notes: dict[str, str], cancelled: bool,
            best: str | None = None) -> Latency:
    timings = {f: Timing.of(times[f]) if times.get(f) else None for f in FORMS}
    dense, fast = timings["dense"], timings.get(best) if best else None
    measured = dense.p50 / fast.p50 if dense and fast else float("nan")
    reference = Timing.of(times[ONNX_DENSE]) if times.get(ONNX_DENSE) else None
    onnx = timings["onnx"]
    return Latency(latency_ms=timings, theoretical=theoretical, measured=measured,
                   form=best or "", batch=batch, threads=threads, layers=layers, notes=notes,
                   cancelled=cancelled, onnx_dense=reference,
                   onnx_speedup=reference.p50 / onnx.p50 if reference and onnx else None)


def latency_clock(threads: int) -> Callable[[], float]:
    """The clock for timings compared on a shared machine: at one thread, the timing
    thread's CPU time (``time.thread_time``: another process taking the core does not
    inflate it, as it does the wall clock); at more threads the work runs on other threads
    too, so the wall clock."""
    return time.thread_time if threads == 1 else time.perf_counter


def speedups(bundle: ModelBundle, plans: list[Plan], batch: int = 1, threads: int = 1,
             min_run_time: float = 0.2, evaluator=None, progress: Progress | None = None,
             cancelled: Cancelled | None = None) -> dict[str, float]:
    """{plan key: measured speed-up} of ``plans`` (:func:`measure` without the per-layer
    profile, by :func:`latency_clock`), one step each; a cancelled run returns those done."""
    out: dict[str, float] = {}
    for i, plan in enumerate(plans):
        if stop_now(cancelled):
            break
        out[plan.key] = measure(bundle, plan, batch, threads, min_run_time, evaluator,
                                layers=False, clock=latency_clock(threads)).measured
        tick(progress, i + 1, len(plans), plan.key)
    return out


def check_count(value: object, what: str, maximum: int) -> int:
    """``value`` if it is a whole number in [1, ``maximum``]; else an :class:`ExplorerError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ExplorerError(f"{what} must be a whole number from 1 to {maximum:,}; got "
                            f"{short(value)}.")
    return value


def pruned_forms(bundle: ModelBundle, masks: Masks, onnx: bool = True
                 ) -> tuple[dict[str, nn.Module | None], dict[str, str]]:
    """The plan's runnable forms (``masked``, ``sparse``, ``shrunk``, ``onnx``; None where
    one does not apply) and, per form that is None, why. ``onnx`` False: no ONNX export
    (two exports and two sessions a caller reading only ``measured`` would not use)."""
    notes: dict[str, str] = {}
    masked = masked_model(bundle, masks)
    sparse, why = sparse_model(masked, bundle, masks)
    shrunk = None
    if sparse is None:
        notes["sparse"] = why
    if masks.granularity == "weights":
        notes["shrunk"] = "a weights plan keeps every tensor's shape"
    elif not masks.removed:
        notes["shrunk"] = "the plan removes nothing"
    else:
        from explorer.export.shrink import shrink

        try:
            shrunk = shrink(bundle, masks).eval()
        except ModelError as exc:
            notes["shrunk"] = str(exc)
    runtime = dense = None
    if onnx:
        example = timing_inputs(bundle, ONNX_EXAMPLE_BATCH)
        runtime, why = onnx_model(shrunk if shrunk is not None else masked, example)
        dense = onnx_model(bundle.model, example)[0] if runtime is not None else None
        if runtime is None or dense is None:
            notes["onnx"] = why or "the dense model could not be exported to ONNX"
            runtime = dense = None
    else:
        notes["onnx"] = "not timed: only the measured speed-up was asked for"
    return {"masked": masked, "sparse": sparse, "shrunk": shrunk, "onnx": runtime,
            ONNX_DENSE: dense}, notes


ONNX_EXAMPLE_BATCH = 2  # the export's example batch; the batch axis is dynamic


def onnx_model(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module | None, str]:
    """``model`` exported to ONNX and wrapped to run in ONNX Runtime (:class:`OnnxRuntime`),
    or (None, why): the optional extra is missing, or the export fails."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "ONNX Runtime is not installed (pip install -e '.[onnx]')"
    import io

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    except Exception as exc:  # the exporter raises many kinds, with pages of detail
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return None, f"the model could not be exported to ONNX ({type(exc).__name__}: {first})"
    return OnnxRuntime(buffer.getvalue()), ""


class OnnxRuntime(nn.Module):
    """An ONNX model run by ONNX Runtime on the CPU, called like the torch module it was
    exported from; its intra-op threads follow torch's count when the session is made (the
    thread count of the timings, :func:`block_times`)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.sessions: dict[int, object] = {}

    def session(self):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads not in self.sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            self.sessions[threads] = ort.InferenceSession(
                self.data, options, providers=["CPUExecutionProvider"])
        return self.sessions[threads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session().run(None, {"x": x.detach().numpy()})[0]
        return torch.from_numpy(out)


def masked_model(bundle: ModelBundle, masks: Masks) -> nn.Module:
    """A private copy of the model with the plan's removed weights as zeros (dense kernels)."""
    model = copy.deepcopy(bundle.model).eval()
    model.load_state_dict(pruned_state_dict(bundle, masks))
    return model


def sparse_model(masked: nn.Module, bundle: ModelBundle, masks: Masks
                 ) -> tuple[nn.Module | None, str]:
    """A copy of ``masked`` whose pruned ``nn.Linear`` layers hold CSR weights, or (None, why)."""
    if masks.granularity != "weights":
        return None, "a structured plan's zeros are whole rows: its fast form is the shrunk model"
    modules = dict(masked.named_modules())
    linear = [la.name for la in bundle.layers if isinstance(modules.get(la.name), nn.Linear)
              and masks.removed.get(la.name, 0)]
    if not linear:
        graph = not any(isinstance(modules.get(la.name), (nn.Linear, nn.Conv2d))
                        for la in bundle.layers)
        return None, ("an exported graph has no layer modules to swap for sparse ones" if graph
                      else "torch has no sparse CPU kernel for the pruned layers (only "
                      "linear layers have one) or the plan prunes none")
    model = copy.deepcopy(masked)
    for name in linear:
        model.set_submodule(name, SparseLinear(modules[name]))
    return model, ""


def block_times(module: nn.Module | Callable, x: torch.Tensor, threads: int,
                min_run_time: float, warm_up: bool = True,
                clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Milliseconds per ``module(x)`` of each block ``Timer.blocked_autorange`` timed for at
    least ``min_run_time`` seconds on ``threads`` threads (after warm-up runs), by ``clock``
    (default the wall clock)."""
    with torch.no_grad():
        if warm_up:
            with torch_threads(threads):
                for _ in range(WARMUP_RUNS):
                    module(x)
        timer = benchmark.Timer("module(x)", globals={"module": module, "x": x},
                                num_threads=threads, timer=clock)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return [t * 1e3 for t in m.times]


def layer_times(bundle: ModelBundle, pruned: nn.Module, x: torch.Tensor, threads: int,
                metrics: Metrics, notes: dict[str, str]) -> tuple[LayerTime, ...]:
    """Per prunable layer: ms per batch in the dense and in ``pruned`` (torch.profiler), its
    share of ``pruned``'s forward time and of ``metrics``' effective FLOPs."""
    dense, _ = profile_layers(bundle, bundle.model, x, threads)
    after, total = profile_layers(bundle, pruned, x, threads)
    if dense is None or after is None:
        notes["layers"] = ("the layers' calls could not be matched to the model's layers "
                           "(their count differs from the prunable layers')")
        return ()
    effective = max(metrics.flops["effective"], 1)
    flops = {la.name: la.flops_effective for la in metrics.layers}
    return tuple(LayerTime(name=la.name, dense_ms=dense[la.name], pruned_ms=after[la.name],
                           time_share=after[la.name] / total if total else 0.0,
                           flops_share=flops[la.name] / effective) for la in bundle.layers)


def profile_layers(bundle: ModelBundle, module: nn.Module, x: torch.Tensor, threads: int
                   ) -> tuple[dict[str, float] | None, float]:
    """({layer name: ms per batch} or None, forward ms per batch) from ``torch.profiler``."""
    hooks = _label_layers(module, bundle.layer_names)
    activities = [torch.profiler.ProfilerActivity.CPU]
    try:
        with torch.no_grad(), torch_threads(threads):
            module(x)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(PROFILE_RUNS):
                    with torch.profiler.record_function("forward"):
                        module(x)
    finally:
        for h in hooks:
            h.remove()
    events = prof.events()
    total = sum(e.cpu_time_total for e in events if e.name == "forward") / PROFILE_RUNS / 1e3
    if hooks:
        per = {}
        for e in events:
            if e.name in bundle.layer_names:
                per[e.name] = per.get(e.name, 0.0) + e.cpu_time_total / PROFILE_RUNS / 1e3
        return per, total
    return _by_call_order(bundle.layer_names, events), total


def _by_call_order(names: list[str], events) -> dict[str, float] | None:
    """An exported graph's layer ops, the i-th call of each run matched to the i-th layer."""
    calls = sorted((e for e in events if e.name in LAYER_OPS), key=lambda e: e.time_range.start)
    if len(calls) != len(names) * PROFILE_RUNS:
        return None
    per = dict.fromkeys(names, 0.0)
    for i, e in enumerate(calls):
        per[names[i % len(names)]] += e.cpu_time_total / PROFILE_RUNS / 1e3
    return per


def _label_layers(module: nn.Module, names: list[str]) -> list:
    """Hooks running each named layer module inside a ``record_function`` of its name; none
    when the layers are not modules of ``module`` that run (an exported graph)."""
    modules = dict(module.named_modules())
    if not all(isinstance(modules.get(n), (nn.Linear, nn.Conv2d, SparseLinear)) for n in names):
        return []
    open_ = {}
    hooks = []
    for name in names:
        def enter(_m, _args, name=name):
            open_[name] = torch.profiler.record_function(name).__enter__()

        def leave(_m, _args, _out, name=name):
            open_.pop(name).__exit__(None, None, None)

        hooks += [modules[name].register_forward_pre_hook(enter),
                  modules[name].register_forward_hook(leave)]
    return hooks

