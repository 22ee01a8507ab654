"""``+ - * / **`` and negation, with broadcasting, scalars and PyTorch's type promotion."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import unbroadcast
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
        grad_a = grad_b = None
        if need_a:
            grad_a = unbroadcast(grad * b * a ** (b - 1), a.shape)
        if need_b:
            xp = get_array_module(grad)
            # d(a^b)/db = a^b log a; define it as 0 where a == 0 (PyTorch does the same).
            log_a = xp.log(xp.where(a == 0, 1, a)) if isinstance(a, xp.ndarray) else np.log(a)
            grad_b = unbroadcast(grad * self.out * log_a, b.shape)
        return grad_a, grad_b


def _promote(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's rule where numpy differs: int with float gives the float's dtype."""
    kind_a, kind_b = a._array.dtype.kind, b._array.dtype.kind
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
    return op.apply(a, b)


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


def div(input: Any, other: Any) -> Tensor:
    """True division, broadcasting; integer inputs give a float32 result, as in PyTorch."""
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
