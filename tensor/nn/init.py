"""``nn.init``: fill parameters in place, with PyTorch's formulas and defaults."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.creation import sample
from dtrain._tensor.ops.inplace import fill_random_
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import device_of
from dtrain.runtime.random import Generator
from dtrain.runtime.special import erf

_GAINS = {
    "linear": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "conv_transpose1d": 1.0,
    "conv_transpose2d": 1.0,
    "conv_transpose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3,
    "relu": math.sqrt(2.0),
    "selu": 3.0 / 4,
}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``"relu"`` → √2, ``"leaky_relu"`` …)."""
    if nonlinearity == "leaky_relu":
        if param is not None and (isinstance(param, bool) or not isinstance(param, (int, float))):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity not in _GAINS:
        raise ValueError(
            f"unsupported nonlinearity {nonlinearity!r}; use one of "
            f"{sorted([*_GAINS, 'leaky_relu'])}"
        )
    return _GAINS[nonlinearity]


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(
            f"fan in and fan out need a tensor with at least 2 dims, got shape {tensor.shape}"
        )
    receptive = 1
    for size in tensor.shape[2:]:
        receptive *= size
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Generator | None = None
) -> Tensor:
    """Fill with samples from U(a, b)."""
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Generator | None = None
) -> Tensor:
    """Fill with samples from N(mean, std²)."""
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with ``val``."""
    with no_grad():
        return tensor.fill_(val)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: Generator | None = None
) -> Tensor:
    """Glorot uniform: U(-a, a) with a = gain · √(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Glorot normal: N(0, std²) with std = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator | None = None,
) -> Tensor:
    """He uniform: U(-b, b) with b = gain · √(3 / fan)."""
    if _no_elements(tensor):
        return tensor
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator | None = None,
) -> Tensor:
    """He normal: N(0, std²) with std = gain / √fan."""
    if _no_elements(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Generator | None = None,
) -> Tensor:
    """Fill with samples from N(mean, std²) truncated to [a, b] (absolute bounds).

    Samples by inverting the CDF, as PyTorch: uniform in [Φ(α), Φ(β)], then Φ⁻¹. Tails are
    mirrored into the lower half, where Φ is small and keeps its precision, so a range far
    from the mean (a=5, b=6 for N(0, 1)) is sampled correctly too.

    Raises:
        TypeError: the tensor is not floating-point.
        ValueError: ``std`` is not positive or ``a > b``.
    """
    if tensor._array.dtype.kind != "f":
        raise TypeError(
            f"trunc_normal_ fills floating-point tensors only, got one of dtype {tensor.dtype}; "
            "convert it first with .float()"
        )
    if not std > 0 or not a <= b:
        raise ValueError(f"trunc_normal_: needs std > 0 and a <= b, got std={std}, a={a}, b={b}")
    alpha, beta = (a - mean) / std, (b - mean) / std
    mirror = alpha + beta > 0
    if mirror:
        alpha, beta = -beta, -alpha
    low, high = _normal_cdf(alpha), _normal_cdf(beta)
    if high < _TINY:  # [a, b] lies some 37 std or more from the mean: Φ underflows there
        # The normal's tail beyond beta is beta - Exp(1)/|beta| to first order.
        u = sample(
            "uniform",
            tensor.shape,
            "float64",
            device_of(tensor._array),
            generator,
            low=0.0,
            high=1.0,
        )
        xp = get_array_module(u)
        with np.errstate(divide="ignore"):  # a draw of exactly 0 gives -inf: clipped below
            x = xp.clip(beta + xp.log(u) / abs(beta), alpha, beta)
        values = xp.clip(mean + std * (-x if mirror else x), a, b)
        with no_grad():
            return fill_random_(tensor, values.astype(tensor._array.dtype), "trunc_normal_")
    p = sample(
        "uniform", tensor.shape, "float64", device_of(tensor._array), generator, low=low, high=high
    )
    xp = get_array_module(p)
    x = _normal_ppf(xp.clip(p, max(low, _TINY), high))
    values = xp.clip(mean + std * (-x if mirror else x), a, b)  # rounding may step outside
    with no_grad():
        return fill_random_(tensor, values.astype(tensor._array.dtype), "trunc_normal_")


_TINY = float(np.finfo(np.float64).tiny)


