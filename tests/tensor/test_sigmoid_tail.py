"""sigmoid keeps its small tail (1 / (1 + e^-x) to relative precision), as PyTorch's."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt


@pytest.mark.parametrize("dtype,x", [(np.float32, -17.0), (np.float32, -80.0), (np.float64, -40.0)])
def test_the_negative_tail_keeps_relative_precision(dtype, x):
    expected = 1.0 / (1.0 + math.exp(-x))
    got = float(dt.sigmoid(dt.tensor(np.array([x], dtype)))[0])
    assert got > 0 and abs(got - expected) <= 1e-6 * expected


def test_the_ends_and_nan():
    x = dt.tensor([-np.inf, -800.0, 0.0, 800.0, np.inf, np.nan])
    assert dt.sigmoid(x).tolist()[:5] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert math.isnan(dt.sigmoid(x).tolist()[5])


def test_a_geometric_from_very_negative_logits_draws_finite_counts():
    from dtrain.distributions import Geometric

    dt.manual_seed(0)
    draws = Geometric(logits=dt.tensor([-20.0])).sample((3,))
    assert bool(dt.isfinite(draws).all())
