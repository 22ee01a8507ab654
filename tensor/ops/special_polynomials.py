"""torch.special's orthogonal polynomials ``*_polynomial_*(input, n)``: elementwise in
``input`` and ``n`` (broadcast; either may be a Python number), without a gradient (as
PyTorch: the results do not require grad)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.ops.special_common import expect_tensor
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime import special_polynomials as _poly
from dtrain.runtime.backend import get_array_module


def _evaluate(name: str, function: Callable[[Any, Any], Any], input: Any, n: Any) -> Tensor:
    expect_tensor(name, input, n, "input or n to be a Tensor")
    for value, what in ((input, "input"), (n, "n")):
        if not isinstance(value, (Tensor, int, float)) or isinstance(value, bool):
            raise TypeError(f"{name}: {what} must be a Tensor or a number, got {value!r}")
    tensor = input if isinstance(input, Tensor) else n
    xp = get_array_module(tensor._array)
    x = input._array if isinstance(input, Tensor) else None
    m = n._array if isinstance(n, Tensor) else None
    if x is None:  # a number takes the tensor's float dtype (float32 beside integers)
        dtype = m.dtype if m.dtype.kind == "f" else np.dtype(np.float32)
        x = xp.asarray(input, dtype=dtype)
    if m is None:
        m = xp.asarray(n, dtype=x.dtype if x.dtype.kind == "f" else np.float32)
    return wrap(function(x, m))


def _shifted(kind: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda x, n: _poly.shifted(kind, x, n)


def chebyshev_polynomial_t(input: Any, n: Any) -> Tensor:
    """Chebyshev polynomials of the first kind, ``T_n(input)`` (n truncated to an int; 0
    for n < 0)."""
    return _evaluate("chebyshev_polynomial_t", _poly.chebyshev_t, input, n)


def chebyshev_polynomial_u(input: Any, n: Any) -> Tensor:
    """Chebyshev polynomials of the second kind, ``U_n(input)``."""
    return _evaluate("chebyshev_polynomial_u", _poly.chebyshev_u, input, n)


def chebyshev_polynomial_v(input: Any, n: Any) -> Tensor:
    """Chebyshev polynomials of the third kind, ``V_n(input)``."""
    return _evaluate("chebyshev_polynomial_v", _poly.chebyshev_v, input, n)


def chebyshev_polynomial_w(input: Any, n: Any) -> Tensor:
    """Chebyshev polynomials of the fourth kind, ``W_n(input)``."""
    return _evaluate("chebyshev_polynomial_w", _poly.chebyshev_w, input, n)


def shifted_chebyshev_polynomial_t(input: Any, n: Any) -> Tensor:
    """Shifted Chebyshev polynomials of the first kind, ``T_n(2 input - 1)``."""
    return _evaluate("shifted_chebyshev_polynomial_t", _shifted(_poly.chebyshev_t), input, n)


def shifted_chebyshev_polynomial_u(input: Any, n: Any) -> Tensor:
    """Shifted Chebyshev polynomials of the second kind, ``U_n(2 input - 1)``."""
    return _evaluate("shifted_chebyshev_polynomial_u", _shifted(_poly.chebyshev_u), input, n)


def shifted_chebyshev_polynomial_v(input: Any, n: Any) -> Tensor:
    """Shifted Chebyshev polynomials of the third kind, ``V_n(2 input - 1)``."""
    return _evaluate("shifted_chebyshev_polynomial_v", _shifted(_poly.chebyshev_v), input, n)


def shifted_chebyshev_polynomial_w(input: Any, n: Any) -> Tensor:
    """Shifted Chebyshev polynomials of the fourth kind, ``W_n(2 input - 1)``."""
    return _evaluate("shifted_chebyshev_polynomial_w", _shifted(_poly.chebyshev_w), input, n)


def hermite_polynomial_h(input: Any, n: Any) -> Tensor:
    """Physicists' Hermite polynomials ``H_n(input)`` (NaN for n above 128 in float32, 512
    in float64, as PyTorch)."""
    return _evaluate("hermite_polynomial_h", _poly.hermite_h, input, n)


def hermite_polynomial_he(input: Any, n: Any) -> Tensor:
    """Probabilists' Hermite polynomials ``He_n(input)`` (NaN for n above 128 / 512)."""
    return _evaluate("hermite_polynomial_he", _poly.hermite_he, input, n)


def laguerre_polynomial_l(input: Any, n: Any) -> Tensor:
    """Laguerre polynomials ``L_n(input)``."""
    return _evaluate("laguerre_polynomial_l", _poly.laguerre_l, input, n)


def legendre_polynomial_p(input: Any, n: Any) -> Tensor:
    """Legendre polynomials ``P_n(input)``."""
    return _evaluate("legendre_polynomial_p", _poly.legendre_p, input, n)


__all__ = [
    "chebyshev_polynomial_t",
    "chebyshev_polynomial_u",
    "chebyshev_polynomial_v",
    "chebyshev_polynomial_w",
    "hermite_polynomial_h",
    "hermite_polynomial_he",
    "laguerre_polynomial_l",
    "legendre_polynomial_p",
    "shifted_chebyshev_polynomial_t",
    "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w",
]
