"""``runtime/special.py``'s erf against ``math.erf``, on numpy arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dtrain.runtime.special import erf

POINTS = np.concatenate([
    np.linspace(-8, 8, 20001),
    [0.0, -0.0, 1e-300, -1e-12, 2.0, -2.0, 2.0 + 1e-15, 6.5, 27.0, np.inf, -np.inf],
])  # fmt: skip


def test_float64_erf_is_accurate_to_a_few_ulp():
    got = erf(POINTS)
    expected = np.array([math.erf(v) for v in POINTS])
    error = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    assert error.max() < 5e-15, POINTS[error.argmax()]
    assert got.dtype == np.float64
    assert np.signbit(erf(np.array([-0.0]))[0])  # odd: -0 stays -0


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_lower_precisions_are_within_the_approximations_bound(dtype):
    x = POINTS[np.isfinite(POINTS)].astype(dtype)
    got = erf(x)
    expected = np.array([math.erf(float(v)) for v in x])
    assert got.dtype == dtype
    resolution = 1.5e-7 + np.finfo(dtype).eps  # A&S 7.1.26's error, then the rounding
    assert np.abs(got.astype(np.float64) - expected).max() < 4 * resolution


def test_nan_stays_nan():
    assert np.isnan(erf(np.array([np.nan]))[0])
