"""gammainc, gammaincc and zeta: values against closed forms and identities (torch- and
scipy-free), against scipy and PyTorch when installed; gradients (w.r.t. the argument
PyTorch differentiates) by finite differences in float64, and the error for the other."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.special as special
from dtrain.runtime import special_incomplete as incomplete
from dtrain.runtime.gamma_functions import lgamma

EDGE_VALUES = np.array([0.0, 1.0, 2.5, np.inf, -1.0, -np.inf, np.nan])


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def scipy_special() -> Any:
    """``scipy.special``, or a skip when scipy is not installed."""
    return pytest.importorskip("scipy.special")


def _grid(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.concatenate(
        [rng.uniform(0, 3, 800), rng.uniform(0, 60, 800), np.exp(rng.uniform(-5, 7, 800))]
    )
    x = np.concatenate(
        [
            rng.uniform(0, 3, 800),
            rng.uniform(0, 70, 800),
            a[1600:] * np.exp(rng.uniform(-1, 1, 800)),
        ]
    )
    return a, x


def test_closed_forms():
    x = np.concatenate([np.geomspace(1e-10, 700, 500), [0.3, 1.0, 1.1, 40.0]])
    np.testing.assert_allclose(incomplete.gammainc(np.ones_like(x), x), -np.expm1(-x), rtol=1e-14)
    # Q(1, x) = e^-x: the exponent -x + log(x) rounds, so ~1e-16 x relative
    relative = incomplete.gammaincc(np.ones_like(x), x) / np.exp(-x) - 1
    assert np.all(np.abs(relative) <= 1e-14 + 2e-16 * x)
    half = np.full_like(x, 0.5)  # P(1/2, x) = erf(sqrt(x)), Q = erfc(sqrt(x))
    np.testing.assert_allclose(
        incomplete.gammainc(half, x), [math.erf(math.sqrt(v)) for v in x], rtol=1e-14
    )
    y = x[x < 600]
    q_half = np.array([math.erfc(math.sqrt(v)) for v in y])
    assert np.all(np.abs(incomplete.gammaincc(half[x < 600], y) / q_half - 1) <= 2e-14 + 4e-16 * y)
    for n in (2, 5, 17):  # Q(n, x) = e^-x sum_{k<n} x^k / k!
        y = np.linspace(0.1, 60, 300)
        partial = sum(y**k / math.factorial(k) for k in range(n)) * np.exp(-y)
        np.testing.assert_allclose(incomplete.gammaincc(np.full_like(y, n), y), partial, rtol=1e-13)


def test_complement_and_recurrence():
    a, x = _grid()
    p, q = incomplete.gammainc(a, x), incomplete.gammaincc(a, x)
    np.testing.assert_allclose(p + q, 1.0, rtol=0, atol=4e-15)
    # P(a + 1, x) = P(a, x) - x^a e^-x / Gamma(a + 1)
    keep = (a > 0.1) & (a < 150) & (x > 0.01) & (x < 150)
    a, x, p = a[keep], x[keep], p[keep]
    step = np.exp(a * np.log(x) - x - lgamma(a + 1))
    next_p = incomplete.gammainc(a + 1, x)
    assert np.all(np.abs(next_p - (p - step)) <= 1e-13 * (np.abs(next_p) + step))


def test_edges_as_pytorch():
    a, x = np.meshgrid(EDGE_VALUES, EDGE_VALUES)
    p = incomplete.gammainc(a, x)
    # P: 0 at x = 0 (even for a = NaN), 1 at x = inf or a = 0 < x, NaN for negatives
    assert p[0, 1] == 0 and p[0, 6] == 0 and np.isnan(p[0, 0])
    assert p[3, 1] == 1 and p[3, 6] == 1 and np.isnan(p[3, 3])
    assert p[2, 0] == 1 and p[1, 3] == 0
    assert np.isnan(p[4]).all() and np.isnan(p[:, 4]).all()
    np.testing.assert_allclose(incomplete.gammaincc(a, x), 1 - p, rtol=0, atol=2e-16)


def test_zeta_known_values_shift_and_edges():
    x = np.array([2.0, 4.0, 3.0, 2.0])
    q = np.array([1.0, 1.0, 1.0, 0.5])
    expected = [math.pi**2 / 6, math.pi**4 / 90, 1.2020569031595942, math.pi**2 / 2]
    np.testing.assert_allclose(incomplete.zeta(x, q), expected, rtol=1e-15)
    rng = np.random.default_rng(0)
    s, w = rng.uniform(1.05, 30, 500), np.exp(rng.uniform(-4, 6, 500))
    np.testing.assert_allclose(incomplete.zeta(s, w) - incomplete.zeta(s, w + 1), w**-s, rtol=1e-12)
    # negative q: integer x only, the same shift
    np.testing.assert_allclose(
        incomplete.zeta(np.array([2.0]), np.array([-2.5])),
        [
            incomplete.zeta(np.array([2.0]), np.array([0.5]))[0]
            + 1 / 2.5**2
            + 1 / 1.5**2
            + 1 / 0.5**2
        ],
        rtol=1e-14,
    )
    edges = incomplete.zeta(
        np.array([1.0, 0.5, 2.5, 2.0, np.inf, np.nan]), np.array([1.0, 1.0, -1.5, -3.0, 1.0, 0.0])
    )
    assert edges[0] == np.inf and np.isnan(edges[1]) and np.isnan(edges[2])
    assert edges[3] == np.inf and edges[4] == 1.0 and edges[5] == np.inf
    with pytest.raises(ValueError, match=r"q = -2000000\.5"):
        incomplete.zeta(np.array([2.0]), np.array([-2e6 - 0.5]))


def test_ops_broadcasting_values_gradients_and_errors(check):
    a, x = check.rand(3, 1, low=0.5, high=4.0), check.rand(5, low=0.2, high=6.0, seed=1)
    check.op(special.gammainc, incomplete.gammainc, a, x, grad=False)
    check.op(special.gammaincc, incomplete.gammaincc, a, x, grad=False)
    fixed = dt.tensor(a, device=check.device)
    check.grad(lambda t: special.gammainc(fixed, t), x)
    check.grad(lambda t: special.gammaincc(fixed, t), x)
    s = check.rand(4, 1, low=1.5, high=5.0)
    check.op(special.zeta, incomplete.zeta, s, x, grad=False)
    check.grad(lambda t: special.zeta(dt.tensor(s, device=check.device), t), x)
    for fn, message in (
        (special.gammainc, "gammainc with respect to input"),
        (special.zeta, "zeta with respect to input"),
    ):
        leaf = check.leaf(a)
        with pytest.raises(RuntimeError, match=message):
            fn(leaf, dt.tensor(x, device=check.device)).sum().backward()


def test_numbers_dtypes_and_out():
    assert special.zeta(2, dt.tensor([1.0, 2.0])).dtype == dt.float32
    np.testing.assert_allclose(
        special.zeta(dt.tensor([2.0, 4.0]), 1).numpy(), [math.pi**2 / 6, math.pi**4 / 90], rtol=1e-7
    )
    assert special.gammainc(dt.tensor([1, 2]), dt.tensor([1, 2])).dtype == dt.float32
    assert special.gammaincc(dt.tensor([2.0], dtype=dt.float64), 1.5).dtype == dt.float64
    out = dt.empty(2)
    assert special.gammaincc(dt.tensor([1.0, 2.0]), dt.tensor([1.0, 1.0]), out=out) is out
    np.testing.assert_allclose(out.numpy(), [math.exp(-1), 2 * math.exp(-1)], rtol=1e-7)
    with pytest.raises(TypeError, match="at least one Tensor"):
        special.gammainc(1.0, 2.0)


@pytest.mark.parametrize("name", ["gammainc", "gammaincc"])
def test_against_scipy(name, scipy_special):
    a, x = _grid(1)
    expected = getattr(scipy_special, name)(a, x)
    got = getattr(incomplete, name)(a, x)
    small = a < 200  # beyond, scipy's own error grows as 1e-16 lgamma(a) (see the module)
    np.testing.assert_allclose(got[small], expected[small], rtol=2e-13, atol=1e-300)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-300)


def test_zeta_against_scipy(scipy_special):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(1.001, 5, 2000), np.exp(rng.uniform(0, 5, 1000)) + 1])
    q = np.concatenate([rng.uniform(0, 5, 2000), np.exp(rng.uniform(-5, 8, 1000))])
    np.testing.assert_allclose(
        incomplete.zeta(x, q), scipy_special.zeta(x, q), rtol=1e-14, atol=1e-300
    )


@pytest.mark.parametrize("name", ["gammainc", "gammaincc", "zeta"])
def test_against_pytorch(name, torch):
    a, x = _grid(3)
    if name == "zeta":
        a = a + 1.0
    edges_a, edges_x = np.meshgrid(
        np.append(EDGE_VALUES, [-2.5, 0.5]), np.append(EDGE_VALUES, [-2.5, -3.0])
    )
    a, x = np.concatenate([a, edges_a.ravel()]), np.concatenate([x, edges_x.ravel()])
    expected = getattr(torch.special, name)(torch.tensor(a), torch.tensor(x)).numpy()
    got = getattr(special, name)(dt.tensor(a), dt.tensor(x)).numpy()
    # PyTorch's P and Q (scipy's method) are good to ~2e-9 near a = x for large a
    np.testing.assert_allclose(
        got, expected, rtol=1e-8 if name != "zeta" else 1e-14, equal_nan=True, atol=1e-300
    )
    grad_x = torch.tensor(x[:500], requires_grad=True)
    getattr(torch.special, name)(torch.tensor(a[:500]), grad_x).sum().backward()
    mine = dt.tensor(x[:500], requires_grad=True)
    getattr(special, name)(dt.tensor(a[:500]), mine).sum().backward()
    np.testing.assert_allclose(mine.grad.numpy(), grad_x.grad.numpy(), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["gammainc", "gammaincc", "zeta"])
def test_the_cupyx_route_gives_the_same_values(name, scipy_special, monkeypatch):
    """Stand scipy in for cupyx.scipy.special: with dtrain's edge values, the results equal
    the array code path's."""
    values = np.append(EDGE_VALUES, [0.3, 7.0, 30.0, -2.5, 2e8, 1e10])  # cupy's zeta: q > 1e8
    a, x = (v.ravel() for v in np.meshgrid(values, values))
    if name == "zeta":
        a = np.where(np.isfinite(a) & (a >= 0), a + 1.5, a)
    expected = getattr(incomplete, name)(a, x)
    monkeypatch.setattr(incomplete, "cupyx_function", lambda n, *arrays: getattr(scipy_special, n))
    got = getattr(incomplete, name)(a, x)
    np.testing.assert_allclose(got, expected, rtol=1e-13, equal_nan=True, atol=1e-300)


