"""Measured latency (explorer/export/latency.py) against independent timings of the same modules.

Absolute times depend on the machine and its load; what is checked is ratios, measured in
the same test with ``torch.utils.benchmark`` directly, with loose bounds (a factor of 2), both
on the timing thread's CPU time (at one thread, another process taking the core does not
inflate it as it does the wall clock; wall-clock ratios failed here at a load of 9):
masks do not change kernels (masked/dense near 1), a shrunk model is a smaller module that
is really run, and the sparse form runs CSR kernels on the same weights.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils import benchmark

from explorer.errors import ExplorerError, PlanError
from explorer.evaluator import Evaluator
from explorer.export.latency import (
    FORMS,
    ONNX_DENSE,
    TORCH_FORMS,
    SparseLinear,
    measure,
    pruned_forms,
)
from explorer.export.shrink import shrink
from explorer.plan import Plan

FAST = 0.1  # seconds each form is timed for
CLOCK = time.thread_time  # the engine's latency_clock(1)
WEIGHTS_90 = Plan(granularity="weights", criterion="magnitude", scope="global", amount=0.9)
NEURONS_50 = Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300)


def median(module: nn.Module, x: torch.Tensor) -> float:
    """Median seconds of ``module(x)`` timed here, independently of the engine."""
    with torch.no_grad():
        module(x)
        return benchmark.Timer("m(x)", globals={"m": module, "x": x}, num_threads=1,
                               timer=CLOCK).blocked_autorange(min_run_time=0.1).median


def ratio(top: nn.Module, bottom: nn.Module, x: torch.Tensor) -> float:
    """Time of ``top(x)`` / time of ``bottom(x)``, timed in three interleaved turns, each
    the least of its medians (the turn least disturbed by other work on the machine)."""
    turns = [(median(top, x), median(bottom, x)) for _ in range(3)]
    return min(t for t, _ in turns) / min(b for _, b in turns)


def inputs(bundle, batch: int) -> torch.Tensor:
    return torch.randn((batch, *bundle.input_shape))


def within(ratio: float, reference: float, factor: float = 2.0) -> bool:
    return reference / factor <= ratio <= reference * factor


def test_masked_runs_dense_kernels_as_fast_as_the_dense_model(cnn):
    result = measure(cnn, WEIGHTS_90, batch=16, threads=1, min_run_time=FAST, clock=CLOCK)
    t = result.latency_ms
    # Independent reference: torch's own global magnitude pruning made permanent in a copy.
    ref = copy.deepcopy(cnn.model)
    prune.global_unstructured([(ref.get_submodule(la.name), "weight") for la in cnn.layers],
                              pruning_method=prune.L1Unstructured, amount=0.9)
    for la in cnn.layers:
        prune.remove(ref.get_submodule(la.name), "weight")
    x = inputs(cnn, 16)
    reference = ratio(ref, cnn.model, x)
    assert 0.5 <= reference <= 2 and 0.5 <= t["masked"].p50 / t["dense"].p50 <= 2
    assert result.theoretical > 2  # FLOPs promise a speed-up the dense kernels do not give
    assert t["dense"].p50 <= t["dense"].p95 and t["masked"].p50 <= t["masked"].p95


def test_the_masked_form_holds_the_plan_and_the_shared_model_is_untouched(cnn):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    masks = Evaluator(cnn, None).masks(WEIGHTS_90)
    forms, _ = pruned_forms(cnn, masks)
    for name, value in masks.apply(cnn.params()).items():
        assert torch.equal(forms["masked"].get_parameter(name), value)
    for k, v in cnn.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_shrunk_model_is_measured_by_running_the_smaller_module(mlp):
    evaluator = Evaluator(mlp, None)
    masks = evaluator.masks(NEURONS_50)
    forms, notes = pruned_forms(mlp, masks)
    shrunk = forms["shrunk"]
    own = shrink(mlp, masks).eval()  # the same model, made here
    assert sum(p.numel() for p in shrunk.parameters()) == sum(p.numel() for p in own.parameters())
    assert sum(p.numel() for p in shrunk.parameters()) < mlp.param_count
    x = inputs(mlp, 64)
    with torch.no_grad():  # the smaller model computes what the masked one does
        torch.testing.assert_close(shrunk(x), forms["masked"](x), rtol=1e-4, atol=1e-4)
    result = measure(mlp, NEURONS_50, batch=64, threads=1, min_run_time=FAST, clock=CLOCK)
    t = result.latency_ms
    assert t["shrunk"] is not None and t["sparse"] is None and "sparse" in notes
    reference = ratio(mlp.model, own, x)
    assert within(t["dense"].p50 / t["shrunk"].p50, reference)
    # not derived from FLOPs: the figure is a timing with its own spread, not dense / speed-up
    assert t["shrunk"].p50 != pytest.approx(t["dense"].p50 / result.theoretical, rel=1e-6)


def test_sparse_form_runs_csr_linear_layers_with_the_same_outputs(mlp):
    masks = Evaluator(mlp, None).masks(WEIGHTS_90)
    forms, _ = pruned_forms(mlp, masks)
    sparse = forms["sparse"]
    kinds = {n: type(m) for n, m in sparse.named_modules() if n in mlp.layer_names}
    assert set(kinds.values()) == {SparseLinear}
    assert all(sparse.get_submodule(n).weight.layout == torch.sparse_csr for n in kinds)
    x = inputs(mlp, 32)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), forms["masked"](x), rtol=1e-4, atol=1e-5)
    result = measure(mlp, WEIGHTS_90, batch=32, threads=1, min_run_time=FAST, clock=CLOCK)
    t = result.latency_ms
    assert within(t["sparse"].p50 / t["dense"].p50, ratio(sparse, mlp.model, x))
    best = min((f for f in TORCH_FORMS if t[f]), key=lambda f: t[f].p50)
    assert result.form == best
    assert result.measured == pytest.approx(t["dense"].p50 / t[best].p50)


def test_onnx_runtime_runs_the_shrunk_model_judged_against_its_own_dense(mlp):
    """ONNX Runtime runs the shrunk model's outputs; its speed-up is against the dense model
    in ONNX Runtime (as independent timings of the two sessions give), never against torch:
    the measured speed-up stays a torch form's."""
    pytest.importorskip("onnxruntime")
    masks = Evaluator(mlp, None).masks(NEURONS_50)
    forms, _ = pruned_forms(mlp, masks)
    x = inputs(mlp, 64)
    with torch.no_grad():
        torch.testing.assert_close(forms["onnx"](x), forms["shrunk"](x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(forms[ONNX_DENSE](x), mlp.model(x), rtol=1e-4, atol=1e-4)
    result = measure(mlp, NEURONS_50, batch=64, threads=1, min_run_time=FAST, clock=CLOCK)
    onnx, dense = result.latency_ms["onnx"], result.onnx_dense
    assert result.form in TORCH_FORMS
    assert result.onnx_speedup == pytest.approx(dense.p50 / onnx.p50)
    assert within(onnx.p50 / dense.p50, ratio(forms["onnx"], forms[ONNX_DENSE], x))
    assert result.to_dict()["speedup"]["onnx"] == result.onnx_speedup


def test_without_onnx_runtime_the_form_says_how_to_add_it(mlp, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    forms, notes = pruned_forms(mlp, Evaluator(mlp, None).masks(NEURONS_50))
    assert forms["onnx"] is None and "pip install -e '.[onnx]'" in notes["onnx"]


def test_layers_match_by_name_with_shares_of_time_and_flops(cnn):
    result = measure(cnn, NEURONS_50, batch=8, threads=1, min_run_time=FAST)
    metrics = Evaluator(cnn, None).evaluate(NEURONS_50)
    assert [la.name for la in result.layers] == cnn.layer_names
    assert all(la.dense_ms > 0 and la.pruned_ms > 0 for la in result.layers)
    assert 0 < sum(la.time_share for la in result.layers) <= 1
    for la, m in zip(result.layers, metrics.layers, strict=True):
        assert la.flops_share == pytest.approx(m.flops_effective / metrics.flops["effective"])
    assert result.form == "shrunk" or result.latency_ms["shrunk"] is not None


def test_an_exported_graph_upload_is_measured_with_layers_in_call_order():
    from exported_models import exported, wide_cnn

    from explorer.load.model_file import load_model_bytes

    upload = load_model_bytes(exported(wide_cnn(8)), "wide.pt2")
    result = measure(upload, WEIGHTS_90, batch=4, threads=1, min_run_time=FAST)
    t = result.latency_ms
    assert t["dense"] and t["masked"] and t["sparse"] is None and t["shrunk"] is None
    assert "exported graph" in result.notes["sparse"]
    assert [la.name for la in result.layers] == upload.layer_names
    assert all(la.pruned_ms > 0 for la in result.layers)


def test_dense_plan_and_json_shape(cnn):
    result = measure(cnn, Plan(), batch=1, threads=1, min_run_time=FAST)
    d = json.loads(json.dumps(result.to_dict()))
    assert set(d) == {"latency_ms", "speedup", "batch", "threads", "layers"}
    assert set(d["latency_ms"]) == {*FORMS, ONNX_DENSE}
    assert set(d["speedup"]) == {"theoretical", "measured", "form", "onnx"}
    assert d["speedup"]["theoretical"] == 1.0 and d["speedup"]["form"] == "masked"
    assert set(d["layers"][0]) == {"name", "dense_ms", "pruned_ms", "time_share", "flops_share"}


@pytest.mark.parametrize(("batch", "threads"), [(0, 1), (1, 0), (10**6, 1), (1.5, 1)])
def test_bad_batch_or_threads_is_refused(cnn, batch, threads):
    with pytest.raises(ExplorerError, match="whole number from 1"):
        measure(cnn, Plan(), batch=batch, threads=threads)


def test_plan_for_another_model_is_refused(mlp):
    plan = Plan(granularity="weights", criterion="magnitude", scope="layer",
                sparsity={"features.0": 0.5})
    with pytest.raises(PlanError):
        measure(mlp, plan, min_run_time=FAST)


def test_cli_json_shape_and_text_table(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(NEURONS_50.to_json())
    out = run_cli("latency", "--model", "digits-mlp", "--plan", str(plan), "--batch", "4",
                  "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {"latency_ms", "speedup", "batch", "threads", "layers"} <= set(d)
    assert d["batch"] == 4 and d["threads"] == 1 and d["latency_ms"]["shrunk"]["p50"] > 0
    assert [la["name"] for la in d["layers"]] == ["fc1", "fc2", "fc3"]
    out = run_cli("latency", "--model", "digits-mlp", "--plan", str(plan))
    assert out.returncode == 0 and "theoretical" in out.stdout and "shrunk" in out.stdout


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    out = run_cli("latency", "--model", "digits-mlp", "--batch", "0")
    assert out.returncode == 2 and "batch must be a whole number" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "sparsity": {"features.0": 0.5}}')
    out = run_cli("latency", "--model", "digits-mlp", "--plan", str(plan))
    assert out.returncode == 2 and "'features.0'" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
