"""Fine-tuning with fixed masks and iterative pruning, on the real demo models and digits.

Which weights a plan removes is taken from ``torch.nn.utils.prune`` (the reference the
masks must equal), not from the masks under test. The Han et al. 2015 reproduction runs
on digits-mlp (LeNet-300-100) within a minute on a busy 2-core CPU.
"""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from explorer.bundle import bundle_from_module
from explorer.data import digits_train
from explorer.errors import DataError, ExplorerError, ModelError, PlanError
from explorer.evaluator import Evaluator
from explorer.export.save import save_model
from explorer.finetune.fixed_masks import (
    FinetuneSettings,
    Finetuning,
    bundle_at,
    finetune,
    overlap,
)
from explorer.finetune.iterative import iterative_prune, schedule
from explorer.finetune.retrain import plan_reproduces, retrain
from explorer.limits import MAX_FINETUNE_EPOCHS, MAX_ITERATIVE_STEPS
from explorer.load.data_file import load_data
from explorer.load.model_file import load_model
from explorer.plan import Plan

MLP_PLAN = Plan(sparsity={"fc1": 0.8, "fc2": 0.7})
# Han et al. 2015, Table 2 (LeNet-300-100): 8%, 9% and 26% of the weights kept per layer.
HAN_PLAN = Plan(sparsity={"fc1": 0.92, "fc2": 0.91, "fc3": 0.74})


@pytest.fixture(scope="module")
def train():
    return digits_train()


def torch_kept(bundle, plan: Plan) -> dict[str, torch.Tensor]:
    """Keep-masks of a per-layer magnitude plan by torch.nn.utils.prune.l1_unstructured."""
    model = copy.deepcopy(bundle.model)
    out = {}
    for name, amount in plan.sparsity.items():
        module = model.get_submodule(name)
        prune.l1_unstructured(module, "weight", amount=amount)
        out[f"{name}.weight"] = module.weight_mask.bool()
    return out


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pruned_weights_stay_zero_and_the_rest_learn(mlp, digits, train):
    before = state(mlp.model)
    seen, counts = [], []

    def progress(done, total, record):
        counts.append((done, total))
        seen.append(record)

    result = finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(3)),
                      progress=progress)
    assert all(torch.equal(v, mlp.model.state_dict()[k]) for k, v in before.items()), \
        "the shared model was written"
    tuned = dict(result.model.named_parameters())
    for name, keep in torch_kept(mlp, MLP_PLAN).items():
        assert torch.count_nonzero(tuned[name][~keep]) == 0, name
        assert not torch.equal(tuned[name][keep], before[name][keep]), f"{name} did not train"
    assert not torch.equal(tuned["fc3.weight"], before["fc3.weight"])  # unpruned layers train
    assert [(r.epoch, r.total) for r in seen] == counts == [(1, 3), (2, 3), (3, 3)]
    assert result.epochs == seen and not result.cancelled


def test_fine_tuning_wins_accuracy_back(mlp, digits, train):
    plan = Plan(scope="global", amount=0.9)
    pruned = Evaluator(mlp, digits).evaluate(plan).accuracy
    result = finetune(Finetuning(mlp, plan, train, digits, FinetuneSettings(5)))
    # the accuracy recorded each epoch is the model's own on the validation images
    correct = int((result.model(digits.x).argmax(1) == digits.y).sum())
    assert result.epochs[-1].val_accuracy == correct / len(digits)
    assert result.epochs[-1].val_accuracy > pruned + 0.05


def test_a_neuron_plan_on_a_resnet_keeps_every_coupled_slice_zero(resnet, digits, train):
    plan = Plan(granularity="neurons", criterion="l1", scope="global", amount=0.4)
    masks = Evaluator(resnet, digits).masks(plan)
    result = finetune(Finetuning(resnet, plan, train, digits, FinetuneSettings(1)))
    tuned = dict(result.model.named_parameters())
    assert any("bn" in n for n in masks.masks)  # BatchNorm entries follow their channels
    for name, keep in masks.masks.items():
        assert torch.count_nonzero(tuned[name][~keep]) == 0, name
    new = bundle_at(resnet, result.model)
    with torch.no_grad():
        want = result.model(digits.x)
    got, _ = new.program.run(digits.x)
    assert torch.allclose(got, want, atol=1e-5)


def test_a_merge_plan_starts_from_its_merged_values(mlp, digits, train):
    plan = Plan(granularity="neurons", criterion="redundancy", merge=True,
                sparsity={"fc1": 0.3})
    masks = Evaluator(mlp, digits).masks(plan)
    assert masks.updates
    result = finetune(Finetuning(mlp, plan, train, digits, FinetuneSettings(2)),
                      cancelled=lambda: True)
    assert result.cancelled and result.epochs == []
    want = {**dict(mlp.model.named_parameters()), **masks.apply(mlp.params())}
    for name, p in result.model.named_parameters():
        assert torch.equal(p.detach(), want[name].detach()), name
    assert not result.masks.updates  # the trained values are final


