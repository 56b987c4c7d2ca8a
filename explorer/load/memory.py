"""How much memory a model and its validation data take, checked before the data is read.

The evaluator (:mod:`explorer.evaluator`) streams the validation set through the model's
graph in batches: one batch's node values (about :data:`~explorer.activations.BATCH_BYTES`)
are held while it runs, plus the logits of every image; it also keeps the dense run's and
the last run's node values of as many batches as its ``memory_budget`` holds, for resuming.
A session also holds a :class:`~explorer.decide.held_out.SplitEvaluator`: a copy of the data
cut into calibration and held-out parts, with one evaluator each (half the budget each). So
one session's memory grows with the number of images N as

    N * (2 copies of x as float32 and labels as int64 + its logits + 2 copies of the dense
         model's logits, the reference for fidelity)
      + one batch's node values
      + the kept states (each of the two evaluator sets: up to its budget)
      + the model's parameters with their scores, sort orders and masked copies
      + a working margin (operator scratch, the evaluator's own caches)

where "node values per image" is measured on the model itself: a probe run on one and on two
zero images, whose difference is what one more image adds (views that share memory are
counted once). Checked against the peak memory of real evaluations of the demo models
(``tests/engine/load/test_memory_ceiling.py``): the estimate is an upper bound.
:func:`check_memory` refuses data over :data:`~explorer.limits.SESSION_MEMORY_BYTES` and
says how many images would fit.

The app serves many sessions from one process: :data:`UPLOADS` is a ledger of the memory
estimated for every live upload, and refuses a new one past
:data:`~explorer.limits.SERVER_MEMORY_BYTES`. A reservation is released when the object it is
tied to (the session's upload entry) is garbage collected, or by :meth:`Reservation.release`.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from explorer.activations import BATCH_BYTES, images_in, node_bytes
from explorer.bundle import ModelBundle
from explorer.errors import DataError, ExplorerError, short
from explorer.evaluator import DEFAULT_MEMORY_BUDGET
from explorer.limits import SERVER_MEMORY_BYTES, SESSION_MEMORY_BYTES
from explorer.load.data_file import DataShape, bytes_text, check_sample_shape

DATA_COPIES = 2  # the set as loaded, and its calibration and held-out parts
EVALUATOR_SETS = 2  # the session's evaluator, and the split's two (half the budget each)
MODEL_COPIES = 6  # parameters, scores (same size), sort orders (int64: 2x), masked copies (2x)
WORKING_BYTES = 64 << 20  # measured ~42 MiB beyond node values on digits-cnn at any N


@dataclass(frozen=True)
class MemoryEstimate:
    """What a session with ``samples`` images needs, in bytes: ``data`` (x and y),
    ``activations`` (node values of one run plus the states the evaluator keeps) and
    ``model`` (parameters and what is derived from them, the probe's batch-independent
    values, and the working margin)."""

    samples: int
    data: int
    activations: int
    model: int

    @property
    def total(self) -> int:
        return self.data + self.activations + self.model


def estimate(bundle: ModelBundle, shape: DataShape, samples: int | None = None) -> MemoryEstimate:
    """Memory a session evaluating ``bundle`` on data of ``shape`` needs (or on its first
    ``samples`` images)."""
    n = shape.samples if samples is None else samples
    per_image, fixed = node_bytes(bundle)
    return _estimate(bundle, shape, n, per_image, fixed)


def _estimate(
    bundle: ModelBundle, shape: DataShape, n: int, per_image: int, fixed: int
) -> MemoryEstimate:
    batch = images_in(BATCH_BYTES, per_image)  # the evaluator streams in batches
    # (N, classes) float32, every image's; and each evaluator set's dense reference (fidelity)
    logits = (1 + EVALUATOR_SETS) * n * bundle.num_classes * 4
    run = min(n, batch) * per_image + logits
    kept = EVALUATOR_SETS * min(2 * n * per_image, DEFAULT_MEMORY_BUDGET)  # dense and last
    params = sum(p.untyped_storage().nbytes() for p in bundle.model.state_dict().values())
    model = MODEL_COPIES * params + fixed + WORKING_BYTES
    return MemoryEstimate(n, DATA_COPIES * n * shape.sample_bytes, run + kept, model)


def images_that_fit(
    bundle: ModelBundle, shape: DataShape, limit: int = SESSION_MEMORY_BYTES
) -> int:
    """The most images of ``shape`` (up to ``shape.samples``) whose estimate is within
    ``limit``; 0 when not even one is."""
    per_image, fixed = node_bytes(bundle)
    lo, hi = 0, shape.samples
    while lo < hi:  # the estimate grows with n: bisect
        mid = (lo + hi + 1) // 2
        if _estimate(bundle, shape, mid, per_image, fixed).total <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_memory(bundle: ModelBundle, shape: DataShape) -> MemoryEstimate:
    """The session's :class:`MemoryEstimate`; a :class:`DataError` if the data's samples do
    not fit the model, or if it is over :data:`~explorer.limits.SESSION_MEMORY_BYTES`, saying
    how many images would fit. Call it after peeking at the data and loading the model, and
    before reading the data."""
    check_sample_shape(bundle, shape)
    need = estimate(bundle, shape)
    if need.total <= SESSION_MEMORY_BYTES:
        return need
    fit = images_that_fit(bundle, shape)
    advice = (
        f"This model can be evaluated on at most {fit:,} images of this size here; pass a "
        f"subset (e.g. np.savez(path, x=x[:{fit}], y=y[:{fit}]))." if fit else
        "Not even one image fits: the model is too large to evaluate here."
    )
    raise DataError(
        f"{shape.name}: {shape.samples:,} images of {short(shape.sample_shape)} would take about "
        f"{bytes_text(need.total)} with '{bundle.name}' (data {bytes_text(need.data)}, "
        f"activations {bytes_text(need.activations)}), over the "
        f"{bytes_text(SESSION_MEMORY_BYTES)} one session may use. {advice}"
    )


class Reservation:
    """Bytes held in a :class:`MemoryLedger` until :meth:`release` or garbage collection."""

    def __init__(self, ledger: MemoryLedger, nbytes: int) -> None:
        self.nbytes = nbytes
        self._finalizer = weakref.finalize(self, ledger._give_back, nbytes)

    def release(self) -> None:
        self._finalizer()


class MemoryLedger:
    """Estimated bytes held by live uploads across all sessions, thread-safe.

    ``reserve`` refuses (an :class:`ExplorerError`) when the total would pass ``limit``.
    Keep the returned :class:`Reservation` with what it pays for (the session's upload
    entry): when that is dropped and collected, the bytes come back.
    """

    def __init__(self, limit: int = SERVER_MEMORY_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def reserve(self, nbytes: int) -> Reservation:
        with self._lock:
            if self._used + nbytes > self.limit:
                raise ExplorerError(
                    f"The server is at its memory limit for uploads ({bytes_text(self._used)} "
                    f"of {bytes_text(self.limit)} in use, this upload needs about "
                    f"{bytes_text(nbytes)}); try again later or use the CLI."
                )
            self._used += nbytes
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes


UPLOADS = MemoryLedger()
