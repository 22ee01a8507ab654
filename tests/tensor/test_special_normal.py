"""ndtri, log_ndtr, erfcx and xlog1py: values against ``math.erfc`` and closed forms
(torch- and scipy-free), against scipy and PyTorch when installed; gradients by finite
differences in float64."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.special as special
from dtrain.runtime import special_cupyx
from dtrain.runtime import special_normal as normal

EDGES = np.array(
    [0.0, -0.0, 1e-300, -1.0, 0.5, 1.0, -5.0, 30.0, -30.0, 1e200, -1e200, np.inf, -np.inf, np.nan]
)


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def scipy_special() -> Any:
    """``scipy.special``, or a skip when scipy is not installed."""
    return pytest.importorskip("scipy.special")


def test_erfcx_against_math_erfc_and_its_asymptotic_series():
    x = np.linspace(-8, 9, 3401)
    expected = np.array([math.exp(v * v) * math.erfc(v) for v in x])
    np.testing.assert_allclose(normal.erfcx(x), expected, rtol=2e-14)  # math.erfc's own error
    big = np.geomspace(100, 1e300, 50)
    inverse = 0.5 / big / big  # erfcx ~ (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)) / (x sqrt(pi))
    series = (1 - inverse + 3 * inverse**2 - 15 * inverse**3) / (big * math.sqrt(math.pi))
    np.testing.assert_allclose(normal.erfcx(big), series, rtol=1e-15)
    np.testing.assert_array_equal(
        normal.erfcx(np.array([np.inf, -np.inf, -27.0, np.nan]))[:3], [0, np.inf, np.inf]
    )
    assert np.isnan(normal.erfcx(np.array([np.nan]))[0])


def test_log_ndtr_against_math_erfc():
    x = np.linspace(-37, 8, 4501)
    expected = np.array(
        [
            math.log(0.5 * math.erfc(-v / math.sqrt(2)))
            if v < 0
            else math.log1p(-0.5 * math.erfc(v / math.sqrt(2)))
            for v in x
        ]
    )
    np.testing.assert_allclose(normal.log_ndtr(x), expected, rtol=1e-13)
    far = np.array([-1e3, -1e100])  # log ndtr(x) ~ -x^2/2 - log(-x sqrt(2 pi)) - 1/x^2
    np.testing.assert_allclose(
        normal.log_ndtr(far),
        -(far**2) / 2 - np.log(-far * math.sqrt(2 * math.pi)) - far**-2,
        rtol=1e-15,
    )
    upper = np.array([10.0, 20.0])  # log(1 - q) ~ -q for the tiny upper tail q
    np.testing.assert_allclose(
        normal.log_ndtr(upper), [-0.5 * math.erfc(v / math.sqrt(2)) for v in upper], rtol=1e-13
    )
    out = normal.log_ndtr(np.array([np.inf, -np.inf, np.nan]))
    assert out[0] == 0 and out[1] == -np.inf and np.isnan(out[2])


def test_ndtri_inverts_ndtr_and_known_quantiles():
    p = np.concatenate([np.linspace(0.001, 0.999, 999), np.geomspace(1e-300, 0.1, 300)])
    x = normal.ndtri(p)
    back = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    assert np.all(np.abs(back - p) <= 1e-13 * p * np.maximum(1, x * x))  # ndtr's conditioning
    np.testing.assert_allclose(
        normal.ndtri(np.array([0.975, 0.5, 0.8413447460685429])),
        [1.959963984540054, 0.0, 1.0],
        rtol=1e-15,
        atol=1e-16,
    )
    lower = p[(p < 0.5) & (p > 1e-10)]
    np.testing.assert_allclose(
        normal.ndtri(1 - lower), -normal.ndtri(lower), rtol=1e-6
    )  # 1 - p rounds
    out = normal.ndtri(np.array([0.0, 1.0, -0.1, 1.1, np.nan]))
    assert out[0] == -np.inf and out[1] == np.inf and np.isnan(out[2:]).all()


def test_xlog1py_values_zeros_and_promotion():
    x = dt.tensor([0.0, 0.0, 2.0, 3.0])
    y = dt.tensor([-1.0, np.nan, 0.5, -2.0])
    out = special.xlog1py(x, y).numpy()
    assert (
        out[0] == 0
        and np.isnan(out[1])
        and out[2] == pytest.approx(2 * math.log1p(0.5))
        and np.isnan(out[3])
    )
    assert special.xlog1py(dt.tensor([1.5]), 2).dtype == dt.float32  # a Python number stays weak
    np.testing.assert_allclose(
        special.xlog1py(2, dt.tensor([1.5])).numpy(), [2 * math.log1p(1.5)], rtol=1e-7
    )
    assert special.xlog1py(dt.tensor([1, 2]), dt.tensor([1, 2])).dtype == dt.float32
    assert special.xlog1py(dt.tensor([1.0], dtype=dt.float64), dt.tensor([[1.0], [2.0]])).shape == (
        2,
        1,
    )
    with pytest.raises(TypeError, match="at least one Tensor"):
        special.xlog1py(1.0, 2.0)


def test_ops_values_and_gradients(check):
    x = check.rand(8, low=-3.0, high=6.0)
    check.op(special.erfcx, normal.erfcx, x)
    check.op(special.log_ndtr, normal.log_ndtr, x)
    check.op(special.ndtri, normal.ndtri, check.rand(8, low=0.02, high=0.98))
    a, b = check.rand(3, 4, low=-2.0, high=2.0), check.rand(4, low=-0.5, high=3.0, seed=1)
    check.op(special.xlog1py, lambda u, v: u * np.log1p(v), a, b)
    check.grad(lambda t: special.xlog1py(t, 2.0), a)


def test_float32_and_out():
    x = dt.tensor([-3.0, 0.25, 4.0])
    for fn, ref in ((special.erfcx, normal.erfcx), (special.log_ndtr, normal.log_ndtr)):
        assert fn(x).dtype == dt.float32
        np.testing.assert_allclose(fn(x).numpy(), ref(np.array([-3.0, 0.25, 4.0])), rtol=6e-8)
    assert special.ndtri(dt.tensor([0, 1])).dtype == dt.float32
    out = dt.empty(3)
    assert special.log_ndtr(x, out=out) is out
    assert special.xlog1py(x, x, out=out) is out
    np.testing.assert_allclose(out.numpy(), (x * x.log1p()).numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["erfcx", "log_ndtr", "ndtri"])
def test_against_scipy(name, scipy_special):
    x = np.concatenate([np.linspace(-30, 30, 6001), np.geomspace(1e-300, 1e300, 601)])
    if name == "ndtri":
        x = np.concatenate([np.linspace(0, 1, 10001), np.geomspace(1e-300, 0.5, 601)])
    expected = getattr(scipy_special, name)(x)
    got = getattr(normal, name)(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected) & (expected != 0)
    relative = np.abs(got[finite] - expected[finite]) / np.abs(expected[finite])
    # log_ndtr's upper tail: scipy's own error grows as 1e-16 x^2 (x / sqrt(2) is rounded)
    allowed = 1e-13 if name != "log_ndtr" else 1e-13 * np.maximum(1, x[finite] ** 2 / 200)
    assert np.all(relative < allowed)


@pytest.mark.parametrize("name", ["erfcx", "log_ndtr", "ndtri", "xlog1py"])
def test_against_pytorch_values_and_gradients(name, torch):
    x = np.concatenate([np.linspace(-10, 10, 401), EDGES])
    if name == "ndtri":
        x = np.concatenate([np.linspace(0, 1, 401), [-0.5, 1.5, np.nan, 1e-300]])
    args = (x,) if name != "xlog1py" else (np.linspace(-2, 2, x.size), x)
    expected = getattr(torch.special, name)(*[torch.tensor(a) for a in args]).numpy()
    got = getattr(special, name)(*[dt.tensor(a) for a in args]).numpy()
    np.testing.assert_allclose(
        got, expected, rtol=1e-12 if name == "log_ndtr" else 2e-14, equal_nan=True
    )
    inner = (slice(1, 400),)  # gradients where both are finite and well conditioned
    leaves = [torch.tensor(a[inner], requires_grad=True) for a in args]
    getattr(torch.special, name)(*leaves).sum().backward()
    mine = [dt.tensor(a[inner], requires_grad=True) for a in args]
    getattr(special, name)(*mine).sum().backward()
    for ours, theirs in zip(mine, leaves, strict=True):
        np.testing.assert_allclose(
            ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-11, equal_nan=True
        )


@pytest.mark.parametrize("name", ["erfcx", "log_ndtr", "ndtri"])
def test_the_cupyx_route_gives_the_same_values(name, scipy_special, monkeypatch):
    """Stand scipy in for cupyx.scipy.special: the results equal the array code path's."""
    x = EDGES if name != "ndtri" else np.array([0.0, -0.0, 1.0, 0.3, -1.0, 2.0, np.inf, np.nan])
    expected = getattr(normal, name)(x)
    monkeypatch.setattr(special_cupyx, "cupyx_function", lambda n, *a: getattr(scipy_special, name))
    got = getattr(normal, name)(x)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)  # scipy at x=30: 2e-13


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_erfc_and_ndtr_at_infinity(dtype):
    """erfc(inf) = 0, erfc(-inf) = 2, ndtr(+-inf) = 1, 0 (float32 and float16 gave NaN:
    inf - inf in the fit's exponent); float16's 7e4 is inf, the same."""
    dtype = getattr(dt, dtype)
    x = dt.tensor([np.inf, -np.inf, 70000.0, -70000.0, 1.0], dtype=dtype)
    erfc = dt.erfc(x).numpy().astype(np.float64)
    np.testing.assert_array_equal(erfc[:4], [0.0, 2.0, 0.0, 2.0])
    np.testing.assert_allclose(erfc[4], math.erfc(1.0), rtol=2e-3)
    ndtr = special.ndtr(x).numpy().astype(np.float64)
    np.testing.assert_array_equal(ndtr[:4], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(ndtr[4], 0.5 * math.erfc(-1 / math.sqrt(2)), rtol=2e-3)