def test_a_run_cancelled_at_once_is_the_pruned_model_buffers_and_all(resnet, digits, train):
    plan = Plan(scope="global", amount=0.5)
    result = finetune(Finetuning(resnet, plan, train, digits, FinetuneSettings(3)),
                      cancelled=lambda: True)
    pruned = {**resnet.model.state_dict(), **Evaluator(resnet, digits).masks(plan).apply(
        resnet.params())}
    got = result.model.state_dict()
    assert any("running_mean" in k for k in got)
    for key, value in pruned.items():
        assert torch.equal(got[key], value), key


def test_cancel_keeps_what_was_trained_so_far(mlp, digits, train):
    seen = []
    result = finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(50)),
                      progress=lambda done, total, record: seen.append(record),
                      cancelled=lambda: len(seen) >= 2)
    assert result.cancelled and len(result.epochs) == 2
    correct = int((result.model(digits.x).argmax(1) == digits.y).sum())
    assert correct / len(digits) == result.epochs[-1].val_accuracy
    for name, keep in torch_kept(mlp, MLP_PLAN).items():
        assert torch.count_nonzero(result.model.get_parameter(name)[~keep]) == 0


def test_a_rerun_reproduces_the_same_weights(mlp, digits, train):
    a = finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(2)))
    b = finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(2)))
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_schedules_follow_their_formulas():
    n = 5
    cubic = schedule(n, "cubic")
    s_i, s_f = 0.0, 1.0  # Zhu & Gupta 2017, eq. 1, as a share of the final sparsity
    assert cubic == pytest.approx([s_f + (s_i - s_f) * (1 - t / n) ** 3
                                   for t in range(1, n + 1)])
    assert schedule(4, "linear") == [0.25, 0.5, 0.75, 1.0]
    assert cubic[0] > 1 / n  # cubic prunes most at the start
    with pytest.raises(ExplorerError, match="schedule must be one of"):
        schedule(3, "exponential")
    with pytest.raises(ExplorerError, match="steps must be"):
        schedule(0)


@pytest.mark.parametrize(("settings", "message"), [
    ({"epochs": 0}, f"epochs must be a whole number from 1 to {MAX_FINETUNE_EPOCHS:,}"),
    ({"epochs": MAX_FINETUNE_EPOCHS + 1}, "epochs must be a whole number"),
    ({"epochs": 2.0}, "epochs must be a whole number"),
    ({"epochs": 1, "steps": 0}, f"steps must be a whole number from 1 to {MAX_ITERATIVE_STEPS}"),
    ({"epochs": 1, "steps": MAX_ITERATIVE_STEPS + 1}, "steps must be a whole number"),
    ({"epochs": 1, "lr": float("nan")}, "learning rate must be a positive number"),
    ({"epochs": 1, "lr": 0.0}, "learning rate must be a positive number"),
    ({"epochs": 1, "lr": True}, "learning rate must be a positive number"),
    ({"epochs": 1, "steps": 3, "schedule": "exponential"},
     "schedule must be one of cubic, linear; got 'exponential'"),
])
def test_settings_check_themselves_when_made(settings, message):
    with pytest.raises(ExplorerError, match=message):
        FinetuneSettings(**settings)


def test_settings_give_the_report_keys_the_cli_always_printed():
    assert FinetuneSettings(3).to_dict() == {
        "epochs_per_run": 3, "lr": 1e-3, "iterative_steps": None, "schedule": None}
    assert FinetuneSettings(2, 3e-4, 5, "linear").to_dict() == {
        "epochs_per_run": 2, "lr": 3e-4, "iterative_steps": 5, "schedule": "linear"}
    assert FinetuneSettings(MAX_FINETUNE_EPOCHS, steps=MAX_ITERATIVE_STEPS).iterative


def test_iterative_steps_remove_their_share_and_masks_only_grow(mlp, digits, train):
    plan = Plan(criterion="random", sparsity={"fc1": 0.6, "fc2": 0.6})
    result = iterative_prune(Finetuning(mlp, plan, train, digits,
                                        FinetuneSettings(1, steps=3, schedule="linear")))
    sizes = {la: math.prod(mlp.layer(la).weight_shape) for la in ("fc1", "fc2")}
    total = sum(math.prod(la.weight_shape) for la in mlp.layers)
    for rec in result.steps:
        want = sum(round(0.6 * rec.share * n) for n in sizes.values())
        removed = round(rec.removed * total)
        assert want <= removed <= want * 1.05 + 1
    assert [r.share for r in result.steps] == pytest.approx([1 / 3, 2 / 3, 1])
    assert [r.removed for r in result.steps] == sorted(r.removed for r in result.steps)
    assert [r.step for r in result.epochs] == [1, 2, 3]
    final = dict(result.model.named_parameters())
    for la, n in sizes.items():
        assert int((final[f"{la}.weight"] == 0).sum()) >= round(0.6 * n)


