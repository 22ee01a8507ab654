"""lgamma, digamma, polygamma, mvlgamma, entr and ``dtrain.special``: values against
``math.lgamma`` and closed forms (and PyTorch when installed), gradients by finite
differences in float64."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.special as special
from dtrain.runtime.gamma_functions import digamma, lgamma, polygamma

EULER = 0.57721566490153286


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def _off_poles(x: np.ndarray) -> np.ndarray:
    return x[~((x <= 0) & (x == np.floor(x)))]


GRID = _off_poles(np.concatenate([np.linspace(-20, 30, 5001), np.geomspace(1e-8, 1e8, 400)]))


def test_lgamma_matches_math_lgamma_to_round_off():
    expected = np.array([math.lgamma(v) for v in GRID])
    error = np.abs(lgamma(GRID) - expected) / np.maximum(np.abs(expected), 1.0)
    # the reflection near the negative poles is ill-conditioned: judge it in absolute terms
    assert error[GRID > 0].max() < 5e-15
    assert error.max() < 5e-12
    positive = (GRID > 2.5) | ((GRID > 0) & (GRID < 0.5))
    relative = np.abs(lgamma(GRID) - expected)[positive] / np.abs(expected[positive])
    assert relative.max() < 1e-14


def test_lgamma_poles_infinities_and_dtype():
    x = np.array([0.0, -0.0, -1.0, -7.0, np.inf, -np.inf, np.nan])
    out = lgamma(x)
    assert np.all(out[:6] == np.inf) and np.isnan(out[6])
    assert lgamma(np.array([3.0], dtype=np.float32)).dtype == np.float32
    assert lgamma(np.array([171.5]))[0] == pytest.approx(math.lgamma(171.5), rel=1e-15)


def test_digamma_closed_forms_and_recurrence():
    n = np.arange(1, 30, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1 / n)])[:-1]
    np.testing.assert_allclose(digamma(n), harmonic - EULER, rtol=1e-15, atol=1e-15)
    half = np.array([0.5, 1.5, 2.5])  # psi(1/2) = -gamma - 2 log 2, then + 2 / (2k - 1)
    expected = -EULER - 2 * math.log(2) + np.array([0.0, 2.0, 2.0 + 2 / 3])
    np.testing.assert_allclose(digamma(half), expected, rtol=1e-15)
    x = _off_poles(np.linspace(-15.3, 25.1, 997))
    x = x[np.abs(x) > 1e-3]
    np.testing.assert_allclose(digamma(x + 1), digamma(x) + 1 / x, rtol=1e-11, atol=1e-11)


def test_digamma_is_the_slope_of_lgamma():
    x = np.array([-3.7, -0.4, 0.3, 1.0, 4.5, 60.0])
    h = 1e-6
    slope = (lgamma(x + h) - lgamma(x - h)) / (2 * h)
    np.testing.assert_allclose(digamma(x), slope, rtol=1e-7, atol=1e-7)


def test_digamma_edges_as_pytorch():
    out = digamma(np.array([0.0, -0.0, -2.0, np.inf, -np.inf, np.nan]))
    assert out[0] == -np.inf and out[1] == np.inf and np.isnan(out[2])
    assert out[3] == np.inf and np.isnan(out[4]) and np.isnan(out[5])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_polygamma_at_one_is_zeta_and_satisfies_the_recurrence(n):
    zeta = {1: math.pi**2 / 6, 2: 1.2020569031595942, 3: math.pi**4 / 90, 5: math.pi**6 / 945}[n]
    expected = (-1) ** (n + 1) * math.factorial(n) * zeta
    assert polygamma(n, np.array([1.0]))[0] == pytest.approx(expected, rel=1e-14)
    x = _off_poles(np.linspace(-6.3, 12.7, 301))
    x = x[np.abs(x - np.round(x)) > 0.05]
    step = (-1) ** n * math.factorial(n) / x ** (n + 1)  # psi_n(x + 1) = psi_n(x) + step
    left, right = polygamma(n, x + 1), polygamma(n, x) + step
    assert np.all(np.abs(left - right) <= 1e-12 * (np.abs(left) + np.abs(step)))  # cancels


def test_trigamma_closed_form_at_integers():
    n = np.arange(1, 20, dtype=np.float64)
    partial = np.concatenate([[0.0], np.cumsum(1 / n**2)])[:-1]
    np.testing.assert_allclose(polygamma(1, n), math.pi**2 / 6 - partial, rtol=1e-14)


def test_the_tensor_ops_values_and_gradients(check):
    x = check.rand(7, low=0.2, high=6.0)
    check.op(dt.lgamma, lgamma, x)
    check.op(dt.digamma, digamma, x)
    check.op(lambda t: dt.polygamma(1, t), lambda a: polygamma(1, a), x)
    check.op(lambda t: dt.polygamma(2, t), lambda a: polygamma(2, a), x, atol=1e-9)
    negative = check.rand(5, low=-3.9, high=-3.1)
    check.op(dt.lgamma, lgamma, negative)
    check.op(dt.digamma, digamma, negative, atol=1e-9)
    p = 3
    reference = lambda a: sum(lgamma(a - i / 2) for i in range(p)) + 1.5 * math.log(math.pi)
    check.op(lambda t: dt.mvlgamma(t, p), reference, x + 1.0)
    check.op(special.entr, lambda a: -a * np.log(a), check.rand(5, low=0.1, high=3.0))


def test_methods_float32_and_argument_errors():
    x = dt.tensor([0.5, 2.5, 7.0])
    assert x.lgamma().dtype == dt.float32 and x.digamma().dtype == dt.float32
    np.testing.assert_allclose(x.polygamma(1).numpy(), polygamma(1, x.numpy()), rtol=1e-6)
    assert dt.polygamma(0, x).equal(dt.digamma(x))
    assert dt.lgamma(dt.tensor([3])).dtype == dt.float32  # integers become floats
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        dt.polygamma(-1, x)
    with pytest.raises(ValueError, match=r"greater than \(p-1\)/2"):
        dt.mvlgamma(dt.tensor([0.4]), 2)
    np.testing.assert_array_equal(special.entr(dt.tensor([0.0, -1.0])).numpy(), [0.0, -np.inf])


def test_special_module_names():
    x = dt.tensor([0.3, 1.7], dtype=dt.float64)
    assert special.gammaln(x).equal(dt.lgamma(x)) and special.psi(x).equal(dt.digamma(x))
    assert special.expit(x).equal(dt.sigmoid(x))
    expected = [0.5 * math.erfc(-v / math.sqrt(2)) for v in (0.3, 1.7)]
    np.testing.assert_allclose(special.ndtr(x).numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(special.ndtr(dt.tensor([-30.0], dtype=dt.float64)).numpy(),
                               [0.5 * math.erfc(30 / math.sqrt(2))], rtol=1e-12)  # fmt: skip
    for name in special.__all__:
        assert callable(getattr(special, name))


def test_against_pytorch(torch):
    x = GRID[GRID > -12]
    t = torch.tensor(x)
    # PyTorch's float64 trigamma is good to ~5e-10 only (ours agrees with mpmath to 4e-16)
    for ours, theirs, tolerance in [
        (dt.lgamma, torch.lgamma, 1e-13),
        (dt.digamma, torch.digamma, 1e-13),
        (lambda v: dt.polygamma(1, v), lambda v: torch.polygamma(1, v), 1e-9),
        (lambda v: dt.polygamma(3, v), lambda v: torch.polygamma(3, v), 1e-13),
    ]:
        got = ours(dt.tensor(x)).numpy()
        expected = theirs(t).numpy()
        finite = np.isfinite(expected) & (np.abs(x - np.round(x)) > 1e-3)
        error = np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)
        assert error[finite & (x > 0)].max() < tolerance
        assert error[finite].max() < 1e-9  # near the negative poles: ill-conditioned
    x32 = torch.tensor([0.1, 1.5, 9.0, -2.5])
    np.testing.assert_allclose(
        dt.lgamma(dt.tensor(x32.numpy())).numpy(), torch.lgamma(x32).numpy(), rtol=1e-6
    )
    names = ["gammaln", "digamma", "psi", "entr", "ndtr", "sinc", "xlogy", "logit", "expit"]
    for name in names:
        assert hasattr(torch.special, name) and hasattr(special, name)
    v = torch.tensor([0.0, 0.2, 1.5], dtype=torch.float64, requires_grad=True)
    torch.special.entr(v[1:]).sum().backward()
    ours = dt.tensor([0.0, 0.2, 1.5], dtype=dt.float64, requires_grad=True)
    special.entr(ours[1:]).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), v.grad.numpy(), rtol=1e-14)


def test_polygamma_at_the_infinities_as_pytorch():
    x = np.array([np.inf, -np.inf])
    np.testing.assert_array_equal(polygamma(1, x), [0.0, np.nan])
    for n in range(2, 7):
        np.testing.assert_array_equal(polygamma(n, x), [np.nan, np.inf if n % 2 else -np.inf])
    out = special.polygamma(2, dt.tensor([np.inf, -np.inf], dtype=dt.float32)).numpy()
    assert np.isnan(out[0]) and out[1] == -np.inf and out.dtype == np.float32


def test_polygamma_at_the_infinities_against_torch(torch):
    x = np.array([np.inf, -np.inf, np.nan, 3.0])
    for n in range(1, 7):
        np.testing.assert_array_equal(
            polygamma(n, x)[:3], torch.polygamma(n, torch.tensor(x)).numpy()[:3]
        )
