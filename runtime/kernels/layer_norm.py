"""LayerNorm over the trailing dims of an input, fused: ``rows`` rows of ``cols`` elements.

Forward, one block per row: ``mean``, ``rstd = 1 / sqrt(var + eps)`` (two passes over the
row, as numpy computes it) and ``out = (x - mean) * rstd * weight + bias``. Backward, one
launch of two kinds of blocks, which depend on nothing the other writes: the first ``rows``
blocks take a row each, ``grad_x = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))`` with
``gh = grad * weight``; the rest sum ``grad * xhat`` and ``grad`` over a chunk of rows for a
block of columns, into per-chunk partials. The last partial block to finish (counted on the
stream's ``build.done_counter``, which it sets back to 0) adds the partials per column into
the parameters' gradients. A backward is one launch; it was eight when cupy zeroed, added
and cast the partials, three when the rows and the partials were launches of their own, and
two while a kernel of its own added the partials (that kernel remains for a capture that
finds no counter for its stream).

The kernels take each array as a bare pointer: a C-contiguous input of any shape is read as
it lies, and the outputs are made in their final shapes. Arrays of one kind share one
allocation that each kernel splits itself: the (2, rows) statistics (means, then rstds), the
(2, chunks, cols) partials, the (2, cols) parameters' gradients. Views and allocations
each cost host time on a GPU, launch or not.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import device_id, require_cupy
from dtrain.runtime.kernels.build import (
    ELEMENTWISE_BLOCK,
    contiguous,
    done_counter,
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
from dtrain.runtime.kernels.cross_entropy import acc_dtype

_BODY = r"""
template <typename T>
__global__ void layer_norm_forward(const T* x, const T* weight, const T* bias, int has_weight,
                                   int has_bias, T* out, typename Acc<T>::type* stats,
                                   long long rows, long long cols, double eps) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const T* xr = x + row * cols;
    A sum = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) sum += to_acc(xr[c]);
    const A mean = block_sum(sum, scratch) / A(cols);
    A sq = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        const A d = to_acc(xr[c]) - mean;
        sq += d * d;
    }
    const A var = block_sum(sq, scratch) / A(cols);
    const A rstd = A(1) / dt_sqrt(var + A(eps));
    T* o = out + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        A v = (to_acc(xr[c]) - mean) * rstd;
        if (has_weight) v *= to_acc(weight[c]);
        if (has_bias) v += to_acc(bias[c]);
        o[c] = from_acc<T>(v);
    }
    if (threadIdx.x == 0) {  // stats: (2, rows), the means then the rstds
        stats[row] = mean;
        stats[rows + row] = rstd;
    }
}

template <typename T>
__device__ __forceinline__ void layer_norm_grad_row(
        const T* grad, const T* x, const T* weight, int has_weight,
        const typename Acc<T>::type* mean, const typename Acc<T>::type* rstd, const T* addend,
        int has_addend, T* grad_x, long long row, long long cols) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    const T* g = grad + row * cols;
    const T* xr = x + row * cols;
    const A mu = mean[row], rs = rstd[row];
    A sum_g = 0, sum_gx = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        const A gh = has_weight ? to_acc(g[c]) * to_acc(weight[c]) : to_acc(g[c]);
        sum_g += gh;
        sum_gx += gh * (to_acc(xr[c]) - mu) * rs;
    }
    const A mean_g = block_sum(sum_g, scratch) / A(cols);
    const A mean_gx = block_sum(sum_gx, scratch) / A(cols);
    T* out = grad_x + row * cols;
    const T* add = addend + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        const A gh = has_weight ? to_acc(g[c]) * to_acc(weight[c]) : to_acc(g[c]);
        const A xhat = (to_acc(xr[c]) - mu) * rs;
        A value = rs * (gh - mean_g - xhat * mean_gx);
        if (has_addend) value += to_acc(add[c]);
        out[c] = from_acc<T>(value);
    }
}

