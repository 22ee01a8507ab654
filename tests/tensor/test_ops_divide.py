"""``//``, ``%``, fmod and ``div(rounding_mode=)``: values against numpy (and PyTorch when
installed), integer dtypes, gradients against finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt

A = [-7, -3, 0, 3, 7, -8]
B = [2, -2, 3, -3, 2, 3]


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def test_integer_floor_division_and_remainder():
    a, b = dt.tensor(A), dt.tensor(B)
    assert (a // b).tolist() == list(np.floor_divide(A, B))
    assert (a % b).tolist() == list(np.remainder(A, B))
    assert dt.fmod(a, b).tolist() == list(np.fmod(A, B))
    assert dt.div(a, b, rounding_mode="floor").tolist() == list(np.floor_divide(A, B))
    assert dt.div(a, b, rounding_mode="trunc").tolist() == [int(x / y) for x, y in zip(A, B)]
    for out in (a // b, a % b, dt.div(a, b, rounding_mode="trunc"), a // 2, 7 // b, 7 % b):
        assert out.dtype == dt.int64
    assert (dt.arange(5) // 2).tolist() == [0, 0, 1, 1, 2]
    assert (dt.arange(5) % 2).tolist() == [0, 1, 0, 1, 0]
    assert a.div(b, rounding_mode="floor").tolist() == (a // b).tolist()


def test_float_operands_promote_to_float32():
    assert (dt.arange(5) // 2.0).dtype == dt.float32
    assert (dt.arange(5) % 2.5).dtype == dt.float32
    x = dt.tensor([-7.5, -3.0, 3.5, 7.0])
    np.testing.assert_array_equal((x // 2).numpy(), np.floor_divide(x.numpy(), 2))
    np.testing.assert_array_equal((x % -2).numpy(), np.remainder(x.numpy(), -2))
    np.testing.assert_array_equal((5.5 // dt.tensor([2.0, 3.0])).numpy(), [2.0, 1.0])


def test_division_by_zero():
    with pytest.raises(ZeroDivisionError):
        dt.tensor([1, 2]) // dt.tensor([0, 1])
    with pytest.raises(ZeroDivisionError):
        dt.tensor([1, 2]) % 0
    x = dt.tensor([1.0, -1.0, 0.0])
    np.testing.assert_array_equal((x // 0.0).numpy(), [np.inf, -np.inf, np.nan])
    assert np.isnan((x % 0.0).numpy()).all()


def test_in_place_floor_division_and_remainder():
    i = dt.arange(5)
    same = i
    i //= 2
    assert i is same and i.tolist() == [0, 0, 1, 1, 2]
    i %= 2
    assert i is same and i.tolist() == [0, 0, 1, 1, 0]
    with pytest.raises(RuntimeError, match="float32"):
        i //= 2.5


def test_remainder_gradient(check):
    a, b = check.rand(3, 4, seed=1) * 3, check.away(3, 4, gap=0.5, seed=2)
    check.op(lambda x, y: x % y, np.remainder, a, b)
    check.op(dt.fmod, np.fmod, a, b)
    check.op(lambda x: x % 0.7, lambda x: np.remainder(x, 0.7), a)


def test_rounded_division_has_zero_gradient_and_floor_divide_none():
    x = dt.tensor([1.5, -2.5], requires_grad=True)
    y = dt.tensor([2.0, 3.0], requires_grad=True)
    dt.div(x, y, rounding_mode="trunc").sum().backward()
    assert x.grad.tolist() == [0.0, 0.0] and y.grad.tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="floor_divide"):
        (x // y).sum().backward()
    with pytest.raises(ValueError, match="rounding_mode"):
        dt.div(x, y, rounding_mode="round")


def test_matches_torch(torch):
    pairs = [(A, B), ([-7.5, -3.0, 0.5, 3.5], [2.0, -2.0, 3.0, -0.7])]
    for a, b in pairs:
        ours_a, ours_b, theirs_a, theirs_b = (
            dt.tensor(a),
            dt.tensor(b),
            torch.tensor(a),
            torch.tensor(b),
        )
        for ours, theirs in [
            (ours_a // ours_b, theirs_a // theirs_b),
            (ours_a % ours_b, theirs_a % theirs_b),
            (dt.fmod(ours_a, ours_b), torch.fmod(theirs_a, theirs_b)),
            (
                dt.div(ours_a, ours_b, rounding_mode="trunc"),
                torch.div(theirs_a, theirs_b, rounding_mode="trunc"),
            ),
            (
                dt.div(ours_a, ours_b, rounding_mode="floor"),
                torch.div(theirs_a, theirs_b, rounding_mode="floor"),
            ),
            (ours_a // 2, theirs_a // 2),
            (3 % ours_b, 3 % theirs_b),
        ]:
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
            assert str(theirs.dtype) == f"torch.{ours.dtype}"
    x = torch.tensor([1.5, -2.5], requires_grad=True)
    y = torch.tensor([2.0, 3.0], requires_grad=True)
    (x % y).sum().backward()
    ours_x = dt.tensor([1.5, -2.5], requires_grad=True)
    ours_y = dt.tensor([2.0, 3.0], requires_grad=True)
    (ours_x % ours_y).sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), x.grad.numpy())
    np.testing.assert_allclose(ours_y.grad.numpy(), y.grad.numpy())