def test_torchs_top_level_names_i0_igamma_igammac_and_the_methods():
    x, a = dt.tensor([0.5, 1.0, 2.0]), dt.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(dt.igamma(x, a).numpy(), special.gammainc(x, a).numpy())
    np.testing.assert_array_equal(x.igammac(a).numpy(), special.gammaincc(x, a).numpy())
    np.testing.assert_array_equal(x.i0().numpy(), special.i0(x).numpy())
    y = x.clone()
    assert y.i0_() is y
    np.testing.assert_array_equal(y.numpy(), special.i0(x).numpy())


def test_large_a_near_x_uses_the_asymptotic_expansion():
    """P(a, a) = 1/2 + 1 / (3 sqrt(2 pi a)) + O(a^-3/2) (Temme): the series would stop short
    of convergence above a ~ 5e8 and return a wrong number (0.477 at a = 1e10)."""
    a = np.geomspace(1e8, 1e14, 13)
    expected = 0.5 + 1 / (3 * np.sqrt(2 * math.pi * a))
    np.testing.assert_allclose(incomplete.gammainc(a, a), expected, rtol=1e-12)
    np.testing.assert_allclose(incomplete.gammaincc(a, a), 1 - expected, rtol=1e-12)
    # across Temme's region, P + Q = 1 and P rises with x
    rng = np.random.default_rng(3)
    a = np.exp(rng.uniform(np.log(21), np.log(1e12), 2000))
    x = np.sort(rng.uniform(0.71, 1.29, 2000)) * a[0]
    p, q = incomplete.gammainc(np.full_like(x, a[0]), x), incomplete.gammaincc(a, a * 1.01)
    assert np.all(np.diff(p) >= 0) and np.isfinite(q).all()
    x = a * rng.uniform(0.71, 1.29, 2000)
    np.testing.assert_allclose(
        incomplete.gammainc(a, x) + incomplete.gammaincc(a, x), 1.0, rtol=0, atol=4e-15
    )


