"""The device as a parameter: the CPU path is today's, bit for bit; CUDA is asked for, never
needed; the graph can run anywhere because every tensor it reads comes through overrides.

No GPU is lent to these tests: what runs on CUDA is checked here only as far as the CPU
shows it (which tensors the graph reads, where its factory ops make theirs).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from explorer.bundle import bundle_from_module
from explorer.errors import DeviceError, ModelError
from explorer.evaluator import Evaluator, full_forward_logits, resolve_device
from explorer.graph import Program
from explorer.plan import Plan

CPU = torch.device("cpu")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
PLANS = [Plan(), Plan(scope="global", amount=0.7),
         Plan(granularity="neurons", criterion="l1", scope="global", amount=0.4)]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300)


class ReadStorages(TorchDispatchMode):
    """Records the storage of every tensor an ATen op reads."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for leaf in tree_leaves((args, kwargs or {})):
            if isinstance(leaf, torch.Tensor):
                self.read.add(leaf.untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


def _module_storages(program: Program) -> set[int]:
    tensors = [*program.module.parameters(), *program.module.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}


def test_cpu_and_auto_give_todays_numbers_exactly(any_demo, digits):
    """device="cpu" and device=None (auto: the CPU here) equal the evaluator without the
    argument and a plain functional_call forward, bit for bit, plan after plan."""
    today = Evaluator(any_demo, digits)
    cpu, auto = Evaluator(any_demo, digits, device="cpu"), Evaluator(any_demo, digits, device=None)
    assert cpu.device == CPU and (auto.device == CPU or torch.cuda.is_available())
    for plan in PLANS:
        want = today.evaluate(plan).to_dict()
        masks = cpu.masks(plan)
        assert torch.equal(cpu.logits(masks), full_forward_logits(any_demo, masks, digits.x))
        assert cpu.evaluate(plan).to_dict() == want
        if auto.device == CPU:
            assert auto.evaluate(plan).to_dict() == want


def test_cpu_evaluator_moves_nothing(cnn, digits):
    """On the CPU the evaluator reads the shared model's own tensors: no copy is made."""
    evaluator = Evaluator(cnn, digits, device="cpu")
    assert evaluator._on_device == {}
    masks = evaluator.masks(Plan(sparsity={"features.0": 0.5}))
    masked = evaluator._masked(masks)["features.0.weight"]
    assert masked.device == CPU and masked is evaluator._masked(masks)["features.0.weight"]


def test_overrides_from_tensors_on_replace_every_tensor_the_graph_reads(any_demo, digits):
    """What makes a GPU run possible: with :meth:`Program.tensors_on` as overrides, no op
    reads a tensor of the shared module (here checked with copies made on the CPU)."""
    program = any_demo.program
    copies = {name: t.clone() for name, t in program.tensors_on(CPU).items()}
    own = _module_storages(program)
    assert set(copies) >= set(any_demo.params())
    plain, with_copies = ReadStorages(), ReadStorages()
    with plain:
        want, _ = program.run(digits.x[:16])
    with with_copies:
        got, _ = program.run(digits.x[:16], copies, device=CPU)
    assert plain.read & own  # the check sees the module's tensors when they are read
    assert not with_copies.read & own
    assert torch.equal(got, want)


class MakesATensor(nn.Module):
    """A model whose forward makes a tensor: torch.export pins it to the tracing device."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + torch.arange(3, dtype=torch.float32)


def test_factory_ops_make_their_tensors_on_the_run_device():
    """``device`` moves the tensors the graph makes itself (here arange, exported with
    device=cpu) to where the run is; the meta device stands in for a GPU: it checks where
    every value lands, no number."""
    bundle = bundle_from_module(MakesATensor(), "makes-a-tensor", (4,))
    program, meta = bundle.program, torch.device("meta")
    x = torch.empty(2, 4, device=meta)
    logits, state = program.run(x, program.tensors_on(meta), keep=True, device=meta)
    assert logits.device == meta and logits.shape == (2, 3)
    assert all(v.device == meta for v in state.values if isinstance(v, torch.Tensor))
    with pytest.raises(RuntimeError):  # without it: the arange stays on the CPU
        program.run(x, program.tensors_on(meta))


def test_a_graph_calling_a_module_with_tensors_is_refused_off_the_cpu():
    program = Program(torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 3), nn.ReLU())))
    with pytest.raises(ModelError, match=r"calls the module '0' as a whole.*--device cpu"):
        program.tensors_on(torch.device("meta"))


def test_the_guard_module_torch_export_adds_is_not_refused(any_demo):
    assert any(n.op == "call_module" for n in any_demo.program.nodes)
    assert set(any_demo.program.tensors_on(CPU)) >= set(any_demo.params())


def test_resolve_device_names():
    assert resolve_device("cpu") == CPU
    assert resolve_device(CPU) == CPU
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None).type == resolve_device("auto").type == auto.type
    for bad in ("gpu", "mps", "", "cuda:x"):
        with pytest.raises(DeviceError, match="auto, cpu or cuda"):
            resolve_device(bad)


@NO_CUDA
def test_cuda_without_cuda_says_what_to_do(mlp, digits):
    message = ("CUDA was asked for but this machine's torch has no CUDA device; "
               "use --device cpu or auto.")
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(DeviceError) as raised:
            resolve_device(name)
        assert str(raised.value) == message
    with pytest.raises(DeviceError):
        Evaluator(mlp, digits, device="cuda")


def test_cli_device_cpu_prints_the_same_json(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(Plan(scope="global", amount=0.8).to_json())
    outs = [run_cli("evaluate", "--model", "digits-cnn", "--plan", str(path), "--json", *extra)
            for extra in ([], ["--device", "cpu"], ["--device", "auto"])]
    assert all(out.returncode == 0 for out in outs), [out.stderr for out in outs]
    plain, cpu, auto = (json.loads(out.stdout) for out in outs)
    assert cpu == plain
    if not torch.cuda.is_available():
        assert auto == plain


@NO_CUDA
@pytest.mark.parametrize("command", ["evaluate", "sensitivity", "broke", "suggest"])
def test_cli_device_cuda_without_cuda_is_one_line(command):
    extra = ["--target", "flops=2"] if command == "suggest" else []
    out = run_cli(command, "--model", "digits-mlp", "--device", "cuda", *extra)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "error: CUDA was asked for but this machine's torch has no CUDA device; "
        "use --device cpu or auto."]


def test_cli_refuses_an_unknown_device():
    out = run_cli("evaluate", "--model", "digits-mlp", "--device", "gpu")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1
    assert "argument --device: invalid choice: 'gpu'" in out.stderr
