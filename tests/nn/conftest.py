"""Shared fixtures for the ``nn`` tests.

``torch`` skips the test when PyTorch is not installed (CI has none), so every comparison
against PyTorch sits next to a torch-free test of the same feature. ``copy_from_torch``
loads a PyTorch module's weights into ours, so both compute with identical numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh for every test."""
    return np.random.default_rng(0)


@pytest.fixture
def copy_from_torch() -> Callable[[Any, Any], None]:
    """``copy_from_torch(ours, theirs)``: load the PyTorch module's state into ours."""

    def copy(ours: Any, theirs: Any) -> None:
        state = {k: dt.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
        ours.load_state_dict(state)

    return copy


def to_numpy(value: Any) -> np.ndarray:
    """A float64 (or original integer) numpy copy of a dtrain or torch tensor."""
    if isinstance(value, dt.Tensor):
        return np.asarray(value.detach().numpy())
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


@pytest.fixture
def same() -> Callable[..., None]:
    """``same(ours, theirs, atol=...)``: equal shapes and values (tensors or arrays)."""

    def check(ours: Any, theirs: Any, atol: float = 1e-10, rtol: float = 1e-7) -> None:
        a, b = to_numpy(ours), to_numpy(theirs)
        assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)

    return check
