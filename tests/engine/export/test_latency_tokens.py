"""Timing a model that reads token ids: the inputs are ids of its vocabulary (random normal
values would index outside the embedding), and nothing changes for any other model."""

from __future__ import annotations

import pytest
import torch

from explorer.export.latency import measure, timing_inputs
from explorer.export.latency_sensitivity import latency_sensitivity
from explorer.plan import Plan

pytest.importorskip("transformers")

from tiny_bert import LENGTH, VOCABULARY, tiny_bert  # noqa: E402

WORDS = {"vocabulary": tuple(f"w{i}" for i in range(VOCABULARY)), "pad_id": 0}


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert(card=WORDS)


def test_a_token_model_is_timed_on_ids_of_its_vocabulary_never_padding(tiny):
    bundle, _ = tiny
    x = timing_inputs(bundle, 64)
    assert x.shape == (64, LENGTH) and x.dtype == torch.float32
    assert (x == x.round()).all() and x.min() >= 1 and x.max() <= VOCABULARY - 1
    assert len(x.unique()) > VOCABULARY // 2  # drawn across the vocabulary
    assert torch.equal(x, timing_inputs(bundle, 64))  # the same on every run


def test_any_other_model_is_timed_on_the_same_normal_values_as_before(cnn):
    expected = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(timing_inputs(cnn, 3), expected)


def test_a_token_model_is_measured_and_its_units_timed(tiny):
    bundle, data = tiny
    plan = Plan(scope="global", amount=0.5)
    result = measure(bundle, plan, batch=2, min_run_time=0.01, layers=False)
    assert result.measured > 0 and not result.cancelled
    table = latency_sensitivity(bundle, "weights", grid=(0.5,), min_run_time=0.002)
    assert table.units and not table.cancelled
