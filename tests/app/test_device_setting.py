"""The app's device setting: a choice only where torch has a CUDA device, a plain line
saying where the model runs otherwise."""

from __future__ import annotations

import pytest
import torch
from pagetest import open_url


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_sidebar_says_cpu_and_offers_no_choice():
    at = open_url("prune", model="digits-mlp")
    assert "Device: CPU (this machine's torch has no CUDA device)" in [
        c.value for c in at.sidebar.caption]
    assert not [s for s in at.sidebar.selectbox if s.label == "Device"]
    assert all(e.device.type == "cpu" for e in at.session_state["evaluators"].values())
