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