// Partial block p: columns [(p % column_blocks) * blockDim.x, ...) of chunk p / column_blocks;
// a thread sums one column over the chunk's rows.
template <typename T>
__device__ __forceinline__ void layer_norm_grad_partials(
        const T* grad, const T* x, const typename Acc<T>::type* mean,
        const typename Acc<T>::type* rstd, typename Acc<T>::type* partial_w,
        typename Acc<T>::type* partial_b, long long p, long long rows, long long cols,
        long long rows_per_chunk) {
    typedef typename Acc<T>::type A;
    const long long column_blocks = (cols + blockDim.x - 1) / blockDim.x;
    const long long chunk = p / column_blocks;
    const long long c = (p % column_blocks) * blockDim.x + threadIdx.x;
    if (c >= cols) return;  // to the caller, whose barriers every thread still reaches
    const long long first = chunk * rows_per_chunk;
    const long long last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
    A sum_w = 0, sum_b = 0;
    for (long long r = first; r < last; ++r) {
        const A g = to_acc(grad[r * cols + c]);
        sum_w += g * (to_acc(x[r * cols + c]) - mean[r]) * rstd[r];
        sum_b += g;
    }
    partial_w[chunk * cols + c] = sum_w;
    partial_b[chunk * cols + c] = sum_b;
}

// Column c's partials added in chunk order, stored in T. volatile: the partials were
// written by other blocks, and a cached line from before their fence must not be read.
template <typename T>
__device__ __forceinline__ void layer_norm_grad_sum_column(
        const volatile typename Acc<T>::type* partial_w,
        const volatile typename Acc<T>::type* partial_b, T* grad_w, T* grad_b, long long c,
        long long chunks, long long cols) {
    typedef typename Acc<T>::type A;
    A sum_w = 0, sum_b = 0;
    for (long long k = 0; k < chunks; ++k) {
        sum_w += partial_w[k * cols + c];
        sum_b += partial_b[k * cols + c];
    }
    grad_w[c] = from_acc<T>(sum_w);
    grad_b[c] = from_acc<T>(sum_b);
}

// The partial block that counts itself done last adds every column's partials and sets
// the counter back to 0 for the next launch.
template <typename T>
__device__ __forceinline__ void layer_norm_grad_finish_if_last(
        const typename Acc<T>::type* partial_w, const typename Acc<T>::type* partial_b,
        T* grad_w, T* grad_b, int* counter, long long partial_blocks, long long chunks,
        long long cols) {
    if (!last_block_done(counter, partial_blocks)) return;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        layer_norm_grad_sum_column(partial_w, partial_b, grad_w, grad_b, c, chunks, cols);
    if (threadIdx.x == 0) *counter = 0;
}

// Blocks [0, rows): grad_x, a row each, plus the addend where has_addend is set (the
// gradient other consumers sent x: the engine's sum, saved a launch). Blocks
// [rows, gridDim.x): the parameters' partials (none when the parameters need no gradient),
// and, where finish is set, their sum into grad_w and grad_b by the last of them. Rows and
// partials read nothing the other writes.
// stats: forward's (2, rows) means and rstds; partials: (2, chunks, cols), the weight's then
// the bias's; param_grads: (2, cols), grad_w then grad_b.
template <typename T>
__global__ void layer_norm_backward(const T* grad, const T* x, const T* weight, int has_weight,
                                    const typename Acc<T>::type* stats, const T* addend,
                                    int has_addend, T* grad_x,
                                    typename Acc<T>::type* partials, T* param_grads,
                                    int* counter, int finish, long long rows, long long cols,
                                    long long rows_per_chunk, long long chunks) {
    typedef typename Acc<T>::type A;
    const A* mean = stats;
    const A* rstd = stats + rows;
    A* partial_w = partials;
    A* partial_b = partials + chunks * cols;
    T* grad_w = param_grads;
    T* grad_b = param_grads + cols;
    const long long block = blockIdx.x;
    if (block < rows) {
        layer_norm_grad_row(grad, x, weight, has_weight, mean, rstd, addend, has_addend, grad_x,
                            block, cols);
        return;
    }
    layer_norm_grad_partials(grad, x, mean, rstd, partial_w, partial_b, block - rows, rows,
                             cols, rows_per_chunk);
    if (finish)
        layer_norm_grad_finish_if_last(partial_w, partial_b, grad_w, grad_b, counter,
                                       gridDim.x - rows, chunks, cols);
}

