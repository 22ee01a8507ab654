"""Softmax + cross-entropy over the last dim of (rows, classes) logits, fused.

Forward, one block per row: the row's max, its log-sum-exp ``lse``, and the loss
``lse - logits[target]`` (0 where ``target == ignore_index``). For the mean, the last row
block to finish (counted on the stream's ``done_counter``) adds the rows up and counts the
kept ones, so the loss and its mean are one launch; ``cross_entropy_mean`` does it in a
launch of its own (per-row losses from elsewhere, many rows, or no counter for the stream
while capturing). Backward, one block per row:
``grad = scale[row] * (exp(logits - lse) - onehot(target))``, 0 on ignored rows, so only the
row's ``lse`` (one number) is kept between the two instead of the softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import device_id, require_cupy
from dtrain.runtime.kernels.build import (
    contiguous,
    done_counter,
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
// From each thread's share of the per-row losses' sum and of the kept rows' count: the
// mean over the rows whose target is not ignored (ignored rows hold 0), and that count,
// which backward divides by; no rows kept: NaN. All the block's threads call it.
template <typename T>
__device__ __forceinline__ void cross_entropy_write_mean(typename Acc<T>::type sum,
                                                         typename Acc<T>::type kept, T* mean,
                                                         typename Acc<T>::type* count,
                                                         typename Acc<T>::type* scratch) {
    sum = block_sum(sum, scratch);
    kept = block_sum(kept, scratch);
    if (threadIdx.x == 0) {
        *count = kept;
        *mean = from_acc<T>(sum / kept);
    }
}

// With finish set, each row block also stores its loss (as stored in T) in row_loss, and
// the last to count itself done on *counter writes the mean and the count, then sets the
// counter back to 0.
template <typename T>
__global__ void cross_entropy_forward(const T* logits, const long long* target, T* loss,
                                      typename Acc<T>::type* lse_out,
                                      typename Acc<T>::type* row_loss, T* mean,
                                      typename Acc<T>::type* count, int* counter, int finish,
                                      long long rows, long long cols, long long ignore_index) {
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
        if (finish) row_loss[row] = to_acc(from_acc<T>(value));
    }
    if (!finish || !last_block_done(counter, gridDim.x)) return;
    const volatile A* done = row_loss;  // written by other blocks: not from a cached line
    A total = 0, kept = 0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        total += done[r];
        kept += target[r] != ignore_index ? A(1) : A(0);
    }
    cross_entropy_write_mean<T>(total, kept, mean, count, scratch);
    if (threadIdx.x == 0) *counter = 0;
}

template <typename T>
__global__ void cross_entropy_backward(const T* logits, const long long* target,
                                       const typename Acc<T>::type* lse,
                                       const typename Acc<T>::type* scale,
                                       long long scale_stride,
                                       const typename Acc<T>::type* divisor, int has_divisor,
                                       T* grad, long long rows, long long cols,
                                       long long ignore_index) {
    typedef typename Acc<T>::type A;
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const long long t = target[row];
    const bool keep = t != ignore_index;
    const A s = has_divisor ? scale[row * scale_stride] / *divisor : scale[row * scale_stride];
    const A row_lse = lse[row];
    const T* x = logits + row * cols;
    T* g = grad + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        A value = 0;
        if (keep) value = s * (dt_exp(to_acc(x[c]) - row_lse) - (c == t ? A(1) : A(0)));
        g[c] = from_acc<T>(value);
    }
}

// One block: the mean of per-row losses and the kept rows' count, as a launch of its own.
template <typename T>
__global__ void cross_entropy_mean(const T* loss, const long long* target, T* mean,
                                   typename Acc<T>::type* count, long long rows,
                                   long long ignore_index) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    A sum = 0, kept = 0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        sum += to_acc(loss[r]);
        kept += target[r] != ignore_index ? A(1) : A(0);
    }
    cross_entropy_write_mean<T>(sum, kept, mean, count, scratch);
}
"""

SOURCE = register(
    "cross_entropy",
    _BODY,
    templated(("cross_entropy_forward", "cross_entropy_backward", "cross_entropy_mean")),
)


