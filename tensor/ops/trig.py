"""Inverse and hyperbolic trigonometry: acos, asin, atan, sinh, cosh, acosh, asinh, atanh,
atan2. Integer inputs compute in float32 and out-of-domain inputs give NaN silently, as in
PyTorch."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet, unbroadcast
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import DEFAULT_FLOAT


class Acos(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.arccos(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            return (-grad / xp.sqrt(1 - self.x * self.x),)


class Asin(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.arcsin(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            return (grad / xp.sqrt(1 - self.x * self.x),)


class Atan(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).arctan(x)

    def backward(self, grad: Any) -> tuple:
        return (grad / (1 + self.x * self.x),)


class Sinh(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):  # overflow to inf, silently
            return xp.sinh(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            return (grad * xp.cosh(self.x),)


class Cosh(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.cosh(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            return (grad * xp.sinh(self.x),)


class Acosh(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.arccosh(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x = self.x
        with quiet(xp):
            return (grad / xp.sqrt((x - 1) * (x + 1)),)


class Asinh(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).arcsinh(x)

    def backward(self, grad: Any) -> tuple:
        return (grad / get_array_module(grad).sqrt(self.x * self.x + 1),)


class Atanh(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.arctanh(x)

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
            return (grad / (1 - self.x * self.x),)


class Atan2(Op):
    """``atan2(a, b)``: the angle of the point ``(b, a)``; d/da = b/r², d/db = -a/r²."""

    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return get_array_module(a, b).arctan2(a, b)

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        xp = get_array_module(grad)
        r2 = a * a + b * b
        with quiet(xp):  # the origin has no direction: its gradient is 0, as PyTorch
            scale = xp.where(r2 == 0, 0, grad / xp.where(r2 == 0, 1, r2)).astype(grad.dtype)
        return (
            unbroadcast(scale * b, a.shape) if need_a else None,
            unbroadcast(-scale * a, b.shape) if need_b else None,
        )


def float_binary(op: type[Op], a: Any, b: Any) -> Tensor:
    """A broadcasting binary op on floats: PyTorch's promotion, then integer (and bool)
    results computed in float32."""
    from dtrain._tensor.ops.arithmetic import binary

    if _not_float(a) and not _is_float(b):
        a = a.to(DEFAULT_FLOAT)
    if _not_float(b) and not _is_float(a):
        b = b.to(DEFAULT_FLOAT)
    if _mixed_floats(a, b):  # no op sees two float dtypes
        common = np.result_type(a._array.dtype, b._array.dtype)
        a, b = a.to(common), b.to(common)
    return binary(op, a, b)


def _mixed_floats(a: Any, b: Any) -> bool:
    """Two float tensors of different dtypes, both 0-d or both not (a 0-d one takes the
    other's dtype in ``binary``)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return False
    dtype_a, dtype_b = a._array.dtype, b._array.dtype
    same_rank = (a._array.ndim == 0) == (b._array.ndim == 0)
    return dtype_a != dtype_b and dtype_a.kind == dtype_b.kind == "f" and same_rank


def _not_float(x: Any) -> bool:
    return isinstance(x, Tensor) and x._array.dtype.kind != "f"


def _is_float(x: Any) -> bool:
    return isinstance(x, float) or (isinstance(x, Tensor) and x._array.dtype.kind == "f")


def acos(input: Tensor) -> Tensor:
    """Elementwise arccosine (NaN outside [-1, 1])."""
    return Acos.apply(_float(input))


def asin(input: Tensor) -> Tensor:
    """Elementwise arcsine (NaN outside [-1, 1])."""
    return Asin.apply(_float(input))


def atan(input: Tensor) -> Tensor:
    """Elementwise arctangent."""
    return Atan.apply(_float(input))


def sinh(input: Tensor) -> Tensor:
    """Elementwise hyperbolic sine."""
    return Sinh.apply(_float(input))


def cosh(input: Tensor) -> Tensor:
    """Elementwise hyperbolic cosine."""
    return Cosh.apply(_float(input))


def acosh(input: Tensor) -> Tensor:
    """Elementwise inverse hyperbolic cosine (NaN below 1)."""
    return Acosh.apply(_float(input))


def asinh(input: Tensor) -> Tensor:
    """Elementwise inverse hyperbolic sine."""
    return Asinh.apply(_float(input))


def atanh(input: Tensor) -> Tensor:
    """Elementwise inverse hyperbolic tangent (±inf at ±1, NaN beyond)."""
    return Atanh.apply(_float(input))


def atan2(input: Tensor, other: Any) -> Tensor:
    """Elementwise ``atan(input / other)`` in the quadrant of the point ``(other, input)``,
    broadcasting."""
    return float_binary(Atan2, input, other)


arccos, arcsin, arctan = acos, asin, atan
arccosh, arcsinh, arctanh, arctan2 = acosh, asinh, atanh, atan2
