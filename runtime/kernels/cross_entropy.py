"""Softmax + cross-entropy over the last dim of (rows, classes) logits, fused.

Forward, one block per row: the row's max, its log-sum-exp ``lse``, and the loss
``lse - logits[target]`` (0 where ``target == ignore_index``). Backward, one block per row:
``grad = scale[row] * (exp(logits - lse) - onehot(target))``, 0 on ignored rows, so only the
row's ``lse`` (one number) is kept between the two instead of the softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import (
    contiguous,
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
template <typename T>
__global__ void cross_entropy_forward(const T* logits, const long long* target, T* loss,
                                      typename Acc<T>::type* lse_out, long long rows,
                                      long long cols, long long ignore_index) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;  // the whole block leaves together
    const T* x = logits + row * cols;
    A best = neg_inf<A>();
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        const A v = to_acc(x[c]);
        best = v > best ? v : best;
    }
    best = block_max(best, scratch);
    A sum = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) sum += dt_exp(to_acc(x[c]) - best);
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        const A lse = best + dt_log(sum);
        const long long t = target[row];
        A value = 0;
        if (t != ignore_index) {
            // Out-of-range targets are the caller's to reject; never read outside the row.
            value = (t >= 0 && t < cols) ? lse - to_acc(x[t]) : neg_inf<A>() - neg_inf<A>();  // NaN
        }
        lse_out[row] = lse;
        loss[row] = from_acc<T>(value);
    }
}

template <typename T>
__global__ void cross_entropy_backward(const T* logits, const long long* target,
                                       const typename Acc<T>::type* lse,
                                       const typename Acc<T>::type* scale,
                                       long long scale_stride, T* grad, long long rows,
                                       long long cols, long long ignore_index) {
    typedef typename Acc<T>::type A;
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const long long t = target[row];
    const bool keep = t != ignore_index;
    const A s = scale[row * scale_stride];
    const A row_lse = lse[row];
    const T* x = logits + row * cols;
    T* g = grad + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        A value = 0;
        if (keep) value = s * (dt_exp(to_acc(x[c]) - row_lse) - (c == t ? A(1) : A(0)));
        g[c] = from_acc<T>(value);
    }
}
"""

SOURCE = register(
    "cross_entropy",
    _BODY,
    templated(("cross_entropy_forward", "cross_entropy_backward")),
)


def acc_dtype(dtype: Any) -> np.dtype:
    """The dtype the kernels compute (and keep ``lse``) in: float64 for float64, else float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def supported(logits: Any) -> bool:
    """Whether the kernels take these (rows, classes) logits: a float16/32/64 dtype."""
    return logits.ndim == 2 and type_name(logits.dtype) is not None and logits.shape[1] > 0


@on_array_device
def cross_entropy_forward(logits: Any, target: Any, ignore_index: int) -> tuple[Any, Any]:
    """Per-row loss and log-sum-exp of cupy ``logits`` (rows, classes) at ``target`` (rows,).

    Returns:
        ``(loss, lse)``: ``loss`` in the logits' dtype (0 on ignored rows), ``lse`` in
        ``acc_dtype``. Out-of-range targets give NaN; the caller validates them.
    """
    cupy = require_cupy("cross_entropy_forward")
    rows, cols = logits.shape
    logits = contiguous(logits)
    target = contiguous(target.reshape(rows), dtype=np.int64)
    loss = cupy.empty(rows, logits.dtype)
    lse = cupy.empty(rows, acc_dtype(logits.dtype))
    if rows:
        fn = kernel(SOURCE, f"cross_entropy_forward<{type_name(logits.dtype)}>")
        args = (logits, target, loss, lse, i64(rows), i64(cols), i64(ignore_index))
        launch(fn, (rows,), row_block(cols), args)
    return loss, lse


@on_array_device
def cross_entropy_backward(
    logits: Any, target: Any, lse: Any, scale: Any, ignore_index: int
) -> Any:
    """Gradient of the per-row losses w.r.t. ``logits``, each row times ``scale``.

    Args:
        logits: the forward's cupy logits (rows, classes).
        target: class indices (rows,).
        lse: ``cross_entropy_forward``'s log-sum-exp.
        scale: the incoming gradient per row: shape (rows,), or a single value (shape () or
            (1,)) for every row; a device array, so nothing waits on the host.
        ignore_index: rows with this target get a zero gradient.
    """
    cupy = require_cupy("cross_entropy_backward")
    rows, cols = logits.shape
    logits = contiguous(logits)
    target = contiguous(target.reshape(rows), dtype=np.int64)
    scale = contiguous(scale.reshape(-1), dtype=lse.dtype)
    stride = 0 if scale.size == 1 else 1
    if stride and scale.size != rows:
        raise ValueError(
            f"cross_entropy_backward: scale has {scale.size} values for {rows} rows; "
            "pass one per row or a single one"
        )
    grad = cupy.empty_like(logits)
    if rows:
        fn = kernel(SOURCE, f"cross_entropy_backward<{type_name(logits.dtype)}>")
        args = (logits, target, lse, scale, i64(stride), grad, i64(rows), i64(cols))
        launch(fn, (rows,), row_block(cols), (*args, i64(ignore_index)))
    return grad


# ---- numpy references -----------------------------------------------------------------------
def cross_entropy_forward_reference(
    logits: np.ndarray, target: np.ndarray, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """numpy ``cross_entropy_forward``, computed in float64."""
    x = logits.astype(np.float64)
    best = x.max(axis=-1, keepdims=True)
    lse = (best + np.log(np.exp(x - best).sum(axis=-1, keepdims=True)))[:, 0]
    keep = target != ignore_index
    picked = np.take_along_axis(x, np.where(keep, target, 0)[:, None], axis=-1)[:, 0]
    loss = np.where(keep, lse - picked, 0.0)
    return loss.astype(logits.dtype), lse.astype(acc_dtype(logits.dtype))


def cross_entropy_backward_reference(
    logits: np.ndarray, target: np.ndarray, lse: np.ndarray, scale: Any, ignore_index: int
) -> np.ndarray:
    """numpy ``cross_entropy_backward``, computed in float64."""
    x = logits.astype(np.float64)
    keep = target != ignore_index
    onehot = np.zeros_like(x)
    np.put_along_axis(onehot, np.where(keep, target, 0)[:, None], 1.0, axis=-1)
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), target.shape)
    grad = (np.exp(x - lse[:, None].astype(np.float64)) - onehot) * (scale * keep)[:, None]
    return grad.astype(logits.dtype)
