"""``+ - * / **`` and negation, with broadcasting, scalars and PyTorch's type promotion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import check_broadcast, unbroadcast
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import DEFAULT_FLOAT

_SCALARS = (int, float, bool)


class Add(Op):
    def forward(self, a: Any, b: Any) -> Any:
        self.a_shape = getattr(a, "shape", ())
        self.b_shape = getattr(b, "shape", ())
        return a + b

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad, self.a_shape) if need_a else None,
            unbroadcast(grad, self.b_shape) if need_b else None,
        )


class Sub(Op):
    def forward(self, a: Any, b: Any) -> Any:
        self.a_shape = getattr(a, "shape", ())
        self.b_shape = getattr(b, "shape", ())
        return a - b

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad, self.a_shape) if need_a else None,
            unbroadcast(-grad, self.b_shape) if need_b else None,
        )


class Mul(Op):
    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a * b

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        return (
            unbroadcast(grad * b, a.shape) if need_a else None,
            unbroadcast(grad * a, b.shape) if need_b else None,
        )


class Div(Op):
    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a / b

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        grad_a = grad / b
        return (
            unbroadcast(grad_a, a.shape) if need_a else None,
            unbroadcast(-grad_a * a / b, b.shape) if need_b else None,
        )


class Neg(Op):
    def forward(self, a: Any) -> Any:
        return -a

    def backward(self, grad: Any) -> tuple:
        return (-grad,)


class Pow(Op):
    reads_inputs = True
    reads_output = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        self.out = a**b
        return self.out

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        xp = get_array_module(grad)
        grad_a = grad_b = None
        if need_a:
            # d(a^b)/da = b a^(b-1), which is 0 where b == 0 (PyTorch); a^(b-1) alone would be
            # inf at a == 0 and make it 0 * inf = nan, so raise a to 1 there instead.
            if isinstance(b, xp.ndarray):
                exponent = xp.where(b == 0, 1, b - 1)
            else:
                exponent = 1 if b == 0 else b - 1
            grad_a = unbroadcast(grad * b * a**exponent, a.shape)
        if need_b:
            # d(a^b)/db = a^b log a; define it as 0 where a == 0 (PyTorch does the same).
            # A Python float for a scalar base, so that float32 gradients stay float32.
            if isinstance(a, xp.ndarray):
                log_a = xp.log(xp.where(a == 0, 1, a))
            else:
                log_a = math.log(a) if a > 0 else (0.0 if a == 0 else math.nan)
            grad_b = unbroadcast(grad * self.out * log_a, b.shape)
        return grad_a, grad_b


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _promote(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's rules where numpy's differ: int with float gives the float's dtype, and a 0-d
    tensor does not widen a dimensioned one of the same or a higher category (bool < int <
    float): ``x_float32 * tensor(0.5, dtype=float64)`` stays float32."""
    kind_a, kind_b = a._array.dtype.kind, b._array.dtype.kind
    if (a._array.ndim == 0) != (b._array.ndim == 0):
        if a._array.ndim == 0 and _CATEGORY[kind_a] <= _CATEGORY[kind_b]:
            return a.to(b._array.dtype), b
        if b._array.ndim == 0 and _CATEGORY[kind_b] <= _CATEGORY[kind_a]:
            return a, b.to(a._array.dtype)
    if kind_a == "f" and kind_b != "f":
        return a, b.to(a._array.dtype)
    if kind_b == "f" and kind_a != "f":
        return a.to(b._array.dtype), b
    return a, b


def _scalar_operand(tensor: Tensor, scalar: Any) -> tuple[Tensor, Any]:
    if isinstance(scalar, np.generic):
        scalar = scalar.item()  # numpy scalars would promote float32 tensors to float64
    if isinstance(scalar, float) and tensor._array.dtype.kind != "f":
        tensor = tensor.to(DEFAULT_FLOAT)
    return tensor, scalar


def _as_operand(value: Any, like: Tensor) -> Any:
    if isinstance(value, (*_SCALARS, np.generic)):
        return value
    if isinstance(value, complex):
        raise TypeError(f"complex scalars are not supported, got {value!r}")
    from dtrain._tensor.creation import as_tensor

    try:
        return as_tensor(value, device=like.device)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot combine a tensor with {type(value).__name__} {value!r}; pass a tensor, "
            "a number, or an array-like"
        ) from exc


def binary(op: type[Op], a: Any, b: Any) -> Tensor:
    """Apply a broadcasting binary op where at least one of ``a``, ``b`` is a Tensor."""
    if isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            b = _as_operand(b, a)
        if isinstance(b, Tensor):
            if a._array.dtype is not b._array.dtype:
                a, b = _promote(a, b)
        else:
            a, b = _scalar_operand(a, b)
    else:
        a = _as_operand(a, b)
        if isinstance(a, Tensor):
            return binary(op, a, b)
        b, a = _scalar_operand(b, a)
    try:
        return op.apply(a, b)
    except ValueError:
        # numpy's message prints shapes as (2,3); name both the way the user sees them.
        check_broadcast(op.__name__.lower(), _shape(a), _shape(b))
        raise


def _shape(operand: Any) -> tuple:
    return tuple(getattr(operand, "shape", ()))


def add(input: Any, other: Any, alpha: float = 1) -> Tensor:
    """``input + alpha * other``, broadcasting."""
    if alpha != 1:
        other = other * alpha
    return binary(Add, input, other)


def sub(input: Any, other: Any, alpha: float = 1) -> Tensor:
    """``input - alpha * other``, broadcasting."""
    if alpha != 1:
        other = other * alpha
    return binary(Sub, input, other)


def mul(input: Any, other: Any) -> Tensor:
    """Elementwise product, broadcasting."""
    return binary(Mul, input, other)


def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    """True division, broadcasting; integer inputs give a float32 result, as in PyTorch.
    ``rounding_mode='floor'`` or ``'trunc'`` rounds the quotient (integers stay integers;
    the gradient is zero)."""
    if rounding_mode is not None:
        from dtrain._tensor.ops.divide import rounded_div

        return rounded_div(input, other, rounding_mode)
    if isinstance(input, Tensor) and input._array.dtype.kind != "f":
        if not (isinstance(other, Tensor) and other._array.dtype.kind == "f"):
            input = input.to(DEFAULT_FLOAT)
    elif (
        isinstance(other, Tensor)
        and other._array.dtype.kind != "f"
        and not isinstance(input, Tensor)
    ):
        other = other.to(DEFAULT_FLOAT)
    return binary(Div, input, other)


def neg(input: Tensor) -> Tensor:
    """``-input``."""
    return Neg.apply(input)


def pow(input: Any, exponent: Any) -> Tensor:
    """``input ** exponent``; either may be a scalar, broadcasting."""
    return binary(Pow, input, exponent)
