"""Shared helpers for the op tests: the ``check`` fixture.

``check.op(fn, reference, *arrays)`` runs ``fn`` on float64 leaves made from ``arrays``,
compares the result with ``reference(*arrays)`` computed in numpy, and then compares the
gradient with central finite differences (``dtrain.autograd.gradcheck``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd import gradcheck


class Checker:
    """Value and gradient checks against numpy; one instance serves every test.

    Leaves are made on ``device`` (``--device=cuda`` puts them on the GPU); references stay
    in numpy on the CPU.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    @staticmethod
    def rand(*shape: int, low: float = -2.0, high: float = 2.0, seed: int = 0) -> np.ndarray:
        """Uniform float64 values in ``[low, high)``."""
        return np.random.default_rng(seed).uniform(low, high, size=shape)

    @staticmethod
    def away(*shape: int, gap: float = 0.2, high: float = 2.0, seed: int = 0) -> np.ndarray:
        """Float64 values with ``gap <= |x| < high``: clear of kinks at 0 (abs, relu …)."""
        rng = np.random.default_rng(seed)
        return rng.uniform(gap, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)

    def leaf(self, array: np.ndarray) -> dt.Tensor:
        """A float64 leaf that requires grad, on the checker's device."""
        return dt.tensor(
            np.asarray(array, dtype=np.float64), requires_grad=True, device=self.device
        )

    def close(
        self, actual: dt.Tensor, expected: np.ndarray, atol: float = 1e-10, rtol: float = 1e-7
    ):
        """``actual``'s shape and values equal ``expected``'s (NaN equals NaN)."""
        assert isinstance(actual, dt.Tensor), f"expected a Tensor, got {type(actual).__name__}"
        expected = np.asarray(expected)
        assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
        np.testing.assert_allclose(
            np.asarray(actual.detach()), expected, atol=atol, rtol=rtol, equal_nan=True
        )

    def grad(self, fn: Callable, *arrays: np.ndarray, atol: float = 1e-5) -> None:
        """Autograd's gradient of ``fn`` equals finite differences at ``arrays``."""
        assert gradcheck(fn, [self.leaf(a) for a in arrays], atol=atol)

    def op(
        self,
        fn: Callable,
        reference: Callable,
        *arrays: np.ndarray,
        atol: float = 1e-10,
        grad: bool = True,
    ) -> None:
        """Forward against ``reference`` in float64, then the gradient by gradcheck."""
        out = fn(*[self.leaf(a) for a in arrays])
        assert out.device.type == self.device, f"result on {out.device}, not {self.device}"
        self.close(out, reference(*arrays), atol=atol)
        assert out.dtype == np.float64
        if grad:
            self.grad(fn, *arrays)


@pytest.fixture(scope="session")
def check(test_device: str) -> Checker:
    """The value / gradient checker (session-scoped, so hypothesis tests may use it)."""
    return Checker(test_device)
