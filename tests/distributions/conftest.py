"""Shared fixtures for the distribution tests.

``torch`` skips the test when PyTorch is absent (CI has none); every comparison with
PyTorch sits next to a torch-free test of the same feature against a numpy closed form.
``make(values)`` builds a float64 tensor on the ``--device`` (``--device=emulated-cuda``
runs the distributions down the CUDA paths). ``emulator`` puts CUDA on the CPU for one
test (``tests/runtime/cuda_emulator.py``) to count its host reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def make(test_device: str) -> Callable[..., dt.Tensor]:
    """``make(values, requires_grad=False, dtype=float64)``: a tensor on the test device."""

    def build(values: Any, requires_grad: bool = False, dtype: Any = dt.float64) -> dt.Tensor:
        return dt.tensor(
            np.asarray(values), dtype=dtype, device=test_device, requires_grad=requires_grad
        )

    return build


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a dtrain or torch tensor (on the host)."""
    if isinstance(value, dt.Tensor):
        return np.asarray(value.detach().cpu().numpy())
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


@pytest.fixture
def close() -> Callable[..., None]:
    """``close(ours, expected, atol=..., rtol=...)``: equal shapes and values."""

    def check(ours: Any, expected: Any, atol: float = 1e-10, rtol: float = 1e-7) -> None:
        a, b = to_numpy(ours), to_numpy(expected)
        assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)

    return check


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CUDA emulator for one test; ``emulator.counting()`` counts launches and host
    reads (the ``"host read: ..."`` entries)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "runtime"))
    from cuda_emulator import install

    return install(monkeypatch, kernels="references")
