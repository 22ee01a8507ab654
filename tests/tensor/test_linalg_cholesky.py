"""dtrain.linalg.cholesky, solve_triangular and dt.cholesky_solve: values against numpy
(and PyTorch when installed), gradients by finite differences in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def spd(*batch: int, n: int = 3, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=batch + (n, n))
    return m @ np.swapaxes(m, -1, -2) + n * np.eye(n)


def _make_spd(x: dt.Tensor) -> dt.Tensor:
    """A symmetric positive-definite function of ``x``: the gradient lands on every entry."""
    n = x.shape[-1]
    return x @ x.mT + n * dt.eye(n, dtype=x.dtype, device=x.device)


def test_cholesky_matches_numpy_batched_and_upper(check):
    a = spd(2, 4)
    lower = dt.linalg.cholesky(check.leaf(a))
    check.close(lower, np.linalg.cholesky(a))
    upper = dt.linalg.cholesky(check.leaf(a), upper=True)
    check.close(upper, np.swapaxes(np.linalg.cholesky(a), -1, -2))
    # only the lower triangle is read
    garbage = a + np.triu(np.full((3, 3), 7.0), 1)
    check.close(dt.linalg.cholesky(check.leaf(garbage)), np.linalg.cholesky(a))


def test_cholesky_gradient(check):
    x = check.rand(2, 3, 3, seed=1)
    check.grad(lambda t: dt.linalg.cholesky(_make_spd(t)), x)
    check.grad(lambda t: dt.linalg.cholesky(_make_spd(t), upper=True), x)


def test_cholesky_refuses_bad_input():
    with pytest.raises(np.linalg.LinAlgError, match="not positive-definite"):
        dt.linalg.cholesky(dt.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        dt.linalg.cholesky(dt.ones(2, 3))
    with pytest.raises(ValueError, match="matrices"):
        dt.linalg.cholesky(dt.ones(3))


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("unitriangular", [False, True])
def test_solve_triangular_values_and_gradients(check, upper, left, unitriangular):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3, 3)) + 4 * np.eye(3)
    b = rng.normal(size=(2, 3, 2)) if left else rng.normal(size=(2, 2, 3))
    t = np.triu(a) if upper else np.tril(a)
    if unitriangular:
        t = t - np.diag(np.diag(t[0])) * 0  # keep the shape; the diagonal is set below
        idx = np.arange(3)
        t[..., idx, idx] = 1.0

    def reference(a_: np.ndarray, b_: np.ndarray) -> np.ndarray:
        if left:
            return np.linalg.solve(t, b_)
        return np.swapaxes(np.linalg.solve(np.swapaxes(t, -1, -2), np.swapaxes(b_, -1, -2)), -1, -2)

    def fn(a_: dt.Tensor, b_: dt.Tensor) -> dt.Tensor:
        return dt.linalg.solve_triangular(
            a_, b_, upper=upper, left=left, unitriangular=unitriangular
        )

    check.op(fn, reference, a, b, atol=1e-9)


def test_solve_triangular_broadcasts_batches(check):
    rng = np.random.default_rng(3)
    a = np.tril(rng.normal(size=(3, 3))) + 3 * np.eye(3)
    b = rng.normal(size=(4, 3, 2))
    fn = lambda a_, b_: dt.linalg.solve_triangular(a_, b_, upper=False)
    check.op(fn, lambda a_, b_: np.linalg.solve(a_, b_), a, b, atol=1e-9)
    with pytest.raises(ValueError, match="fit B"):
        dt.linalg.solve_triangular(dt.eye(3), dt.ones(2, 1), upper=False)


def test_cholesky_solve(check):
    a = spd(2)
    b = np.random.default_rng(4).normal(size=(2, 3, 2))
    lower = np.linalg.cholesky(a)
    fn = lambda b_, l_: dt.cholesky_solve(b_, l_)
    check.op(fn, lambda b_, l_: np.linalg.solve(a, b_), b, lower, atol=1e-9, grad=False)
    upper = dt.cholesky_solve(check.leaf(b), check.leaf(np.swapaxes(lower, -1, -2)), upper=True)
    check.close(upper, np.linalg.solve(a, b), atol=1e-9)


def test_against_pytorch(torch):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 3))
    weight = rng.normal(size=(2, 3, 3))
    ours = dt.tensor(x, requires_grad=True)
    (dt.linalg.cholesky(_make_spd(ours)) * dt.tensor(weight)).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    spd_t = theirs @ theirs.mT + 3 * torch.eye(3, dtype=torch.float64)
    (torch.linalg.cholesky(spd_t) * torch.tensor(weight)).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    a = np.tril(rng.normal(size=(3, 3))) + 3 * np.eye(3)
    b = rng.normal(size=(2, 3, 3))
    a_ours, b_ours = dt.tensor(a, requires_grad=True), dt.tensor(b, requires_grad=True)
    a_t, b_t = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out = dt.linalg.solve_triangular(a_ours, b_ours, upper=False, left=False)
    expected = torch.linalg.solve_triangular(a_t, b_t, upper=False, left=False)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    (out * dt.tensor(b)).sum().backward()
    (expected * torch.tensor(b)).sum().backward()
    np.testing.assert_allclose(a_ours.grad.numpy(), a_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b_ours.grad.numpy(), b_t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_solve_triangular_with_a_zero_pivot_gives_inf_not_an_error():
    a = dt.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=dt.float64)
    out = dt.linalg.solve_triangular(a, dt.ones(2, 1, dtype=dt.float64), upper=False)
    np.testing.assert_array_equal(out.numpy(), [[np.inf], [-np.inf]])  # 1/0, then 1 - inf
    upper = dt.linalg.solve_triangular(a.mT, dt.ones(2, 1, dtype=dt.float64), upper=True)
    assert np.isnan(upper.numpy()[0, 0]) and upper.numpy()[1, 0] == 1.0  # (1 - 1 * 1) / 0
    batched = dt.linalg.solve_triangular(
        dt.stack([a, dt.eye(2, dtype=dt.float64)]), dt.ones(2, 2, 1, dtype=dt.float64), upper=False
    )
    np.testing.assert_array_equal(batched.numpy()[1], [[1.0], [1.0]])


def test_solve_triangular_zero_pivot_against_torch(torch):
    a = np.array([[[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]])
    b = np.array([[[1.0], [0.0], [2.0]]])
    for upper in (False, True):
        m = a if not upper else np.swapaxes(a, -1, -2)
        ours = dt.linalg.solve_triangular(dt.tensor(m), dt.tensor(b), upper=upper).numpy()
        theirs = torch.linalg.solve_triangular(torch.tensor(m), torch.tensor(b), upper=upper)
        np.testing.assert_array_equal(ours, theirs.numpy())


def _cholesky_solve_grads(upper: bool, lower: np.ndarray, b: np.ndarray, w: np.ndarray):
    factor = np.swapaxes(lower, -1, -2).copy() if upper else lower
    leaf = dt.tensor(factor, requires_grad=True)
    b_leaf = dt.tensor(b, requires_grad=True)
    (dt.cholesky_solve(b_leaf, leaf, upper=upper) * dt.tensor(w)).sum().backward()
    return factor, leaf.grad.numpy(), b_leaf.grad.numpy()


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_gradients(upper):
    """The factor's triangle by finite differences; the full matrix is PyTorch's
    ``-(gB X^T + X gB^T) L`` (``-L (...)`` if upper), the other triangle included."""
    rng = np.random.default_rng(6)
    lower = np.linalg.cholesky(spd(2))
    b, w = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 2))
    factor, grad, grad_b = _cholesky_solve_grads(upper, lower, b, w)

    def loss(f: np.ndarray, b_: np.ndarray) -> float:
        t = np.triu(f) if upper else np.tril(f)
        a = np.swapaxes(t, -1, -2) @ t if upper else t @ np.swapaxes(t, -1, -2)
        return float((np.linalg.solve(a, b_) * w).sum())

    eps = 1e-6
    numeric = np.zeros_like(factor)
    for idx in np.ndindex(factor.shape):
        step = np.zeros_like(factor)
        step[idx] = eps
        numeric[idx] = (loss(factor + step, b) - loss(factor - step, b)) / (2 * eps)
    triangle = np.triu if upper else np.tril
    np.testing.assert_allclose(triangle(grad), numeric, atol=1e-8)
    a = np.swapaxes(factor, -1, -2) @ factor if upper else factor @ np.swapaxes(factor, -1, -2)
    x = np.linalg.solve(a, b)
    np.testing.assert_allclose(grad_b, np.linalg.solve(a, w), atol=1e-12)
    common = grad_b @ np.swapaxes(x, -1, -2)
    common = common + np.swapaxes(common, -1, -2)
    full = -(factor @ common) if upper else -(common @ factor)
    np.testing.assert_allclose(grad, full, atol=1e-12)
    assert np.abs(grad - triangle(grad)).max() > 1e-3  # the other triangle is filled


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_gradients_against_torch(upper, torch):
    rng = np.random.default_rng(7)
    lower = np.linalg.cholesky(spd(2))
    b, w = rng.normal(size=(4, 2, 3, 2)), rng.normal(size=(4, 2, 3, 2))
    factor, grad, grad_b = _cholesky_solve_grads(upper, lower, b, w)
    f_t, b_t = torch.tensor(factor, requires_grad=True), torch.tensor(b, requires_grad=True)
    (torch.cholesky_solve(b_t, f_t, upper=upper) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(grad, f_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_b, b_t.grad.numpy(), rtol=1e-10, atol=1e-12)
