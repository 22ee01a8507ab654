"""``expm1``: ``e**x - 1`` accurate near 0 (where ``exp(x) - 1`` is 0 in float32), its
gradient ``e**x``, the method form, and PyTorch's values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def test_expm1_values_and_gradient(check):
    x = check.rand(2, 3, low=-3.0, high=3.0, seed=5)
    check.op(dt.expm1, np.expm1, x)
    check.op(lambda t: t.expm1(), np.expm1, x)


def test_expm1_is_accurate_near_zero_in_float32(test_device):
    small = np.array([1e-8, -1e-7, 1e-5, 0.0], dtype=np.float32)
    out = dt.expm1(dt.tensor(small, device=test_device))
    assert out.dtype == dt.float32 and out.device.type == dt.device(test_device).type
    np.testing.assert_allclose(out.cpu().numpy(), np.expm1(small.astype(np.float64)), rtol=1e-6)
    assert (out.cpu().numpy()[:3] != 0).all()  # exp(x) - 1 would give 0 here


def test_expm1_of_integers_is_float32_and_gradient_at_zero_is_one():
    assert dt.expm1(dt.tensor([0, 1])).dtype == dt.float32
    x = dt.tensor([0.0, -1e-9], dtype=dt.float64, requires_grad=True)
    x.expm1().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.0, -1e-9]), rtol=1e-15)


def test_expm1_matches_torch(torch):
    x = np.array([-20.0, -1.0, -1e-6, 0.0, 3e-9, 0.5, 10.0], dtype=np.float32)
    ours = dt.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    ours.expm1().sum().backward()
    theirs.expm1().sum().backward()
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-6)
