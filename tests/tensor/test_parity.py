"""PyTorch-parity behaviours of tensors: formatting, comparisons with non-numbers, dtype
rules (where, integer reductions), uint8 masks, ``to(copy=)``, the legacy ``Tensor(...)``
constructor, ``//`` and ``%``, ``softmax(dtype=)``. Each torch comparison (skipped without
torch) sits beside a torch-free test of the same feature."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


# ---- __format__ ---------------------------------------------------------------------------
def test_format_0d_uses_item():
    loss = dt.tensor(2.34567)
    assert f"loss {loss:.4f}" == "loss 2.3457"
    assert f"{dt.tensor(2.5)}" == "2.5"
    assert f"{dt.tensor(3):5d}" == "    3"
    assert f"{dt.tensor(True)}" == "True"
    assert f"{dt.tensor(1.5, requires_grad=True):.2f}" == "1.50"


def test_format_nd_is_repr_and_refuses_a_spec():
    x = dt.tensor([1.0, 2.0])
    assert f"{x}" == repr(x)
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{x:.2f}"


def test_format_matches_torch(torch):
    for value in (2.34567, 3, -0.5, True):
        for spec in ("", ".3f", ">8", "e") if not isinstance(value, bool) else ("",):
            assert format(dt.tensor(value), spec) == format(torch.tensor(value), spec)


# ---- comparisons with non-numbers -----------------------------------------------------
def test_compare_with_none_and_strings_is_a_plain_bool():
    x = dt.tensor([1.0, 2.0])
    assert (x == None) is False  # noqa: E711 - the point of the test
    assert (x != None) is True  # noqa: E711
    assert (x == "a") is False
    assert (x != "a") is True
    with pytest.raises(TypeError):
        x < None  # noqa: B015
    assert (x == dt.tensor([1.0, 3.0])).tolist() == [True, False]
    assert (x == 2).tolist() == [False, True]
    assert (x == np.array([1.0, 0.0])).tolist() == [True, False]


def test_compare_with_none_matches_torch(torch):
    assert (dt.tensor([1.0]) == None) == (torch.tensor([1.0]) == None)  # noqa: E711
    assert (dt.tensor([1.0]) != "a") == (torch.tensor([1.0]) != "a")


# ---- where with Python numbers ------------------------------------------------------------
WHERE_CASES = [(0.0, float("-inf")), (1, 0.0), (1, 0), (True, False), (1.0, True)]


@pytest.mark.parametrize(("a", "b"), WHERE_CASES)
def test_where_of_two_numbers_takes_pytorch_dtype(a, b):
    out = dt.where(dt.tensor([True, False]), a, b)
    expected = (
        dt.float32
        if isinstance(a, float) or isinstance(b, float)
        else (dt.bool if isinstance(a, bool) and isinstance(b, bool) else dt.int64)
    )
    assert out.dtype == expected
    np.testing.assert_array_equal(out.numpy(), np.where([True, False], a, b).astype(expected))


def test_where_mask_keeps_attention_float32():
    causal = dt.tril(dt.ones(4, 4)).bool()
    bias = dt.where(causal, 0.0, float("-inf"))
    q = dt.randn(4, 8)
    assert (q @ q.T + bias).dtype == dt.float32


def test_where_dtypes_match_torch(torch):
    cond_d, cond_t = dt.tensor([True, False]), torch.tensor([True, False])
    for a, b in WHERE_CASES:
        assert str(dt.where(cond_d, a, b).dtype) in str(torch.where(cond_t, a, b).dtype)
    for name in ("float16", "int32", "bool", "float64", "uint8"):
        for scalar in (1.5, 2, True):
            ours = dt.where(cond_d, dt.ones(2, dtype=name), scalar).dtype
            theirs = torch.where(cond_t, torch.ones(2, dtype=getattr(torch, name)), scalar).dtype
            assert str(theirs) == f"torch.{ours}", (name, scalar)


# ---- integer reductions -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_integer_sums_and_products_are_int64(dtype):
    x = dt.full((300,), 1, dtype=dtype)
    for out in (x.sum(), x.sum(0), x.prod(), x.cumsum(0), x.cumprod(0), dt.sum(x)):
        assert out.dtype == dt.int64
    assert x.sum().item() == 300  # uint8 would wrap at 256
    assert x.sum(dtype=dt.int32).dtype == dt.int32


def test_integer_reductions_match_torch(torch):
    for name in ("bool", "uint8", "int32"):
        ours, theirs = dt.ones(3, dtype=name), torch.ones(3, dtype=getattr(torch, name))
        for op in ("sum", "prod"):
            assert f"torch.{getattr(ours, op)().dtype}" == str(getattr(theirs, op)().dtype)
        for op in ("cumsum", "cumprod"):
            assert f"torch.{getattr(ours, op)(0).dtype}" == str(getattr(theirs, op)(0).dtype)


def test_mean_of_integers_needs_a_float_dtype():
    with pytest.raises(TypeError, match="float"):
        dt.arange(3).mean()
    assert dt.arange(3).mean(dtype=dt.float32).item() == 1.0


def test_cumprod_values_and_gradient(check):
    x = check.away(3, 4)
    check.op(lambda t: t.cumprod(1), lambda a: np.cumprod(a, 1), x)
    with_zeros = x.copy()
    with_zeros[1, 1] = 0.0
    with_zeros[2, 0] = 0.0
    check.op(lambda t: dt.cumprod(t, 1), lambda a: np.cumprod(a, 1), with_zeros)


# ---- uint8 masks --------------------------------------------------------------------------
def test_uint8_index_is_a_mask_with_a_warning():
    mask = dt.tensor([1, 0, 1], dtype=dt.uint8)
    with pytest.warns(UserWarning, match="uint8"):
        assert dt.arange(3)[mask].tolist() == [0, 2]
    x = dt.arange(3.0)
    with pytest.warns(UserWarning, match="uint8"):
        x[mask] = dt.tensor([5.0, 6.0])
    assert x.tolist() == [5.0, 1.0, 6.0]


def test_uint8_index_matches_torch(torch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.arange(6).reshape(2, 3)[:, torch.tensor([1, 0, 1], dtype=torch.uint8)]
        ours = dt.arange(6).reshape(2, 3)[:, dt.tensor([1, 0, 1], dtype=dt.uint8)]
    assert ours.tolist() == theirs.tolist()


# ---- to(copy=True) ------------------------------------------------------------------------
def test_to_copy_true_copies_even_when_nothing_changes():
    x = dt.ones(2)
    for y in (x.to(dt.float32, copy=True), x.to("cpu", copy=True), x.to(copy=True)):
        y.add_(1)
    assert x.tolist() == [1.0, 1.0]
    assert x.to(dt.float32) is x


def test_to_copy_true_is_differentiable():
    x = dt.ones(2, requires_grad=True)
    (x.to(dt.float32, copy=True) * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


# ---- legacy Tensor(...) ------------------------------------------------------------------
def test_legacy_tensor_constructor():
    assert dt.Tensor(3, 4).shape == (3, 4) and dt.Tensor(3, 4).dtype == dt.float32
    assert dt.Tensor([1, 2]).dtype == dt.float32
    assert dt.Tensor((3, 4)).tolist() == [3.0, 4.0]
    empty = dt.Tensor()
    assert empty.shape == (0,) and empty.dtype == dt.float32
    ints = dt.tensor([1, 2])
    assert dt.Tensor(ints)._array is ints._array  # a tensor is aliased, dtype kept
    with pytest.raises(TypeError, match="legacy constructor"):
        dt.Tensor(3.5)
    w = dt.nn.Parameter(dt.Tensor(5, 2))
    assert w.requires_grad and w.shape == (5, 2)
    assert not dt.nn.Parameter(dt.zeros(2), requires_grad=False).requires_grad


def test_legacy_tensor_constructor_matches_torch(torch):
    for args in [(3, 4), ([1, 2],), ((3, 4),), ()]:
        ours, theirs = dt.Tensor(*args), torch.Tensor(*args)
        assert ours.shape == tuple(theirs.shape)
        assert str(theirs.dtype) == f"torch.{ours.dtype}"


# ---- softmax(dtype=) ----------------------------------------------------------------------
def test_softmax_dtype_casts_first(check):
    x = dt.randn(2, 3)
    for fn in (dt.softmax, dt.log_softmax, dt.nn.functional.softmax):
        out = fn(x, dim=-1, dtype=dt.float64)
        assert out.dtype == dt.float64
    assert x.softmax(-1, dtype=dt.float64).dtype == dt.float64
    assert x.log_softmax(-1, dtype=dt.float64).dtype == dt.float64
    expected = np.exp(x.numpy().astype(np.float64))
    expected /= expected.sum(-1, keepdims=True)
    check.close(dt.softmax(x, -1, dtype=dt.float64), expected, atol=1e-12)


def test_softmax_without_dim_warns_and_picks_pytorch_dim():
    x = dt.randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = dt.softmax(x)
    np.testing.assert_allclose(out.numpy().sum(1), [1.0, 1.0], rtol=1e-6)


def test_softmax_dtype_matches_torch(torch):
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    ours = dt.softmax(dt.tensor(x), -1, dtype=dt.float64).numpy()
    theirs = torch.softmax(torch.tensor(x), -1, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
