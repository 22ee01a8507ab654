"""Rounded division and remainders: ``//``, ``%``, ``fmod``, ``div(rounding_mode=...)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet, unbroadcast
from dtrain._tensor.ops.arithmetic import binary
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


def _check_integer_divisor(a: Any, b: Any, name: str) -> None:
    """Integer division by zero is an error in PyTorch (numpy gives 0 with a warning).
    Checked on the CPU only: on a GPU the check would wait for the device."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        dtype = getattr(b, "dtype", None)
    if dtype is None or dtype.kind not in "biu" or get_array_module(a, b) is not np:
        return
    if np.any(np.asarray(b) == 0):
        raise ZeroDivisionError(f"{name}: integer division by zero")


class FloorDivide(Op):
    """``a // b`` rounded toward -inf. Not differentiable, as in PyTorch."""

    def forward(self, a: Any, b: Any) -> Any:
        _check_integer_divisor(a, b, "floor_divide")
        xp = get_array_module(a, b)
        with quiet(xp):
            return xp.floor_divide(a, b)

    def backward(self, grad: Any) -> tuple:
        raise RuntimeError(
            "the derivative of floor_divide (//) is not implemented, as in PyTorch; use "
            "dtrain.div(a, b, rounding_mode='floor'), whose gradient is zero"
        )


class FloorDiv(Op):
    """``div(a, b, rounding_mode='floor')``: a step function, gradient zero.
    (``TruncDiv`` rounds toward zero.)"""

    mode = "floor"

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a_shape, self.b_shape = getattr(a, "shape", ()), getattr(b, "shape", ())
        _check_integer_divisor(a, b, "div")
        with quiet(xp):
            return self._divide(xp, a, b)

    def _divide(self, xp: Any, a: Any, b: Any) -> Any:
        if self.mode == "floor":
            return xp.floor_divide(a, b)
        quotient = xp.floor_divide(a, b)
        if quotient.dtype.kind == "f":
            return xp.trunc(xp.true_divide(a, b)).astype(quotient.dtype, copy=False)
        # Integers: floor, then one step toward zero where the signs differ and it is inexact.
        inexact = (xp.remainder(a, b) != 0) & ((xp.asarray(a) < 0) != (xp.asarray(b) < 0))
        return quotient + inexact.astype(quotient.dtype)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_a, need_b = self.needs_input_grad
        return (
            xp.zeros(self.a_shape, dtype=grad.dtype) if need_a else None,
            xp.zeros(self.b_shape, dtype=grad.dtype) if need_b else None,
        )


class TruncDiv(FloorDiv):
    mode = "trunc"


class Remainder(Op):
    """``a % b`` with the divisor's sign (Python's and numpy's rule, as PyTorch's ``%``);
    ``fmod`` takes the dividend's. Gradients: 1 for a, ``-floor(a/b)`` (``-trunc`` for fmod)
    for b."""

    reads_inputs = True
    truncated = False

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a, self.b = a, b
        _check_integer_divisor(a, b, "fmod" if self.truncated else "remainder")
        with quiet(xp):
            return xp.fmod(a, b) if self.truncated else xp.remainder(a, b)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        grad_a = grad_b = None
        if need_a:
            grad_a = unbroadcast(grad, getattr(a, "shape", ()))
        if need_b:
            with quiet(xp):  # the quotient each rounding gives, as a // b does (9 for
                quotient = xp.true_divide(a, b)  # 1.0 // 0.1, where floor(1.0 / 0.1) is 10)
                quotient = xp.trunc(quotient) if self.truncated else xp.floor_divide(a, b)
            grad_b = unbroadcast(-grad * quotient.astype(grad.dtype, copy=False), b.shape)
        return grad_a, grad_b


class Fmod(Remainder):
    truncated = True


def floor_divide(input: Any, other: Any) -> Tensor:
    """``input // other``, rounded toward -inf (PyTorch's ``//``); ints stay ints, and an
    integer division by zero raises ZeroDivisionError. Not differentiable (as PyTorch)."""
    return binary(FloorDivide, input, other)


def remainder(input: Any, other: Any) -> Tensor:
    """``input % other`` with the sign of ``other``, as Python's ``%`` and PyTorch's."""
    return binary(Remainder, input, other)


def fmod(input: Any, other: Any) -> Tensor:
    """The remainder of ``input / other`` with the sign of ``input`` (C's ``fmod``)."""
    return binary(Fmod, input, other)


def rounded_div(input: Any, other: Any, rounding_mode: str) -> Tensor:
    """``div`` with ``rounding_mode`` 'floor' or 'trunc': integers stay integers."""
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(
            f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}"
        )
    return binary(FloorDiv if rounding_mode == "floor" else TruncDiv, input, other)
