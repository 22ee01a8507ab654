"""torch.special's ``gammainc``, ``gammaincc`` and ``zeta``: binary, broadcasting, with
PyTorch's gradients (w.r.t. ``x`` for the incomplete gammas, ``q`` for zeta; asking for
the other one's is an error at backward, as in PyTorch)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet, unbroadcast
from dtrain._tensor.ops.special_common import expect_tensor
from dtrain._tensor.ops.trig import float_binary
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import special_incomplete as _incomplete
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.gamma_functions import lgamma


def _arrays(a: Any, b: Any) -> tuple[Any, Any]:
    """Both operands as arrays: a Python number takes the other operand's dtype."""
    xp = get_array_module(a, b)
    if not hasattr(a, "dtype"):
        a = xp.asarray(a, dtype=b.dtype)
    if not hasattr(b, "dtype"):
        b = xp.asarray(b, dtype=a.dtype)
    return a, b


def _no_gradient(name: str, argument: str, instead: str) -> RuntimeError:
    return RuntimeError(
        f"the derivative of {name} with respect to {argument} is not implemented (as in "
        f"PyTorch); only {instead} is differentiable: pass {argument} detached"
    )


class Gammainc(Op):
    """``P(a, x)``; d/dx = ``x^(a-1) e^-x / Gamma(a)`` (``-`` that for ``Q``)."""

    reads_inputs = True
    upper = False

    def forward(self, a: Any, x: Any) -> Any:
        a, x = _arrays(a, x)
        self.a, self.x = a, x
        if self.upper:
            return _incomplete.gammaincc(a, x)
        return _incomplete.gammainc(a, x)

    def backward(self, grad: Any) -> tuple:
        name = "gammaincc" if self.upper else "gammainc"
        if self.needs_input_grad[0]:
            raise _no_gradient(name, "input (a)", "other (x)")
        xp = get_array_module(grad)
        with quiet(xp):
            a, x = self.a, self.x
            density = xp.exp((a - 1) * xp.log(x) - x - lgamma(a))
        slope = (-density if self.upper else density).astype(grad.dtype, copy=False)
        return None, unbroadcast(grad * slope, x.shape)


class Gammaincc(Gammainc):
    upper = True


class Zeta(Op):
    """Hurwitz ``zeta(x, q)``; d/dq = ``-x zeta(x + 1, q)``."""

    reads_inputs = True

    def forward(self, x: Any, q: Any) -> Any:
        x, q = _arrays(x, q)
        self.x, self.q = x, q
        return _incomplete.zeta(x, q)

    def backward(self, grad: Any) -> tuple:
        if self.needs_input_grad[0]:
            raise _no_gradient("zeta", "input (x)", "other (q)")
        with quiet(get_array_module(grad)):
            slope = -self.x * _incomplete.zeta(self.x + 1, self.q)
        return None, unbroadcast(grad * slope.astype(grad.dtype, copy=False), self.q.shape)


def gammainc(input: Any, other: Any) -> Tensor:
    """The regularised lower incomplete gamma function ``P(input, other)``, elementwise with
    broadcasting: NaN for negative arguments; differentiable in ``other`` only."""
    expect_tensor("gammainc", input, other)
    return float_binary(Gammainc, input, other)


def gammaincc(input: Any, other: Any) -> Tensor:
    """The regularised upper incomplete gamma function ``Q = 1 - P``, elementwise with
    broadcasting; differentiable in ``other`` only."""
    expect_tensor("gammaincc", input, other)
    return float_binary(Gammaincc, input, other)


def zeta(input: Any, other: Any) -> Tensor:
    """The Hurwitz zeta function ``sum_k (other + k)^-input``, elementwise with
    broadcasting: +inf at ``input = 1``, NaN below; differentiable in ``other`` only."""
    expect_tensor("zeta", input, other)
    return float_binary(Zeta, input, other)


__all__ = ["gammainc", "gammaincc", "zeta"]
