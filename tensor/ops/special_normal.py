"""torch.special's normal-distribution functions (``ndtri``, ``log_ndtr``, ``erfcx``) and
``xlog1py``, each differentiable as in PyTorch."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet, unbroadcast
from dtrain._tensor.ops.special_common import as_float as _float
from dtrain._tensor.ops.special_common import expect_tensor
from dtrain._tensor.ops.trig import float_binary
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import special_normal as _normal
from dtrain.runtime.backend import get_array_module

_SQRT_2PI = math.sqrt(2 * math.pi)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


class Ndtri(Op):
    """The normal quantile; d/dp = ``sqrt(2 pi) exp(ndtri(p)^2 / 2)``."""

    reads_output = True

    def forward(self, p: Any) -> Any:
        self.out = _normal.ndtri(p)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            slope = _SQRT_2PI * xp.exp(self.out * self.out / 2)
        return (grad * slope.astype(grad.dtype, copy=False),)


class LogNdtr(Op):
    """``log ndtr(x)``; d/dx = ``exp(-x^2 / 2 - log_ndtr(x)) / sqrt(2 pi)`` (PyTorch's form,
    which stays finite in the lower tail)."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.out = _normal.log_ndtr(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with quiet(xp):
            slope = xp.exp(-(self.x * self.x) / 2 - self.out) / _SQRT_2PI
        return (grad * slope.astype(grad.dtype, copy=False),)


class Erfcx(Op):
    """``exp(x^2) erfc(x)``; d/dx = ``2 x erfcx(x) - 2 / sqrt(pi)``."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.out = _normal.erfcx(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
            slope = 2 * self.x * self.out - _TWO_OVER_SQRT_PI
        return (grad * slope.astype(grad.dtype, copy=False),)


class Xlog1py(Op):
    """``a * log1p(b)``, 0 where ``a == 0`` (unless ``b`` is NaN); d/da = ``log1p(b)``
    (0 where ``a == 0`` and ``b <= -1``), d/db = ``a / (1 + b)``."""

    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a, self.b = a, b
        with quiet(xp):
            out = a * _log1p(xp, b)
            return xp.where((a == 0) & ~xp.isnan(b), 0, out).astype(out.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        xp = get_array_module(grad)
        a, b = self.a, self.b
        grad_a = grad_b = None
        with quiet(xp):
            if need_a:
                value = xp.where((grad == 0) & ~xp.isnan(b), 0, grad * _log1p(xp, b))
                value = xp.where((a == 0) & (b <= -1), 0, value).astype(grad.dtype, copy=False)
                grad_a = unbroadcast(value, xp.shape(a))
            if need_b:
                grad_b = unbroadcast(grad * a / (1 + b), xp.shape(b))
        return grad_a, grad_b


def _log1p(xp: Any, b: Any) -> Any:
    """``log1p(b)``; of a Python number, a Python float, which stays weak in promotion
    (``xp.log1p(2)`` is a float64 scalar, which would widen a float32 result)."""
    if isinstance(b, (int, float)):
        b = float(b)
        return math.log1p(b) if b > -1 else (-math.inf if b == -1 else math.nan)
    return xp.log1p(b)


def ndtri(input: Tensor) -> Tensor:
    """The standard normal quantile (inverse of ``ndtr``), elementwise: -inf at 0, +inf at
    1, NaN outside [0, 1]."""
    return Ndtri.apply(_float(input))


def log_ndtr(input: Tensor) -> Tensor:
    """``log(ndtr(x))``, elementwise, accurate far into both tails."""
    return LogNdtr.apply(_float(input))


def erfcx(input: Tensor) -> Tensor:
    """The scaled complementary error function ``exp(x^2) erfc(x)``, elementwise (finite for
    large x, where ``erfc`` underflows)."""
    return Erfcx.apply(_float(input))


def xlog1py(input: Any, other: Any) -> Tensor:
    """Elementwise ``input * log1p(other)``, 0 where ``input`` is 0 (unless ``other`` is
    NaN); broadcasts, and either argument may be a Python number."""
    expect_tensor("xlog1py", input, other)
    return float_binary(Xlog1py, input, other)


__all__ = ["erfcx", "log_ndtr", "ndtri", "xlog1py"]
