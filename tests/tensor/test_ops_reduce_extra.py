"""The added reductions and scans: nansum, nanmean, median, nanmedian, kthvalue, mode,
quantile, nanquantile, count_nonzero, aminmax, var_mean, std_mean, logcumsumexp, cummax,
cummin, diff, histc. Values against numpy (and PyTorch when installed), gradients by finite
differences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt

NAN = math.nan


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def _lower_median(a: np.ndarray, axis: int) -> np.ndarray:
    ordered = np.sort(a, axis=axis)
    return np.take(ordered, (a.shape[axis] - 1) // 2, axis=axis)


def test_nansum_nanmean_values_and_gradients(check):
    x = check.rand(3, 4, seed=1)
    x[0, 1] = x[2, 3] = NAN
    out = dt.nansum(check.leaf(x), 1)
    check.close(out, np.nansum(x, 1))
    check.close(dt.nanmean(check.leaf(x), 0, keepdim=True), np.nanmean(x, 0, keepdims=True))
    check.close(dt.nansum(check.leaf(x)), np.nansum(x))
    leaf = check.leaf(x)
    dt.nanmean(leaf, 1).sum().backward()
    expected = np.where(np.isnan(x), 0.0, 1.0 / (~np.isnan(x)).sum(1, keepdims=True))
    check.close(leaf.grad, expected)
    check.grad(lambda t: dt.nansum(t * 2, 0), check.rand(2, 3))
    assert dt.nansum(dt.tensor([1, 2])).dtype == dt.int64
    assert math.isnan(dt.nanmean(dt.tensor([NAN, NAN])).item())
    with pytest.raises(TypeError, match="float"):
        dt.nanmean(dt.tensor([1, 2]))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_median_with_dim_selects_and_routes_the_gradient(check, dim):
    x = check.rand(4, 5, seed=2)
    values, indices = dt.median(check.leaf(x), dim)
    check.close(values, _lower_median(x, dim))
    np.testing.assert_array_equal(
        np.take_along_axis(x, np.expand_dims(indices.cpu().numpy(), dim), dim).squeeze(dim),
        _lower_median(x, dim),
    )
    check.grad(lambda t: dt.median(t, dim).values, x)
    check.grad(lambda t: t.median(dim, keepdim=True)[0], x)


def test_median_global_and_nan():
    x = dt.tensor([3.0, 1.0, 2.0, 4.0], dtype=dt.float64, requires_grad=True)
    out = dt.median(x)
    assert out.item() == 2.0 and out.shape == ()
    out.backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 0.0]
    tied = dt.tensor([2.0, 2.0, 1.0], requires_grad=True)
    dt.median(tied).backward()
    assert tied.grad.tolist() == [0.5, 0.5, 0.0]  # shared among the equal elements
    y = dt.tensor([[1.0, NAN, 3.0], [1.0, 2.0, 3.0]])
    v, i = y.median(1)
    assert math.isnan(v[0].item()) and i.tolist() == [1, 1]
    v, i = y.nanmedian(1)
    assert v.tolist() == [1.0, 2.0] and i.tolist() == [0, 1]
    assert math.isnan(dt.median(y).item()) and dt.nanmedian(y).item() == 2.0
    assert math.isnan(dt.nanmedian(dt.tensor([NAN, NAN])).item())
    assert math.isnan(dt.median(dt.zeros(0)).item())
    assert dt.median(dt.tensor([5, 1, 3])).item() == 3
    v, i = dt.median(dt.tensor(4.0), 0)
    assert v.item() == 4.0 and i.item() == 0 and v.shape == ()
    with pytest.raises(IndexError, match="size 0"):
        dt.median(dt.zeros(2, 0), 1)


def test_kthvalue_and_mode(check):
    x = check.rand(3, 6, seed=3)
    values, indices = dt.kthvalue(check.leaf(x), 2, 1)
    check.close(values, np.sort(x, 1)[:, 1])
    assert (
        np.take_along_axis(x, indices.cpu().numpy()[:, None], 1)[:, 0]
        == values.detach().cpu().numpy()
    ).all()
    check.grad(lambda t: t.kthvalue(3, 0).values, x)
    with pytest.raises(IndexError, match="k=7"):
        dt.kthvalue(dt.tensor(x), 7)
    m = dt.tensor([[1.0, 2.0, 2.0, 1.0, 3.0], [5.0, 0.0, 0.0, 4.0, 4.0]])
    values, indices = dt.mode(m, 1)
    assert values.tolist() == [1.0, 0.0] and indices.tolist() == [3, 2]
    values, indices = m.mode(0, keepdim=True)
    assert values.shape == (1, 5) and indices.shape == (1, 5)
    assert dt.mode(dt.tensor([3, 1, 3, 2, 1, 5])).values.item() == 1
    leaf = check.leaf(np.array([2.0, 1.0, 2.0, 3.0]))
    dt.mode(leaf).values.backward()
    assert leaf.grad.cpu().numpy().tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantile_against_numpy(check, interpolation):
    x = check.rand(4, 7, seed=4)
    q = np.array([0.0, 0.1, 0.5, 0.75, 1.0])
    for dim in (None, 0, 1):
        out = dt.quantile(check.leaf(x), dt.tensor(q), dim, interpolation=interpolation)
        check.close(out, np.quantile(x, q, axis=dim, method=interpolation))
        out = dt.quantile(check.leaf(x), 0.3, dim, keepdim=True, interpolation=interpolation)
        check.close(out, np.quantile(x, 0.3, axis=dim, keepdims=True, method=interpolation))
    check.grad(lambda t: dt.quantile(t, dt.tensor([0.2, 0.9]), 1), x)


def test_quantile_nan_and_errors():
    x = dt.tensor([[1.0, NAN, 3.0], [1.0, 2.0, 3.0]])
    assert math.isnan(dt.quantile(x, 0.5, 1)[0].item())
    np.testing.assert_allclose(dt.nanquantile(x, 0.5, 1).numpy(), [2.0, 2.0])
    assert math.isnan(dt.nanquantile(dt.tensor([NAN, NAN]), 0.5).item())
    with pytest.raises(ValueError, match=r"q=1\.5"):
        dt.quantile(x, 1.5)
    with pytest.raises(ValueError, match="interpolation"):
        dt.quantile(x, 0.5, interpolation="cubic")
    with pytest.raises(TypeError, match="float"):
        dt.quantile(dt.tensor([1, 2]), 0.5)


def test_count_nonzero_aminmax_var_mean_std_mean(check):
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, -3.0]])
    t = dt.tensor(x)
    assert dt.count_nonzero(t).item() == 3 and dt.count_nonzero(t).dtype == dt.int64
    assert t.count_nonzero(1).tolist() == [2, 1]
    assert dt.count_nonzero(t, (0, 1)).item() == 3
    low, high = dt.aminmax(t)
    assert low.item() == -3.0 and high.item() == 2.0
    result = t.aminmax(dim=1, keepdim=True)
    assert result.min.tolist() == [[0.0], [-3.0]] and result.max.tolist() == [[2.0], [0.0]]
    with pytest.raises(RuntimeError, match="empty"):
        dt.aminmax(dt.zeros(0))
    r = check.rand(3, 4, seed=5)
    v, m = dt.var_mean(check.leaf(r), 1)
    check.close(v, np.var(r, 1, ddof=1))
    check.close(m, np.mean(r, 1))
    s, m = dt.std_mean(check.leaf(r), correction=0)
    check.close(s, np.std(r))
    check.grad(lambda t: dt.std_mean(t, 0)[0] + dt.std_mean(t, 0)[1], r)


def test_logcumsumexp_values_and_gradient(check):
    x = check.rand(3, 5, low=-4, high=4, seed=6)
    for dim in (0, 1, -1):
        check.op(
            lambda t, d=dim: dt.logcumsumexp(t, d),
            lambda a, d=dim: np.logaddexp.accumulate(a, axis=d),
            x,
        )
    wide = dt.logcumsumexp(dt.tensor([-1000.0, 0.0, 1000.0], dtype=dt.float64), 0)
    np.testing.assert_allclose(wide.numpy(), [-1000.0, 0.0, 1000.0])
    assert dt.logcumsumexp(dt.tensor([1, 2]), 0).dtype == dt.float32
    assert dt.logcumsumexp(dt.tensor(2.0), 0).shape == ()


def test_cummax_cummin(check):
    x = check.rand(4, 6, seed=7)
    for dim in (0, 1):
        values, indices = dt.cummax(check.leaf(x), dim)
        check.close(values, np.maximum.accumulate(x, axis=dim))
        values, indices = dt.cummin(check.leaf(x), dim)
        check.close(values, np.minimum.accumulate(x, axis=dim))
        check.grad(lambda t, d=dim: dt.cummax(t, d).values, x)
        check.grad(lambda t, d=dim: t.cummin(d)[0], x)
    values, indices = dt.cummax(dt.tensor([1.0, 3.0, 3.0, 2.0, NAN, 5.0, NAN]), 0)
    assert indices.tolist() == [0, 1, 2, 2, 4, 4, 6]
    values, indices = dt.cummin(dt.tensor([3, 1, 1, 2]), 0)
    assert values.tolist() == [3, 1, 1, 1] and indices.tolist() == [0, 1, 2, 2]


def test_diff(check):
    x = check.rand(3, 5, seed=8)
    check.op(lambda t: dt.diff(t), lambda a: np.diff(a), x)
    check.op(lambda t: t.diff(n=2, dim=0), lambda a: np.diff(a, n=2, axis=0), x)
    p = check.rand(3, 1, seed=9)
    check.op(
        lambda t, u: dt.diff(t, prepend=u, append=u),
        lambda a, b: np.diff(a, prepend=b, append=b),
        x,
        p,
    )
    assert dt.diff(dt.tensor([True, True, False])).tolist() == [False, True]
    assert dt.diff(dt.tensor([1, 4, 9]), n=3).shape == (0,)
    with pytest.raises(RuntimeError, match="0-d"):
        dt.diff(dt.tensor(1.0))


def test_histc():
    x = dt.tensor([1.0, 2.0, 1.0, 4.0, -1.0, 3.0])
    np.testing.assert_array_equal(dt.histc(x, 4, 0, 3).numpy(), [0.0, 2.0, 1.0, 1.0])
    auto = x.histc(bins=5)
    np.testing.assert_array_equal(auto.numpy(), np.histogram(x.numpy(), 5)[0])
    assert auto.dtype == dt.float32
    np.testing.assert_array_equal(dt.histc(dt.tensor([2.0, 2.0]), 2).numpy(), [0.0, 2.0])
    with pytest.raises(TypeError, match="float"):
        dt.histc(dt.tensor([1, 2]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_order_statistics_match_torch(torch, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8))
    ours, theirs = dt.tensor(x).to(getattr(dt, dtype)), torch.tensor(x).to(getattr(torch, dtype))
    for name, args in [
        ("median", (1,)),
        ("median", (0, True)),
        ("nanmedian", (-1,)),
        ("kthvalue", (3, 1)),
        ("cummax", (1,)),
        ("cummin", (0,)),
    ]:
        a, b = getattr(dt, name)(ours, *args), getattr(torch, name)(theirs, *args)
        np.testing.assert_allclose(a[0].numpy(), b[0].numpy())
        assert a[1].tolist() == b[1].tolist(), name
        assert str(a[0].dtype).split(".")[-1] == str(b[0].dtype).split(".")[-1]
    q = [0.0, 0.33, 0.5, 0.9]
    for interpolation in ("linear", "lower", "higher", "midpoint", "nearest"):
        for dim in (None, 1):
            a = dt.quantile(ours, dt.tensor(q), dim, interpolation=interpolation)
            b = torch.quantile(
                theirs, torch.tensor(q).to(theirs.dtype), dim, interpolation=interpolation
            )
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dt.median(ours).numpy(), torch.median(theirs).numpy())
    np.testing.assert_allclose(
        dt.logcumsumexp(ours, 1).numpy(), torch.logcumsumexp(theirs, 1).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(dt.histc(ours, 7).numpy(), torch.histc(theirs, 7).numpy())
    m = rng.integers(0, 3, (4, 9))
    a, b = dt.mode(dt.tensor(m), 1), torch.mode(torch.tensor(m), 1)
    assert a.values.tolist() == b.values.tolist() and a.indices.tolist() == b.indices.tolist()


def test_gradients_match_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    for fn in (
        lambda m, t: m.logcumsumexp(t, 1) * t,
        lambda m, t: m.quantile(t, 0.37, 1),
        lambda m, t: m.nanmean(t, 0),
        lambda m, t: m.median(t),
        lambda m, t: m.cummax(t, 1)[0],
        lambda m, t: m.diff(t, 2, 1),
    ):
        ours, theirs = dt.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        fn(dt, ours).sum().backward()
        fn(torch, theirs).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


# --- fixes after review (dc364c1) ---


def test_nansum_nanmean_of_a_0d_tensor():
    assert dt.nansum(dt.tensor(2.0)).item() == 2.0
    assert dt.nansum(dt.tensor(float("nan"))).item() == 0.0
    assert dt.nanmean(dt.tensor(3.0)).item() == 3.0


def test_mode_counts_nans_as_one_value():
    result = dt.mode(dt.tensor([float("nan"), float("nan"), 1.0]))
    assert math.isnan(result.values.item()) and result.indices.item() in (0, 1)
    rows = dt.mode(dt.tensor([[2.0, float("nan"), 2.0, float("nan"), float("nan")]]), 1)
    assert math.isnan(rows.values.item())


def test_histc_bins_in_the_input_dtype_and_refuses_infinite_range():
    # float32 0.7 and 0.9 sit just above 0.7 and below 0.9 in float64; in float32 arithmetic
    # (PyTorch's) they fall in bins 7 and 9.
    counts = dt.histc(dt.tensor([0.7, 0.9]), 10, 0, 1).tolist()
    assert counts == [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="not finite"):
        dt.histc(dt.tensor([1.0, float("inf")]), 4)
    with pytest.raises(ValueError, match="not finite"):
        dt.histc(dt.tensor([1.0, float("nan")]), 4)
