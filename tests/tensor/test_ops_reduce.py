"""Reductions and normalisations: sum mean max min amax amin prod var std logsumexp
softmax log_softmax cumsum argmax argmin."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt

SHAPE = (2, 3, 4)
# dim as None / int / negative int / tuple (with a negative member) / one-element tuple.
DIMS = [None, 0, 1, -1, (0, 2), (-1, 0), (1,)]
KEEPDIM = [False, True]


def _axis(dim):
    return tuple(dim) if isinstance(dim, (tuple, list)) else dim


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean(check, name, dim, keepdim):
    reference = getattr(np, name)
    check.op(
        lambda t: getattr(t, name)(dim=dim, keepdim=keepdim),
        lambda a: reference(a, axis=_axis(dim), keepdims=keepdim),
        check.rand(*SHAPE, seed=1),
    )


def test_sum_mean_functions_and_defaults(check):
    x = check.rand(*SHAPE, seed=2)
    check.close(dt.sum(dt.tensor(x)), x.sum())
    check.close(dt.mean(dt.tensor(x), 1), x.mean(axis=1))
    check.close(dt.tensor(x).sum(-2, True), x.sum(axis=-2, keepdims=True))


def test_sum_dtype_argument_and_integer_sums():
    assert dt.tensor([1, 2]).sum(dtype=dt.float32).dtype == dt.float32
    assert dt.tensor([True, True, False]).sum().item() == 2
    assert dt.tensor([1, 2], dtype=dt.int32).sum().tolist() == 3


def test_mean_of_integer_tensor_is_an_error():
    with pytest.raises(TypeError, match="float"):
        dt.tensor([1, 2]).mean()


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ["amax", "amin"])
def test_amax_amin(check, name, dim, keepdim):
    reference = np.max if name == "amax" else np.min
    check.op(
        lambda t: getattr(t, name)(dim=dim, keepdim=keepdim),
        lambda a: reference(a, axis=_axis(dim), keepdims=keepdim),
        check.rand(*SHAPE, seed=3),
    )


@pytest.mark.parametrize("name", ["amax", "amin", "max", "min"])
def test_extremes_share_gradient_between_ties(name):
    x = dt.tensor([[1.0, 5.0, 5.0], [-2.0, -2.0, 0.0]], requires_grad=True)
    y = getattr(x, name)() if name in ("max", "min") else getattr(x, name)(dim=(0, 1))
    y.backward()
    expected = [[0, 0.5, 0.5], [0, 0, 0]] if "max" in name else [[0, 0, 0], [0.5, 0.5, 0]]
    assert x.grad.tolist() == expected


def test_amax_ties_along_a_dim():
    x = dt.tensor([[3.0, 3.0, 1.0], [0.0, 2.0, 2.0]], requires_grad=True)
    x.amax(dim=1).sum().backward()
    assert x.grad.tolist() == [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_without_dim(check, name):
    reference = np.max if name == "max" else np.min
    x = check.rand(*SHAPE, seed=4)
    check.op(lambda t: getattr(t, name)(), reference, x)
    check.op(lambda t: getattr(dt, name)(t), reference, x)


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_return_values_and_indices(check, name, dim, keepdim):
    x = check.rand(*SHAPE, seed=5)
    out = getattr(dt.tensor(x), name)(dim, keepdim=keepdim)
    assert isinstance(out, tuple) and len(out) == 2
    values, indices = out
    assert out.values is values and out.indices is indices
    reference = np.max if name == "max" else np.min
    arg = np.argmax if name == "max" else np.argmin
    check.close(values, reference(x, axis=dim, keepdims=keepdim))
    check.close(indices, arg(x, axis=dim, keepdims=keepdim))
    assert indices.dtype == dt.int64
    check.grad(lambda t: getattr(t, name)(dim=dim, keepdim=keepdim).values, x)


def test_max_with_dim_sends_the_gradient_to_the_index():
    x = dt.tensor([[1.0, 4.0, 4.0], [2.0, 0.0, 3.0]], requires_grad=True)
    values, indices = x.max(1)
    assert indices.tolist() == [1, 2]  # the first of equal maxima, as numpy and PyTorch
    values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_max_of_empty_tensor_is_an_error():
    with pytest.raises(RuntimeError, match="empty"):
        dt.zeros(0).max()


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_prod(check, dim, keepdim):
    check.op(
        lambda t: t.prod(dim, keepdim=keepdim),
        lambda a: np.prod(a, axis=dim, keepdims=keepdim),
        check.rand(2, 3, 4, low=0.5, high=1.5, seed=6),
    )


@pytest.mark.parametrize(
    "values",
    [[2.0, 0.0, 3.0, 4.0], [0.0, 5.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 0.5, 3.0]],
)
def test_prod_gradient_with_zeros_is_exact(check, values):
    x = np.array(values)
    others = np.array([np.prod(np.delete(x, i)) for i in range(x.size)])
    t = check.leaf(x)
    t.prod().backward()
    check.close(t.grad, others)
    check.grad(lambda a: a.prod(), x)
    # Along a dim, each row has its own zeros.
    rows = np.array([values, values[::-1], [1.0, 2.0, 3.0, 4.0]])
    check.grad(lambda a: a.prod(dim=1), rows)
    check.grad(lambda a: a.prod(dim=0, keepdim=True), rows)


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_default_correction(check, name, dim, keepdim):
    reference = getattr(np, name)
    check.op(
        lambda t: getattr(t, name)(dim, keepdim=keepdim),
        lambda a: reference(a, axis=_axis(dim), ddof=1, keepdims=keepdim),
        check.rand(*SHAPE, seed=7),
    )


@pytest.mark.parametrize(
    ("kwargs", "ddof"),
    [
        ({"unbiased": True}, 1),
        ({"unbiased": False}, 0),
        ({"correction": 0}, 0),
        ({"correction": 1}, 1),
        ({"correction": 2}, 2),
    ],
)
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_correction(check, name, kwargs, ddof):
    reference = getattr(np, name)
    x = check.rand(3, 5, seed=8)
    check.op(
        lambda t: getattr(dt, name)(t, dim=1, **kwargs),
        lambda a: reference(a, axis=1, ddof=ddof),
        x,
    )
    check.close(getattr(dt.tensor(x), name)(**kwargs), reference(x, ddof=ddof))


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", [0, -1, (0, 2), (1,)])
def test_logsumexp(check, dim, keepdim):
    def reference(a):
        return np.log(np.exp(a).sum(axis=_axis(dim), keepdims=keepdim))

    check.op(lambda t: t.logsumexp(dim, keepdim=keepdim), reference, check.rand(*SHAPE, seed=9))


def test_logsumexp_is_stable():
    x = dt.tensor([[1000.0, 1000.0], [-1000.0, -1000.0], [-np.inf, -np.inf]])
    with np.errstate(divide="ignore"):  # log(0) for the all -inf row is the right answer
        out = dt.logsumexp(x, dim=1)
    np.testing.assert_allclose(out.numpy()[:2], [1000 + np.log(2), -1000 + np.log(2)])
    assert out.numpy()[2] == -np.inf
    assert dt.logsumexp(dt.tensor([1, 2]), 0).dtype == dt.float32


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_log_softmax(check, name, dim):
    def reference(a):
        shifted = a - a.max(axis=dim, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        return log_p if name == "log_softmax" else np.exp(log_p)

    x = check.rand(*SHAPE, seed=10)
    check.op(lambda t: getattr(t, name)(dim), reference, x)
    check.op(lambda t: getattr(dt, name)(t, dim=dim), reference, x, grad=False)


def test_softmax_is_stable_and_normalised():
    x = dt.tensor([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]])
    p = x.softmax(-1)
    np.testing.assert_allclose(p.numpy(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7)
    np.testing.assert_allclose(p.sum(-1).numpy(), [1.0, 1.0], rtol=1e-6)
    assert np.isfinite(x.log_softmax(-1).numpy()).all()


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_cumsum(check, dim):
    x = check.rand(*SHAPE, seed=12)
    check.op(lambda t: t.cumsum(dim), lambda a: np.cumsum(a, axis=dim), x)
    check.op(lambda t: dt.cumsum(t, dim), lambda a: np.cumsum(a, axis=dim), x, grad=False)


@pytest.mark.parametrize("keepdim", KEEPDIM)
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(check, name, dim, keepdim):
    x = check.rand(*SHAPE, seed=11)
    out = getattr(dt.tensor(x), name)(dim, keepdim=keepdim)
    expected = getattr(np, name)(x, axis=dim, keepdims=keepdim)
    if dim is not None:
        check.close(out, expected)
    else:
        assert out.item() == expected.item()
        assert out.shape == (expected.shape if keepdim else ())
    assert out.dtype == dt.int64
    assert not out.requires_grad
    assert dt.equal(getattr(dt, name)(dt.tensor(x), dim, keepdim), out)


def test_argmax_picks_the_first_of_equal_values():
    x = dt.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    assert x.argmax(1).tolist() == [1, 0]
    assert x.argmin().item() == 5


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: t.sum(0),
        lambda t: t.sum(-1, keepdim=True),
        lambda t: t.mean(0),
        lambda t: t.amax(0),
        lambda t: t.amin(-1),
        lambda t: t.prod(0),
        lambda t: t.logsumexp(0),
        lambda t: t.softmax(0),
        lambda t: t.log_softmax(-1),
        lambda t: t.cumsum(0),
        lambda t: t.max(0).values,
        lambda t: t.min(-1, keepdim=True).values,
    ],
)
def test_zero_dim_tensor_reduces_over_dim_zero(check, fn):
    # A 0-d tensor accepts dim 0 and -1, as in PyTorch; the result is 0-d again.
    x = np.array(0.7)
    out = fn(check.leaf(x))
    assert out.shape == ()
    check.grad(fn, x)


def test_zero_dim_max_with_dim_gives_index_zero():
    values, indices = dt.tensor(2.5).max(0)
    assert values.item() == 2.5 and indices.item() == 0 and indices.shape == ()


# ---- bad inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: t.sum(3),
        lambda t: t.mean(-4),
        lambda t: t.amax((0, 3)),
        lambda t: t.max(3),
        lambda t: t.argmax(3),
        lambda t: t.softmax(3),
        lambda t: t.cumsum(-4),
        lambda t: t.prod(3),
        lambda t: t.var(3),
        lambda t: t.logsumexp(3),
    ],
)
def test_dim_out_of_range_names_the_valid_range(fn):
    with pytest.raises(IndexError, match=r"\[-3, 2\]"):
        fn(dt.ones(*SHAPE))


def test_repeated_dim_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        dt.ones(2, 3).sum((1, -1))


def test_non_integer_dim_is_a_type_error():
    with pytest.raises(TypeError, match="dim"):
        dt.ones(2, 3).sum(1.0)


def test_float16_mean_and_var_do_not_overflow_where_the_result_fits():
    x = dt.tensor(np.full((100, 100), 3, np.float16), requires_grad=True)
    m = (x * x).mean()  # the sum, 90000, is past float16's 65504
    assert m.dtype == dt.float16 and m.item() == 9.0
    m.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((100, 100), 6e-4), rtol=1e-3)
    many = dt.tensor(np.full(100_000, 3, np.float16), requires_grad=True)
    many.mean().backward()  # 1/100000 as a float16 gradient, not 1/inf
    assert many.grad.numpy()[0] == pytest.approx(1e-5, rel=1e-3)
    spread = dt.tensor(np.array([300.0, 0.0, -300.0, 10.0], np.float16))
    assert spread.var().dtype == dt.float16
    assert spread.var().item() == pytest.approx(np.var([300.0, 0, -300, 10], ddof=1), rel=1e-3)


def test_reductions_of_empty_tensors():
    values, indices = dt.zeros(0, 3).max(1)  # over a dim of size 3: empty, as PyTorch
    assert values.shape == (0,) and indices.shape == (0,)
    with pytest.raises(RuntimeError, match=r"shape \(0, 3\).*dim 0"):
        dt.zeros(0, 3).max(0)
    x = dt.zeros(2, 0, requires_grad=True)
    out = x.logsumexp(1)
    np.testing.assert_array_equal(out.detach().numpy(), [-np.inf, -np.inf])
    out.sum().backward()
    assert x.grad.shape == (2, 0)
    x = dt.zeros(2, 0, requires_grad=True)
    x.prod(1).sum().backward()
    assert x.grad.shape == (2, 0)
