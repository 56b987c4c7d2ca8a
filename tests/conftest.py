"""Shared fixtures: the real demo models and the real digits validation split."""

from __future__ import annotations

import pytest

from explorer.data import digits_validation
from explorer.load.demos import load_demo


@pytest.fixture(scope="session")
def digits():
    return digits_validation()


@pytest.fixture(scope="session")
def mlp():
    return load_demo("digits-mlp")


@pytest.fixture(scope="session")
def cnn():
    return load_demo("digits-cnn")


@pytest.fixture(scope="session")
def resnet():
    return load_demo("digits-resnet")


@pytest.fixture(scope="session", params=["digits-mlp", "digits-cnn", "digits-resnet"])
def any_demo(request):
    return load_demo(request.param)
