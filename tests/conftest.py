"""Thin fixtures over tests/helpers.py, so tests can ask for factories by name."""

from __future__ import annotations

import pytest
from helpers import make_tiny_batches, make_tiny_model


@pytest.fixture
def tiny_model():
    """Factory: `tiny_model("bert", num_labels=2, num_layers=4, seed=0, **config_overrides)`."""
    return make_tiny_model


@pytest.fixture
def tiny_batches():
    """Factory: `tiny_batches(model, n_batches=2, batch=4, seq=10, seed=0)`."""
    return make_tiny_batches
