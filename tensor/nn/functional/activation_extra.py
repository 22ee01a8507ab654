"""More activations: selu, celu, softsign, softshrink, hardshrink, tanhshrink, threshold,
rrelu, the in-place ``name_`` forms (relu_, elu_, leaky_relu_, hardtanh_, selu_, celu_,
threshold_, rrelu_), and the self-normalising dropouts (alpha_dropout,
feature_alpha_dropout) with dropout3d.

The piecewise-linear ones are one op, ``Masked``: ``x * mask + offset`` with the gradient
``grad * mask``, where the function computes ``mask`` and ``offset`` from ``x`` in one pass
of array code; ``threshold`` selects instead (``-inf * 0`` would be NaN). As PyTorch, float16
inputs compute in float32 and round once (hardshrink compares in half, as PyTorch's kernel).
``inplace=True`` is accepted and computes out of place (as the other
activations); the ``name_`` functions do write into their argument.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.creation import sample
from dtrain._tensor.ops import activation as _ops
from dtrain._tensor.ops.inplace_math import unary_
from dtrain._tensor.ops.select import where
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import device_of

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# -SELU_SCALE * SELU_ALPHA: the value SELU saturates to, which alpha dropout drops to.
_ALPHA_PRIME = 1.7580993408473766


class Masked(Op):
    """``x * mask + offset``; the gradient is ``grad * mask`` (``offset`` is a constant)."""

    def forward(self, x: Any, mask: Any, offset: Any) -> Any:
        self.mask = mask
        return x * mask if offset is None else x * mask + offset

    def backward(self, grad: Any) -> tuple:
        return grad * self.mask, None, None


class Threshold(Op):
    """``x`` where ``x > threshold``, else ``value``, by a select (``-inf`` gives ``value``,
    not ``-inf * 0``); the gradient passes where ``x > threshold``."""

    def forward(self, x: Any, threshold: float, value: float) -> Any:
        xp = get_array_module(x)
        self.above = x > threshold
        return xp.where(self.above, x, value).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        return grad * self.above, None, None


def _in_float32(fn: Any, input: Tensor, *args: Any) -> Tensor:
    """``fn(input, *args)``, computed in float32 for a float16 input and rounded once, as
    PyTorch computes half-precision activations (constants are not rounded to half first)."""
    if input.dtype == np.float16:
        return fn(input.float(), *args).half()
    return fn(input, *args)


def _check_float(name: str, input: Tensor) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input, got {input.dtype}")


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """``scale * elu(x, alpha)`` with SELU's fixed ``alpha`` and ``scale`` (self-normalising).

    Raises:
        TypeError: a non-floating-point input (PyTorch raises NotImplementedError).
    """
    _check_float("selu", input)
    return _in_float32(_selu, input)


def _selu(input: Tensor) -> Tensor:
    return _ops.elu(input, SELU_ALPHA) * SELU_SCALE


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``, branching on the sign of ``x``
    (also for a negative ``alpha``).

    Raises:
        ZeroDivisionError: ``alpha`` is 0 (PyTorch raises a RuntimeError that names it).
        TypeError: a non-floating-point input (PyTorch raises NotImplementedError).
    """
    if alpha == 0:
        raise ZeroDivisionError("celu: alpha cannot be 0 for CELU; pass a nonzero alpha")
    _check_float("celu", input)
    return _in_float32(_celu, input, alpha)


def _celu(input: Tensor, alpha: float) -> Tensor:
    if alpha > 0:
        return _ops.elu(input / alpha, 1.0) * alpha
    # elu(x / alpha) would branch on the sign of x / alpha, the opposite of x's.
    negative = (input.clamp_max(0) / alpha).expm1() * alpha
    return where(input > 0, input, negative)


def softsign(input: Tensor) -> Tensor:
    """``x / (1 + |x|)``."""
    return input / (input.abs() + 1)


def tanhshrink(input: Tensor) -> Tensor:
    """``x - tanh(x)``."""
    return input - _ops.tanh(input)


