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


def test_float16_erf_is_rounded_from_float32():
    # In float16 itself, the formula's 1 - p(t) exp(-x^2) cancels near 0 (15 % off at 0.02).
    x = np.linspace(-4, 4, 20001).astype(np.float16)
    got = erf(x)
    assert got.dtype == np.float16
    expected = np.array([math.erf(float(v)) for v in x])
    # the float32 evaluation's error (5e-7), then one float16 rounding
    bound = 5e-7 + np.spacing(np.abs(expected).astype(np.float16)).astype(np.float64)
    assert (np.abs(got.astype(np.float64) - expected) <= bound).all()
