"""Activations as ``nn.functional`` takes them: PyTorch's keywords, ``inplace`` included
(``relu`` and ``silu`` are the tensor functions, which take ``inplace`` too).

``inplace=True`` is accepted for PyTorch compatibility and computes out of place: the
result is a new tensor and the input is unchanged (use the return value, as PyTorch code
does: ``x = F.relu(x, inplace=True)``).
"""

from __future__ import annotations

import warnings

import numpy as np

from dtrain._tensor.creation import sample
from dtrain._tensor.ops import activation as _ops
from dtrain._tensor.ops.softmax import softmax
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import device_of


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``x`` where ``x > 0``, else ``negative_slope * x`` (``inplace`` computes out of place)."""
    return _ops.leaky_relu(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``inplace`` computes out of
    place)."""
    return _ops.elu(input, alpha)


def hardtanh(
    input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Tensor:
    """``x`` clipped to ``[min_val, max_val]`` (``inplace`` computes out of place)."""
    return _ops.hardtanh(input, min_val, max_val)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """``min(max(x, 0), 6)`` (``inplace`` computes out of place)."""
    return _ops.relu6(input)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6`` (``inplace`` computes out of place)."""
    return _ops.hardswish(input)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6`` (``inplace`` computes out of place)."""
    return _ops.hardsigmoid(input)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))`` (``inplace`` computes out of place)."""
    return _ops.mish(input)


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x))``, without overflow."""
    return _ops.logsigmoid(input)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``max(0, x) + weight * min(0, x)``, one slope or one per channel (dim 1)."""
    return _ops.prelu(input, weight)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """Gated linear unit: the first half of ``dim`` times the sigmoid of the second half."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    size = input.shape[dim]
    if size % 2:
        raise RuntimeError(
            f"glu: halving dimension must be even, but dimension {dim} is size {size}"
        )
    half = size // 2  # (chunk gives no pieces of an empty dim: split by size)
    first, second = input.split([half, half], dim)
    return first * _ops.sigmoid(second)


def softmin(input: Tensor, dim: int | None = None) -> Tensor:
    """``softmax(-x)`` along ``dim``; without ``dim``, PyTorch's implicit (deprecated) choice:
    0 for 0-, 1- and 3-d input, else 1, with its warning."""
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1
        warnings.warn(
            "Implicit dimension choice for softmin has been deprecated. Change the call to "
            "include dim=X as an argument.",
            stacklevel=2,
        )
    return softmax(-input, dim)


def gumbel_softmax(
    logits: Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10, dim: int = -1
) -> Tensor:
    """Softmax of ``(logits + Gumbel noise) / tau`` along ``dim``; with ``hard``, the
    one-hot of its argmax in the forward pass and the soft sample's gradient (the
    straight-through estimator), as PyTorch. ``eps`` is unused (deprecated in PyTorch)."""
    if logits.dtype.kind != "f":
        raise TypeError(f"gumbel_softmax: logits must be floating point, got {logits.dtype}")
    u = sample("uniform", tuple(logits.shape), np.float32, device_of(logits._array), low=0, high=1)
    xp = get_array_module(u)
    # -log of an Exp(1) draw, in float32 (in float16, u near 1 rounds to 1: -inf noise). A
    # draw of u = 0 gives Exp 0 and +inf noise (a NaN row): keep the draw above 0.
    exponential = xp.maximum(-xp.log1p(-u), np.finfo(np.float32).tiny)
    gumbels = (-xp.log(exponential)).astype(logits.dtype)
    soft = softmax((logits + wrap(gumbels)) / tau, dim)
    if not hard:
        return soft
    axis = dim % soft.ndim
    index = xp.expand_dims(soft._array.argmax(axis=axis), axis)
    positions = xp.arange(soft.shape[axis]).reshape((-1,) + (1,) * (soft.ndim - axis - 1))
    one_hot = (positions == index).astype(soft.dtype)
    return wrap(one_hot) - soft.detach() + soft
