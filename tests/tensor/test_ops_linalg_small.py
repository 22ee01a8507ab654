"""Small linear algebra: dot, vdot, mv, inner, kron, tensordot, trace, addmv, addr,
baddbmm, addbmm, matrix_power, inverse, det, logdet, slogdet, cross. Values against numpy
(and PyTorch when installed), gradients by finite differences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def test_products(check):
    v, w = check.rand(4, seed=1), check.rand(4, seed=2)
    a, b = check.rand(3, 4, seed=3), check.rand(2, 4, seed=4)
    check.op(dt.dot, np.dot, v, w)
    check.op(dt.vdot, np.vdot, v, w)
    check.op(lambda s, t: s.dot(t), np.dot, v, w)
    check.op(dt.mv, lambda m, x: m @ x, a, v)
    check.op(lambda m, x: m.mv(x), lambda m, x: m @ x, a, v)
    check.op(dt.inner, np.inner, a, b)
    check.op(dt.inner, np.inner, check.rand(2, 3, 4), v)
    check.op(dt.kron, np.kron, a, b)
    check.op(dt.kron, np.kron, v, b)
    check.op(lambda s, t: s.kron(t), np.kron, check.rand(2, 1, 2), check.rand(3, 2))
    c = check.rand(2, 3, 4, seed=5)
    check.op(
        lambda s, t: dt.tensordot(s, t, dims=([1, 2], [0, 1])),
        lambda s, t: np.tensordot(s, t, axes=([1, 2], [0, 1])),
        c,
        a,
    )
    check.op(lambda s, t: dt.tensordot(s, t, 1), lambda s, t: np.tensordot(s, t, 1), c, b.T)
    check.op(lambda s, t: dt.tensordot(s, t, 0), lambda s, t: np.tensordot(s, t, 0), v, w)
    check.op(dt.trace, np.trace, a)
    check.op(lambda m: m.trace(), np.trace, check.rand(4, 4))
    assert dt.trace(dt.tensor([[1, 2], [3, 4]])).dtype == dt.int64
    assert dt.inner(dt.tensor(2.0), dt.tensor([1.0, 2.0])).tolist() == [2.0, 4.0]


def test_product_errors():
    with pytest.raises(ValueError, match="1-D"):
        dt.dot(dt.ones(2, 2), dt.ones(2))
    with pytest.raises(TypeError, match="same dtype"):
        dt.dot(dt.ones(2), dt.ones(2, dtype=dt.float64))
    with pytest.raises(ValueError, match="mv"):
        dt.mv(dt.ones(2, 3), dt.ones(2))
    with pytest.raises(ValueError, match="last dims"):
        dt.inner(dt.ones(2, 3), dt.ones(2))
    with pytest.raises(ValueError, match="differ"):
        dt.tensordot(dt.ones(2, 3), dt.ones(2, 3), dims=([1], [0]))
    with pytest.raises(ValueError, match="matrix"):
        dt.trace(dt.ones(3))


def test_scaled_products(check):
    m, v, w = check.rand(3, 4, seed=1), check.rand(4, seed=2), check.rand(3, seed=3)
    b1, b2 = check.rand(2, 3, 4, seed=4), check.rand(2, 4, 5, seed=5)
    check.op(
        lambda i, a, x: dt.addmv(i, a, x, beta=0.5, alpha=2),
        lambda i, a, x: 0.5 * i + 2 * (a @ x),
        w,
        m,
        v,
    )
    check.op(
        lambda i, a, b: dt.addr(i, a, b, beta=2, alpha=-1),
        lambda i, a, b: 2 * i - np.outer(a, b),
        m,
        w,
        v,
    )
    check.op(
        lambda i, a, b: dt.baddbmm(i, a, b, beta=0.5, alpha=3),
        lambda i, a, b: 0.5 * i + 3 * (a @ b),
        check.rand(1, 3, 5),
        b1,
        b2,
    )
    check.op(
        lambda i, a, b: i.addbmm(a, b, beta=1, alpha=0.5),
        lambda i, a, b: i + 0.5 * (a @ b).sum(0),
        check.rand(3, 5),
        b1,
        b2,
    )
    nan = dt.full((3,), math.nan)
    assert not dt.addmv(nan, dt.tensor(m), dt.tensor(v), beta=0).isnan().any()  # beta=0


def test_in_place_scaled_products():
    x = dt.zeros(3, 5)
    b1, b2 = dt.ones(2, 3, 4), dt.ones(2, 4, 5)
    assert x.addbmm_(b1, b2, alpha=0.5) is x and x.tolist() == [[4.0] * 5] * 3
    y = dt.ones(3)
    y.addmv_(dt.ones(3, 2), dt.ones(2), beta=2)
    assert y.tolist() == [4.0, 4.0, 4.0]
    z = dt.zeros(2, 2)
    z.addr_(dt.tensor([1.0, 2.0]), dt.tensor([3.0, 4.0]))
    assert z.tolist() == [[3.0, 4.0], [6.0, 8.0]]
    q = dt.ones(1, 2, 2)
    q.baddbmm_(dt.ones(1, 2, 3), dt.ones(1, 3, 2), beta=0)
    assert q.tolist() == [[[3.0, 3.0], [3.0, 3.0]]]
    r = dt.ones(2, 2)
    r.addmm_(dt.eye(2), dt.eye(2) * 2)
    assert r.tolist() == [[3.0, 1.0], [1.0, 3.0]]


def test_matrix_power_and_inverse(check):
    a = check.rand(2, 3, 3, seed=6) + 2 * np.eye(3)
    for n in (0, 1, 2, 5, -1, -3):
        check.op(
            lambda t, n=n: dt.matrix_power(t, n),
            lambda x, n=n: np.linalg.matrix_power(x, n),
            a,
            atol=1e-8,
        )
    check.op(dt.inverse, np.linalg.inv, a, atol=1e-8)
    check.op(lambda t: t.inverse(), np.linalg.inv, a, atol=1e-8)
    with pytest.raises(ValueError, match="square"):
        dt.matrix_power(dt.ones(2, 3), 2)


def test_det_logdet_slogdet(check):
    a = check.rand(2, 3, 3, seed=7) + 2 * np.eye(3)
    check.op(dt.det, np.linalg.det, a)
    check.op(lambda t: t.det(), np.linalg.det, a)
    check.op(lambda t: dt.slogdet(t).logabsdet, lambda x: np.linalg.slogdet(x)[1], a)
    check.op(lambda t: t.slogdet()[1], lambda x: np.linalg.slogdet(x)[1], -a)
    sign, _ = dt.slogdet(dt.tensor(-a))
    np.testing.assert_array_equal(sign.numpy(), np.linalg.slogdet(-a)[0])
    check.op(dt.logdet, lambda x: np.log(np.linalg.det(x)), a)
    negative = np.diag([-1.0, 2.0])
    assert math.isnan(dt.logdet(dt.tensor(negative)).item())
    assert dt.logdet(dt.zeros(2, 2)).item() == -math.inf
    big = dt.eye(300, dtype=dt.float64) * 10  # det overflows float64; slogdet does not
    np.testing.assert_allclose(dt.slogdet(big).logabsdet.item(), 300 * math.log(10))


def test_cross(check):
    a, b = check.rand(4, 3, seed=8), check.rand(4, 3, seed=9)
    check.op(lambda s, t: dt.cross(s, t, dim=1), lambda s, t: np.cross(s, t), a, b)
    check.op(lambda s, t: s.cross(t), lambda s, t: np.cross(s, t, axis=0), a.T, b.T)
    check.op(lambda s, t: dt.cross(s, t, dim=-1), lambda s, t: np.cross(s, t), a, b[:1])
    with pytest.raises(ValueError, match="size 3"):
        dt.cross(dt.ones(2, 4), dt.ones(2, 4))
    with pytest.raises(ValueError, match="size 3"):
        dt.cross(dt.ones(3, 4), dt.ones(3, 4), dim=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_match_torch_with_gradients(torch, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)
    m, v = rng.standard_normal((3, 4)), rng.standard_normal(3)
    cases = [
        ("dot", lambda lib, x, y: lib.dot(x[0, 0], y), [a, v]),
        ("inner", lambda lib, x, y: lib.inner(x, y), [a, v]),
        ("kron", lambda lib, x, y: lib.kron(x, y), [a, m]),
        ("tensordot", lambda lib, x, y: lib.tensordot(x, y, dims=([1], [0])), [a, m]),
        ("trace", lambda lib, x: lib.trace(x), [m]),
        ("addmv", lambda lib, i, x, y: lib.addmv(i, x, y, beta=0.3, alpha=2), [v, a[0], v]),
        ("addr", lambda lib, i, x, y: lib.addr(i, x, y, alpha=2), [a[0], v, v]),
        ("baddbmm", lambda lib, i, x, y: lib.baddbmm(i, x, y, beta=2), [a, a, a]),
        ("addbmm", lambda lib, i, x, y: lib.addbmm(i, x, y, alpha=3), [a[0], a, a]),
        ("matrix_power", lambda lib, x: lib.matrix_power(x, -2), [a]),
        ("inverse", lambda lib, x: lib.inverse(x), [a]),
        ("det", lambda lib, x: lib.det(x), [a]),
        ("logdet", lambda lib, x: lib.logdet(x), [a]),
        ("slogdet", lambda lib, x: lib.slogdet(x)[1], [a]),
        ("cross", lambda lib, x, y: lib.cross(x, y, dim=2), [a, a[::-1].copy()]),
    ]
    for name, fn, inputs in cases:
        ours = [dt.tensor(x, requires_grad=True).to(getattr(dt, dtype)) for x in inputs]
        theirs = [torch.tensor(x).to(getattr(torch, dtype)).requires_grad_() for x in inputs]
        ours = [o.detach().requires_grad_() for o in ours]
        x, y = fn(dt, *ours), fn(torch, *theirs)
        assert str(x.dtype).split(".")[-1] == str(y.dtype).split(".")[-1], name
        rtol = 1e-4 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=rtol, atol=rtol)
        x.sum().backward()
        y.sum().backward()
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(
                o.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=rtol, err_msg=name
            )


# --- fixes after review (dc364c1) ---


def test_slogdet_gradient_of_a_singular_matrix_is_infinite_not_an_error(check):
    a = check.leaf(np.ones((2, 2)))
    dt.slogdet(a)[1].backward()
    np.testing.assert_array_equal(a.grad.cpu().numpy(), [[np.inf, -np.inf], [-np.inf, np.inf]])
    batch = check.leaf(np.stack([np.ones((2, 2)), [[2.0, 1.0], [1.0, 3.0]]]))
    dt.logdet(batch)[1].backward()  # a regular matrix beside a singular one: inv(A)^T
    np.testing.assert_allclose(batch.grad.cpu().numpy()[1], np.linalg.inv([[2, 1], [1, 3]]).T)


def test_contractions_over_a_zero_size_dim():
    assert dt.tensordot(dt.zeros(2, 0), dt.zeros(0, 3), 1).tolist() == np.zeros((2, 3)).tolist()
    assert dt.inner(dt.zeros(2, 0), dt.zeros(4, 0)).tolist() == np.zeros((2, 4)).tolist()
    assert dt.tensordot(dt.ones(0, 2), dt.ones(2, 3), 1).shape == (0, 3)


def test_addbmm_keeps_int32():
    ones = dt.ones(3, 2, 2, dtype=dt.int32)
    out = dt.addbmm(dt.zeros(2, 2, dtype=dt.int32), ones, ones)
    assert out.dtype == dt.int32 and out.tolist() == [[6, 6], [6, 6]]


def test_scaled_products_refuse_an_input_larger_than_the_product():
    with pytest.raises(ValueError, match="does not broadcast to the product"):
        dt.addmv(dt.ones(2, 3), dt.ones(3, 4), dt.ones(4))
    with pytest.raises(ValueError, match="does not broadcast to the product"):
        dt.baddbmm(dt.ones(4, 2, 3, 5), dt.ones(2, 3, 4), dt.ones(2, 4, 5))
    nan = dt.full((2, 2), float("nan"), dtype=dt.float64)
    out = dt.addr(nan, dt.ones(2), dt.ones(2), beta=0)  # values ignored, dtype not
    assert out.dtype == dt.float64 and out.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_dot_method_takes_tensor_keyword():
    assert dt.tensor([1.0, 2.0]).dot(tensor=dt.tensor([3.0, 4.0])).item() == 11.0