def _check_lambd(name: str, lambd: float) -> None:
    if lambd < 0:
        raise RuntimeError(f"{name}: lambda must be >= 0, but found {lambd}")


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, else 0."""
    _check_float("softshrink", input)
    _check_lambd("softshrink", lambd)
    return _in_float32(_softshrink, input, lambd)


def _softshrink(input: Tensor, lambd: float) -> Tensor:
    x = input._array
    above, below = x > lambd, x < -lambd
    mask = (above | below).astype(x.dtype)
    offset = ((below.astype(x.dtype) - above.astype(x.dtype)) * lambd).astype(x.dtype)
    return Masked.apply(input, mask, offset)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """``x`` where ``|x| > lambd``, else 0 (compared in the input's dtype: for float16,
    ``lambd`` rounds to half first, as PyTorch's kernel does)."""
    _check_float("hardshrink", input)
    x = input._array
    mask = ((x > lambd) | (x < -lambd)).astype(x.dtype)
    return Masked.apply(input, mask, None)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """``x`` where ``x > threshold``, else ``value`` (integer inputs too, as PyTorch: ``value``
    is cast to the input's dtype)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"threshold: input must be a Tensor, got {type(input).__name__}")
    return _in_float32(Threshold.apply, input, threshold, value)


def rrelu(
    input: Tensor,
    lower: float = 1.0 / 8,
    upper: float = 1.0 / 3,
    training: bool = False,
    inplace: bool = False,
) -> Tensor:
    """Randomised leaky ReLU: while ``training``, each negative element gets its own slope
    drawn uniformly from ``[lower, upper]``; otherwise the slope is ``(lower + upper) / 2``.

    Raises:
        ValueError: ``lower > upper``.
    """
    _check_float("rrelu", input)
    if lower > upper:
        raise ValueError(f"rrelu: lower bound {lower} must be <= upper bound {upper}; swap them")
    if not training:
        return _ops.leaky_relu(input, (lower + upper) / 2)
    x = input._array
    xp = get_array_module(x)
    slopes = sample("uniform", x.shape, x.dtype, device_of(x), low=lower, high=upper)
    mask = xp.where(x >= 0, xp.ones((), dtype=x.dtype), slopes)
    return Masked.apply(input, mask, None)


def _alpha_dropout(input: Tensor, p: float, training: bool, feature: bool) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    _check_float("alpha_dropout", input)
    if feature:
        if input.ndim < 2:
            raise RuntimeError(
                "feature_alpha_dropout: expected an input with a batch and a channel "
                f"dimension (at least 2-D), got shape {tuple(input.shape)}"
            )
        shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    else:
        shape = tuple(input.shape)
    dtype = input.dtype
    keep = sample("uniform", shape, dtype, device_of(input._array), low=0, high=1)
    noise = (keep >= p).astype(dtype)
    # As PyTorch: a keeps the variance, b the mean, with dropped units at -alpha'.
    # Python floats, not np.float64: those would widen float16/32 arrays to float64 temporaries.
    a = 1.0 / math.sqrt((_ALPHA_PRIME**2 * p + 1) * (1 - p))
    b = ((noise - 1) * (_ALPHA_PRIME * a) + _ALPHA_PRIME * a * p).astype(dtype)
    scale = (noise * a).astype(dtype)
    xp = get_array_module(scale)
    if feature:
        scale = xp.broadcast_to(scale, tuple(input.shape))
        b = xp.broadcast_to(b, tuple(input.shape))
    return Masked.apply(input, scale, b)


def alpha_dropout(
    input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """Dropout that keeps SELU's zero mean and unit variance: dropped elements become
    SELU's negative saturation value, then an affine map restores the statistics.
    As PyTorch, ``training`` defaults to False here."""
    return _alpha_dropout(input, p, training, feature=False)


def feature_alpha_dropout(
    input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """``alpha_dropout`` of whole channels (one draw per sample and channel)."""
    return _alpha_dropout(input, p, training, feature=True)


def dropout3d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of ``(N, C, D, H, W)`` (or unbatched ``(C, D, H, W)``) input with
    probability ``p`` while training, scaling the rest by ``1 / (1 - p)``."""
    from dtrain._tensor.nn.functional.dropout import _feature_dropout

    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if input.ndim not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {input.ndim}-D input to dropout3d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior and "
            "silence this warning, please use dropout instead. Note that dropout3d exists to "
            "provide channel-wise dropout on inputs with 3 spatial dimensions, a channel "
            "dimension, and an optional batch dimension (i.e. 4D or 5D inputs).",
            stacklevel=2,
        )
    if input.ndim != 5:  # as PyTorch: anything but 5-D is taken as unbatched
        return _feature_dropout(input.unsqueeze(0), p, training).squeeze(0)
    return _feature_dropout(input, p, training)


# The in-place forms: they write the result into ``input`` and return it (recorded for
# autograd as the out-of-place op on a copy, like ``Tensor.relu_``).


def relu_(input: Tensor) -> Tensor:
    """In place: ``max(x, 0)``."""
    return unary_(input, _ops.relu)


def elu_(input: Tensor, alpha: float = 1.0) -> Tensor:
    """In place: ``elu``."""
    return unary_(input, _ops.elu, alpha)


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    """In place: ``leaky_relu``."""
    return unary_(input, _ops.leaky_relu, negative_slope)


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """In place: ``hardtanh``."""
    return unary_(input, _ops.hardtanh, min_val, max_val)


def selu_(input: Tensor) -> Tensor:
    """In place: ``selu``."""
    return unary_(input, selu)


def celu_(input: Tensor, alpha: float = 1.0) -> Tensor:
    """In place: ``celu``."""
    return unary_(input, celu, alpha)


def threshold_(input: Tensor, threshold: float, value: float) -> Tensor:
    """In place: ``threshold``."""
    return unary_(input, _threshold, threshold, value)


def rrelu_(
    input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False
) -> Tensor:
    """In place: ``rrelu``."""
    return unary_(input, rrelu, lower, upper, training)


_threshold = threshold  # threshold_'s parameter takes the name
