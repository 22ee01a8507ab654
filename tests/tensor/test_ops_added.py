"""erf, erfinv, tan, reciprocal, nan_to_num, bernoulli, hstack, vstack, addmm, cdist,
dtrain.linalg and the Tensor methods added for PyTorch parity (stride, new, in-place unary
ops, index_fill_, fill_diagonal_, unflatten, movedim, swapaxes, ...). Values against numpy
(and torch where installed), gradients against finite differences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt

_ERF = np.vectorize(math.erf)


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def test_erf_tan_reciprocal_values_and_gradients(check):
    x = check.rand(3, 4)
    check.op(dt.erf, _ERF, x, atol=1e-13)
    check.op(dt.tan, np.tan, check.rand(3, 4, low=-1.2, high=1.2))
    check.op(dt.reciprocal, np.reciprocal, check.away(3, 4))
    assert dt.erf(dt.tensor([1, 2])).dtype == dt.float32  # integers compute in float32
    assert abs(dt.tensor([0.5]).erf().item() - math.erf(0.5)) < 1e-6


def test_erfinv_inverts_erf_with_its_gradient(check):
    x = check.rand(3, 5, low=-0.99, high=0.99)
    y = dt.erfinv(check.leaf(x))
    np.testing.assert_allclose(_ERF(np.asarray(y.detach().cpu())), x, atol=1e-14)
    check.grad(dt.erfinv, x)
    edges = dt.erfinv(dt.tensor([-1.0, 1.0, 1.5, -2.0, 0.0]))
    assert edges.tolist()[:2] == [-math.inf, math.inf]
    assert np.isnan(edges.tolist()[2:4]).all() and edges.tolist()[4] == 0
    tail = dt.erfinv(dt.tensor([1 - 1e-12, -(1 - 1e-10)], dtype=dt.float64)).tolist()
    assert abs(math.erfc(tail[0]) - 1e-12) < 1e-16 and abs(math.erfc(-tail[1]) - 1e-10) < 1e-15


def test_erf_erfinv_tan_match_torch(torch):
    x = np.linspace(-0.999, 0.999, 101)
    for ours, theirs in [(dt.erf, torch.erf), (dt.erfinv, torch.erfinv), (dt.tan, torch.tan)]:
        for dtype in (np.float32, np.float64):
            got = ours(dt.tensor(x.astype(dtype))).numpy()
            want = theirs(torch.tensor(x.astype(dtype))).numpy()
            tol = 2e-6 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_nan_to_num(check):
    x = np.array([np.nan, np.inf, -np.inf, 1.5])
    out = dt.nan_to_num(check.leaf(x))
    big = np.finfo(np.float64).max
    np.testing.assert_array_equal(np.asarray(out.detach().cpu()), [0, big, -big, 1.5])
    out = check.leaf(x).nan_to_num(nan=1.0, posinf=2.0, neginf=-2.0)
    assert out.tolist() == [1.0, 2.0, -2.0, 1.5]
    leaf = check.leaf(x)
    dt.nan_to_num(leaf).sum().backward()
    assert leaf.grad.tolist() == [0, 0, 0, 1]  # the replaced elements are constants
    assert dt.nan_to_num(dt.tensor([1, 2])).tolist() == [1, 2]


def test_bernoulli_and_random_fills():
    dt.manual_seed(0)
    p = dt.full((20000,), 0.25)
    draws = dt.bernoulli(p)
    assert draws.dtype == dt.float32 and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert abs(draws.mean().item() - 0.25) < 0.02
    assert dt.bernoulli(dt.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]
    assert abs(dt.zeros(20000).bernoulli_(0.7).mean().item() - 0.7) < 0.02
    ints = dt.zeros(1000, dtype=dt.int64).bernoulli_(dt.full((1000,), 0.5))
    assert ints.dtype == dt.int64 and 400 < ints.sum().item() < 600
    samples = dt.empty(20000).exponential_(2.0)
    assert samples.min().item() >= 0 and abs(samples.mean().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dt.bernoulli(dt.tensor([1.5]))
    with pytest.raises(TypeError, match="floating-point"):
        dt.zeros(2, dtype=dt.int64).exponential_()
    dt.manual_seed(3)
    first = dt.bernoulli(dt.full((50,), 0.5))
    dt.manual_seed(3)
    assert dt.equal(first, dt.bernoulli(dt.full((50,), 0.5)))


def test_hstack_vstack(check):
    a, b = check.rand(2, 3), check.rand(2, 2, seed=1)
    check.op(lambda x, y: dt.hstack([x, y]), lambda x, y: np.hstack([x, y]), a, b)
    c, d = check.rand(3), check.rand(3, seed=2)
    check.op(lambda x, y: dt.vstack([x, y]), lambda x, y: np.vstack([x, y]), c, d)
    check.op(lambda x, y: dt.hstack((x, y)), lambda x, y: np.hstack([x, y]), c, d)


def test_addmm(check):
    i, m1, m2 = check.rand(2, 4), check.rand(2, 3, seed=1), check.rand(3, 4, seed=2)
    check.op(
        lambda a, b, c: dt.addmm(a, b, c, beta=0.5, alpha=2.0),
        lambda a, b, c: 0.5 * a + 2.0 * b @ c,
        i, m1, m2,
    )  # fmt: skip
    check.op(lambda a, b, c: a.addmm(b, c), lambda a, b, c: a + b @ c, check.rand(4), m1, m2)
    nan_input = dt.full((2, 4), math.nan)
    assert not dt.addmm(nan_input, dt.tensor(m1), dt.tensor(m2), beta=0).isnan().any()


def _cdist_reference(x1: np.ndarray, x2: np.ndarray, p: float = 2.0) -> np.ndarray:
    difference = np.abs(x1[..., :, None, :] - x2[..., None, :, :])
    return (difference**p).sum(-1) ** (1 / p)


def test_cdist_values_and_gradients(check):
    x1, x2 = check.rand(4, 3), check.rand(5, 3, seed=1)
    check.op(dt.cdist, _cdist_reference, x1, x2)
    check.op(dt.cdist, _cdist_reference, check.rand(2, 4, 3), check.rand(1, 5, 3, seed=1))
    check.op(lambda a, b: dt.cdist(a, b, p=1), lambda a, b: _cdist_reference(a, b, 1), x1, x2)
    # a zero distance has gradient 0 (not NaN), as PyTorch's
    same = check.leaf(x1)
    dt.cdist(same, same.detach()).sum().backward()
    assert np.isfinite(np.asarray(same.grad.cpu())).all()


def test_cdist_matrix_product_path_for_large_inputs():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(300, 64)), rng.normal(size=(200, 64))  # past the direct limit
    got = dt.cdist(dt.tensor(x1), dt.tensor(x2)).numpy()
    np.testing.assert_allclose(got, _cdist_reference(x1, x2), rtol=1e-10)


def test_cdist_and_addmm_match_torch(torch):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 7, 3))
    ours1, ours2 = dt.tensor(x1, requires_grad=True), dt.tensor(x2, requires_grad=True)
    t1, t2 = torch.tensor(x1, requires_grad=True), torch.tensor(x2, requires_grad=True)
    dt.cdist(ours1, ours2).sum().backward()
    torch.cdist(t1, t2).sum().backward()
    np.testing.assert_allclose(ours1.grad.numpy(), t1.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours2.grad.numpy(), t2.grad.numpy(), rtol=1e-10)
    a, b, c = rng.normal(size=(3,)), rng.normal(size=(2, 4)), rng.normal(size=(4, 3))
    got = dt.addmm(dt.tensor(a), dt.tensor(b), dt.tensor(c), beta=2, alpha=3).numpy()
    want = torch.addmm(torch.tensor(a), torch.tensor(b), torch.tensor(c), beta=2, alpha=3)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


# ---- dtrain.linalg --------------------------------------------------------------------------
def _well_conditioned(*shape: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=shape) + 3 * np.eye(shape[-1])


def test_linalg_inv_solve_det(check):
    a = _well_conditioned(3, 3)
    check.op(dt.linalg.inv, np.linalg.inv, a, atol=1e-12)
    check.op(dt.linalg.det, np.linalg.det, a, atol=1e-12)
    check.op(dt.linalg.inv, np.linalg.inv, _well_conditioned(2, 3, 3), atol=1e-12)
    b = check.rand(3, 2, seed=1)
    check.op(dt.linalg.solve, np.linalg.solve, a, b, atol=1e-12)
    vector = check.rand(3, seed=2)
    check.op(dt.linalg.solve, np.linalg.solve, a, vector, atol=1e-12)
    batched = _well_conditioned(2, 3, 3)
    check.op(dt.linalg.solve, lambda x, y: np.linalg.solve(x, y), batched, b, atol=1e-12)
    check.op(
        lambda x, y: dt.linalg.solve(x, y, left=False),
        lambda x, y: np.linalg.solve(x.T, y.T).T,
        a, check.rand(2, 3, seed=3), atol=1e-12,
    )  # fmt: skip
    with pytest.raises(ValueError, match="square"):
        dt.linalg.inv(dt.zeros(2, 3))


def test_linalg_norms(check):
    x = check.away(3, 4)
    check.op(dt.linalg.norm, lambda a: np.linalg.norm(a), x)
    check.op(
        lambda a: dt.linalg.vector_norm(a, 3, dim=1),
        lambda a: (np.abs(a) ** 3).sum(1) ** (1 / 3),
        x,
    )
    for order in ("fro", 1, -1, math.inf, -math.inf):
        check.op(
            lambda a, o=order: dt.linalg.matrix_norm(a, o),
            lambda a, o=order: np.linalg.norm(a, o),
            x,
        )
    check.op(lambda a: dt.linalg.norm(a, 1), lambda a: np.linalg.norm(a, 1), x)
    check.op(lambda a: dt.linalg.norm(a, dim=0), lambda a: np.linalg.norm(a, axis=0), x)
    kept = dt.linalg.matrix_norm(dt.ones(2, 3, 4), 1, keepdim=True)
    assert kept.shape == (2, 1, 1) and kept.tolist() == [[[3.0]], [[3.0]]]
    with pytest.raises(NotImplementedError, match="singular values"):
        dt.linalg.matrix_norm(dt.ones(2, 2), "nuc")


def test_linalg_matches_torch(torch):
    a = _well_conditioned(2, 3, 3)
    x = np.random.default_rng(1).normal(size=(2, 3, 3))
    for ours, theirs, arg in [
        (dt.linalg.inv, torch.linalg.inv, a),
        (dt.linalg.det, torch.linalg.det, a),
        (dt.linalg.norm, torch.linalg.norm, x),
        (
            lambda t: dt.linalg.matrix_norm(t, math.inf),
            lambda t: torch.linalg.matrix_norm(t, math.inf),
            x,
        ),
        (
            lambda t: dt.linalg.vector_norm(t, 1, dim=(0, 2)),
            lambda t: torch.linalg.vector_norm(t, 1, dim=(0, 2)),
            x,
        ),
    ]:
        mine, theirs_t = dt.tensor(arg, requires_grad=True), torch.tensor(arg, requires_grad=True)
        ours(mine).sum().backward()
        theirs(theirs_t).sum().backward()
        np.testing.assert_allclose(mine.grad.numpy(), theirs_t.grad.numpy(), rtol=1e-10)
    got = dt.linalg.solve(dt.tensor(a), dt.tensor(x[0])).numpy()
    np.testing.assert_allclose(got, torch.linalg.solve(torch.tensor(a), torch.tensor(x[0])).numpy())


# ---- Tensor methods ------------------------------------------------------------------------
def test_stride_storage_offset_data_ptr_ndimension():
    x = dt.zeros(3, 4)
    assert x.stride() == (4, 1) and x.stride(0) == 4 and x.t().stride() == (1, 4)
    assert x[:, 1:].stride() == (4, 1) and x[1:].storage_offset() == 4
    assert x[1, 2:].storage_offset() == 6 and x.storage_offset() == 0
    assert x[1:].data_ptr() - x.data_ptr() == 4 * x.element_size()
    assert x.ndimension() == 2 and dt.zeros(()).stride() == ()
    assert x.is_contiguous(memory_format=None) and not x.t().is_contiguous()
    with pytest.raises(ValueError, match="row-major"):
        x.is_contiguous(memory_format="torch.channels_last")


def test_new_legacy_method():
    x = dt.zeros(2, dtype=dt.float64)
    made = x.new(2, 3)
    assert made.shape == (2, 3) and made.dtype == dt.float64 and made.sum().item() == 0
    assert x.new([1, 2]).tolist() == [1.0, 2.0] and x.new([1, 2]).dtype == dt.float64
    assert x.new().shape == (0,) and x.new(dt.Size([4])).shape == (4,)


@pytest.mark.parametrize(
    "name, reference, low, high",
    [
        ("abs", np.abs, -2, 2), ("neg", np.negative, -2, 2), ("log", np.log, 0.5, 2),
        ("log1p", np.log1p, 0, 2), ("sqrt", np.sqrt, 0.5, 2),
        ("rsqrt", lambda a: 1 / np.sqrt(a), 0.5, 2),
        ("sin", np.sin, -2, 2), ("cos", np.cos, -2, 2), ("tan", np.tan, -1, 1),
        ("tanh", np.tanh, -2, 2), ("square", np.square, -2, 2), ("floor", np.floor, -2, 2),
        ("ceil", np.ceil, -2, 2), ("trunc", np.trunc, -2, 2), ("round", np.round, -2, 2),
        ("sign", np.sign, -2, 2), ("erf", _ERF, -2, 2), ("reciprocal", np.reciprocal, 0.5, 2),
    ],
)  # fmt: skip
def test_inplace_unary_methods(check, name, reference, low, high):
    values = check.rand(3, 4, low=low, high=high)
    x = dt.tensor(values, device=check.device)
    version = x._version[0]
    assert getattr(x, name + "_")() is x and x._version[0] == version + 1
    np.testing.assert_allclose(np.asarray(x.cpu()), reference(values), rtol=1e-12, atol=1e-13)
    # recorded under autograd: the gradient is the out-of-place op's
    leaf = check.leaf(values)
    y = leaf * 1
    getattr(y, name + "_")()
    y.sum().backward()
    expected = check.leaf(values)
    getattr(dt, name)(expected).sum().backward()
    np.testing.assert_allclose(np.asarray(leaf.grad.cpu()), np.asarray(expected.grad.cpu()))


def test_inplace_unary_refuses_float_results_in_integer_tensors():
    x = dt.tensor([1, 4, 9])
    with pytest.raises(RuntimeError, match="sqrt_"):
        x.sqrt_()
    assert x.abs_().tolist() == [1, 4, 9] and x.neg_().tolist() == [-1, -4, -9]
    y = dt.tensor([1.0, 2.0])
    assert y.pow_(2).tolist() == [1.0, 4.0] and y.clamp_min_(2).tolist() == [2.0, 4.0]


def test_index_fill_and_fill_diagonal(check):
    values = check.rand(3, 4)
    index = dt.tensor([0, 2], device=check.device)

    def reference(a):
        out = a.copy()
        out[:, [0, 2]] = -1.0
        return out

    check.op(lambda a: a.index_fill(1, index, -1.0), reference, values)
    x = dt.tensor(values, device=check.device)
    x.index_fill_(0, dt.tensor([-1], device=check.device), 7.0)
    assert x[2].tolist() == [7.0] * 4 and x[0].tolist() == values[0].tolist()
    tall = dt.zeros(7, 3)
    tall.fill_diagonal_(1.0, wrap=True)
    expected = np.zeros((7, 3))
    np.fill_diagonal(expected, 1.0, wrap=True)
    assert tall.tolist() == expected.tolist()
    cube = dt.zeros(2, 2, 2).fill_diagonal_(5)
    assert cube[0, 0, 0].item() == 5 and cube[1, 1, 1].item() == 5 and cube.sum().item() == 10
    with pytest.raises(ValueError, match="all dims equal"):
        dt.zeros(2, 3, 4).fill_diagonal_(1)

    def diagonal_filled(a):
        out = a * 1
        out.fill_diagonal_(0.0)
        return out

    check.grad(diagonal_filled, check.rand(3, 3))


def test_unflatten_movedim_swapaxes(check):
    x = check.rand(2, 12, 3)
    check.op(lambda a: a.unflatten(1, (3, -1)), lambda a: a.reshape(2, 3, 4, 3), x)
    check.op(lambda a: dt.movedim(a, 0, -1), lambda a: np.moveaxis(a, 0, -1), x)
    check.op(lambda a: a.moveaxis((0, 1), (2, 0)), lambda a: np.moveaxis(a, (0, 1), (2, 0)), x)
    check.op(lambda a: a.swapaxes(0, 2), lambda a: np.swapaxes(a, 0, 2), x)
    check.op(lambda a: dt.swapdims(a, 1, 2), lambda a: np.swapaxes(a, 1, 2), x)
    with pytest.raises(ValueError, match="do not split"):
        dt.zeros(2, 12).unflatten(1, (5, -1))


def test_methods_match_torch(torch):
    values = np.arange(24.0).reshape(2, 3, 4)
    ours, theirs = dt.tensor(values), torch.tensor(values)
    assert ours.movedim((0, 2), (1, 0)).shape == tuple(theirs.movedim((0, 2), (1, 0)).shape)
    assert ours.unflatten(2, (2, 2)).shape == tuple(theirs.unflatten(2, (2, 2)).shape)
    assert ours.permute(2, 0, 1).stride() == theirs.permute(2, 0, 1).stride()
    assert ours[1:, 1].storage_offset() == theirs[1:, 1].storage_offset()
    square_ours, square_theirs = dt.zeros(5, 2), torch.zeros(5, 2)
    square_ours.fill_diagonal_(3.0, wrap=True)
    square_theirs.fill_diagonal_(3.0, wrap=True)
    assert square_ours.tolist() == square_theirs.tolist()
    index = [0, 3]
    got = ours.index_fill(2, dt.tensor(index), -5.0).numpy()
    want = theirs.index_fill(2, torch.tensor(index), -5.0).numpy()
    np.testing.assert_array_equal(got, want)
