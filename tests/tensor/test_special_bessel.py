"""torch.special's Bessel functions: values against power series, known values and
identities (torch- and scipy-free), against scipy and PyTorch when installed; gradients of
i0/i0e/i1/i1e by finite differences in float64; the no-gradient ones stay off the graph."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.special as special
from dtrain.runtime import special_airy as airy
from dtrain.runtime import special_bessel as bessel
from dtrain.runtime import special_bessel_modified as modified
from dtrain.runtime import special_cupyx

EDGES = np.array(
    [0.0, -0.0, 1e-300, -1e-7, 0.5, -2.0, 8.0, 25.0, 750.0, -800.0, np.inf, -np.inf, np.nan]
)


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def scipy_special() -> Any:
    """``scipy.special``, or a skip when scipy is not installed."""
    return pytest.importorskip("scipy.special")


def _i_series(order: int, x: np.ndarray) -> np.ndarray:
    """``I0`` / ``I1`` by their power series (positive terms: no cancellation)."""
    half = x / 2
    term = np.ones_like(x) if order == 0 else half.copy()
    total = term.copy()
    for k in range(1, 200):
        term = term * half * half / (k * (k + order))
        total += term
    return total


def _j_series(order: int, x: np.ndarray) -> np.ndarray:
    half = x / 2
    term = np.ones_like(x) if order == 0 else half.copy()
    total = term.copy()
    for k in range(1, 60):
        term = -term * half * half / (k * (k + order))
        total += term
    return total


def test_modified_bessel_i_against_their_power_series():
    x = np.concatenate([np.linspace(-40, 40, 4001), [1e-8, -3e-5]])
    for order, function, scaled in ((0, modified.i0, modified.i0e), (1, modified.i1, modified.i1e)):
        expected = _i_series(order, x)
        np.testing.assert_allclose(function(x), expected, rtol=4e-15, atol=1e-300)
        np.testing.assert_allclose(scaled(x), expected * np.exp(-np.abs(x)), rtol=4e-15)


def test_modified_bessel_k_known_values_and_wronskian():
    # values of scipy 1.17 (Cephes), quoted to round-off
    np.testing.assert_allclose(
        modified.k0(np.array([0.5, 1.0, 2.0, 10.0])),
        [0.9244190712276656, 0.42102443824070823, 0.1138938727495334, 1.778006231616765e-05],
        rtol=2e-15,
    )
    np.testing.assert_allclose(
        modified.k1(np.array([0.5, 1.0, 2.0, 10.0])),
        [1.6564411200033007, 0.6019072301972346, 0.13986588181652246, 1.8648773453825585e-05],
        rtol=2e-15,
    )
    x = np.geomspace(1e-3, 600, 3001)  # I0 K1 + I1 K0 = 1 / x, in the scaled forms
    wronskian = modified.i0e(x) * modified.k1e(x) + modified.i1e(x) * modified.k0e(x)
    np.testing.assert_allclose(wronskian * x, 1.0, rtol=4e-15)
    np.testing.assert_allclose(
        modified.k0(x[x < 700]), modified.k0e(x[x < 700]) * np.exp(-x[x < 700]), rtol=2e-15
    )


def test_modified_bessel_edges_as_pytorch():
    x = np.array([0.0, -0.0, -2.0, np.inf, -np.inf, np.nan, 1000.0, -1000.0])
    nan = np.nan
    np.testing.assert_array_equal(
        modified.i0(x)[[0, 1, 3, 4, 5, 6, 7]], [1, 1, nan, nan, nan, np.inf, np.inf]
    )
    np.testing.assert_array_equal(modified.i1(x)[[3, 6, 7]], [nan, np.inf, -np.inf])
    assert not np.signbit(modified.i1(x)[1])  # +0 at -0, as PyTorch
    np.testing.assert_array_equal(modified.i0e(x)[[3, 4]], [0.0, 0.0])
    for k in (modified.k0, modified.k1, modified.k0e, modified.k1e):
        np.testing.assert_array_equal(
            k(x)[[0, 1, 2, 3, 4, 5]], [np.inf, np.inf, nan, 0.0, nan, nan]
        )


def test_bessel_j_y_series_known_values_and_wronskian():
    x = np.linspace(-5, 5, 2001)
    np.testing.assert_allclose(bessel.j0(x), _j_series(0, x), rtol=0, atol=3e-15)
    np.testing.assert_allclose(bessel.j1(x), _j_series(1, x), rtol=0, atol=3e-15)
    # values of mpmath (30 digits) at 1, 7.5, 30, 100, to within x * 3e-16 (x is rounded)
    points = np.array([1.0, 7.5, 30.0, 100.0])
    known = {
        bessel.j0: [0.76519768655796655145, 0.26633965788037839687, -0.086367983581040211336,
                    0.019985850304223122424],
        bessel.j1: [0.44005058574493351596, 0.13524842757970550518, -0.11875106261662293652,
                    -0.077145352014112158033],
        bessel.y0: [0.088256964215676957983, 0.11731328614820863084, -0.11729573168666402525,
                    -0.077244313365083152254],
        bessel.y1: [-0.78121282130028871655, -0.2591285104861162518, 0.084425570661747234891,
                    -0.020372312002759793305],
    }  # fmt: skip
    for function, values in known.items():
        assert np.all(np.abs(function(points) - values) <= 3e-16 * points), function
    x = np.concatenate([np.geomspace(1e-7, 1e3, 5001), [1e-5, 25.0]])
    wronskian = bessel.j1(x) * bessel.y0(x) - bessel.j0(x) * bessel.y1(x)
    np.testing.assert_allclose(wronskian * (math.pi * x / 2), 1.0, rtol=2e-13)
    assert abs(bessel.j0(np.array([2.404825557695773]))[0]) < 1e-15  # the first zero
    np.testing.assert_allclose(bessel.spherical_j0(x), np.sin(x) / x, rtol=2e-15)


def test_bessel_j_y_edges():
    x = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan])
    nan = np.nan
    np.testing.assert_array_equal(
        bessel.j0(x), [1, 1, bessel.j0(np.array([1.0]))[0], nan, nan, nan]
    )
    assert np.signbit(bessel.j1(x)[1]) and bessel.j1(x)[2] == -bessel.j1(np.array([1.0]))[0]
    for y in (bessel.y0, bessel.y1):
        np.testing.assert_array_equal(y(x), [-np.inf, -np.inf, nan, nan, nan, nan])
    np.testing.assert_array_equal(bessel.spherical_j0(x)[[0, 3, 4]], [1.0, 0.0, 0.0])


def test_ops_values_gradients_and_float32(check):
    x = check.away(9, gap=0.1, high=12.0)
    for fn, ref in (
        (special.i0, modified.i0),
        (special.i0e, modified.i0e),
        (special.i1, modified.i1),
        (special.i1e, modified.i1e),
    ):
        check.op(fn, ref, x)
    small = dt.tensor([0.0, 1e-20], dtype=dt.float64, requires_grad=True)
    special.i1(small).sum().backward()  # I1'(0) = 1/2
    np.testing.assert_allclose(small.grad.numpy(), [0.5, 0.5])
    single = dt.tensor([0.5, 9.0, -30.0])
    for fn, ref in (
        (special.i0, modified.i0),
        (special.i1e, modified.i1e),
        (special.bessel_y1, bessel.y1),
    ):
        out = fn(single)
        assert out.dtype == dt.float32
        np.testing.assert_allclose(out.numpy(), ref(np.array([0.5, 9.0, -30.0])), rtol=6e-8)
    assert special.i0(dt.tensor([1, 2])).dtype == dt.float32  # integers become floats


def test_no_gradient_functions_stay_off_the_graph(check):
    x = check.leaf(check.rand(4, low=0.2, high=5.0))
    for fn, ref in (
        (special.bessel_j0, bessel.j0),
        (special.bessel_j1, bessel.j1),
        (special.bessel_y0, bessel.y0),
        (special.bessel_y1, bessel.y1),
        (special.spherical_bessel_j0, bessel.spherical_j0),
        (special.airy_ai, airy.airy_ai),
        (special.modified_bessel_i0, modified.i0),
        (special.modified_bessel_i1, modified.i1),
        (special.modified_bessel_k0, modified.k0),
        (special.modified_bessel_k1, modified.k1),
        (special.scaled_modified_bessel_k0, modified.k0e),
        (special.scaled_modified_bessel_k1, modified.k1e),
    ):
        out = fn(x)
        assert not out.requires_grad and out.grad_fn is None
        check.close(out, ref(check.rand(4, low=0.2, high=5.0)), rtol=1e-14)


def test_out_argument():
    out = dt.empty(3)
    result = special.i0(dt.tensor([0.0, 1.0, 2.0]), out=out)
    assert result is out
    np.testing.assert_allclose(out.numpy(), modified.i0(np.array([0.0, 1.0, 2.0])), rtol=1e-7)
    out = dt.empty(1, dtype=dt.float64)
    special.bessel_j0(dt.tensor([1.0], dtype=dt.float64), out=out)
    np.testing.assert_allclose(out.numpy(), bessel.j0(np.array([1.0])), rtol=1e-15)


def test_airy_known_values_equation_and_edges():
    # mpmath (30 digits) at -20, -5, -2, 0.5, 2, 5, 20; within |x|^1.5 * 3e-16 absolute
    # (zeta = 2/3 |x|^1.5 is rounded) and 2e-15 relative
    points = np.array([-20.0, -5.0, -2.0, 0.5, 2.0, 5.0, 20.0])
    known = np.array([-0.17640612707798468959, 0.35076100902411431979, 0.22740742820168557599,
                      0.23169360648083348977, 0.034924130423274379135, 0.00010834442813607441735,
                      1.6916728686705403136e-27])  # fmt: skip
    error = np.abs(airy.airy_ai(points) - known)
    assert np.all(
        error <= np.maximum(3e-16 * np.abs(points) ** 1.5 * (points < 0), 2e-15 * np.abs(known))
    )
    x = np.linspace(-14, 6, 2001)  # Ai'' = x Ai, by central differences
    h = 1e-3
    second = (airy.airy_ai(x + h) - 2 * airy.airy_ai(x) + airy.airy_ai(x - h)) / h**2
    assert np.all(np.abs(second - x * airy.airy_ai(x)) <= 1e-7 * (1 + x * x))  # h^2 Ai(4) / 12
    assert airy.airy_ai(np.array([0.0]))[0] == pytest.approx(0.355028053887817239, rel=1e-15)
    edges = airy.airy_ai(np.array([np.inf, -np.inf, np.nan, 1e10, 200.0]))
    assert np.isnan(edges[:3]).all() and edges[3] == 0 and edges[4] == 0


def test_airy_against_scipy(scipy_special):
    x = np.concatenate([np.linspace(-40, 40, 8001), np.geomspace(1e-8, 100, 300)])
    expected = scipy_special.airy(x)[0]
    got = airy.airy_ai(x)
    # absolute in the oscillating half (zeta rounds), relative in the decaying one
    left = x < 0
    assert np.all(np.abs(got[left] - expected[left]) <= 1e-15 + 5e-16 * np.abs(x[left]) ** 1.5)
    relative = np.abs(got[~left] / expected[~left] - 1)
    assert np.all(relative <= 1e-13 + 2e-16 * x[~left] ** 1.5)


NAMES = [
    ("airy_ai", airy.airy_ai),
    ("i0", modified.i0),
    ("i0e", modified.i0e),
    ("i1", modified.i1),
    ("i1e", modified.i1e),
    ("modified_bessel_i0", modified.i0),
    ("modified_bessel_i1", modified.i1),
    ("modified_bessel_k0", modified.k0),
    ("modified_bessel_k1", modified.k1),
    ("scaled_modified_bessel_k0", modified.k0e),
    ("scaled_modified_bessel_k1", modified.k1e),
    ("bessel_j0", bessel.j0),
    ("bessel_j1", bessel.j1),
    ("bessel_y0", bessel.y0),
    ("bessel_y1", bessel.y1),
    ("spherical_bessel_j0", bessel.spherical_j0),
]


@pytest.mark.parametrize(("name", "function"), NAMES)
def test_against_scipy(name, function, scipy_special):
    x = np.concatenate([np.linspace(-60, 60, 6001), np.geomspace(1e-9, 700, 700)])
    if name == "spherical_bessel_j0":
        expected = scipy_special.spherical_jn(0, x)
    elif name == "airy_ai":
        pytest.skip("airy_ai has its own scipy test")
    else:
        expected = getattr(
            scipy_special,
            special_cupyx.SCIPY_NAMES.get(name, "i0" if name.endswith("i0") else "i1"),
        )(x)
    got = function(x)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    # relative away from the zeros of J and Y; there, absolute (x - pi/4 is rounded)
    scale = np.maximum(np.abs(expected[finite]), 0.05 if name.startswith("bessel") else 1e-300)
    assert (np.abs(got[finite] - expected[finite]) / scale).max() < 1e-13


@pytest.mark.parametrize(("name", "function"), NAMES)
def test_against_pytorch(name, function, torch):
    x = np.concatenate([np.linspace(-40, 40, 801), EDGES])
    expected = getattr(torch.special, name)(torch.tensor(x)).numpy()
    got = getattr(special, name)(dt.tensor(x, dtype=dt.float64)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(got[infinite], expected[infinite])
    finite = np.isfinite(expected)
    # PyTorch's J and Y (ported Cephes fits) are off by up to ~2e-5 beyond x = 5
    rtol = 1e-4 if name.startswith(("bessel", "airy")) else 1e-14
    np.testing.assert_allclose(
        got[finite], expected[finite], rtol=rtol, atol=1e-300 if rtol < 1e-6 else 1e-6
    )
    x32 = torch.tensor(x[np.isfinite(x)], dtype=torch.float32)
    np.testing.assert_allclose(
        getattr(special, name)(dt.tensor(x32.numpy())).numpy(),
        getattr(torch.special, name)(x32).numpy(),
        rtol=1e-4 if name.startswith(("bessel", "airy")) else 2e-6,
        atol=1e-30 if not name.startswith(("bessel", "airy")) else 1e-4,
    )


def test_gradients_as_pytorch(torch):
    x = np.array([-3.0, -0.2, 0.0, 0.7, 9.5, np.nan])
    for name in ("i0", "i0e", "i1", "i1e"):
        t = torch.tensor(x, requires_grad=True)
        getattr(torch.special, name)(t).sum().backward()
        d = dt.tensor(x, requires_grad=True)
        getattr(special, name)(d).sum().backward()
        np.testing.assert_allclose(d.grad.numpy(), t.grad.numpy(), rtol=1e-13, equal_nan=True)


@pytest.mark.parametrize(
    ("name", "function"), [(n, f) for n, f in NAMES if n in special_cupyx.SCIPY_NAMES]
)
def test_the_cupyx_route_gives_the_same_values(name, function, scipy_special, monkeypatch):
    """On a GPU, cupyx.scipy.special computes what scipy does: stand scipy in for it, and
    the results (edges included) equal the array code path's."""
    x = np.concatenate([np.linspace(-30, 30, 601), EDGES])
    expected = function(x)
    scipy_name = special_cupyx.SCIPY_NAMES[name]
    monkeypatch.setattr(
        special_cupyx, "cupyx_function", lambda n, *a: getattr(scipy_special, scipy_name)
    )
    got = function(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(
        got[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)]
    )
    np.testing.assert_array_equal(np.signbit(got[x == 0]), np.signbit(expected[x == 0]))
    scale = np.maximum(np.abs(expected[finite]), 0.05)
    assert (np.abs(got[finite] - expected[finite]) / scale).max() < 1e-13


