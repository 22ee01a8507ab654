"""Elementwise ops: arithmetic, unary math, activations, selection, matmul, dtype rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt

BROADCAST_PAIRS = [
    ((2, 3), (2, 3)),
    ((2, 3), (3,)),
    ((3,), (2, 3)),
    ((2, 1, 3), (4, 1)),
    ((), (2, 3)),
    ((3, 1), (1, 4)),
]

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a**b, np.power),
    "add_fn": (lambda a, b: dt.add(a, b, alpha=2), lambda a, b: a + 2 * b),
    "sub_fn": (lambda a, b: dt.sub(a, b, alpha=0.5), lambda a, b: a - 0.5 * b),
    "mul_fn": (dt.mul, np.multiply),
    "div_fn": (dt.div, np.divide),
    "pow_fn": (dt.pow, np.power),
    "maximum": (dt.maximum, np.maximum),
    "minimum": (dt.minimum, np.minimum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize(("shape_a", "shape_b"), BROADCAST_PAIRS)
def test_binary_broadcasting(check, name, shape_a, shape_b):
    fn, reference = BINARY[name]
    positive = name.startswith(("div", "pow"))  # keep bases and divisors away from 0
    low = 0.5 if positive else -2.0
    a = check.rand(*shape_a, low=low, seed=1)
    b = check.rand(*shape_b, low=low, seed=2)
    check.op(fn, reference, a, b)


SCALAR_FORMS = {
    "x + 2": (lambda x: x + 2, lambda x: x + 2),
    "2 + x": (lambda x: 2 + x, lambda x: 2 + x),
    "x - 1.5": (lambda x: x - 1.5, lambda x: x - 1.5),
    "2 - x": (lambda x: 2 - x, lambda x: 2 - x),
    "x * 3": (lambda x: x * 3, lambda x: x * 3),
    "-0.5 * x": (lambda x: -0.5 * x, lambda x: -0.5 * x),
    "x / 4": (lambda x: x / 4, lambda x: x / 4),
    "2 / x": (lambda x: 2 / x, lambda x: 2 / x),
    "x ** 2": (lambda x: x**2, lambda x: x**2),
    "x ** 3": (lambda x: x**3, lambda x: x**3),
    "x ** 0.5": (lambda x: x**0.5, lambda x: x**0.5),
    "x ** -1.5": (lambda x: x**-1.5, lambda x: x**-1.5),
    "2 ** x": (lambda x: 2**x, lambda x: 2.0**x),
    "0.5 ** x": (lambda x: 0.5**x, lambda x: 0.5**x),
    "-x": (lambda x: -x, lambda x: -x),
    "+x": (lambda x: +x, lambda x: +x),
    "x + True": (lambda x: x + True, lambda x: x + 1),
}


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
def test_scalar_operands_and_reflected_forms(check, form):
    fn, reference = SCALAR_FORMS[form]
    check.op(fn, reference, check.rand(2, 3, low=0.5, seed=3))


NUMPY_FORMS = {
    "x + a": (lambda x, a: x + a, lambda x, a: x + a),
    "a + x": (lambda x, a: a + x, lambda x, a: a + x),
    "a - x": (lambda x, a: a - x, lambda x, a: a - x),
    "a * x": (lambda x, a: a * x, lambda x, a: a * x),
    "a / x": (lambda x, a: a / x, lambda x, a: a / x),
    "x / a": (lambda x, a: x / a, lambda x, a: x / a),
    "a ** x": (lambda x, a: a**x, lambda x, a: a**x),
    "x ** a": (lambda x, a: x**a, lambda x, a: x**a),
    "maximum(x, a)": (lambda x, a: dt.maximum(x, a), np.maximum),
}


@pytest.mark.parametrize("form", sorted(NUMPY_FORMS))
def test_numpy_array_operands(check, form):
    fn, reference = NUMPY_FORMS[form]
    array = check.rand(3, low=0.5, seed=4)  # broadcasts against x's last dim
    x = check.rand(2, 3, low=0.5, seed=5)
    out = fn(check.leaf(x), array)
    assert isinstance(out, dt.Tensor)  # numpy defers to the tensor's reflected operator
    check.close(out, reference(x, array))
    check.grad(lambda t: fn(t, array), x)


def test_numpy_array_matmul_operand(check):
    if check.device != "cpu":
        pytest.skip("a numpy operand lives on the CPU: with a CUDA tensor it is a device mismatch")
    array, x = check.rand(2, 3, seed=6), check.rand(3, 4, seed=7)
    out = array @ check.leaf(x)
    assert isinstance(out, dt.Tensor)
    check.close(out, array @ x)
    check.grad(lambda t: array @ t, x)


def test_list_operand_becomes_a_tensor():
    out = dt.tensor([1.0, 2.0]) + [10.0, 20.0]
    assert out.dtype == dt.float32
    assert out.tolist() == [11.0, 22.0]


def test_tensor_power_gradient_for_both_operands(check):
    check.op(lambda a, b: a**b, np.power, check.rand(2, 3, low=0.5), check.rand(3, seed=9))


def test_pow_gradient_is_zero_where_the_exponent_is_zero():
    # d(x**0)/dx is 0 everywhere, x = 0 included (PyTorch); naive b * x**(b-1) gives nan.
    x = dt.tensor([0.0, 2.0], requires_grad=True)
    (x**0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]


def test_pow_exponent_gradient_with_zero_base():
    # d(0**b)/db = 0**b * log(0) is taken as 0 (PyTorch), for a scalar and a tensor base.
    b = dt.tensor([1.0, 2.0], requires_grad=True)
    (0.0**b).sum().backward()
    assert b.grad.tolist() == [0.0, 0.0]
    base = dt.tensor([0.0, 3.0])
    b.grad = None
    (base**b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 9.0 * math.log(3.0)], rtol=1e-6)


def _erf(x):
    return np.vectorize(math.erf)(x)


def _softplus(x, beta=1.0, threshold=20.0):
    return np.where(x * beta > threshold, x, np.log1p(np.exp(beta * x)) / beta)


UNARY = {
    # name: (dtrain function, numpy reference, input kind)
    "neg": (dt.neg, np.negative, "any"),
    "abs": (dt.abs, np.abs, "away"),
    "exp": (dt.exp, np.exp, "any"),
    "log": (dt.log, np.log, "positive"),
    "log1p": (dt.log1p, np.log1p, "positive"),
    "sqrt": (dt.sqrt, np.sqrt, "positive"),
    "rsqrt": (dt.rsqrt, lambda x: 1 / np.sqrt(x), "positive"),
    "sin": (dt.sin, np.sin, "any"),
    "cos": (dt.cos, np.cos, "any"),
    "tanh": (dt.tanh, np.tanh, "any"),
    "sigmoid": (dt.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "any"),
    "relu": (dt.relu, lambda x: np.maximum(x, 0), "away"),
    "gelu": (dt.gelu, lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), "any"),
    "gelu_tanh": (
        lambda x: dt.gelu(x, approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        "any",
    ),
    "silu": (dt.silu, lambda x: x / (1 + np.exp(-x)), "any"),
    "softplus": (dt.softplus, _softplus, "any"),
    "softplus_beta": (
        lambda x: dt.softplus(x, beta=2.0, threshold=3.0),
        lambda x: _softplus(x, beta=2.0, threshold=3.0),
        "away",  # 2 * x > 3 switches branch at 1.5; the inputs below stay clear of it
    ),
}


def _unary_input(check, kind):
    if kind == "positive":
        return check.rand(2, 3, low=0.2, high=3.0, seed=11)
    if kind == "away":
        return np.array([[-1.9, -0.7, 0.3], [0.9, 1.2, 1.8]])
    return check.rand(2, 3, low=-3.0, high=3.0, seed=12)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(check, name):
    fn, reference, kind = UNARY[name]
    # The GELU's erf is a 1.5e-7-accurate approximation (numpy has no erf).
    atol = 1e-6 if name == "gelu" else 1e-10
    check.op(fn, reference, _unary_input(check, kind), atol=atol)


@pytest.mark.parametrize("name", ["abs", "neg", "exp", "tanh", "sigmoid", "relu", "sqrt"])
def test_unary_methods_match_functions(name):
    x = dt.tensor([[0.5, 1.5], [2.0, 3.0]])
    assert dt.equal(getattr(x, name)(), getattr(dt, name)(x))


def test_abs_operator_and_gradient_at_zero():
    x = dt.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    y = abs(x)
    assert y.tolist() == [2.0, 0.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [-1.0, 0.0, 1.0]


def test_relu_gradient_at_zero_is_zero():
    x = dt.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    x.relu().sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_sigmoid_and_softplus_do_not_overflow():
    x = dt.tensor([-1000.0, 0.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        assert dt.sigmoid(x).tolist() == [0.0, 0.5, 1.0]
        np.testing.assert_allclose(dt.softplus(x).numpy(), [0.0, math.log(2.0), 1000.0])


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        dt.gelu(dt.ones(2), approximate="erf")


@pytest.mark.parametrize("name", ["exp", "log1p", "sqrt", "sin", "tanh", "sigmoid", "gelu"])
def test_float_functions_of_integer_tensors_give_float32(name):
    out = getattr(dt, name)(dt.tensor([1, 2, 3]))
    assert out.dtype == dt.float32


# ---- clamp, maximum, minimum, where, masked_fill ----------------------------------------


@pytest.mark.parametrize(
    ("low", "high"), [(-0.5, None), (None, 0.7), (-0.5, 0.7), (0.3, 0.3), (1.0, -1.0)]
)
def test_clamp(check, low, high):
    x = np.array([[-1.9, -0.7, -0.2], [0.1, 0.9, 1.8]])
    check.op(lambda t: dt.clamp(t, low, high), lambda a: np.clip(a, low, high), x)
    assert dt.equal(dt.tensor(x).clip(low, high), dt.clamp(dt.tensor(x), low, high))


def test_clamp_gradient_is_masked_outside_the_range():
    x = dt.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], requires_grad=True)
    x.clamp(-1.0, 1.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # the bounds themselves pass it


def test_clamp_with_tensor_bounds(check):
    x = check.away(2, 3, seed=13)
    low = dt.tensor([-1.0, 0.0, 0.5], dtype=dt.float64, device=check.device)
    check.op(lambda t: dt.clamp(t, min=low), lambda a: np.maximum(a, low.cpu().numpy()), x)


def test_clamp_bounds_that_require_grad_get_theirs():
    # each bound's gradient is the output's where it is the value; the input's elsewhere
    x = dt.tensor([[0.0, 5.0, 2.0]], requires_grad=True)
    low = dt.tensor([1.0], requires_grad=True)
    high = dt.tensor([4.0, 4.0, 4.0], requires_grad=True)
    out = x.clamp(min=low, max=high)
    (out * dt.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert out.tolist() == [[1.0, 4.0, 2.0]]
    assert x.grad.tolist() == [[0.0, 0.0, 3.0]]
    assert low.grad.tolist() == [1.0] and high.grad.tolist() == [0.0, 2.0, 0.0]


def test_gelu_of_a_zero_dim_tensor():
    x = dt.tensor(0.5, requires_grad=True)
    out = dt.nn.functional.gelu(x)
    out.backward()
    assert out.shape == () and out.item() == pytest.approx(0.345731, rel=1e-5)
    assert x.grad.item() == pytest.approx(0.867495, rel=1e-5)


def test_clamp_integer_tensor_with_float_bound_gives_float32():
    out = dt.tensor([1, 2, 3]).clamp(min=1.5)
    assert out.dtype == dt.float32
    assert out.tolist() == [1.5, 2.0, 3.0]
    assert dt.tensor([1, 5]).clamp(0, 3).dtype == dt.int64


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError, match="min and max"):
        dt.ones(2).clamp()


@pytest.mark.parametrize("fn", [dt.maximum, dt.minimum])
def test_maximum_minimum_split_ties_evenly(fn):
    a = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = dt.tensor([3.0, 2.0, 1.0], requires_grad=True)
    fn(a, b).sum().backward()
    first = [0.0, 0.5, 1.0] if fn is dt.maximum else [1.0, 0.5, 0.0]
    assert a.grad.tolist() == first
    assert b.grad.tolist() == [1 - g for g in first]


@pytest.mark.parametrize("fn", [dt.maximum, dt.minimum])
def test_maximum_minimum_with_scalar(check, fn):
    reference = np.maximum if fn is dt.maximum else np.minimum
    check.op(lambda t: fn(t, 0.5), lambda a: reference(a, 0.5), check.away(2, 3, seed=14))


def test_max_min_with_tensor_argument_are_maximum_minimum(check):
    a, b = check.rand(2, 3, seed=15), check.rand(3, seed=16)
    check.op(lambda x, y: x.max(y), np.maximum, a, b)
    check.op(lambda x, y: dt.min(x, y), np.minimum, a, b)


FLOAT32_OPS = {
    "maximum ties": lambda y: dt.maximum(y, dt.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])),
    "minimum": lambda y: dt.minimum(y, 0.5),
    "amax ties": lambda y: y.amax(),
    "max": lambda y: y.max(),
    "clamp": lambda y: y.clamp(0.5, 1.5),
    "2 ** y": lambda y: 2**y,
    "y ** y": lambda y: y**y,
    "y ** 0.5": lambda y: y**0.5,
    "2 / y": lambda y: 2 / y,
    "y * np.float64": lambda y: y * np.float64(2.0),
    "y + 0-d float64": lambda y: y + dt.tensor(1.0, dtype=dt.float64),
    "where": lambda y: dt.where(y > 1, y, 0.0),
    "softplus": dt.softplus,
    "gelu": dt.gelu,
    "prod": lambda y: y.prod(1),
    "var": lambda y: y.var(1),
    "logsumexp": lambda y: y.logsumexp(1),
    "softmax": lambda y: y.softmax(1),
    "matmul": lambda y: y @ y.T,
    "index": lambda y: y[[0, 0]],
}


@pytest.mark.parametrize("name", sorted(FLOAT32_OPS))
def test_float32_stays_float32_forward_and_backward(name):
    # Neither the result nor the gradient on the way back may widen to float64 (ties,
    # counts and numpy scalars are the usual culprits); the leaf cast would hide it.
    seen = []
    x = dt.tensor([[2.0, 1.2, 0.7], [1.9, 0.4, 1.1]], requires_grad=True)
    y = x * 1
    y.register_hook(lambda g: seen.append(g.dtype))
    out = FLOAT32_OPS[name](y)
    assert out.dtype == dt.float32
    out.sum().backward()
    assert seen == [dt.float32]


@pytest.mark.parametrize(
    ("shape_c", "shape_a", "shape_b"),
    [
        ((2, 3), (2, 3), (2, 3)),
        ((3,), (2, 3), (2, 1)),
        ((2, 1), (3,), ()),
        ((2, 3), (1, 3), (2, 1)),
    ],
)
def test_where_broadcasts(check, shape_c, shape_a, shape_b):
    condition = np.random.default_rng(17).random(shape_c) > 0.5
    mask = dt.tensor(condition, device=check.device)
    check.op(
        lambda a, b: dt.where(mask, a, b),
        lambda a, b: np.where(condition, a, b),
        check.rand(*shape_a, seed=18),
        check.rand(*shape_b, seed=19),
    )


def test_where_with_scalars_keeps_the_tensor_dtype(check):
    condition = np.array([True, False, True])
    mask = dt.tensor(condition, device=check.device)
    x = check.rand(3, seed=20)
    check.op(lambda t: dt.where(mask, t, 0.0), lambda a: np.where(condition, a, 0.0), x)
    check.op(lambda t: dt.where(mask, -1, t), lambda a: np.where(condition, -1, a), x)
    f32 = dt.tensor([1.0, 2.0, 3.0], device=check.device)
    assert dt.where(mask, f32, 0.5).dtype == dt.float32
    assert dt.where(mask, f32, np.float64(0.5)).dtype == dt.float32
    assert dt.where(mask, dt.tensor([1, 2, 3], device=check.device), 0.5).dtype == dt.float32


def test_where_needs_a_bool_condition():
    with pytest.raises(TypeError, match="bool"):
        dt.where(dt.tensor([1, 0]), dt.ones(2), dt.zeros(2))


def test_masked_fill(check):
    condition = np.array([[True, False, False], [False, True, True]])
    mask = dt.tensor(condition, device=check.device)
    x = check.rand(2, 3, seed=21)
    check.op(lambda t: t.masked_fill(mask, -5.0), lambda a: np.where(condition, -5.0, a), x)
    row = dt.tensor([True, False, True], device=check.device)  # broadcast over rows
    check.op(
        lambda t: dt.masked_fill(t, row, dt.tensor(2.0, device=check.device)),
        lambda a: np.where(row.cpu().numpy(), 2.0, a),
        x,
    )
    with pytest.raises(ValueError, match="0-d"):
        dt.ones(2, 3).masked_fill(row, dt.ones(3))


def test_masked_fill_gradient_is_zero_where_filled():
    x = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x.masked_fill(dt.tensor([False, True, False]), 0.0).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0]


# ---- matmul -------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((2, 2, 3), (3, 4)),
    ((2, 3), (2, 3, 4)),
    ((2, 1, 2, 3), (3, 3, 2)),
    ((3,), (2, 3, 4)),
    ((2, 2, 3), (3,)),
]


@pytest.mark.parametrize(("shape_a", "shape_b"), MATMUL_SHAPES)
def test_matmul(check, shape_a, shape_b):
    a, b = check.rand(*shape_a, seed=22), check.rand(*shape_b, seed=23)
    check.op(lambda x, y: x @ y, np.matmul, a, b)
    check.op(dt.matmul, np.matmul, a, b, grad=False)


def test_matmul_one_operand_needs_grad(check):
    a, b = check.rand(2, 3, seed=24), check.rand(3, seed=25)
    check.grad(lambda x: x @ dt.tensor(b, device=check.device), a)
    check.grad(lambda y: dt.tensor(a, device=check.device) @ y, b)


def test_matmul_promotes_integer_operand():
    out = dt.tensor([[1, 2]]) @ dt.tensor([[0.5], [0.25]])
    assert out.dtype == dt.float32
    assert out.tolist() == [[1.0]]


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        dt.ones(2, 3) @ dt.ones(4, 5)
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        dt.ones(3) @ dt.ones(4)


def test_matmul_batch_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 4, 2\)"):
        dt.ones(2, 3, 4) @ dt.ones(5, 4, 2)


def test_matmul_rejects_scalars_and_non_tensors():
    with pytest.raises(RuntimeError, match="at least one dimension"):
        dt.matmul(dt.tensor(2.0), dt.ones(2))
    with pytest.raises(TypeError, match="tensors"):
        dt.matmul(dt.ones(2), [1.0, 2.0])


# ---- errors and dtype rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a * b,
        lambda a, b: a / b,
        lambda a, b: a**b,
        dt.maximum,
        lambda a, b: dt.where(dt.ones(2, 3) > 0, a, b),
    ],
)
def test_broadcast_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        fn(dt.ones(2, 3), dt.ones(4, 5))


def test_complex_and_unknown_operands_are_type_errors():
    with pytest.raises(TypeError, match="complex"):
        dt.ones(2) + 1j
    with pytest.raises(TypeError, match="cannot combine"):
        dt.ones(2) * object()


@pytest.mark.parametrize(
    ("make", "dtype"),
    [
        (lambda: dt.tensor(1.5), dt.float32),
        (lambda: dt.tensor([1.0, 2.0]), dt.float32),
        (lambda: dt.tensor([1, 2]), dt.int64),
        (lambda: dt.tensor([True]), dt.bool),
        (lambda: dt.tensor(np.ones(2)), dt.float64),  # numpy arrays keep their dtype
        (lambda: dt.tensor([1, 2]) + 1.5, dt.float32),
        (lambda: 1.5 * dt.tensor([1, 2]), dt.float32),
        (lambda: dt.tensor([1, 2]) + 2, dt.int64),
        (lambda: dt.tensor([1, 2], dtype=dt.int32) + 2, dt.int32),
        (lambda: dt.tensor([1, 2], dtype=dt.int32) + dt.tensor([1, 2]), dt.int64),
        (lambda: dt.tensor([1, 2]) / dt.tensor([2, 4]), dt.float32),
        (lambda: dt.tensor([1, 2]) / 2, dt.float32),
        (lambda: 2 / dt.tensor([1, 2]), dt.float32),
        (lambda: dt.tensor([1, 2]) / np.array([2, 4]), dt.float32),
        (lambda: dt.tensor([1.0, 2.0]) * np.float64(2.0), dt.float32),
        (lambda: np.float64(2.0) * dt.tensor([1.0, 2.0]), dt.float32),
        (lambda: dt.tensor([1.0, 2.0]) + np.int64(2), dt.float32),
        (lambda: dt.tensor([1, 2]) * np.float32(0.5), dt.float32),
        (lambda: dt.tensor([1.0]) ** 2, dt.float32),
        (lambda: dt.tensor([2]) ** 0.5, dt.float32),
        (lambda: 2.0 ** dt.tensor([1, 2]), dt.float32),
        (lambda: dt.tensor([1, 2]) + dt.tensor([1.0, 2.0]), dt.float32),
        (lambda: dt.tensor([1.0]) + dt.tensor([1.0], dtype=dt.float64), dt.float64),
        (lambda: dt.tensor([1.0], dtype=dt.float16) + dt.tensor([1.0]), dt.float32),
        # A 0-d tensor of the same category does not promote a dimensioned one (PyTorch).
        (lambda: dt.tensor([1.0]) + dt.tensor(2.0, dtype=dt.float64), dt.float32),
        (lambda: dt.tensor(2.0, dtype=dt.float64) * dt.tensor([1.0]), dt.float32),
        (lambda: dt.tensor([1.0]) * np.array(2.0), dt.float32),
        (lambda: dt.tensor([1], dtype=dt.int32) + dt.tensor(2), dt.int32),
        # … but one of a higher category does.
        (lambda: dt.tensor([1, 2]) + dt.tensor(0.5, dtype=dt.float64), dt.float64),
        (lambda: dt.tensor(1.0) + dt.tensor(2.0, dtype=dt.float64), dt.float64),
    ],
)
def test_dtype_rules(make, dtype):
    assert make().dtype == dtype


def test_integer_division_is_true_division():
    assert (dt.tensor([1, 3]) / dt.tensor([2, 2])).tolist() == [0.5, 1.5]


def test_float32_leaf_gets_float32_gradient():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    (x * np.float64(3.0) + dt.tensor([1.0], dtype=dt.float64)).sum().backward()
    assert x.grad.dtype == dt.float32
    assert x.grad.tolist() == [3.0, 3.0]