def _normal_cdf(x: float) -> float:
    # erfc keeps the relative precision of tiny tail probabilities (1 + erf would lose it)
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# Acklam's rational approximation of Φ⁻¹ (relative error below 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
    1.0,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00, 1.0)
_P_LOW = 0.02425


def _polynomial(coefficients: tuple, x: Any) -> Any:
    result = coefficients[0]
    for c in coefficients[1:]:
        result = result * x + c
    return result


def _normal_ppf(p: Any) -> Any:
    """Φ⁻¹ of a float64 array with values in (0, 1), on numpy or cupy (no boolean indexing)."""
    xp = get_array_module(p)
    q = p - 0.5
    r = q * q
    central = _polynomial(_A, r) * q / _polynomial(_B, r)
    t = xp.sqrt(-2.0 * xp.log(xp.minimum(p, 1.0 - p)))
    tail = _polynomial(_C, t) / _polynomial(_D, t)
    x = xp.where(xp.abs(q) <= 0.5 - _P_LOW, central, xp.where(q < 0, tail, -tail))
    # One Halley step with erf brings it to ~1e-15 where Φ(x) - p is computed precisely; deep
    # in the lower tail (Φ < 3e-5) erf's absolute error would undo the approximation instead.
    error = 0.5 * (1.0 + erf(x / math.sqrt(2.0))) - p
    u = error * math.sqrt(2.0 * math.pi) * xp.exp(0.5 * x * x)
    return xp.where(x > -4.0, x - u / (1.0 + 0.5 * x * u), x)


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Fill with a (semi-)orthogonal matrix times ``gain``, as PyTorch: the Q of a QR of a
    standard normal ``(rows, numel / rows)`` matrix, signs fixed by R's diagonal; dims after
    the first are flattened.

    Raises:
        ValueError: fewer than 2 dims.
    """
    if tensor.ndim < 2:
        raise ValueError(
            f"orthogonal_: only tensors with 2 or more dimensions are supported, got shape "
            f"{tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    dtype = tensor._array.dtype
    if dtype.kind != "f":
        raise TypeError(f"orthogonal_: needs a floating-point tensor, got {tensor.dtype}")
    flat = sample("normal", (rows, cols), dtype, device_of(tensor._array), generator, mean=0, std=1)
    xp = get_array_module(flat)
    flat = flat.astype(xp.float64)
    if rows < cols:
        flat = flat.T
    q, r = xp.linalg.qr(flat)
    q *= xp.sign(xp.diagonal(r))
    if rows < cols:
        q = q.T
    with no_grad():
        tensor.copy_(wrap((q * gain).reshape(tensor.shape).astype(dtype)))
    return tensor


def eye_(tensor: Tensor) -> Tensor:
    """Fill a 2-D tensor with the identity matrix (ones on the main diagonal)."""
    if tensor.ndim != 2:
        raise ValueError(
            f"eye_: only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}"
        )
    xp = get_array_module(tensor._array)
    with no_grad():
        tensor.copy_(wrap(xp.eye(*tensor.shape, dtype=tensor._array.dtype)))
    return tensor


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    """Fill a 3-, 4- or 5-D convolution weight with the Dirac delta (per group): the
    convolution then passes its first input channels through unchanged.

    Raises:
        ValueError: another rank, or a first dim not divisible by ``groups``.
    """
    if tensor.ndim not in (3, 4, 5):
        raise ValueError(
            f"dirac_: only tensors with 3, 4, or 5 dimensions are supported, got shape "
            f"{tuple(tensor.shape)}"
        )
    shape = tuple(tensor.shape)
    if groups < 1 or shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 ({shape[0]}) must be divisible by groups={groups}")
    per_group = shape[0] // groups
    centre = tuple(size // 2 for size in shape[2:])
    values = np.zeros(shape, dtype=tensor._array.dtype)
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            values[(g * per_group + d, d, *centre)] = 1
    with no_grad():
        tensor.copy_(wrap(values))
    return tensor


def _no_elements(tensor: Tensor) -> bool:
    # As PyTorch: a zero-size tensor has fan 0 (no bound); there is nothing to fill anyway.
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


__all__ = [
    "calculate_gain",
    "constant_",
    "dirac_",
    "eye_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
