"""Elementwise math: abs, exp, log, log1p, sqrt, rsqrt, sin, cos."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


class Abs(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        # xp.abs: the builtin name is shadowed by this module's abs(), which calls back here.
        return get_array_module(x).abs(x)

    def backward(self, grad: Any) -> tuple:
        return (grad * get_array_module(grad).sign(self.x),)


class Exp(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).exp(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad * self.out,)


class Log(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, grad: Any) -> tuple:
        return (grad / self.x,)


class Log1p(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).log1p(x)

    def backward(self, grad: Any) -> tuple:
        return (grad / (1 + self.x),)


class Sqrt(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).sqrt(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad / (2 * self.out),)


class Rsqrt(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = 1 / get_array_module(x).sqrt(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad * -0.5 * self.out**3,)


class Sin(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).sin(x)

    def backward(self, grad: Any) -> tuple:
        return (grad * get_array_module(grad).cos(self.x),)


class Cos(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).cos(x)

    def backward(self, grad: Any) -> tuple:
        return (-grad * get_array_module(grad).sin(self.x),)


def abs(input: Tensor) -> Tensor:
    """Elementwise absolute value (gradient ``sign(x)``, 0 at 0)."""
    return Abs.apply(input)


def exp(input: Tensor) -> Tensor:
    """Elementwise ``e**x``."""
    return Exp.apply(_float(input))


def log(input: Tensor) -> Tensor:
    """Elementwise natural logarithm."""
    return Log.apply(_float(input))


def log1p(input: Tensor) -> Tensor:
    """Elementwise ``log(1 + x)``, accurate for small ``x``."""
    return Log1p.apply(_float(input))


def sqrt(input: Tensor) -> Tensor:
    """Elementwise square root."""
    return Sqrt.apply(_float(input))


def rsqrt(input: Tensor) -> Tensor:
    """Elementwise ``1 / sqrt(x)``."""
    return Rsqrt.apply(_float(input))


def sin(input: Tensor) -> Tensor:
    """Elementwise sine."""
    return Sin.apply(_float(input))


def cos(input: Tensor) -> Tensor:
    """Elementwise cosine."""
    return Cos.apply(_float(input))


def _float(x: Tensor) -> Tensor:
    """Integer inputs of float functions compute in float32, as in PyTorch."""
    return x if x._array.dtype.kind == "f" else x.float()
