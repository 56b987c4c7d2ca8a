"""Streamlit's collection after each script run, with and without the frozen import heap.

Streamlit runs ``gc.collect(2)`` after every script run, and a page polling a job reruns a
fragment every 0.5 s. This runs the same loop in one process, side by side: a digits-cnn
fine-tuning job in a background thread (as the Fine-tune page starts it) while the main
thread "reruns" (a full collection, then 0.5 s of sleep), first with the heap as imports
leave it, then after :func:`explorer.ui.heap.freeze_imports`. Prints the collection's
median time, the objects it walks, and the seconds per epoch of the job, with the ratios.
Run by hand: ``python bench/rerun_gc.py [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time

import plotly.graph_objects  # noqa: F401  (the pages' imports: what a collection walks)
import streamlit  # noqa: F401

import explorer.ui.state  # noqa: F401
from explorer.data import digits_validation
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning, default_training_data
from explorer.finetune.retrain import retrain
from explorer.load.demos import load_demo
from explorer.plan import Plan
from explorer.ui.heap import freeze_imports

PLAN = Plan(sparsity={"features.2": 0.5, "classifier.1": 0.25})
POLL_S = 0.5  # the Fine-tune page's fragment reruns this often while a job runs


def collection_seconds(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect(2)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_seconds(run: Finetuning) -> float:
    """Seconds per epoch of ``run`` in a thread while this one reruns every POLL_S."""
    marks: list[float] = []
    job = threading.Thread(target=retrain, args=(run,),
                           kwargs={"progress": lambda *_: marks.append(time.perf_counter())})
    start = time.perf_counter()
    job.start()
    while job.is_alive():
        gc.collect(2)  # what Streamlit does after each run
        time.sleep(POLL_S)
    job.join()
    return (marks[-1] - start) / len(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    bundle = load_demo("digits-cnn")
    val = digits_validation()
    run = Finetuning(bundle, PLAN, default_training_data(bundle), val,
                     FinetuneSettings(args.epochs))
    rows = []
    for label in ("as imported", "frozen"):
        if label == "frozen":
            freeze_imports()
        rows.append((label, collection_seconds(), len(gc.get_objects()), epoch_seconds(run)))
    print(f"{'heap':<12} {'gc.collect(2)':>14} {'objects':>9} {'s / epoch':>10}")
    for label, gc_s, objects, epoch_s in rows:
        print(f"{label:<12} {gc_s * 1000:>11.1f} ms {objects:>9,} {epoch_s:>10.2f}")
    (_, gc_a, _, ep_a), (_, gc_b, _, ep_b) = rows
    print(f"collection {gc_a / gc_b:.0f}x cheaper; an epoch beside the reruns "
          f"{ep_a / ep_b:.2f}x faster")


if __name__ == "__main__":
    main()
