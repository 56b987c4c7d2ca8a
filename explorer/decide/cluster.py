"""Where a sweep's shares run: here, one after the other, or on a Ray cluster's workers.

A sensitivity scan is units x grid evaluations, a criteria comparison criteria x grid:
embarrassingly parallel, and on a real model with a real validation set hours on one
machine. The sweeps (:func:`~explorer.decide.sensitivity.sensitivity`,
:func:`~explorer.decide.compare_criteria.layer_curves`,
:func:`~explorer.decide.compare_criteria.global_curves`) take an ``executor`` and hand it
their shares — one unit's curve, one criterion's curve — as ``work(evaluator, item)``;
they merge the results in their own order, so a sweep is the same wherever it ran.

* :class:`InProcess` runs the shares here on the caller's evaluator (the reference).
* :class:`RayCluster` (the optional ``ray`` extra: ``pip install -e '.[ray]'``) puts one
  :class:`Recipe` (or :class:`SplitRecipe`) in Ray's object store — the model (its
  module: weights and graph), the validation data, the score cache's computed scores and
  the evaluator's settings (memory budget, batch size, estimate size, BatchNorm
  calibration images, device) — and starts one worker (a Ray actor, one CPU, one torch
  thread) per CPU of the cluster.
  Each worker builds its evaluator once and takes shares one at a time, so the network
  before a unit is reused across that unit's points as it is here. Floats are identical
  to an in-process sweep run with one torch thread: the same graph, batches and scores.

The sweeps that choose on one part of the data and report the other (the trade-off
baselines, a suggestion's verification) hand over a
:class:`~explorer.decide.held_out.SplitEvaluator`: its :class:`SplitRecipe` holds both
parts, and each worker builds both evaluators over one model and one score cache.

Progress is heard as shares finish; ``cancelled()`` is checked while waiting and kills the
workers, and the sweep returns what finished, flagged cancelled as in-process. A worker
that dies mid-sweep (its process killed, its node lost) fails the sweep with a
:class:`ClusterError`: a partial result is never returned as complete. An
:class:`~explorer.errors.ExplorerError` inside a share (a criterion that cannot score)
is raised or reported exactly as in-process.

``ray`` is imported only here, and only when a :class:`RayCluster` is made.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import DecisionSplit, ValidationSet
from explorer.decide.held_out import SplitEvaluator
from explorer.errors import ExplorerError, short
from explorer.evaluator import Evaluator
from explorer.limits import RAY_CONNECT_SECONDS, RAY_LOCAL_CPUS, RAY_LOCAL_OBJECT_STORE_BYTES
from explorer.load.files import first_line
from explorer.masks import ScoreCache
from explorer.progress import Cancelled, stop_now

Judge = Evaluator | SplitEvaluator  # what a share runs on: one evaluator, or both parts
Work = Callable[[Judge, Any], Any]  # work(judge, item): one share
Done = Callable[[int, Any], None]
POLL_SECONDS = 0.2  # how often a waiting sweep asks ``cancelled()``
WORKER_THREADS = 1
INSTALL_HINT = "pip install -e '.[ray]'"
_ADDRESS = re.compile(r"(ray://)?([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})")


class ClusterError(ExplorerError):
    """The Ray cluster cannot be used (no extra, a wrong address) or a worker died."""


class Executor(Protocol):
    """Runs ``work(evaluator, item)`` for each item (``evaluator``: an
    :class:`~explorer.evaluator.Evaluator`, or a
    :class:`~explorer.decide.held_out.SplitEvaluator` for the sweeps that choose on one part
    and report the other); returns the results aligned with ``items`` (None where a
    cancelled sweep did not finish one) and whether ``cancelled()`` stopped it.
    ``done(i, result)`` hears each finished share."""

    def map(self, evaluator: Judge, work: Work, items: Sequence[Any],
            done: Done | None = None, cancelled: Cancelled | None = None
            ) -> tuple[list[Any], bool]: ...


class InProcess:
    """Every share here, in order, on the caller's evaluator."""

    def map(self, evaluator: Judge, work: Work, items: Sequence[Any],
            done: Done | None = None, cancelled: Cancelled | None = None
            ) -> tuple[list[Any], bool]:
        results: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            if stop_now(cancelled):
                return results, True
            results[i] = work(evaluator, item)
            if done is not None:
                done(i, results[i])
        return results, False


