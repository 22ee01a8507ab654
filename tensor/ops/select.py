"""Ops that pick between values: clamp, maximum, minimum, where, masked_fill."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import check_broadcast, unbroadcast
from dtrain._tensor.ops.arithmetic import binary
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import DEFAULT_FLOAT


class Clamp(Op):
    def forward(self, x: Any, min: Any, max: Any) -> Any:
        xp = get_array_module(x)
        out = x
        keep = True
        if min is not None:
            keep = x >= min
            out = xp.maximum(out, min)
        if max is not None:
            keep = keep & (x <= max)
            out = xp.minimum(out, max)
        self.keep = keep
        self.shape = x.shape
        return out.astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        return (unbroadcast(grad * self.keep, self.shape),)


class Maximum(Op):
    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return get_array_module(a, b).maximum(a, b)

    def backward(self, grad: Any) -> tuple:
        return _split_between(grad, self.a, self.b, self.a > self.b, self.needs_input_grad)


class Minimum(Op):
    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return get_array_module(a, b).minimum(a, b)

    def backward(self, grad: Any) -> tuple:
        return _split_between(grad, self.a, self.b, self.a < self.b, self.needs_input_grad)


def _split_between(grad: Any, a: Any, b: Any, a_wins: Any, needs: tuple) -> tuple:
    """The winner takes the gradient; a tie splits it in half, as PyTorch does."""
    # In the gradient's dtype: bool + 0.5 * bool is float64, which would widen float32 grads.
    share_a = (a_wins + 0.5 * (a == b)).astype(grad.dtype, copy=False)
    return (
        unbroadcast(grad * share_a, a.shape) if needs[0] else None,
        unbroadcast(grad * (1 - share_a), b.shape) if needs[1] else None,
    )


class Where(Op):
    def forward(self, condition: Any, a: Any, b: Any) -> Any:
        self.condition = condition
        self.a_shape = getattr(a, "shape", ())
        self.b_shape = getattr(b, "shape", ())
        return get_array_module(condition, a, b).where(condition, a, b)

    def backward(self, grad: Any) -> tuple:
        _, need_a, need_b = self.needs_input_grad
        zero = grad.dtype.type(0)
        xp = get_array_module(grad)
        return (
            None,
            unbroadcast(xp.where(self.condition, grad, zero), self.a_shape) if need_a else None,
            unbroadcast(xp.where(self.condition, zero, grad), self.b_shape) if need_b else None,
        )


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:
    """Limit values to ``[min, max]``; gradient flows where the input was inside the range."""
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    if _grad_state.enabled and any(
        isinstance(bound, Tensor) and bound.requires_grad for bound in (min, max)
    ):  # bounds in the graph: a bound's gradient is the input's where it is the value
        out = input
        if min is not None:
            out = where(out < min, min, out)
        if max is not None:
            out = where(out > max, max, out)
        return out
    if isinstance(min, Tensor):
        min = min._array
    if isinstance(max, Tensor):
        max = max._array
    if input._array.dtype.kind != "f":
        # A float bound makes the result float (PyTorch); computing in the integer dtype
        # would truncate the bound.
        for bound in (min, max):
            if isinstance(bound, float):
                input = input.to(DEFAULT_FLOAT)
                break
            if getattr(getattr(bound, "dtype", None), "kind", None) == "f":
                input = input.to(bound.dtype)
                break
    return Clamp.apply(input, min=min, max=max)


def maximum(input: Tensor, other: Tensor) -> Tensor:
    """Elementwise maximum of two tensors, broadcasting."""
    return binary(Maximum, input, other)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    """Elementwise minimum of two tensors, broadcasting."""
    return binary(Minimum, input, other)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """``input`` where ``condition`` is true, else ``other``; either may be a scalar."""
    if not isinstance(condition, Tensor) or condition._array.dtype.kind != "b":
        raise TypeError(
            f"where: condition must be a bool tensor, got {_describe(condition)}; "
            "build it with a comparison such as x > 0"
        )
    # numpy scalars as Python numbers: np.float64 would widen a float32 result.
    if isinstance(input, np.generic):
        input = input.item()
    if isinstance(other, np.generic):
        other = other.item()
    if isinstance(input, _NUMBERS) and isinstance(other, _NUMBERS):
        # Two Python numbers: PyTorch's dtype (a float gives float32, not numpy's float64).
        dtype = _scalar_dtype(input, other)
        input, other = dtype.type(input), dtype.type(other)
    elif isinstance(input, Tensor) and isinstance(other, Tensor):
        if input._array.dtype != other._array.dtype:
            input, other = _common_dtype(input, other)
    elif isinstance(input, Tensor) and isinstance(other, float) and input._array.dtype.kind != "f":
        input = input.float()
    elif isinstance(other, Tensor) and isinstance(input, float) and other._array.dtype.kind != "f":
        other = other.float()
    try:
        return Where.apply(condition, input, other)
    except ValueError:
        shapes = (tuple(getattr(v, "shape", ())) for v in (condition, input, other))
        check_broadcast("where", *shapes)
        raise


def masked_fill(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    """Replace the elements where ``mask`` is true by ``value``."""
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ValueError(
                f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}"
            )
        value = value.item()
    filled = where(mask, input.dtype.type(value), input)
    return filled


def _common_dtype(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    from dtrain._tensor.ops.arithmetic import _promote

    a, b = _promote(a, b)
    if a._array.dtype != b._array.dtype:
        common = get_array_module(a._array).result_type(a._array, b._array)
        a, b = a.to(common), b.to(common)
    return a, b


_NUMBERS = (bool, int, float)


def _scalar_dtype(*values: Any) -> np.dtype:
    if any(isinstance(v, float) for v in values):
        return np.dtype(DEFAULT_FLOAT)
    if any(not isinstance(v, bool) for v in values):
        return np.dtype(np.int64)
    return np.dtype(np.bool_)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"
