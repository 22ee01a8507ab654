"""Uniform draws stay in the half-open ``[low, high)`` in every float dtype: float16 draws
are made in float32 and cast, and a float32 value above ``1 - 2**-12`` rounds to 1.0 in
float16 (PyTorch's ``rand(dtype=float16).max()`` is 0.99951)."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

import dtrain as dt

FLOATS = [dt.float16, dt.float32, dt.float64]
BELOW_ONE_F16 = float(np.nextafter(np.float16(1), np.float16(0)))  # 0.99951


class _TopGenerator:
    """A generator whose every uniform draw is the largest float32/float64 below 1."""

    def __init__(self) -> None:
        def random(shape: Any, dtype: Any = np.float64) -> np.ndarray:
            dtype = np.dtype(dtype)
            return np.full(shape, np.nextafter(dtype.type(1), dtype.type(0)), dtype=dtype)

        self.numpy = types.SimpleNamespace(random=random)


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_largest_draw_stays_below_one(dtype):
    out = dt.rand(1000, dtype=dtype, generator=_TopGenerator())
    assert out.dtype == dtype
    values = out.numpy()
    assert (values < 1).all(), values.max()
    expected = np.nextafter(np.dtype(dtype.name).type(1), np.dtype(dtype.name).type(0))
    assert values.max() == expected


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-2.0, 3.0), (1.0, 1.5)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_uniform_fill_with_the_largest_draw_stays_below_high(dtype, low, high):
    t = dt.zeros(64, dtype=dtype).uniform_(low, high, generator=_TopGenerator())
    values = t.numpy()
    assert (values < high).all() and (values >= low).all(), values.max()


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_million_draws_on_the_device_lie_in_zero_one(dtype, test_device):
    dt.manual_seed(0)
    values = dt.rand(1_000_000, dtype=dtype, device=test_device).cpu().numpy()
    assert values.min() >= 0 and values.max() < 1, values.max()
    like = dt.rand_like(dt.zeros(1_000_000, dtype=dtype, device=test_device))
    assert (like < 1).all().item() and like.dtype == dtype
    if dtype == dt.float16:  # about 2.5e-4 of them used to round to 1.0
        assert values.max() == BELOW_ONE_F16
    # still uniform: mean, variance and the top bin as U(0, 1)
    assert abs(values.astype(np.float64).mean() - 0.5) < 3e-3
    assert abs(values.astype(np.float64).var() - 1 / 12) < 3e-3
    top = (values >= 0.99).mean()
    assert 0.008 < top < 0.012, top


def test_float16_uniform_fill_never_reaches_high(test_device):
    dt.manual_seed(1)
    t = dt.zeros(1_000_000, dtype=dt.float16, device=test_device).uniform_(-2.0, 3.0)
    values = t.cpu().numpy()
    assert values.min() >= -2 and values.max() < 3, values.max()


def test_an_empty_range_still_fills_with_low():
    t = dt.zeros(4, dtype=dt.float16).uniform_(0.5, 0.5)
    assert t.numpy().tolist() == [0.5] * 4
