"""Broadcasting binary ops on hypothesis-generated shapes: values match numpy, and each
input's gradient has the input's shape and equals the upstream gradient reduced back to it.

The reference reduction is computed independently of dtrain's ``unbroadcast``: every output
element adds its local gradient to the input element it was broadcast from (``bincount``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import dtrain as dt

SETTINGS = settings(max_examples=40, deadline=None)
SHAPES = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0, max_side=3)
SEEDS = st.integers(0, 2**16)

# name: (dtrain op, numpy forward, d out / d a, d out / d b); the derivatives broadcast
# against the upstream gradient, which has the output's shape.
OPS = {
    "add": (lambda a, b: a + b, np.add, lambda a, b: 1.0, lambda a, b: 1.0),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b: 1.0, lambda a, b: -1.0),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b: b, lambda a, b: a),
    "div": (lambda a, b: a / b, np.divide, lambda a, b: 1 / b, lambda a, b: -a / b**2),
    "maximum": (dt.maximum, np.maximum, lambda a, b: a > b, lambda a, b: b > a),
}


def reduce_to(local_grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``local_grad`` (of the broadcast shape) onto the elements of ``shape`` it came from."""
    size = int(np.prod(shape))
    source = np.broadcast_to(np.arange(size).reshape(shape), local_grad.shape)
    return np.bincount(source.ravel(), weights=local_grad.ravel(), minlength=size).reshape(shape)


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    # Away from 0 (divisors) and distinct almost surely (maximum has no ties).
    a = rng.uniform(0.5, 2.0, shapes.input_shapes[0]) * rng.choice([-1, 1], shapes.input_shapes[0])
    b = rng.uniform(0.5, 2.0, shapes.input_shapes[1])
    upstream = rng.standard_normal(shapes.result_shape)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), upstream


def _check(op, forward, local_a, local_b, shapes, seed):
    a, b, upstream = _inputs(shapes, seed)
    ta = dt.tensor(a, requires_grad=True)
    tb = dt.tensor(b, requires_grad=True)
    out = op(ta, tb)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.detach().numpy(), forward(a, b), rtol=1e-12)
    out.backward(dt.tensor(upstream))
    assert ta.grad.shape == a.shape
    assert tb.grad.shape == b.shape
    full = shapes.result_shape
    expected_a = reduce_to(np.broadcast_to(upstream * local_a(a, b), full), a.shape)
    expected_b = reduce_to(np.broadcast_to(upstream * local_b(a, b), full), b.shape)
    np.testing.assert_allclose(ta.grad.numpy(), expected_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), expected_b, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(shapes=SHAPES, seed=SEEDS)
def test_add(shapes, seed):
    _check(*OPS["add"], shapes, seed)


@SETTINGS
@given(shapes=SHAPES, seed=SEEDS)
def test_sub(shapes, seed):
    _check(*OPS["sub"], shapes, seed)


@SETTINGS
@given(shapes=SHAPES, seed=SEEDS)
def test_mul(shapes, seed):
    _check(*OPS["mul"], shapes, seed)


@SETTINGS
@given(shapes=SHAPES, seed=SEEDS)
def test_div(shapes, seed):
    _check(*OPS["div"], shapes, seed)


@SETTINGS
@given(shapes=SHAPES, seed=SEEDS)
def test_maximum(shapes, seed):
    _check(*OPS["maximum"], shapes, seed)


@SETTINGS
@given(
    shapes=mutually_broadcastable_shapes(
        num_shapes=3, min_dims=0, max_dims=4, min_side=0, max_side=3
    ),
    seed=SEEDS,
)
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    condition = np.asarray(rng.random(shapes.input_shapes[0]) > 0.5)
    mask = dt.tensor(condition)

    # The output's shape includes the condition's; a and b are the last two shapes.
    operands = SimpleNamespace(
        input_shapes=shapes.input_shapes[1:], result_shape=shapes.result_shape
    )
    _check(
        lambda a, b: dt.where(mask, a, b),
        lambda a, b: np.where(condition, a, b),
        lambda a, b: condition,
        lambda a, b: ~condition,
        operands,
        seed,
    )
