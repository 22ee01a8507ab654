"""torch.special's orthogonal polynomials: values against closed forms and numpy's
polynomial classes (torch-free), edge rules, dtypes and promotion, and against PyTorch when
installed; no gradient, as in PyTorch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.polynomial as npp
import pytest

import dtrain as dt
import dtrain.special as special

NAMES = [
    "chebyshev_polynomial_t",
    "chebyshev_polynomial_u",
    "chebyshev_polynomial_v",
    "chebyshev_polynomial_w",
    "shifted_chebyshev_polynomial_t",
    "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w",
    "hermite_polynomial_h",
    "hermite_polynomial_he",
    "laguerre_polynomial_l",
    "legendre_polynomial_p",
]


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def _basis(kind: Any, n: int, x: np.ndarray) -> np.ndarray:
    return kind.basis(n)(x)


def _u(n: int, x: np.ndarray) -> np.ndarray:  # U_n = (T_n - T_(n+2)) / (2 (1 - x^2))
    return (_basis(npp.Chebyshev, n, x) - _basis(npp.Chebyshev, n + 2, x)) / (2 * (1 - x * x))


REFERENCES = {
    "chebyshev_polynomial_t": lambda n, x: _basis(npp.Chebyshev, n, x),
    "chebyshev_polynomial_u": _u,
    "chebyshev_polynomial_v": lambda n, x: _u(n, x) - (_u(n - 1, x) if n else 0),
    "chebyshev_polynomial_w": lambda n, x: _u(n, x) + (_u(n - 1, x) if n else 0),
    "hermite_polynomial_h": lambda n, x: _basis(npp.Hermite, n, x),
    "hermite_polynomial_he": lambda n, x: _basis(npp.HermiteE, n, x),
    "laguerre_polynomial_l": lambda n, x: _basis(npp.Laguerre, n, x),
    "legendre_polynomial_p": lambda n, x: _basis(npp.Legendre, n, x),
}


@pytest.mark.parametrize("name", NAMES)
def test_values_against_numpy_polynomials(name):
    x = np.linspace(-0.95, 0.95, 77) if "hermite" not in name else np.linspace(-3, 3, 77)
    if name.startswith("laguerre"):
        x = np.linspace(0.01, 8, 77)
    reference = REFERENCES[name.replace("shifted_", "")]
    fn = getattr(special, name)
    for n in (0, 1, 2, 3, 6, 7, 9, 12, 20):
        points = (x + 1) / 2 if name.startswith("shifted") else x
        got = fn(dt.tensor(points, dtype=dt.float64), float(n)).numpy()
        expected = reference(n, x)
        scale = np.maximum(np.abs(expected), 1.0)
        assert np.all(np.abs(got - expected) <= 1e-12 * scale * max(n, 1)), (name, n)


def test_edge_rules_as_pytorch():
    x = dt.tensor([-1.0, 1.0, 0.0, 0.5], dtype=dt.float64)
    n = dt.tensor([3.0, 3.0, 3.0, 3.0], dtype=dt.float64)
    np.testing.assert_array_equal(special.chebyshev_polynomial_t(x, n).numpy()[:2], [-1, 1])
    np.testing.assert_array_equal(special.chebyshev_polynomial_u(x, n).numpy()[:2], [-4, 4])
    np.testing.assert_array_equal(special.chebyshev_polynomial_v(x, n).numpy()[:2], [-7, 1])
    np.testing.assert_array_equal(special.chebyshev_polynomial_w(x, n).numpy()[:2], [-1, 7])
    assert special.laguerre_polynomial_l(dt.tensor([0.0]), 7).item() == 1.0
    for name in NAMES:  # negative and non-finite n give 0; n is truncated
        fn = getattr(special, name)
        out = fn(dt.tensor([0.3, 0.3, 0.3]), dt.tensor([-1.0, np.nan, np.inf])).numpy()
        np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])
        assert fn(dt.tensor([0.3]), 3.7).item() == fn(dt.tensor([0.3]), 3).item()
    for name in NAMES:  # NaN in, NaN out (PyTorch returns an uninitialised value at n = 2)
        assert np.isnan(
            getattr(special, name)(dt.tensor([np.nan]), dt.tensor([2, 3, 9])).numpy()
        ).all()
    assert np.isnan(special.hermite_polynomial_h(dt.tensor([0.5]), 129).item())  # float32 limit
    assert np.isfinite(special.hermite_polynomial_h(dt.tensor([0.5], dtype=dt.float64), 129).item())
    assert np.isnan(special.hermite_polynomial_he(dt.tensor([0.5], dtype=dt.float64), 513).item())
    big = special.chebyshev_polynomial_t(dt.tensor([3.0], dtype=dt.float64), 5000).item()
    assert np.isnan(big)  # overflows to inf, then inf - inf (as PyTorch)


def test_dtypes_numbers_broadcasting_out_and_no_gradient():
    x = dt.tensor([0.25, 0.5], requires_grad=True)
    out = special.legendre_polynomial_p(x, dt.tensor([[2], [3]]))
    assert out.shape == (2, 2) and out.dtype == dt.float32 and not out.requires_grad
    assert special.chebyshev_polynomial_t(0.5, dt.tensor([3])).dtype == dt.float32
    assert special.chebyshev_polynomial_t(dt.tensor([1, 2]), dt.tensor([3])).dtype == dt.float32
    assert (
        special.hermite_polynomial_h(dt.tensor([0.5]), dt.tensor([2.0], dtype=dt.float64)).dtype
        == dt.float64
    )
    np.testing.assert_allclose(
        special.chebyshev_polynomial_t(0.5, dt.tensor([3])).numpy(), [-1.0], atol=1e-7
    )
    target = dt.empty(2)
    assert special.hermite_polynomial_he(x.detach(), 2, out=target) is target
    np.testing.assert_allclose(target.numpy(), [0.25**2 - 1, 0.5**2 - 1], rtol=1e-6)
    with pytest.raises(TypeError, match="expected input or n to be a Tensor"):
        special.legendre_polynomial_p(0.5, 2)


def test_on_the_checker_device(check):
    x = check.leaf(check.rand(6, low=-0.9, high=0.9))
    for name in NAMES:
        got = getattr(special, name)(x, 5)
        assert got.device.type == check.device and not got.requires_grad
        expected = getattr(special, name)(dt.tensor(check.rand(6, low=-0.9, high=0.9)), 5.0)
        check.close(got, expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_against_pytorch(name, torch):
    xs = np.array(
        [-3.0, -1.0, -0.999, -0.5, 0.0, 0.3, 0.5, 0.9999, 1.0, 1.0001, 2.5, np.inf, -np.inf]
    )
    ns = np.array(
        [-2, -1, 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 15, 30, 100, 129, 513, np.nan, np.inf, 3.7]
    )
    x, n = np.meshgrid(xs, ns)
    for dtype, rtol in ((np.float64, 1e-9), (np.float32, 2e-3)):
        expected = getattr(torch.special, name)(
            torch.tensor(x.astype(dtype)), torch.tensor(n.astype(dtype))
        ).numpy()
        got = getattr(special, name)(dt.tensor(x.astype(dtype)), dt.tensor(n.astype(dtype))).numpy()
        # near the zeros (|value| < 1e-6) rounding decides the last digits: absolute there
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-6, equal_nan=True)


def test_hermite_above_its_limit_is_nan_without_running_the_recurrence():
    """Above n = 128 (float32) / 512 (float64) Hermite is NaN, as PyTorch, whatever n: no
    recurrence runs there (n = 2e6 raised the too-many-steps error)."""
    for name in ("hermite_polynomial_h", "hermite_polynomial_he"):
        fn = getattr(special, name)
        for dtype in (dt.float32, dt.float64):
            out = fn(dt.tensor([0.5, 0.5], dtype=dtype), dt.tensor([2e6, 3.0], dtype=dtype))
            assert np.isnan(out.numpy()[0]) and np.isfinite(out.numpy()[1])
    with pytest.raises(ValueError, match=r"n <= 1000000$"):  # no "outside (-1, 1)" here
        special.legendre_polynomial_p(dt.tensor([0.5]), dt.tensor([2e6]))
