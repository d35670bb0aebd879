"""Shared fixtures: tiny-model factories, and one torch thread for tiny-model tests."""

from __future__ import annotations

import pytest
from helpers import make_tiny_batches, make_tiny_model, one_torch_thread


@pytest.fixture(autouse=True)
def one_thread_for_tiny_models(request):
    """Tests marked slow use the real MiniLM and keep every thread."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    with one_torch_thread():
        yield


@pytest.fixture
def tiny_model():
    """Factory: `tiny_model("bert", num_labels=2, num_layers=4, seed=0, **config_overrides)`."""
    return make_tiny_model


@pytest.fixture
def tiny_batches():
    """Factory: `tiny_batches(model, n_batches=2, batch=4, seq=10, seed=0)`."""
    return make_tiny_batches
