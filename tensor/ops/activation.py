"""Activations: tanh, sigmoid, relu, gelu, silu, softplus."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.kernels import gelu as _gelu_kernels
from dtrain.runtime.kernels import relu as _relu_kernels
from dtrain.runtime.special import erf

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Tanh(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).tanh(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        out = self.out
        return (grad * (1 - out * out),)


def _sigmoid(x: Any) -> Any:
    # tanh form: no overflow for large |x|, unlike 1 / (1 + exp(-x)).
    return 0.5 + 0.5 * get_array_module(x).tanh(0.5 * x)


class Sigmoid(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = _sigmoid(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        out = self.out
        return (grad * out * (1 - out),)


class Relu(Op):
    """ReLU; on CUDA, backward is one kernel (``dtrain.runtime.kernels.relu``)."""

    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = get_array_module(x).maximum(x, 0)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (relu_gradient(grad, self.out),)


def relu_gradient(grad: Any, out: Any) -> Any:
    """The gradient of ReLU's input, from that of its output ``out``."""
    if is_cuda_array(out) and _relu_kernels.supported(out):
        return _relu_kernels.relu_backward(grad, out)
    return grad * (out > 0)


class Gelu(Op):
    """GELU; cupy input of a float dtype takes the CUDA kernels (``dtrain.runtime.kernels
    .gelu``); otherwise erf comes from ``runtime/special.py`` (float64 to ~2e-15, other
    dtypes to 1.5e-7, below float32's resolution)."""

    reads_inputs = True
    fused = False

    def forward(self, x: Any, approximate: str) -> Any:
        self.x, self.approximate = x, approximate
        if is_cuda_array(x) and _gelu_kernels.supported(x):
            self.fused = True
            return _gelu_kernels.gelu_forward(x, approximate)
        if approximate == "tanh":
            xp = get_array_module(x)
            return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
        cdf = erf(x * x.dtype.type(_INV_SQRT_2))
        cdf += 1
        cdf *= 0.5
        self.cdf = cdf  # Φ(x), kept for backward
        return x * cdf

    def backward(self, grad: Any) -> tuple:
        x = self.x
        if self.fused:
            return (_gelu_kernels.gelu_backward(grad, x, self.approximate),)
        xp = get_array_module(x)
        if self.approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
            t = xp.tanh(inner)
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return (grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner),)
        # d/dx x Φ(x) = Φ(x) + x φ(x)
        pdf = xp.square(x)
        pdf *= -0.5
        xp.exp(pdf, out=pdf)
        pdf *= x.dtype.type(_INV_SQRT_2PI)
        pdf *= x
        pdf += self.cdf
        pdf *= grad
        return (pdf,)


class Silu(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.sig = _sigmoid(x)
        return x * self.sig

    def backward(self, grad: Any) -> tuple:
        sig = self.sig
        return (grad * (sig * (1 + self.x * (1 - sig))),)


class Softplus(Op):
    reads_inputs = True

    def forward(self, x: Any, beta: float, threshold: float) -> Any:
        xp = get_array_module(x)
        self.x, self.beta, self.threshold = x, beta, threshold
        scaled = x * beta
        soft = xp.logaddexp(0, scaled) / beta
        return xp.where(scaled > threshold, x, soft)

    def backward(self, grad: Any) -> tuple:
        scaled = self.x * self.beta
        xp = get_array_module(grad)
        return (grad * xp.where(scaled > self.threshold, 1, _sigmoid(scaled)),)


def tanh(input: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return Tanh.apply(_float(input))


def sigmoid(input: Tensor) -> Tensor:
    """Elementwise logistic function ``1 / (1 + e**-x)``."""
    return Sigmoid.apply(_float(input))


def relu(input: Tensor) -> Tensor:
    """Elementwise ``max(x, 0)``."""
    return Relu.apply(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit; ``approximate="tanh"`` for the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate={approximate!r}; use 'none' or 'tanh'")
    if input.ndim == 0:  # numpy's ops on 0-d arrays give scalars, which out= refuses
        return gelu(input.reshape(1), approximate).reshape(())
    return Gelu.apply(_float(input), approximate=approximate)


def silu(input: Tensor) -> Tensor:
    """Elementwise ``x * sigmoid(x)`` (swish)."""
    return Silu.apply(_float(input))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, linear where ``beta x > threshold``."""
    return Softplus.apply(_float(input), beta=beta, threshold=threshold)