@dataclass(frozen=True)
class Recipe:
    """Everything a worker builds its evaluator from: what is sent to the cluster.

    ``model`` travels as the bundle's module — a demo architecture's Python module, or an
    upload's graph module — and is exported again on the worker; ``scores`` are the score
    cache's computed scores (:meth:`~explorer.masks.ScoreCache.computed`), computed on
    ``score_data`` (the sweeps compute theirs before handing out shares).
    """

    model: nn.Module
    name: str
    input_shape: tuple[int, ...]
    card: dict
    source: str
    data: ValidationSet | None
    score_data: ValidationSet | None
    scores: dict
    memory_budget: int
    batch_size: int
    estimate_samples: int
    bn_calibration: ValidationSet | None
    device: str

    @classmethod
    def of(cls, evaluator: Evaluator) -> Recipe:
        bundle = evaluator.bundle
        return cls(bundle.model, bundle.name, bundle.input_shape, dict(bundle.card),
                   bundle.source, evaluator.data, evaluator.scores.data,
                   evaluator.scores.computed(), evaluator.memory_budget, evaluator.batch_size,
                   evaluator.estimate_samples, evaluator.bn_calibration, str(evaluator.device))

    def build(self, bundle: ModelBundle | None = None, scores: ScoreCache | None = None
              ) -> Evaluator:
        """The evaluator, on a model exported again here and a cache seeded with the
        scores (or on ``bundle`` and ``scores`` already built: a split's other part)."""
        if bundle is None:
            bundle = bundle_from_module(self.model, self.name, self.input_shape, self.card,
                                        self.source)
        if scores is None:
            scores = ScoreCache(bundle, self.score_data)
            scores.seed(self.scores)
        return Evaluator(bundle, self.data, scores, self.memory_budget, self.batch_size,
                         self.estimate_samples, self.device, self.bn_calibration)


@dataclass(frozen=True)
class SplitRecipe:
    """A :class:`~explorer.decide.held_out.SplitEvaluator`'s two parts: each part's recipe
    (one model, one set of scores: pickled once, as one object) and the split."""

    calibration: Recipe
    held_out: Recipe
    split: DecisionSplit | None

    @classmethod
    def of(cls, judge: SplitEvaluator) -> SplitRecipe:
        return cls(Recipe.of(judge.calibration), Recipe.of(judge.held_out), judge.split)

    def build(self) -> SplitEvaluator:
        """Both parts over one model and one score cache, as the judge here has them."""
        calibration = self.calibration.build()
        held_out = self.held_out.build(calibration.bundle, calibration.scores)
        return SplitEvaluator.of_parts(calibration, held_out, self.split)


def recipe_of(judge: Judge) -> Recipe | SplitRecipe:
    """What a worker rebuilds ``judge`` from."""
    if isinstance(judge, SplitEvaluator):
        return SplitRecipe.of(judge)
    return Recipe.of(judge)


class Worker:
    """One Ray actor's state: its evaluator, built once, and the sweep's work function."""

    def start(self, recipe: Recipe | SplitRecipe, work: Work) -> tuple[int, ExplorerError | None]:
        """(this process's id, the error building the evaluator raised, or None)."""
        torch.set_num_threads(WORKER_THREADS)
        self.work = work
        try:
            self.evaluator = recipe.build()
        except ExplorerError as exc:
            return os.getpid(), exc
        return os.getpid(), None

    def run(self, item: Any) -> tuple[bool, Any]:
        """(True, the share's result) or (False, the ExplorerError it raised)."""
        try:
            return True, self.work(self.evaluator, item)
        except ExplorerError as exc:
            return False, exc