def test_an_element_that_does_not_converge_is_nan_and_alone(monkeypatch):
    """The cap on the series and the fraction gives NaN, not the partial sum, and only for
    the elements that need more steps than it (each element runs until its own end)."""
    monkeypatch.setattr(incomplete, "_MAX_ITERATIONS", 32)
    a, x = np.array([2.0, 15.0, 0.5]), np.array([1.5, 14.0, 3.0])  # P's series at a = x = 15
    p, q = incomplete.gammainc(a, x), incomplete.gammaincc(a, x)
    assert np.isnan(p[1]) and np.isnan(q[1])
    np.testing.assert_allclose(p[0], 1 - math.exp(-1.5) * (1 + 1.5), rtol=1e-14)
    np.testing.assert_allclose(q[2], math.erfc(math.sqrt(3.0)), rtol=1e-14)
    monkeypatch.setattr(incomplete, "_MAX_ITERATIONS", 16)
    a, x = np.array([19.0, 5.0]), np.array([19.5, 6.0])  # Q's fraction near a = 19
    q = incomplete.gammaincc(a, x)
    assert np.isnan(q[0])
    partial = sum(6.0**k / math.factorial(k) for k in range(5)) * math.exp(-6.0)
    np.testing.assert_allclose(q[1], partial, rtol=1e-14)


