"""``cupyx.scipy.special`` for the special functions, where it computes what PyTorch does.

The numpy code paths in ``runtime/special_*.py`` run on cupy arrays as they are; for the
functions whose scipy form matches ``torch.special`` (same values, same edges: the tests
check scipy's against PyTorch's on the CPU), a cupy array goes to ``cupyx.scipy.special``
instead, one fused kernel rather than dozens of elementwise launches. A cupy that lacks a
function, and a ``cupyx`` without ``scipy`` (the tests' CUDA emulator), keep the array path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module, is_cuda_array

# torch.special's names -> scipy.special's, for the functions whose edges agree.
SCIPY_NAMES = {
    "i0": "i0",
    "i0e": "i0e",
    "i1": "i1",
    "i1e": "i1e",
    "ndtri": "ndtri",
    "erfcx": "erfcx",
    "log_ndtr": "log_ndtr",
    "bessel_j0": "j0",
    "bessel_j1": "j1",
    "bessel_y0": "y0",
    "bessel_y1": "y1",
    "modified_bessel_k0": "k0",
    "modified_bessel_k1": "k1",
    "scaled_modified_bessel_k0": "k0e",
    "scaled_modified_bessel_k1": "k1e",
    "gammainc": "gammainc",
    "gammaincc": "gammaincc",
    "zeta": "zeta",
}


def cupyx_function(name: str, *arrays: Any) -> Callable[..., Any] | None:
    """``cupyx.scipy.special``'s form of torch.special's ``name`` when an array is on the
    GPU and cupy has it, else None (then the caller's array code path runs)."""
    if not any(is_cuda_array(a) for a in arrays):
        return None
    try:
        import cupyx.scipy.special as cupy_special
    except ImportError:
        return None
    return getattr(cupy_special, SCIPY_NAMES[name], None)


# name -> the array code path's values at (inf, -inf, 0, -0), computed once on the host.
_EDGES: dict[str, tuple[float, float, float, float]] = {}


def edge_values(name: str, edges: Callable[[Any], Any]) -> tuple[float, float, float, float]:
    """``edges`` (the array code path) at ``inf, -inf, 0, -0`` as Python floats, computed
    with numpy on the first call for ``name`` and cached: constants, so no GPU work per call."""
    if name not in _EDGES:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            values = edges(np.array([np.inf, -np.inf, 0.0, -0.0]))
        _EDGES[name] = tuple(float(v) for v in np.asarray(values, dtype=np.float64))
    return _EDGES[name]


def call_float64(
    function: Callable[..., Any],
    x: Any,
    edges: Callable[[Any], Any] | None = None,
    name: str | None = None,
) -> Any:
    """``function(x)`` in float64 (cupyx's float32 kernels use float32 coefficients); the
    caller rounds to its dtype. ``edges``, the array code path, gives the values at
    ``±inf`` and ``±0`` instead (PyTorch's ``i0(inf)`` is NaN, scipy's inf ...): it runs on
    those four values only, on the host, once per ``name`` (cached)."""
    x = x.astype(np.float64, copy=False)
    out = function(x)
    if edges is None:
        return out
    xp = get_array_module(x)
    key = name if name is not None else getattr(function, "__name__", repr(function))
    inf, minus_inf, zero, minus_zero = edge_values(key, edges)
    out = xp.where(x == np.inf, inf, xp.where(x == -np.inf, minus_inf, out))
    return xp.where(x == 0, xp.where(xp.signbit(x), minus_zero, zero), out)


def unary(name: str, x: Any, compute: Callable[[Any], Any]) -> Any:
    """torch.special's ``name`` of a float array: ``compute`` (the array code path, given
    float64) or, for a cupy array, cupyx's function with ``compute``'s edges; the result
    has ``x``'s dtype."""
    function = cupyx_function(name, x)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if function is not None:
            return call_float64(function, x, compute, name).astype(x.dtype, copy=False)
        return compute(x.astype(np.float64, copy=False)).astype(x.dtype, copy=False)


__all__ = ["SCIPY_NAMES", "call_float64", "cupyx_function", "edge_values", "unary"]
