"""Activations: tanh, sigmoid, relu, gelu, silu, softplus, leaky_relu, elu, hardtanh (relu6),
hardswish, hardsigmoid, mish, logsigmoid, prelu."""

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
    # exp(-|x|) never overflows, and e / (1 + e) below 0 keeps the small tail that the tanh
    # form 0.5 + 0.5 tanh(x / 2) loses: it rounds sigmoid(-17) to 0 in float32 (a Geometric
    # from logits then drew inf), where this gives 4.1e-8 as PyTorch.
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    s = 1 / (1 + e)
    return xp.where(x >= 0, s, e * s)


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


class LeakyRelu(Op):
    def forward(self, x: Any, slope: float) -> Any:
        self.positive, self.slope = x > 0, slope
        return get_array_module(x).where(self.positive, x, x * slope)

    def backward(self, grad: Any) -> tuple:
        return (get_array_module(grad).where(self.positive, grad, grad * self.slope),)


class Elu(Op):
    def forward(self, x: Any, alpha: float) -> Any:
        xp = get_array_module(x)
        self.positive = x > 0
        # alpha e^x for x <= 0 (the slope there); min() keeps exp from overflowing.
        self.slope = alpha * xp.exp(xp.minimum(x, 0))
        return xp.where(self.positive, x, alpha * xp.expm1(xp.minimum(x, 0)))

    def backward(self, grad: Any) -> tuple:
        return (get_array_module(grad).where(self.positive, grad, grad * self.slope),)


class Hardtanh(Op):
    def forward(self, x: Any, low: float, high: float) -> Any:
        self.inside = (x > low) & (x < high)  # as PyTorch: no gradient at the bounds
        return get_array_module(x).clip(x, low, high).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        return (grad * self.inside,)


class Hardswish(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return x * get_array_module(x).clip(x + 3, 0, 6) / 6

    def backward(self, grad: Any) -> tuple:
        x = self.x
        xp = get_array_module(x)
        # PyTorch's: 0 up to -3, x/3 + 1/2 on (-3, 3), 1 from 3.
        middle = grad * (x / 3 + 0.5)
        return (xp.where(x <= -3, 0, xp.where(x < 3, middle, grad)).astype(grad.dtype),)


class Hardsigmoid(Op):
    def forward(self, x: Any) -> Any:
        self.inside = (x > -3) & (x < 3)
        return get_array_module(x).clip(x + 3, 0, 6) / 6

    def backward(self, grad: Any) -> tuple:
        return (grad * self.inside / 6,)


class Mish(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.x = x
        self.t = xp.tanh(xp.logaddexp(0, x))  # tanh(softplus(x))
        return x * self.t

    def backward(self, grad: Any) -> tuple:
        x, t = self.x, self.t
        return (grad * (t + x * _sigmoid(x) * (1 - t * t)),)


class LogSigmoid(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return -get_array_module(x).logaddexp(0, -x)

    def backward(self, grad: Any) -> tuple:
        return (grad * _sigmoid(-self.x),)


class Prelu(Op):
    """``max(0, x) + w min(0, x)`` with one slope per channel (dim 1) or one for all."""

    reads_inputs = True

    def forward(self, x: Any, w: Any) -> Any:
        self.x, self.w_shape = x, w.shape
        if w.size > 1:  # (1, C, 1, ...): one slope per channel
            self.slopes = w.reshape((1, w.size) + (1,) * (x.ndim - 2))
        else:
            self.slopes = w.reshape(())
        self.positive = x > 0
        return get_array_module(x).where(self.positive, x, x * self.slopes)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        dx = xp.where(self.positive, grad, grad * self.slopes)
        per_element = xp.where(self.positive, 0, grad * self.x)
        if len(self.w_shape) and self.w_shape[0] > 1:
            dw = per_element.sum(axis=tuple(a for a in range(per_element.ndim) if a != 1))
        else:
            dw = per_element.sum()
        return dx, dw.reshape(self.w_shape).astype(grad.dtype, copy=False)


def tanh(input: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return Tanh.apply(_float(input))


def sigmoid(input: Tensor) -> Tensor:
    """Elementwise logistic function ``1 / (1 + e**-x)``."""
    return Sigmoid.apply(_float(input))


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """Elementwise ``max(x, 0)``. ``inplace`` (``nn.functional``'s) is accepted and computes
    out of place: use the result."""
    return Relu.apply(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit; ``approximate="tanh"`` for the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate={approximate!r}; use 'none' or 'tanh'")
    if input.ndim == 0:  # numpy's ops on 0-d arrays give scalars, which out= refuses
        return gelu(input.reshape(1), approximate).reshape(())
    return Gelu.apply(_float(input), approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """Elementwise ``x * sigmoid(x)`` (swish). ``inplace`` is accepted and computes out of
    place: use the result."""
    return Silu.apply(_float(input))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, linear where ``beta x > threshold``."""
    return Softplus.apply(_float(input), beta=beta, threshold=threshold)


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return LeakyRelu.apply(_float(input), slope=float(negative_slope))


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return Elu.apply(_float(input), alpha=float(alpha))


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """``x`` clipped to ``[min_val, max_val]``; no gradient at or outside the bounds."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val={min_val} is above max_val={max_val}")
    return Hardtanh.apply(input, low=float(min_val), high=float(max_val))


def relu6(input: Tensor) -> Tensor:
    """``min(max(x, 0), 6)``."""
    return Hardtanh.apply(input, low=0.0, high=6.0)


def hardswish(input: Tensor) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return Hardswish.apply(_float(input))


def hardsigmoid(input: Tensor) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return Hardsigmoid.apply(_float(input))


def mish(input: Tensor) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return Mish.apply(_float(input))


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x))``, computed as ``-softplus(-x)`` (no overflow)."""
    return LogSigmoid.apply(_float(input))


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``max(0, x) + weight * min(0, x)``; ``weight`` holds one slope, or one per channel
    (dim 1 of ``input``)."""
    channels = input.shape[1] if input.ndim >= 2 else 1
    if weight.numel() not in (1, channels) or weight.ndim > 1:
        raise ValueError(
            f"prelu: weight of shape {tuple(weight.shape)} does not fit input of shape "
            f"{tuple(input.shape)}; give 1 slope or one per channel ({channels},)"
        )
    return Prelu.apply(_float(input), weight)