// The partials' sum as a launch of its own, one thread per column: for a backward launched
// without the counter (a capture that began before the device had one).
template <typename T>
__global__ void layer_norm_param_grads_finish(const typename Acc<T>::type* partials,
                                              T* param_grads, long long chunks,
                                              long long cols) {
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < cols)
        layer_norm_grad_sum_column<T>(partials, partials + chunks * cols, param_grads,
                                      param_grads + cols, c, chunks, cols);
}
"""

SOURCE = register(
    "layer_norm",
    _BODY,
    templated(
        (
            "layer_norm_forward",
            "layer_norm_backward",
            "layer_norm_param_grads_finish",
        )
    ),
)

_CHUNKS = 64  # row chunks of the column reduction: enough blocks to fill the GPU


def supported(x: Any, weight: Any = None, bias: Any = None, dims: int = 1) -> bool:
    """Whether the kernels take ``x`` normalised over its trailing ``dims`` dims with this
    weight and bias (as many elements each as those dims hold, any shape): a float16/32/64
    dtype, shared by all three."""
    if x.ndim < dims or type_name(x.dtype) is None:
        return False
    cols = math.prod(x.shape[x.ndim - dims :])
    for p in (weight, bias):
        if p is not None and (p.dtype != x.dtype or p.size != cols):
            return False
    return True


# Launch parameters by shape, worked out once: asked at every launch, for a model's few
# shapes (each step's Python calls are host time on a GPU).
@functools.lru_cache(maxsize=256)
def _forward_plan(rows: int, cols: int, eps: float) -> tuple[int, tuple]:
    """The block and the trailing (rows, cols, eps) arguments of a forward launch."""
    return row_block(cols), (i64(rows), i64(cols), f64(eps))


@functools.lru_cache(maxsize=256)
def _backward_plan(rows: int, cols: int, param_grads: bool) -> tuple[int, int, int, tuple]:
    """``(chunks, grid, block, sizes)`` of a backward launch: ``chunks`` of rows for the
    parameters' partials (0 without them), and the trailing size arguments."""
    block = row_block(cols)
    per_chunk = max(1, math.ceil(rows / _CHUNKS))
    chunks = max(1, math.ceil(rows / per_chunk)) if param_grads else 0
    grid = rows + chunks * math.ceil(cols / block)
    return chunks, grid, block, (i64(rows), i64(cols), i64(per_chunk), i64(chunks))


@on_array_device
def layer_norm_forward(
    x: Any, weight: Any, bias: Any, eps: float, dims: int = 1
) -> tuple[Any, Any]:
    """LayerNorm of cupy ``x`` over its trailing ``dims`` dims: ``rows`` rows of ``cols``
    elements, ``cols`` the product of those dims. The arrays go to the kernel as they are
    (a C-contiguous one is not copied, nor reshaped: a view costs host time).

    Returns:
        ``(out, stats)``: ``out`` like ``x``; ``stats`` (2, rows) in ``acc_dtype(x.dtype)``,
        each row's mean, then each row's rstd: what ``layer_norm_backward`` needs.
    """
    cupy = require_cupy("layer_norm_forward")
    x = contiguous(x)
    cols = math.prod(x.shape[x.ndim - dims :])
    rows = math.prod(x.shape[: x.ndim - dims])
    out = cupy.empty_like(x)
    stats = cupy.empty((2, rows), acc_dtype(x.dtype))
    if rows and cols:
        w = x if weight is None else contiguous(weight)
        b = x if bias is None else contiguous(bias)
        fn = kernel(SOURCE, f"layer_norm_forward<{type_name(x.dtype)}>")
        flags = (np.int32(weight is not None), np.int32(bias is not None))
        block, sizes = _forward_plan(rows, cols, eps)
        launch(fn, (rows,), block, (x, w, b, *flags, out, stats, *sizes))
    return out, stats