def test_han_et_al_2015_on_digits_mlp(mlp, digits, train):
    """At most 10% of the weights kept, and within 1 point of the dense accuracy."""
    start = time.monotonic()
    evaluator = Evaluator(mlp, digits)
    dense = evaluator.evaluate(Plan()).accuracy
    one_shot = evaluator.evaluate(HAN_PLAN).accuracy
    run = retrain(Finetuning(mlp, HAN_PLAN, train, digits,
                             FinetuneSettings(8, steps=5, schedule="cubic")))
    seconds = time.monotonic() - start

    tuned = dict(run.result.model.named_parameters())
    weights = sum(math.prod(la.weight_shape) for la in mlp.layers)
    kept = sum(int(torch.count_nonzero(tuned[la.weight])) for la in mlp.layers)
    for name, keep in torch_kept(mlp, HAN_PLAN).items():
        assert int(torch.count_nonzero(tuned[name])) <= int(keep.sum()), name
    after = Evaluator(run.bundle, digits).evaluate(Plan()).accuracy
    print(f"\nHan et al. 2015 on digits-mlp: dense {dense:.2%}, pruned without fine-tuning "
          f"{one_shot:.2%}, after iterative pruning + fine-tuning {after:.2%}, "
          f"weights kept {kept}/{weights} ({kept / weights:.2%}), {seconds:.1f} s")
    assert kept / weights <= 0.10
    assert after == run.metrics.accuracy
    assert after >= dense - 0.01
    assert one_shot < dense - 0.01  # without fine-tuning the same sparsity costs more
    assert seconds < 60


def test_the_result_is_a_model_to_explore_and_save(mlp, digits, train, tmp_path):
    run = retrain(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(2)))
    report = run.to_dict()
    assert list(report)[:5] == ["plan", "epochs_per_run", "lr", "iterative_steps", "schedule"]
    assert run.bundle.card["settings"] == FinetuneSettings(2).to_dict()
    assert run.bundle.card["epochs"] == len(report["epochs"]) == 2
    assert run.bundle.layer_names == mlp.layer_names and run.bundle.flops == mlp.flops
    assert run.bundle.name.startswith("digits-mlp fine-tuned ")
    dense_plan = Evaluator(run.bundle, digits).evaluate(Plan())
    assert dense_plan.accuracy == run.metrics.accuracy
    assert dense_plan.nonzero_params == run.metrics.nonzero_params < mlp.param_count
    assert plan_reproduces(run, digits)
    for suffix in (".safetensors", ".pt2"):
        loaded = load_model(save_model(run.bundle, tmp_path / f"model{suffix}"))
        again = Evaluator(loaded, digits).evaluate(Plan())
        assert again.accuracy == run.metrics.accuracy, suffix
        assert again.nonzero_params == run.metrics.nonzero_params, suffix
    with pytest.raises(ExplorerError, match=r"use \.safetensors .* or \.pt2"):
        save_model(run.bundle, tmp_path / "model.onnx")


def test_a_model_known_only_as_a_graph_is_saved_as_a_program(mlp, digits, train, tmp_path):
    path = tmp_path / "mlp.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(mlp.model, (digits.x[:2],),
                                          dynamic_shapes=({0: batch},)), path)
    graph = load_model(path)
    run = retrain(Finetuning(graph, MLP_PLAN, train, digits, FinetuneSettings(1)))
    with pytest.raises(ModelError, match="not a demo architecture"):
        save_model(run.bundle, tmp_path / "out.safetensors")
    loaded = load_model(save_model(run.bundle, tmp_path / "out.pt2"))
    assert Evaluator(loaded, digits).evaluate(Plan()).accuracy == run.metrics.accuracy


class NoGrad(nn.Module):
    """Computes under no_grad: nothing can be trained through it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fc(x.flatten(1))


def test_bad_inputs_get_clear_errors(mlp, digits, train, tmp_path):
    one = FinetuneSettings(1)
    with pytest.raises(DataError, match="no validation data"):
        finetune(Finetuning(mlp, MLP_PLAN, train, None, one))
    with pytest.raises(ExplorerError, match="epochs must be"):
        finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(0)))
    with pytest.raises(ExplorerError, match="learning rate must be"):
        finetune(Finetuning(mlp, MLP_PLAN, train, digits, FinetuneSettings(1, lr=-1.0)))
    with pytest.raises(DataError, match="360 of the 360 validation samples"):
        finetune(Finetuning(mlp, MLP_PLAN, digits, digits, one))
    assert overlap(train, digits) == 0
    import numpy as np

    np.savez(tmp_path / "flat.npz", x=train.x.flatten(1).numpy(), y=train.y.numpy())
    with pytest.raises(DataError, match=r"Reshape x to \(N, 1, 8, 8\)"):
        finetune(Finetuning(mlp, MLP_PLAN, load_data(tmp_path / "flat.npz"), digits, one))
    with pytest.raises(PlanError, match="removes nothing"):
        iterative_prune(Finetuning(mlp, Plan(), train, digits, FinetuneSettings(1, steps=3)))
    with pytest.raises(ExplorerError, match="Iterative pruning needs a number of steps"):
        iterative_prune(Finetuning(mlp, MLP_PLAN, train, digits, one))
    frozen = bundle_from_module(NoGrad().eval(), "frozen", (1, 8, 8), source="file")
    with pytest.raises(ModelError, match="cannot be trained here"):
        finetune(Finetuning(frozen, Plan(), train, digits, one))