def test_modified_bessel_k_below_1e_300():
    """K0(x) = -log(x / 2) - gamma and K1(x) = 1 / x for tiny x (the next terms are below
    1e-600): the argument was clipped at 1e-300, so smaller x gave K(1e-300)."""
    x = np.array([1e-305, 1e-310, 5e-324, 1e-300])
    k0 = -np.log(x) + math.log(2) - 0.57721566490153286061
    np.testing.assert_allclose(modified.k0(x), k0, rtol=1e-15)
    np.testing.assert_allclose(modified.k0e(x), k0, rtol=1e-15)
    np.testing.assert_allclose(modified.k1(x[[0, 3]]), 1 / x[[0, 3]], rtol=1e-15)
    assert np.all(modified.k1(x[1:3]) == np.inf)  # 1 / x overflows, as in scipy


def test_bessel_y_at_the_least_subnormal():
    """Y0(x) = 2 / pi (log(x / 2) + gamma) for tiny x, where x / 2 underflows at 5e-324;
    Y1 = -2 / (pi x) is -inf there (t / pi was 0, times -inf: NaN)."""
    x = np.array([5e-324, 1e-320])
    expected = 2 / math.pi * (np.log(x) - math.log(2) + 0.57721566490153286061)
    np.testing.assert_allclose(bessel.y0(x), expected, rtol=1e-15)
    np.testing.assert_array_equal(bessel.y1(x), [-np.inf, -np.inf])


def test_the_cupyx_route_computes_the_edges_once_on_the_host():
    """The values at +-inf and +-0 come from the array code path, run on numpy once per
    function name and cached (on a GPU, per call it was a thousand kernel launches)."""
    seen = []

    def edges(z):
        seen.append(type(z))
        return modified.i0(z)

    x = np.array([np.inf, -np.inf, 0.0, -0.0, 1.0])
    name = "test-edges-cached-i0"
    special_cupyx._EDGES.pop(name, None)
    for _ in range(3):
        out = special_cupyx.call_float64(np.cosh, x, edges, name)
        np.testing.assert_array_equal(out, [np.nan, np.nan, 1.0, 1.0, math.cosh(1.0)])
    assert seen == [np.ndarray]
    assert special_cupyx.edge_values(name, edges) == special_cupyx._EDGES[name]
    special_cupyx._EDGES.pop(name)
