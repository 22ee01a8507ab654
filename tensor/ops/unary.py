"""Elementwise math: abs, exp, expm1, log, log1p, sqrt, rsqrt, sin, cos, tan, reciprocal."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet
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


class Expm1(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).expm1(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad * (self.out + 1),)


class Log(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):  # log(0) = -inf, log(-1) = nan, silently as in PyTorch
            return xp.log(x)

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
            return (grad / self.x,)


class Log1p(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.log1p(x)

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
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


class Tan(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).tan(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad * (1 + self.out * self.out),)


class Reciprocal(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).reciprocal(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (-grad * self.out * self.out,)


def abs(input: Tensor) -> Tensor:
    """Elementwise absolute value (gradient ``sign(x)``, 0 at 0)."""
    return Abs.apply(input)


def exp(input: Tensor) -> Tensor:
    """Elementwise ``e**x``."""
    return Exp.apply(_float(input))


def expm1(input: Tensor) -> Tensor:
    """Elementwise ``e**x - 1``, accurate for small ``x``."""
    return Expm1.apply(_float(input))


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


def tan(input: Tensor) -> Tensor:
    """Elementwise tangent."""
    return Tan.apply(_float(input))


def reciprocal(input: Tensor) -> Tensor:
    """Elementwise ``1 / x`` (integers compute in float32, as in PyTorch)."""
    return Reciprocal.apply(_float(input))


def _float(x: Tensor) -> Tensor:
    """Integer inputs of float functions compute in float32, as in PyTorch."""
    return x if x._array.dtype.kind == "f" else x.float()


class Rounding(Op):
    """round, floor, ceil, trunc, sign: step functions, whose gradient is zero (PyTorch)."""

    def forward(self, x: Any, name: str, decimals: int = 0) -> Any:
        self.shape = x.shape
        xp = get_array_module(x)
        if name == "round":
            return xp.round(x, decimals)
        return getattr(xp, name)(x)

    def backward(self, grad: Any) -> tuple:
        return (get_array_module(grad).zeros(self.shape, dtype=grad.dtype),)


def _rounding(input: Tensor, name: str, decimals: int = 0) -> Tensor:
    if input._array.dtype.kind in "biu" and name != "sign":
        return input.clone()  # integers are already whole (numpy would return floats)
    return Rounding.apply(input, name=name, decimals=decimals)


def round(input: Tensor, decimals: int = 0) -> Tensor:
    """Round to the nearest integer (halves to even), or to ``decimals`` places."""
    return _rounding(input, "round", decimals)


def floor(input: Tensor) -> Tensor:
    """Elementwise floor (gradient zero)."""
    return _rounding(input, "floor")


def ceil(input: Tensor) -> Tensor:
    """Elementwise ceiling (gradient zero)."""
    return _rounding(input, "ceil")


def trunc(input: Tensor) -> Tensor:
    """Round toward zero (gradient zero)."""
    return _rounding(input, "trunc")


def sign(input: Tensor) -> Tensor:
    """-1, 0 or 1 by the sign of each element (gradient zero)."""
    if input._array.dtype.kind == "b":
        return input.clone()
    return _rounding(input, "sign")


def square(input: Tensor) -> Tensor:
    """Elementwise ``x * x`` (integers stay integers)."""
    from dtrain._tensor.ops.arithmetic import mul

    return mul(input, input)
