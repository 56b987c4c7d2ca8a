"""The Fine-tune page in AppTest: a background run, its result, and the model it registers.

The numbers expected come from the engine run directly (training is deterministic: fixed
seed, batch order and thread count); which weights must be zero comes from
``torch.nn.utils.prune``.
"""

from __future__ import annotations

import copy
import time

import torch
from pagetest import metric
from torch.nn.utils import prune

from explorer.data import digits_train
from explorer.evaluator import Evaluator
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning
from explorer.finetune.retrain import retrain
from explorer.plan import Plan
from explorer.ui.format import percent

PLAN = Plan(sparsity={"fc1": 0.85, "fc2": 0.8})


def finished(at):
    """Wait for the page's job, then rerun the page as its polling fragment would."""
    job = at.session_state["jobs"]["finetune"]
    assert job.wait(120), "the fine-tuning job did not end"
    at.run()
    assert not at.exception, at.exception
    return job


def test_a_run_shows_its_result_and_becomes_a_model_to_explore(open_page, charts, mlp, digits):
    at = open_page("finetune", "digits-mlp", PLAN)
    assert not at.exception, at.exception
    at.number_input(key="ft_epochs").set_value(3)
    at.button(key="ft_start").click().run()
    assert not at.exception and not at.error
    finished(at)

    engine = retrain(Finetuning(mlp, PLAN, digits_train(), digits, FinetuneSettings(3)))
    pruned = Evaluator(mlp, digits).evaluate(PLAN).accuracy
    assert metric(at, "Fine-tuned accuracy") == percent(engine.metrics.accuracy)
    assert metric(at, "Pruned, not fine-tuned") == percent(pruned)
    assert metric(at, "Dense accuracy") == percent(Evaluator(mlp, digits).evaluate(Plan()).accuracy)
    curve = charts.of(at)["ft_curve"]
    [acc] = charts.traces(curve, "validation accuracy")
    assert list(acc["x"]) == [1, 2, 3]
    assert list(acc["y"]) == [e.val_accuracy * 100 for e in engine.result.epochs]

    [download] = [d for d in at.get("download_button") if d.proto.label.startswith(
        "Download the weights")]
    assert download.proto.label == "Download the weights (safetensors)"

    at.button(key="ft_explore").click().run()
    assert not at.exception, at.exception
    model_id = at.session_state["model"]
    assert model_id.startswith("upload:digits-mlp fine-tuned ")
    assert at.session_state["plan"] == PLAN  # magnitude re-derives the same masks
    assert at.selectbox(key="model_picker").value == model_id
    assert model_id.removeprefix("upload:") in at.selectbox(key="model_picker").options
    bundle = at.session_state["uploads"][model_id]["bundle"]
    reference = copy.deepcopy(mlp.model)
    for name, amount in PLAN.sparsity.items():
        prune.l1_unstructured(reference.get_submodule(name), "weight", amount=amount)
        removed = ~reference.get_submodule(name).weight_mask.bool()
        assert torch.count_nonzero(bundle.params()[f"{name}.weight"][removed]) == 0, name
    assert at.success and "Now exploring" in at.success[0].value


def test_iterative_pruning_plots_every_step(open_page, charts):
    at = open_page("finetune", "digits-mlp", PLAN)
    at.radio(key="ft_mode").set_value("iterative pruning").run()
    at.number_input(key="ft_epochs").set_value(1)
    at.number_input(key="ft_steps").set_value(3)
    at.radio(key="ft_schedule").set_value("linear")
    at.button(key="ft_start").click().run()
    job = finished(at)
    run = job.result
    figures = charts.of(at)
    [after] = charts.traces(figures["ft_step_chart"], "after fine-tuning")
    assert list(after["x"]) == [1, 2, 3]
    assert list(after["y"]) == [s.finetuned_accuracy * 100 for s in run.result.steps]
    [acc] = charts.traces(figures["ft_curve"], "validation accuracy")
    assert list(acc["y"]) == list(after["y"])  # one epoch per step: the same accuracies
    assert [s.share for s in run.result.steps] == [1 / 3, 2 / 3, 1]


def test_cancel_keeps_what_was_trained(open_page, mlp):
    at = open_page("finetune", "digits-mlp", PLAN)
    at.number_input(key="ft_epochs").set_value(200)
    at.button(key="ft_start").click().run()
    job = at.session_state["jobs"]["finetune"]
    deadline = time.monotonic() + 60
    while job.report.done < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    finished(at)
    assert job.status == "cancelled"
    done = len(job.result.result.epochs)
    assert 2 <= done < 200
    assert any(f"Cancelled after {done} of 200 epochs" in w.value for w in at.warning)
    tuned = dict(job.result.result.model.named_parameters())
    for name, keep in job.result.result.masks.masks.items():
        assert torch.count_nonzero(tuned[name][~keep]) == 0
    assert at.button(key="ft_explore")


def test_dense_plans_and_missing_inputs_are_explained(open_page):
    at = open_page("finetune", "digits-mlp", Plan())
    assert any("removes nothing" in i.value for i in at.info)
    at.radio(key="ft_mode").set_value("iterative pruning").run()
    assert at.button(key="ft_start").disabled
    at.radio(key="ft_mode").set_value("fine-tune the plan")
    at.radio(key="ft_source").set_value("upload a file").run()
    at.button(key="ft_start").click().run()
    assert any("Choose a training data file" in e.value for e in at.error)
    assert "jobs" not in at.session_state or not at.session_state["jobs"]


def test_an_architecture_only_model_is_told_it_needs_data(open_page):
    at = open_page("finetune", "resnet18-cifar")
    assert not at.exception, at.exception
    assert any("fine-tuning needs data" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "ft_start"]