def ray_module():
    """The ``ray`` package, or a :class:`ClusterError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"Sweeps on a Ray cluster need the ray extra: {INSTALL_HINT} "
                           "(or run the sweeps in this process).") from None
    return ray


def checked_address(address: str) -> str:
    """``local``, ``HOST:PORT`` (a cluster's GCS address) or ``ray://HOST:PORT`` (Ray
    Client); anything else is a :class:`ClusterError`."""
    match = _ADDRESS.fullmatch(address)
    if address == "local" or (match and 0 < int(match.group(3)) < 2**16):
        return address
    raise ClusterError(f"A Ray address (--ray) is local, HOST:PORT or ray://HOST:PORT (e.g. "
                       f"ray://head:10001); got {short(address)}.")


def probe(address: str, seconds: float = RAY_CONNECT_SECONDS) -> None:
    """Refuse an address where nothing answers within ``seconds`` (``ray.init`` would wait
    minutes for it)."""
    match = _ADDRESS.fullmatch(address)
    host, port = match.group(2).strip("[]"), int(match.group(3))
    try:
        with socket.create_connection((host, port), timeout=seconds):
            pass
    except OSError as exc:
        raise ClusterError(f"No Ray cluster answers at {short(address)} "
                           f"({exc.strerror or type(exc).__name__}): "
                           "check the address (`ray status` on the head node prints it), "
                           "or use local for one on this machine.") from None


class RayCluster:
    """Sweeps on a Ray cluster (an :class:`Executor`); use it as a context manager.

    ``address``: ``local`` starts a cluster on this machine (:data:`RAY_LOCAL_CPUS` CPUs,
    its node at 127.0.0.1, no dashboard, a bounded object store) and stops it on exit; ``HOST:PORT``
    or ``ray://HOST:PORT`` connects to a running one. A process already connected to Ray
    (a notebook that called ``ray.init``) uses that connection as it is. ``workers``: how
    many actors a sweep starts (default: one per CPU of the cluster, at most one per
    share). ``keep``: leave Ray connected on exit, for a process that holds one connection
    for many sweeps (the app: :mod:`explorer.ui.cluster`; ``ray.shutdown`` ends the whole
    process's connection, so one sweep ending must not end another's).
    ``worker_pids`` are the processes of the running sweep's workers.
    """

    def __init__(self, address: str, workers: int | None = None, keep: bool = False) -> None:
        self.address = checked_address(address)
        self.ray = ray_module()
        self.workers = workers
        self.keep = keep
        self.worker_pids: tuple[int, ...] = ()
        self._started = False

    def __enter__(self) -> RayCluster:
        if self.address != "local":
            probe(self.address)
        if self.ray.is_initialized():
            return self
        if self.address == "local":
            self.ray.init(num_cpus=RAY_LOCAL_CPUS, include_dashboard=False,
                          _node_ip_address="127.0.0.1",
                          object_store_memory=RAY_LOCAL_OBJECT_STORE_BYTES,
                          log_to_driver=False)
        else:
            try:
                self.ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterError(f"Cannot connect to the Ray cluster at {self.address}: "
                                   f"{first_line(exc)}") from None
        self._started = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._started and not self.keep:
            self.ray.shutdown()
            self._started = False

    def map(self, evaluator: Judge, work: Work, items: Sequence[Any],
            done: Done | None = None, cancelled: Cancelled | None = None
            ) -> tuple[list[Any], bool]:
        if not items:
            return [], False
        actors = self._start(evaluator, work, len(items), cancelled)
        if not actors:  # cancelled while the workers were starting
            return [None] * len(items), True
        try:
            return self._run(actors, items, done, cancelled)
        finally:
            for actor in actors:
                self.ray.kill(actor, no_restart=True)

    def _start(self, evaluator: Judge, work: Work, shares: int,
               cancelled: Cancelled | None) -> list:
        """The sweep's workers, each with its evaluator built (their pids kept); none when
        ``cancelled()`` while they start (they wait for free CPUs while another sweep holds
        them, and Cancel must still be heard)."""
        ray = self.ray
        try:
            recipe = ray.put(recipe_of(evaluator))
        except (TypeError, AttributeError, ValueError) as exc:
            raise ClusterError(
                f"'{evaluator.bundle.name}' cannot be sent to a Ray cluster "
                f"({first_line(exc)[:200]}); run this sweep without --ray.") from None
        count = self.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        actor_class = ray.remote(num_cpus=1, max_restarts=0)(Worker)
        actors = [actor_class.remote() for _ in range(min(count, shares))]
        refs = [a.start.remote(recipe, work) for a in actors]
        try:
            while len(ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)[0]) < len(refs):
                if stop_now(cancelled):
                    for actor in actors:
                        ray.kill(actor, no_restart=True)
                    return []
            started = self._get(refs)
        except ClusterError:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise
        self.worker_pids = tuple(pid for pid, _ in started)
        errors = [error for _, error in started if error is not None]
        if errors:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise errors[0]
        return actors

    def _run(self, actors: list, items: Sequence[Any], done: Done | None,
             cancelled: Cancelled | None) -> tuple[list[Any], bool]:
        """Hands each idle worker the next share until all are done or cancelled."""
        results: list[Any] = [None] * len(items)
        queue = iter(enumerate(items))
        pending: dict = {}

        def hand(actor) -> None:
            nxt = next(queue, None)
            if nxt is not None:
                pending[actor.run.remote(nxt[1])] = (actor, nxt[0])

        for actor in actors:
            hand(actor)
        while pending:
            if stop_now(cancelled):
                return results, True
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                actor, i = pending.pop(ref)
                ok, value = self._get(ref)
                if not ok:
                    raise value
                results[i] = value
                if done is not None:
                    done(i, value)
                hand(actor)
        return results, False

    def _get(self, refs: Any) -> Any:
        """``ray.get``; a dead worker or a failure inside one is a :class:`ClusterError`."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError:
            raise ClusterError(
                "A Ray worker died mid-sweep (its process ended or its node was lost): the "
                "sweep is incomplete and was stopped; run it again."
            ) from None
        except self.ray.exceptions.RayError as exc:
            raise ClusterError(f"A Ray worker failed: {first_line(exc)[:200]}") from None
