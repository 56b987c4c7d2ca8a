"""Theoretical vs measured speed-up (issue 13's table): digits-cnn and resnet18-cifar at
batch 1 and 32, for weights 50% / 90% (global magnitude) and neurons 50% (global l1).

Each plan is measured by :func:`explorer.export.latency.measure` at one thread on the timing
thread's CPU time (``latency_clock(1)``): the measured speed-up of the fastest pruned torch
form against torch's dense model, ONNX Runtime's pruned model against its dense model when
the ``onnx`` extra is installed, and the three layers that take most of the pruned form's
time beside their FLOPs share. Run by hand: ``python bench/latency_table.py``.
"""

from __future__ import annotations

from explorer.export.latency import latency_clock, measure
from explorer.load.demos import load_demo
from explorer.plan import Plan

PLANS = {
    "weights 50%": Plan(criterion="magnitude", scope="global", amount=0.5),
    "weights 90%": Plan(criterion="magnitude", scope="global", amount=0.9),
    "neurons 50%": Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5),
}


def main() -> None:
    print("| model | batch | plan | theoretical | measured (form) | ONNX Runtime | "
          "most time (share of time / of FLOPs) |")
    print("|---|---|---|---|---|---|---|")
    for name in ("digits-cnn", "resnet18-cifar"):
        bundle = load_demo(name)  # resnet18-cifar: the architecture, fixed random weights
        for batch in (1, 32):
            for label, plan in PLANS.items():
                r = measure(bundle, plan, batch=batch, threads=1, min_run_time=1.0,
                            clock=latency_clock(1))
                onnx = f"{r.onnx_speedup:.2f}x" if r.onnx_speedup else "n/a"
                top = sorted(r.layers, key=lambda la: -la.time_share)[:3]
                where = ", ".join(f"{la.name} {la.time_share:.0%}/{la.flops_share:.0%}"
                                  for la in top)
                print(f"| {name} | {batch} | {label} | {r.theoretical:.2f}x | "
                      f"{r.measured:.2f}x ({r.form}) | {onnx} | {where} |", flush=True)


if __name__ == "__main__":
    main()
