"""GELU (exact erf form and tanh form), forward and backward, optionally fused with the
bias add before it (``gelu(x + bias)``, bias broadcast over the last dim).

Elementwise, grid-stride. Backward recomputes ``x + bias`` from the inputs rather than
keeping it: one read of each instead of a saved array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import (
    ELEMENTWISE_BLOCK,
    contiguous,
    elementwise_grid,
    i64,
    kernel,
    launch,
    on_array_device,
    register,
    templated,
    type_name,
)
from dtrain.runtime.special import erf

_BODY = r"""
// GELU(v) and its slope d/dv; `tanh_form` picks the tanh approximation over the erf form.
template <typename A> __device__ __forceinline__ A gelu_value(A v, int tanh_form) {
    if (tanh_form) {
        const A inner = A(0.7978845608028654) * (v + A(0.044715) * v * v * v);
        return A(0.5) * v * (A(1) + dt_tanh(inner));
    }
    return A(0.5) * v * (A(1) + dt_erf(v * A(0.7071067811865476)));
}

template <typename A> __device__ __forceinline__ A gelu_slope(A v, int tanh_form) {
    if (tanh_form) {
        const A inner = A(0.7978845608028654) * (v + A(0.044715) * v * v * v);
        const A t = dt_tanh(inner);
        const A d_inner = A(0.7978845608028654) * (A(1) + A(3 * 0.044715) * v * v);
        return A(0.5) * (A(1) + t) + A(0.5) * v * (A(1) - t * t) * d_inner;
    }
    // Phi(v) + v phi(v)
    const A cdf = A(0.5) * (A(1) + dt_erf(v * A(0.7071067811865476)));
    return cdf + v * A(0.3989422804014327) * dt_exp(A(-0.5) * v * v);
}

template <typename T>
__global__ void gelu_forward(const T* x, const T* bias, long long bias_size, T* out,
                             long long n, int tanh_form) {
    typedef typename Acc<T>::type A;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        A v = to_acc(x[i]);
        if (bias_size) v += to_acc(bias[i % bias_size]);
        out[i] = from_acc<T>(gelu_value(v, tanh_form));
    }
}

template <typename T>
__global__ void gelu_backward(const T* grad, const T* x, const T* bias, long long bias_size,
                              T* grad_x, long long n, int tanh_form) {
    typedef typename Acc<T>::type A;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        A v = to_acc(x[i]);
        if (bias_size) v += to_acc(bias[i % bias_size]);
        grad_x[i] = from_acc<T>(to_acc(grad[i]) * gelu_slope(v, tanh_form));
    }
}
"""

SOURCE = register("gelu", _BODY, templated(("gelu_forward", "gelu_backward")))


def supported(x: Any, bias: Any = None) -> bool:
    """Whether the kernels take ``x`` (and ``bias``, of ``x``'s dtype and last dim)."""
    if type_name(x.dtype) is None:
        return False
    return bias is None or (bias.dtype == x.dtype and x.ndim >= 1 and bias.size == x.shape[-1])


def _tanh_form(approximate: str) -> np.int32:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate={approximate!r}; use 'none' or 'tanh'")
    return np.int32(approximate == "tanh")


def _bias_args(cupy: Any, x: Any, bias: Any) -> tuple[Any, np.int64]:
    if bias is None:
        return x, i64(0)  # never read: bias_size 0
    return contiguous(bias.reshape(-1)), i64(bias.size)


@on_array_device
def gelu_forward(x: Any, approximate: str = "none", bias: Any = None) -> Any:
    """``gelu(x + bias)`` of a cupy array (``bias`` optional, shaped like ``x``'s last dim)."""
    cupy = require_cupy("gelu_forward")
    tanh_form = _tanh_form(approximate)
    x = contiguous(x)
    out = cupy.empty_like(x)
    if x.size:
        b, bias_size = _bias_args(cupy, x, bias)
        fn = kernel(SOURCE, f"gelu_forward<{type_name(x.dtype)}>")
        args = (x, b, bias_size, out, i64(x.size), tanh_form)
        launch(fn, elementwise_grid(x.size), ELEMENTWISE_BLOCK, args)
    return out


@on_array_device
def gelu_backward(grad: Any, x: Any, approximate: str = "none", bias: Any = None) -> Any:
    """Gradient of ``gelu(x + bias)`` w.r.t. ``x`` (and so w.r.t. ``x + bias``); the bias's
    gradient is this summed over the leading dims."""
    cupy = require_cupy("gelu_backward")
    tanh_form = _tanh_form(approximate)
    x = contiguous(x)
    grad = contiguous(grad, dtype=x.dtype)
    grad_x = cupy.empty_like(x)
    if x.size:
        b, bias_size = _bias_args(cupy, x, bias)
        fn = kernel(SOURCE, f"gelu_backward<{type_name(x.dtype)}>")
        args = (grad, x, b, bias_size, grad_x, i64(x.size), tanh_form)
        launch(fn, elementwise_grid(x.size), ELEMENTWISE_BLOCK, args)
    return grad_x


# ---- numpy references -----------------------------------------------------------------------
_K = math.sqrt(2.0 / math.pi)


def _shifted(x: np.ndarray, bias: Any) -> np.ndarray:
    v = x.astype(np.float64)
    return v if bias is None else v + bias.astype(np.float64)


def gelu_forward_reference(
    x: np.ndarray, approximate: str = "none", bias: Any = None
) -> np.ndarray:
    """numpy ``gelu_forward`` in float64 (erf from ``runtime/special.py``, to ~2e-15)."""
    v = _shifted(x, bias)
    if approximate == "tanh":
        out = 0.5 * v * (1 + np.tanh(_K * (v + 0.044715 * v**3)))
    else:
        out = 0.5 * v * (1 + erf(v / math.sqrt(2.0)))
    return out.astype(x.dtype)


def gelu_backward_reference(
    grad: np.ndarray, x: np.ndarray, approximate: str = "none", bias: Any = None
) -> np.ndarray:
    """numpy ``gelu_backward`` in float64."""
    v = _shifted(x, bias)
    if approximate == "tanh":
        t = np.tanh(_K * (v + 0.044715 * v**3))
        slope = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * _K * (1 + 3 * 0.044715 * v * v)
    else:
        cdf = 0.5 * (1 + erf(v / math.sqrt(2.0)))
        slope = cdf + v * np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    return (grad.astype(np.float64) * slope).astype(x.dtype)