def test_large_x_gives_zero_or_one_not_nan():
    """Where the prefactor x^a e^-x / Gamma(a) underflows to 0, Q is 0 (as Cephes): the
    fraction's p and q overflow for x > 2^52 and gave inf / inf * 0 = NaN."""
    x = np.geomspace(100, 1e300, 4000)
    for a in (0.5, 2.0, 50.0):
        p = incomplete.gammainc(np.full_like(x, a), x)
        q = incomplete.gammaincc(np.full_like(x, a), x)
        assert not np.isnan(p).any() and not np.isnan(q).any(), a
        assert np.all(p[x > 1e4] == 1.0) and np.all(q[x > 1e4] == 0.0)
    assert incomplete.gammainc(np.array([2.0]), np.array([1e100]))[0] == 1.0
    assert incomplete.gammaincc(np.array([0.5]), np.array([2e154]))[0] == 0.0


def test_large_a_far_below_x_keeps_its_tail():
    """P(174, 2.378) ~ 4e-252: the prefactor's (x / fac)^a would underflow on its own."""
    a, x = np.array([174.01659267355197]), np.array([2.378344526276055])
    direct = math.exp(174.01659267355197 * math.log(x[0]) - x[0] - math.lgamma(a[0] + 1))
    series = sum(math.prod(x[0] / (a[0] + k) for k in range(1, n + 1)) for n in range(40))
    np.testing.assert_allclose(incomplete.gammainc(a, x), direct * series, rtol=1e-12)


def test_large_a_against_pytorch_where_cephes_converges(torch):
    """Against PyTorch in the part of Temme's region where Cephes uses it too (a > 200 and
    |x - a| < 4.5 sqrt(a)); PyTorch's expansion takes pi in float32, so 1e-8 relative."""
    rng = np.random.default_rng(5)
    a = np.exp(rng.uniform(np.log(201), np.log(1e13), 3000))
    x = a + rng.uniform(-4.4, 4.4, 3000) * np.sqrt(a)
    for ours, theirs in ((incomplete.gammainc, torch.special.gammainc),
                         (incomplete.gammaincc, torch.special.gammaincc)):  # fmt: skip
        expected = theirs(torch.tensor(a), torch.tensor(x)).numpy()
        np.testing.assert_allclose(ours(a, x), expected, rtol=1e-8, atol=1e-300)


def test_igamma_and_igammac_in_place():
    a, x = dt.tensor([0.5, 1.0, 2.0]), dt.tensor([1.0, 2.0, 3.0])
    y = a.clone()
    assert y.igamma_(x) is y
    np.testing.assert_array_equal(y.numpy(), special.gammainc(a, x).numpy())
    y = a.clone()
    assert y.igammac_(x) is y
    np.testing.assert_array_equal(y.numpy(), special.gammaincc(a, x).numpy())
    with pytest.raises(RuntimeError, match="igamma_"):  # as PyTorch: no float result in an int
        dt.tensor([1, 2, 3]).igamma_(x)
    with pytest.raises(RuntimeError, match="igammac_"):  # nor a broadcast to a larger shape
        a.clone().igammac_(dt.tensor([[1.0], [2.0]]))


def test_igamma_in_place_as_pytorch(torch):
    a, x = np.array([0.5, 1.0, 2.0, 30.0]), np.array([1.0, 2.0, 3.0, 29.0])
    for name in ("igamma_", "igammac_"):
        ours = getattr(dt.tensor(a), name)(dt.tensor(x)).numpy()
        theirs = getattr(torch.tensor(a, dtype=torch.float32), name)(torch.tensor(x)).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
