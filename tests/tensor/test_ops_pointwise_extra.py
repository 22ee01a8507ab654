"""Inverse/hyperbolic trigonometry and the other added elementwise functions: values against
numpy (and PyTorch when installed), dtypes, in-place forms, gradients by finite differences."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def _np_erfc(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erfc)(x)


def _np_logit(x: np.ndarray) -> np.ndarray:
    return np.log(x / (1 - x))


# name -> (numpy reference, (low, high) of the inputs checked)
UNARY = {
    "acos": (np.arccos, (-0.9, 0.9)),
    "asin": (np.arcsin, (-0.9, 0.9)),
    "atan": (np.arctan, (-3, 3)),
    "sinh": (np.sinh, (-3, 3)),
    "cosh": (np.cosh, (-3, 3)),
    "acosh": (np.arccosh, (1.1, 4)),
    "asinh": (np.arcsinh, (-3, 3)),
    "atanh": (np.arctanh, (-0.9, 0.9)),
    "log2": (np.log2, (0.1, 4)),
    "log10": (np.log10, (0.1, 4)),
    "exp2": (np.exp2, (-3, 3)),
    "erfc": (_np_erfc, (-3, 6)),
    "sinc": (np.sinc, (-3, 3)),
    "logit": (_np_logit, (0.05, 0.95)),
    "deg2rad": (np.deg2rad, (-200, 200)),
    "rad2deg": (np.rad2deg, (-3, 3)),
    "frac": (lambda x: x - np.trunc(x), (-3, 3)),
}
ALIASES = {"arccos": "acos", "arcsin": "asin", "arctan": "atan", "arccosh": "acosh"}
ALIASES |= {"arcsinh": "asinh", "arctanh": "atanh"}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_values_and_gradients(check, name):
    reference, (low, high) = UNARY[name]
    x = check.rand(2, 3, low=low, high=high, seed=1)
    check.op(getattr(dt, name), reference, x, atol=1e-9)
    check.op(lambda t: getattr(t, name)(), reference, x, atol=1e-9)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_arc_aliases(name):
    x = dt.tensor([0.1, -0.4, 0.7]) + (1.5 if name == "arccosh" else 0.0)
    assert dt.equal(getattr(dt, name)(x), getattr(dt, ALIASES[name])(x))
    assert dt.equal(getattr(x, name)(), getattr(x, ALIASES[name])())
    assert getattr(dt, name)(x).isfinite().all()


@pytest.mark.parametrize("name", ["acos", "asinh", "log2", "exp2", "erfc", "sinc", "logit"])
def test_integers_compute_in_float32_and_dtypes_are_kept(name):
    assert getattr(dt, name)(dt.tensor([0, 1])).dtype == dt.float32
    for dtype in (dt.float16, dt.float32, dt.float64):
        x = dt.tensor([[0.25, 0.5]], dtype=dtype)
        out = getattr(dt, name)(x)
        assert out.dtype == dtype and out.shape == (1, 2)
    assert getattr(dt, name)(dt.tensor(0.5)).shape == ()
    assert getattr(dt, name)(dt.zeros(0, 3)).shape == (0, 3)


def test_out_of_domain_is_nan_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dt.acos(dt.tensor([2.0])).isnan().all()
        assert dt.acosh(dt.tensor([0.0])).isnan().all()
        assert dt.atanh(dt.tensor([1.0])).item() == math.inf
        assert dt.log2(dt.tensor([0.0])).item() == -math.inf
        assert dt.log10(dt.tensor([-1.0])).isnan().all()
        assert dt.cosh(dt.tensor([1000.0])).item() == math.inf
        assert dt.logit(dt.tensor([1.0])).item() == math.inf


def test_erfc_is_accurate_in_the_tail():
    x = np.array([-2.0, 0.0, 0.5, 2.0, 4.0, 8.0, 20.0, 30.0])
    out = dt.erfc(dt.tensor(x, dtype=dt.float64)).numpy()
    np.testing.assert_allclose(out, _np_erfc(x), rtol=1e-13)


def test_logit_eps_clamps_and_zeroes_the_gradient_outside(check):
    x = np.array([0.01, 0.3, 0.5, 0.99])
    x_leaf = check.leaf(x)
    out = dt.logit(x_leaf, eps=0.1)
    check.close(out, _np_logit(np.clip(x, 0.1, 0.9)))
    out.sum().backward()
    outside = (x < 0.1) | (x > 0.9)
    np.testing.assert_allclose(x_leaf.grad.cpu().numpy(), np.where(outside, 0, 1 / (x * (1 - x))))
    check.grad(lambda t: dt.logit(t, eps=0.1), np.array([0.05, 0.2, 0.5, 0.7, 0.95]))


def test_sinc_gradient_at_zero_is_zero(check):
    x = check.leaf(np.array([0.0, 0.5]))
    dt.sinc(x).sum().backward()
    assert x.grad.cpu().numpy()[0] == 0.0


BINARY = {
    "atan2": (np.arctan2, (-2, 2), (-2, 2)),
    "hypot": (np.hypot, (-2, 2), (-2, 2)),
    "logaddexp": (np.logaddexp, (-3, 3), (-3, 3)),
    "logaddexp2": (np.logaddexp2, (-3, 3), (-3, 3)),
    "xlogy": (lambda a, b: a * np.log(b), (-2, 2), (0.2, 3)),
    "fmax": (np.fmax, (-2, 2), (-2, 2)),
    "fmin": (np.fmin, (-2, 2), (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_values_and_gradients_with_broadcasting(check, name):
    reference, (lo_a, hi_a), (lo_b, hi_b) = BINARY[name]
    a = check.rand(2, 3, low=lo_a, high=hi_a, seed=2)
    b = check.rand(3, low=lo_b, high=hi_b, seed=3)
    check.op(getattr(dt, name), reference, a, b)
    check.op(lambda s, t: getattr(s, name)(t), reference, a, b)


def test_copysign_values_and_gradient(check):
    a, b = check.away(2, 3, seed=4), check.away(2, 3, seed=5)
    check.op(dt.copysign, np.copysign, a, b)
    x = dt.tensor([1.0, -2.0, 0.0])
    assert dt.copysign(x, -0.0).tolist() == [-1.0, -2.0, -0.0]
    assert dt.copysign(dt.tensor([1, 2]), dt.tensor([-1, 1])).dtype == dt.float32


def test_fmax_ignores_nan_and_ties_go_to_the_first_input():
    a = dt.tensor([1.0, math.nan, 2.0, math.nan], requires_grad=True)
    b = dt.tensor([3.0, 1.0, 2.0, math.nan], requires_grad=True)
    out = dt.fmax(a, b)
    np.testing.assert_array_equal(out.detach().numpy(), [3.0, 1.0, 2.0, math.nan])
    out.sum().backward()
    assert a.grad.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert b.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert dt.fmin(dt.tensor([1, 5]), dt.tensor([2, 3])).tolist() == [1, 3]


def test_xlogy_is_zero_where_x_is_zero():
    out = dt.xlogy(dt.tensor([0.0, 0.0, 2.0]), dt.tensor([0.0, math.nan, math.e]))
    np.testing.assert_allclose(out.numpy(), [0.0, math.nan, 2.0])
    assert dt.xlogy(2, dt.tensor([1.0])).tolist() == [0.0]


def test_float_power_ldexp_heaviside_nextafter():
    x = dt.tensor([1.0, 2.0, 3.0])
    assert dt.float_power(x, 2).dtype == dt.float64
    assert dt.float_power(x, 2).tolist() == [1.0, 4.0, 9.0]
    assert dt.float_power(dt.tensor([2]), dt.tensor([0.5])).dtype == dt.float64
    assert x.ldexp(dt.tensor([1, 2, 3])).tolist() == [2.0, 8.0, 24.0]
    assert dt.ldexp(dt.tensor([1, 2]), dt.tensor([1, 1])).dtype == dt.float32
    h = dt.heaviside(dt.tensor([-1.0, 0.0, 2.0]), dt.tensor([0.5]))
    assert h.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(TypeError, match="same dtype"):
        dt.heaviside(dt.tensor([1.0]), dt.tensor([1]))
    y = dt.nextafter(dt.tensor([1.0], dtype=dt.float64), dt.tensor([2.0], dtype=dt.float64))
    assert y.item() == np.nextafter(1.0, 2.0)


def test_float_power_gradient(check):
    check.op(dt.float_power, np.power, check.rand(2, 3, low=0.5, high=2), check.rand(3, seed=1))


def test_integer_functions_and_bitwise():
    a, b = dt.tensor([12, 18, -8]), dt.tensor([8, 12, 6])
    assert dt.gcd(a, b).tolist() == list(np.gcd([12, 18, -8], [8, 12, 6]))
    assert dt.lcm(a, b).tolist() == list(np.lcm([12, 18, -8], [8, 12, 6]))
    with pytest.raises(TypeError, match="integer"):
        dt.gcd(dt.tensor([1.0]), dt.tensor([2.0]))
    assert dt.bitwise_and(a, b).tolist() == list(np.bitwise_and([12, 18, -8], [8, 12, 6]))
    assert dt.bitwise_or(a, b).tolist() == list(np.bitwise_or([12, 18, -8], [8, 12, 6]))
    assert dt.bitwise_xor(a, b).tolist() == list(np.bitwise_xor([12, 18, -8], [8, 12, 6]))
    assert dt.bitwise_not(a).tolist() == list(np.invert([12, 18, -8]))
    assert a.bitwise_left_shift(2).tolist() == [48, 72, -32]
    assert a.bitwise_right_shift(1).tolist() == [6, 9, -4]
    assert dt.bitwise_not(dt.tensor([True, False])).tolist() == [False, True]
    with pytest.raises(TypeError):
        dt.bitwise_and(dt.tensor([1.0]), dt.tensor([1.0]))


def test_tests_and_aliases():
    x = dt.tensor([-1.0, -0.0, 0.0, math.inf, -math.inf, math.nan])
    assert dt.signbit(x).tolist() == [True, True, False, False, True, False]
    assert dt.isposinf(x).tolist() == [False, False, False, True, False, False]
    assert dt.isneginf(x).tolist() == [False, False, False, False, True, False]
    assert dt.isreal(x).all() and dt.isposinf(dt.tensor([1, 2])).tolist() == [False, False]
    assert dt.sgn(dt.tensor([-2, 0, 3])).tolist() == [-1, 0, 1]
    y = dt.tensor([1.0, 2.0])
    assert dt.positive(y) is y
    assert dt.negative(y).tolist() == [-1.0, -2.0]
    assert dt.multiply(y, 3).tolist() == [3.0, 6.0]
    assert dt.subtract(y, 1, alpha=2).tolist() == [-1.0, 0.0]
    assert dt.divide(dt.tensor([7, -7]), 2, rounding_mode="floor").tolist() == [3, -4]
    assert dt.true_divide(dt.tensor([1, 2]), 2).tolist() == [0.5, 1.0]
    assert dt.greater(y, 1).tolist() == [False, True]
    assert dt.greater_equal(y, 1).tolist() == [True, True]
    assert dt.less(y, 2).tolist() == [True, False]
    assert dt.less_equal(y, 1).tolist() == [True, False]
    assert dt.not_equal(y, 1).tolist() == [False, True]
    assert y.fix().tolist() == [1.0, 2.0] and dt.tensor([-1.5]).fix().tolist() == [-1.0]
    with pytest.raises(TypeError, match="bool"):
        dt.positive(dt.tensor([True]))
    with pytest.raises(TypeError, match="floating"):
        dt.frac(dt.tensor([1]))


def test_in_place_forms():
    x = dt.tensor([0.5, 0.25])
    same = x.acos_()
    assert same is x
    np.testing.assert_allclose(x.numpy(), np.arccos([0.5, 0.25]), rtol=1e-6)
    y = dt.tensor([1.0, 2.0])
    y.atan2_(dt.tensor([1.0, 1.0])).hypot_(dt.tensor([0.0, 0.0]))
    np.testing.assert_allclose(y.numpy(), np.arctan2([1.0, 2.0], 1.0), rtol=1e-6)
    z = dt.tensor([1.0, 3.0])
    z.lt_(2.0)
    assert z.tolist() == [1.0, 0.0] and z.dtype == dt.float32
    z.subtract_(1).multiply_(2).true_divide_(4).divide_(0.5, rounding_mode="floor")
    assert z.tolist() == [0.0, -1.0]
    i = dt.tensor([1, 2])
    with pytest.raises(RuntimeError):
        i.acos_()
    i.gcd_(dt.tensor([4, 4]))
    assert i.tolist() == [1, 2]
    i.bitwise_not_()
    assert i.tolist() == [-2, -3]
    with pytest.raises(TypeError, match="float64"):
        dt.tensor([1.0]).float_power_(2)
    d = dt.tensor([2.0], dtype=dt.float64)
    assert d.float_power_(2).tolist() == [4.0]


def test_in_place_form_records_the_gradient(check):
    x = check.leaf(np.array([0.2, 0.4]))
    y = x * 1
    y.asin_()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), 1 / np.sqrt(1 - np.array([0.2, 0.4]) ** 2))


TORCH_UNARY = sorted(set(UNARY) | set(ALIASES)) + ["signbit", "isposinf", "sgn"]


@pytest.mark.parametrize("name", TORCH_UNARY)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_unary_matches_torch(torch, name, dtype):
    values = np.array([[-3.0, -1.0, -0.5, 0.0], [0.3, 0.9, 1.0, 4.0]])
    if name in ("frac",) and dtype == "int64":
        return
    ours = dt.tensor(values).to(getattr(dt, dtype))
    theirs = torch.tensor(values).to(getattr(torch, dtype))
    a, b = getattr(dt, name)(ours), getattr(torch, name)(theirs)
    assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1], (a.dtype, b.dtype)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", sorted(BINARY) + ["copysign", "nextafter", "ldexp"])
def test_binary_matches_torch_with_grads(torch, name):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 2, (3, 1, 4)), rng.uniform(0.1, 2, (2, 4))
    if name == "ldexp":
        b = np.round(b * 3)
    ours = [dt.tensor(v, requires_grad=name != "nextafter") for v in (a, b)]
    theirs = [torch.tensor(v, requires_grad=name != "nextafter") for v in (a, b)]
    x, y = getattr(dt, name)(*ours), getattr(torch, name)(*theirs)
    np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-10)
    if name not in ("nextafter",):
        x.sum().backward()
        y.sum().backward()
        for o, t in zip(ours, theirs):
            expected = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            got = np.zeros(o.shape) if o.grad is None else o.grad.numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_more_match_torch(torch):
    x = np.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    for fn in ("heaviside",):
        ours = getattr(dt, fn)(dt.tensor(x), dt.tensor([0.5], dtype=dt.float64))
        theirs = getattr(torch, fn)(torch.tensor(x), torch.tensor([0.5], dtype=torch.float64))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    p = np.array([0.01, 0.3, 0.95])
    for eps in (None, 0.1):
        ours, theirs = dt.tensor(p, requires_grad=True), torch.tensor(p, requires_grad=True)
        dt.logit(ours, eps).sum().backward()
        torch.logit(theirs, eps).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
    i, j = np.array([12, -18, 7]), np.array([8, 12, 0])
    assert (
        dt.gcd(dt.tensor(i), dt.tensor(j)).tolist()
        == torch.gcd(torch.tensor(i), torch.tensor(j)).tolist()
    )
    assert (
        dt.lcm(dt.tensor(i), dt.tensor(j)).tolist()
        == torch.lcm(torch.tensor(i), torch.tensor(j)).tolist()
    )
    assert (
        dt.float_power(dt.tensor([2]), 3).tolist()
        == torch.float_power(torch.tensor([2]), 3).tolist()
    )


# --- fixes after review (dc364c1) ---


def test_xlogy_keeps_the_float_dtype_with_numbers_and_promotes_mixed_floats():
    assert dt.xlogy(dt.tensor([0.5, 2.0]), 2.0).dtype == dt.float32
    assert dt.xlogy(dt.tensor([0.5], dtype=dt.float16), 3).dtype == dt.float16
    assert dt.xlogy(dt.tensor([0.5]), 0).tolist()[0] == -math.inf
    mixed = dt.xlogy(dt.tensor([1.0]), dt.tensor([3.3], dtype=dt.float16))
    assert mixed.dtype == dt.float32
    # log of float16's 3.3 (3.30078125) in float32, not float16's 1.1943
    assert abs(mixed.item() - math.log(3.30078125)) < 1e-6


def test_atan2_gradient_at_the_origin_is_zero(check):
    a, b = check.leaf(np.array([0.0, 1.0])), check.leaf(np.array([0.0, 1.0]))
    dt.atan2(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.cpu().numpy(), [0.0, 0.5])
    np.testing.assert_allclose(b.grad.cpu().numpy(), [0.0, -0.5])


@pytest.mark.parametrize("name", ["logaddexp", "logaddexp2"])
def test_logaddexp_gradient_with_an_infinite_input(check, name):
    a, b = check.leaf(np.array([math.inf, 0.0])), check.leaf(np.array([0.0, -math.inf]))
    getattr(dt, name)(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.cpu().numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.grad.cpu().numpy(), [0.0, 0.0])
    check.grad(lambda x, y: getattr(dt, name)(x, y), check.rand(4, seed=1), check.rand(4, seed=2))


def test_ldexp_promotes_both_inputs():
    half, single = dt.tensor([1.0], dtype=dt.float16), dt.tensor([2.0])
    assert dt.ldexp(half, single).dtype == dt.float32
    assert dt.ldexp(dt.tensor([1]), dt.tensor([2.0], dtype=dt.float64)).dtype == dt.float64
    assert dt.ldexp(dt.tensor(1.0, dtype=dt.float64), dt.tensor([2.0, 3.0])).dtype == dt.float32
    assert dt.ldexp(dt.tensor([3]), dt.tensor([2])).tolist() == [12.0]


def test_sinc_float16_accuracy_and_no_warning():
    out = dt.sinc(dt.tensor([3.0, 100.25], dtype=dt.float16)).numpy()
    expected = np.sinc(np.array([3.0, 100.25])).astype(np.float16)
    np.testing.assert_allclose(out.astype(float), expected.astype(float), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(dt.sinc(dt.tensor([math.inf])).item())


def test_gcd_lcm_dtype_with_0d_tensors_and_bools():
    vec = dt.tensor([2, 6], dtype=dt.int32)
    assert dt.gcd(dt.tensor(4), vec).dtype == dt.int32
    assert dt.gcd(dt.tensor(4, dtype=dt.int32), dt.tensor(6, dtype=dt.int16)).dtype == dt.int32
    assert dt.gcd(dt.tensor([True]), dt.tensor([4])).tolist() == [1]
    assert dt.lcm(dt.tensor([4, 6]), 3).tolist() == [12, 6]


def test_heaviside_method_takes_values_keyword():
    assert dt.tensor([0.0, 2.0]).heaviside(values=dt.tensor([0.5])).tolist() == [0.5, 1.0]
    x = dt.tensor([0.0])
    assert x.heaviside_(values=dt.tensor([0.25])).tolist() == [0.25]


def test_copysign_gives_other_a_zero_gradient(check):
    a, b = check.leaf(np.array([1.0, -2.0])), check.leaf(np.array([-1.0, 3.0]))
    dt.copysign(a, b).sum().backward()
    np.testing.assert_array_equal(b.grad.cpu().numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(a.grad.cpu().numpy(), [-1.0, -1.0])
    c = check.leaf(np.array([-1.0, 3.0]))
    dt.copysign(2.0, c).sum().backward()  # a number as input: only other needs a gradient
    np.testing.assert_array_equal(c.grad.cpu().numpy(), [0.0, 0.0])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_erfc_single_precision_keeps_relative_accuracy_in_the_tail(dtype):
    x = np.linspace(-5, 9, 4001).astype(dtype)
    out = dt.erfc(dt.tensor(x)).numpy()
    assert out.dtype == np.dtype(dtype)
    expected = _np_erfc(x.astype(np.float64))
    if dtype == "float16":
        np.testing.assert_allclose(out, expected.astype(np.float16), rtol=1e-3, atol=0)
    else:
        tiny = expected > 1e-37
        relative = np.abs(out[tiny] - expected[tiny]) / expected[tiny]
        assert relative.max() < 2e-6