@on_array_device
def layer_norm_backward(
    grad: Any,
    x: Any,
    weight: Any,
    stats: Any,
    *,
    dims: int = 1,
    param_grads: bool = True,
    addend: Any = None,
) -> tuple[Any, Any, Any]:
    """Gradients of LayerNorm: ``(grad_x, grad_weight, grad_bias)``.

    Args:
        grad: the gradient of ``out``, ``x``'s size (any shape).
        x, weight: the forward's input and weight (None when it had none).
        stats: ``layer_norm_forward``'s (2, rows) statistics.
        dims: the trailing dims of ``x`` that were normalised, as forward.
        param_grads: also compute ``grad_weight`` and ``grad_bias``, in ``x``'s dtype and
            the shape of those trailing dims (two views of one array); when False they are
            None.
        addend: ``x``'s size, added to ``grad_x`` (a gradient ``x`` already has from
            elsewhere); read only.

    Returns ``grad_x`` in ``x``'s shape.
    """
    cupy = require_cupy("layer_norm_backward")
    x = contiguous(x)
    grad = contiguous(grad, dtype=x.dtype)
    param_shape = x.shape[x.ndim - dims :]
    rows, cols = stats.shape[1], math.prod(param_shape)
    name = type_name(x.dtype)
    grad_x = cupy.empty_like(x)
    chunks, grid, block, sizes = _backward_plan(rows, cols, param_grads)
    if param_grads:
        # Every (chunk, column) partial is written, and their sums per column go into grad_w
        # and grad_b: no zeroing, no cupy reduction, no cast (each a launch).
        partials = cupy.empty((2, chunks, cols), acc_dtype(x.dtype))
        pair = cupy.empty((2, *param_shape), x.dtype)
        counter = done_counter(cupy, device_id(x))
    else:  # no partial blocks (chunks 0): pointers that are never written
        partials, pair, counter = stats, x, None
    if rows and cols:
        w = x if weight is None else contiguous(weight)
        fn = kernel(SOURCE, f"layer_norm_backward<{name}>")
        add = x if addend is None else contiguous(addend, dtype=x.dtype)
        args = (grad, x, w, np.int32(weight is not None), stats, add)
        args += (np.int32(addend is not None), grad_x, partials, pair)
        args += (cupy.empty(0, np.int32) if counter is None else counter,)
        launch(fn, (grid,), block, (*args, np.int32(counter is not None), *sizes))
    if not param_grads:
        return grad_x, None, None
    if cols and (counter is None or not rows):
        if not rows:
            partials.fill(0)
        fn = kernel(SOURCE, f"layer_norm_param_grads_finish<{name}>")
        grid = (math.ceil(cols / ELEMENTWISE_BLOCK),)
        launch(fn, grid, ELEMENTWISE_BLOCK, (partials, pair, i64(chunks), i64(cols)))
    return grad_x, pair[0], pair[1]


# ---- numpy references -----------------------------------------------------------------------
def _rows(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` as (rows, cols), its trailing ``dims`` dims the columns, in float64."""
    return x.astype(np.float64).reshape(-1, math.prod(x.shape[x.ndim - dims :]))


def layer_norm_forward_reference(
    x: np.ndarray, weight: Any, bias: Any, eps: float, dims: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """numpy ``layer_norm_forward``, computed in float64: ``(out, stats)``."""
    x64 = _rows(x, dims)
    mean = x64.mean(axis=-1)
    var = ((x64 - mean[:, None]) ** 2).mean(axis=-1)
    rstd = 1 / np.sqrt(var + eps)
    out = (x64 - mean[:, None]) * rstd[:, None]
    if weight is not None:
        out = out * weight.astype(np.float64).reshape(-1)
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(-1)
    stats = np.stack([mean, rstd]).astype(acc_dtype(x.dtype))
    return out.reshape(x.shape).astype(x.dtype), stats


def layer_norm_backward_reference(
    grad: np.ndarray,
    x: np.ndarray,
    weight: Any,
    stats: np.ndarray,
    addend: Any = None,
    dims: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy ``layer_norm_backward``, computed in float64: ``grad_x`` in ``x``'s shape, the
    weight's and bias's gradients in the shape of its trailing ``dims`` dims."""
    g = _rows(grad.reshape(x.shape), dims)
    mean, rstd = stats.astype(np.float64)
    rs = rstd[:, None]
    xhat = (_rows(x, dims) - mean[:, None]) * rs
    gh = g if weight is None else g * weight.astype(np.float64).reshape(-1)
    mean_g = gh.mean(axis=-1, keepdims=True)
    mean_gx = (gh * xhat).mean(axis=-1, keepdims=True)
    grad_x = rs * (gh - mean_g - xhat * mean_gx)
    if addend is not None:
        grad_x = grad_x + _rows(addend.reshape(x.shape), dims)
    dtype, param_shape = x.dtype, x.shape[x.ndim - dims :]
    grad_w = (g * xhat).sum(axis=0).reshape(param_shape).astype(dtype)
    grad_b = g.sum(axis=0).reshape(param_shape).astype(dtype)
    return grad_x.reshape(x.shape).astype(dtype), grad_w, grad_b