def acc_dtype(dtype: Any) -> np.dtype:
    """The dtype the kernels compute (and keep ``lse``) in: float64 for float64, else float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def supported(logits: Any) -> bool:
    """Whether the kernels take these (rows, classes) logits: a float16/32/64 dtype."""
    return logits.ndim == 2 and type_name(logits.dtype) is not None and logits.shape[1] > 0


_MEAN_BLOCK = 512  # threads of the one block that adds the rows up
_FINISH_ROWS = 1 << 16  # the most rows whose mean the loss's last block adds


@on_array_device
def cross_entropy_forward(
    logits: Any, target: Any, ignore_index: int, *, mean: bool = False
) -> tuple[Any, ...]:
    """Per-row loss and log-sum-exp of cupy ``logits`` (rows, classes) at ``target`` (rows,).

    Returns:
        ``(loss, lse)``: ``loss`` in the logits' dtype (0 on ignored rows), ``lse`` in
        ``acc_dtype``. Out-of-range targets give NaN; the caller validates them. With
        ``mean``, ``(loss, lse, mean, count)``, the last two as ``cross_entropy_mean``
        gives them, from the same launch where the stream has its ``done_counter``.
    """
    cupy = require_cupy("cross_entropy_forward")
    rows, cols = logits.shape
    logits = contiguous(logits)
    target = contiguous(target.reshape(rows), dtype=np.int64)
    acc = acc_dtype(logits.dtype)
    loss = cupy.empty(rows, logits.dtype)
    lse = cupy.empty(rows, acc)
    # Past _FINISH_ROWS rows the last block's sum would be a long tail for its threads;
    # a mean launch of its own costs little beside that much work.
    finish = mean and 0 < rows <= _FINISH_ROWS
    counter = done_counter(cupy, device_id(logits)) if finish else None
    if counter is None:
        row_loss = total = count = None
        counter = cupy.empty(0, np.int32)  # not read without finish
    else:
        row_loss, total, count = (
            cupy.empty(rows, acc),
            cupy.empty((), logits.dtype),
            cupy.empty((), acc),
        )
    if rows:
        fn = kernel(SOURCE, f"cross_entropy_forward<{type_name(logits.dtype)}>")
        finish = row_loss is not None
        out = (loss, lse, *((row_loss, total, count) if finish else (lse, loss, lse)))
        args = (logits, target, *out, counter, np.int32(finish))
        # finishing, enough threads for the last block's pass over every row
        block = max(row_block(cols), _MEAN_BLOCK // 2) if finish else row_block(cols)
        launch(fn, (rows,), block, (*args, i64(rows), i64(cols), i64(ignore_index)))
    if not mean:
        return loss, lse
    if total is None:  # no counter (or no rows): the mean as a launch of its own
        total, count = cross_entropy_mean(loss, target, ignore_index)
    return loss, lse, total, count


@on_array_device
def cross_entropy_mean(loss: Any, target: Any, ignore_index: int) -> tuple[Any, Any]:
    """The mean of ``cross_entropy_forward``'s per-row ``loss`` over the rows whose target is
    not ``ignore_index``, in one launch: ``(mean, count)``, 0-d arrays in the loss's dtype
    and in ``acc_dtype`` (``count`` is what ``cross_entropy_backward`` divides by)."""
    cupy = require_cupy("cross_entropy_mean")
    rows = loss.size
    target = contiguous(target.reshape(rows), dtype=np.int64)
    mean = cupy.empty((), loss.dtype)
    count = cupy.empty((), acc_dtype(loss.dtype))
    fn = kernel(SOURCE, f"cross_entropy_mean<{type_name(loss.dtype)}>")
    args = (contiguous(loss), target, mean, count, i64(rows), i64(ignore_index))
    launch(fn, (1,), _MEAN_BLOCK, args)
    return mean, count


@on_array_device
def cross_entropy_backward(
    logits: Any, target: Any, lse: Any, scale: Any, ignore_index: int, divisor: Any = None
) -> Any:
    """Gradient of the per-row losses w.r.t. ``logits``, each row times ``scale``.

    Args:
        logits: the forward's cupy logits (rows, classes).
        target: class indices (rows,).
        lse: ``cross_entropy_forward``'s log-sum-exp.
        scale: the incoming gradient per row: shape (rows,), or a single value (shape () or
            (1,)) for every row; a device array, so nothing waits on the host.
        ignore_index: rows with this target get a zero gradient.
        divisor: optional 0-d ``acc_dtype`` device array that ``scale`` is divided by (the
            count of ``cross_entropy_mean``, for the gradient of the mean).
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
        divided = (lse, np.int32(0)) if divisor is None else (divisor, np.int32(1))
        args = (logits, target, lse, scale, i64(stride), *divided, grad, i64(rows), i64(cols))
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


def cross_entropy_mean_reference(
    loss: np.ndarray, target: np.ndarray, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """numpy ``cross_entropy_mean``, computed in float64."""
    count = np.count_nonzero(target.reshape(-1) != ignore_index)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = loss.astype(np.float64).sum() / np.float64(count)
    return np.asarray(mean, loss.dtype), np.asarray(count, acc_dtype(loss.dtype))


def cross_entropy_backward_reference(
    logits: np.ndarray,
    target: np.ndarray,
    lse: np.ndarray,
    scale: Any,
    ignore_index: int,
    divisor: Any = None,
) -> np.ndarray:
    """numpy ``cross_entropy_backward``, computed in float64."""
    if divisor is not None:
        with np.errstate(divide="ignore"):  # a count of 0: every row is ignored anyway
            scale = np.asarray(scale, np.float64) / np.float64(divisor)
    x = logits.astype(np.float64)
    keep = target != ignore_index
    onehot = np.zeros_like(x)
    np.put_along_axis(onehot, np.where(keep, target, 0)[:, None], 1.0, axis=-1)
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), target.shape)
    # Ignored rows get exactly 0, as the kernel skips them (not inf * 0 for a count of 0).
    row_scale = np.where(keep, scale, 0.0)[:, None]
    grad = (np.exp(x - lse[:, None].astype(np.float64)) - onehot) * row_scale
    return grad.astype(logits.dtype)
