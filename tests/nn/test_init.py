"""``nn.init``: ``trunc_normal_``'s distribution (by inverse CDF) and the float-only fills."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain._tensor.nn import init


def truncated_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and standard deviation of N(mean, std²) truncated to [a, b], in closed form."""
    alpha, beta = (a - mean) / std, (b - mean) / std

    def pdf(x: float) -> float:
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    z = cdf(beta) - cdf(alpha) if alpha < 0 else cdf(-alpha) - cdf(-beta)  # tails keep precision
    shift = (pdf(alpha) - pdf(beta)) / z
    variance = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - shift**2
    return mean + std * shift, std * math.sqrt(variance)


@pytest.mark.parametrize(
    ("mean", "std", "a", "b"),
    [
        (0.0, 1.0, -2.0, 2.0),
        (0.0, 10.0, -2.0, 2.0),  # wide: nearly uniform
        (0.0, 1.0, 2.0, 3.0),  # one-sided tail
        (0.0, 1.0, 5.0, 6.0),  # far tail: redraw-and-clamp put every value on 5.0
        (1.0, 2.0, -100.0, -3.0),  # far lower tail, bounds absolute
    ],
)
def test_trunc_normal_matches_the_truncated_distribution(mean, std, a, b):
    t = dt.empty(200_000, dtype=dt.float64)
    nn.init.trunc_normal_(t, mean, std, a, b, generator=dt.Generator().manual_seed(0))
    values = t.numpy()
    want_mean, want_std = truncated_moments(mean, std, a, b)
    assert values.min() >= a and values.max() <= b
    # no mass piled on a bound: a continuous distribution puts none there
    assert (values == a).mean() < 1e-4 and (values == b).mean() < 1e-4
    # 200k samples: the mean's standard error is want_std / 447
    assert abs(values.mean() - want_mean) < 5 * want_std / math.sqrt(values.size)
    assert values.std() == pytest.approx(want_std, rel=0.01)


def test_trunc_normal_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    t = dt.empty(100_000)
    nn.init.trunc_normal_(t, 0.0, 1.0, 1.5, 3.0, generator=dt.Generator().manual_seed(1))
    result = stats.kstest(t.numpy(), stats.truncnorm(1.5, 3.0).cdf)
    assert result.pvalue > 1e-3


def test_the_inverse_normal_cdf_is_accurate():
    special = pytest.importorskip("scipy.special")
    p = np.concatenate([np.logspace(-300, -2, 500), np.linspace(0.01, 0.99, 999)])
    p = np.concatenate([p, 1 - np.logspace(-15, -2, 200)])
    ours, theirs = init._normal_ppf(p), special.ndtri(p)
    np.testing.assert_allclose(ours, theirs, rtol=2e-9)
    central = (p > 1e-4) & (p < 1 - 1e-4)
    np.testing.assert_allclose(ours[central], theirs[central], rtol=1e-12, atol=1e-14)


def test_trunc_normal_checks_its_arguments():
    with pytest.raises(ValueError, match=r"a <= b.*a=2.*b=1"):
        nn.init.trunc_normal_(dt.empty(3), a=2.0, b=1.0)
    with pytest.raises(ValueError, match="std > 0"):
        nn.init.trunc_normal_(dt.empty(3), std=0.0)
    with pytest.raises(TypeError, match=r"trunc_normal_.*int64"):
        nn.init.trunc_normal_(dt.zeros(3, dtype=dt.int64))


def test_trunc_normal_keeps_a_parameter_a_leaf_and_its_dtype():
    p = nn.Parameter(dt.empty(4, 4, dtype=dt.float16))
    assert nn.init.trunc_normal_(p) is p
    assert p.dtype == dt.float16 and p.is_leaf and p.grad_fn is None
    assert float(p.abs().max().item()) <= 2.0


@pytest.mark.parametrize(
    "fill",
    [
        nn.init.uniform_,
        nn.init.normal_,
        nn.init.kaiming_uniform_,
        nn.init.kaiming_normal_,
        nn.init.xavier_uniform_,
        nn.init.xavier_normal_,
    ],
)
def test_random_fills_refuse_integer_tensors(fill):
    t = dt.zeros(3, 3, dtype=dt.int64)
    with pytest.raises(TypeError, match=r"floating-point tensors only.*int64.*\.float\(\)"):
        fill(t)
    assert t.tolist() == [[0] * 3] * 3


def test_random_fills_take_float16():
    t = dt.zeros(1000, dtype=dt.float16)
    nn.init.normal_(t, 5.0, 2.0)
    assert t.dtype == dt.float16 and abs(float(t.float().mean().item()) - 5.0) < 0.5
    nn.init.uniform_(t, -3.0, -1.0)
    assert float(t.min().item()) >= -3.0 and float(t.max().item()) <= -1.0


def test_constant_fills_still_take_integer_tensors():
    t = dt.zeros(2, dtype=dt.int64)
    nn.init.ones_(t)
    assert t.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("mean", "std", "a", "b", "near"),
    [(1.0, 0.02, -2.0, 0.0, 0.0), (0.0, 0.01, 0.5, 1.0, 0.5), (0.0, 1.0, 50.0, 50.0, 50.0)],
)
def test_trunc_normal_far_from_the_mean_keeps_to_the_near_bound(mean, std, a, b, near):
    # Some 37 std or more away, Φ underflows: the tail beyond z is z + Exp(1)/|z| to first
    # order, so the values lie within a few std/|z| of the near bound, mean std/|z| away.
    out = nn.init.trunc_normal_(dt.empty(20000), mean=mean, std=std, a=a, b=b).numpy()
    z = abs(near - mean) / std
    assert np.isfinite(out).all() and (out >= a).all() and (out <= b).all()
    if a == b:
        np.testing.assert_array_equal(out, near)
    else:
        assert abs(abs(out.mean() - near) - std / z) < 0.05 * std / z
