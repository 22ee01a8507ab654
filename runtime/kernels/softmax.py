"""The softmax of attention scores, fused with their scale and the causal mask.

``scaled_dot_product_attention`` composed from cupy calls spends about ten launches between
its two matrix products (scale, the causal mask built and applied, then max, subtract, exp,
sum and divide) and as many on the way back. Here, one block per row of (rows, cols) scores:
forward ``y = softmax(scale * x)`` over the row's first ``limit`` columns and 0 after them,
where ``limit = row % length + 1`` for a causal mask over queries of ``length`` rows (key
``j`` visible to query ``i`` when ``j <= i``, top-left aligned as PyTorch's ``is_causal``)
and ``cols`` without one. Backward ``grad_x = scale * y * (grad - sum(grad * y))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import (
    contiguous,
    f64,
    i64,
    kernel,
    launch,
    on_array_device,
    register,
    row_block,
    templated,
    type_name,
)

_BODY = r"""
// causal_length 0: no mask. Otherwise row r sees its first (r % causal_length) + 1 columns.
template <typename T>
__global__ void scaled_softmax_forward(const T* x, T* y, long long rows, long long cols,
                                       long long causal_length, double scale) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;  // the whole block leaves together
    long long limit = cols;
    if (causal_length > 0 && row % causal_length + 1 < cols) limit = row % causal_length + 1;
    const A s = (A)scale;
    const T* xr = x + row * cols;
    A best = neg_inf<A>();
    for (long long c = threadIdx.x; c < limit; c += blockDim.x) {
        const A v = to_acc(xr[c]) * s;
        best = v > best ? v : best;
    }
    best = block_max(best, scratch);
    A sum = 0;
    for (long long c = threadIdx.x; c < limit; c += blockDim.x)
        sum += dt_exp(to_acc(xr[c]) * s - best);
    sum = block_sum(sum, scratch);
    T* yr = y + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        yr[c] = from_acc<T>(c < limit ? dt_exp(to_acc(xr[c]) * s - best) / sum : A(0));
}

template <typename T>
__global__ void scaled_softmax_backward(const T* grad, const T* y, T* grad_x, long long rows,
                                        long long cols, double scale) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const T* g = grad + row * cols;
    const T* yr = y + row * cols;
    A dot = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        dot += to_acc(g[c]) * to_acc(yr[c]);
    dot = block_sum(dot, scratch);
    const A s = (A)scale;
    T* out = grad_x + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        out[c] = from_acc<T>(s * to_acc(yr[c]) * (to_acc(g[c]) - dot));
}
"""

SOURCE = register(
    "softmax", _BODY, templated(("scaled_softmax_forward", "scaled_softmax_backward"))
)


def supported(x: Any) -> bool:
    """Whether the kernels take these (rows, cols) scores: a float16/32/64 dtype."""
    return x.ndim == 2 and type_name(x.dtype) is not None


@on_array_device
def scaled_softmax_forward(x: Any, scale: float, causal_length: int = 0) -> Any:
    """``softmax(scale * x)`` over the last dim of cupy ``x`` (rows, cols), each row ``r``
    cut to its first ``r % causal_length + 1`` columns (zeros after) when ``causal_length``
    is positive."""
    cupy = require_cupy("scaled_softmax_forward")
    rows, cols = x.shape
    x = contiguous(x)
    y = cupy.empty_like(x)
    if rows and cols:
        fn = kernel(SOURCE, f"scaled_softmax_forward<{type_name(x.dtype)}>")
        args = (x, y, i64(rows), i64(cols), i64(causal_length), f64(scale))
        launch(fn, (rows,), row_block(cols), args)
    return y


@on_array_device
def scaled_softmax_backward(grad: Any, y: Any, scale: float) -> Any:
    """The gradient of ``scaled_softmax_forward`` with respect to ``x``, from its output
    ``y`` and the gradient ``grad`` of that output (both (rows, cols))."""
    cupy = require_cupy("scaled_softmax_backward")
    rows, cols = y.shape
    grad = contiguous(grad, dtype=y.dtype)
    grad_x = cupy.empty_like(y)
    if rows and cols:
        fn = kernel(SOURCE, f"scaled_softmax_backward<{type_name(y.dtype)}>")
        args = (grad, contiguous(y), grad_x, i64(rows), i64(cols), f64(scale))
        launch(fn, (rows,), row_block(cols), args)
    return grad_x


# ---- numpy references -----------------------------------------------------------------------
def causal_limits(rows: int, cols: int, causal_length: int) -> np.ndarray:
    """How many leading columns each row sees (all ``cols`` without a causal mask)."""
    if causal_length <= 0:
        return np.full(rows, cols)
    return np.minimum(np.arange(rows) % causal_length + 1, cols)


def scaled_softmax_forward_reference(
    x: np.ndarray, scale: float, causal_length: int = 0
) -> np.ndarray:
    """numpy ``scaled_softmax_forward``, computed in float64."""
    rows, cols = x.shape
    visible = np.arange(cols)[None, :] < causal_limits(rows, cols, causal_length)[:, None]
    z = np.where(visible, x.astype(np.float64) * scale, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def scaled_softmax_backward_reference(grad: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """numpy ``scaled_softmax_backward``, computed in float64."""
    g, y64 = grad.astype(np.float64), y.astype(np.float64)
    return (scale * y64 * (g - (g * y64).sum(axis=-1, keepdims=True))).astype(y.dtype)
