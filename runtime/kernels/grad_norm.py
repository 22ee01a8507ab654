"""Gradient clipping by total L2 norm over a list of tensors, on the GPU, without a host sync.

``clip_grad_norm_`` computed per gradient, each ``float(...)`` waits for the GPU: a
char-GPT step spent more time in those waits than in its kernels. Here one multi-tensor
launch (per ``MAX_TENSORS`` gradients) sums the squares into one float64 device scalar, and
a second scales every gradient by ``max_norm / (norm + 1e-6)`` when that is below 1 (or
NaN: a NaN norm makes every gradient NaN, as in PyTorch), reading the norm on the device —
as ``torch.nn.utils.clip_grad_norm_`` does with its foreach kernels. Both are CUDA-graph
capturable.

Each block of the sum writes its partial sum; the last block to finish (counted on the
stream's ``done_counter``) adds the partials in block order and writes the scalar, or adds
to it. So the scalar needs no zeroing launch first, and the sum is the same from run to run
(atomic adds of the blocks' sums would come in any order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import f64, kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import (
    BLOCK,
    MULTI_TENSOR,
    check_lists,
    last_block_launches,
    tensor_lists,
)

_BODY = (
    MULTI_TENSOR
    + r"""
// List row 0: the gradients. Each block sums its chunks' squares into partials[blockIdx.x];
// the last block to count itself done on *counter writes the partials' sum (in block
// order) to *total, or adds it where add is set, and sets the counter back to 0. Without a
// counter (finish 0), each block adds its sum to *total atomically instead.
template <typename T>
__global__ void sum_squares_multi_tensor(const TensorList list, int n, double* partials,
                                         int* counter, int finish, int add, double* total) {
    __shared__ double scratch[32];
    double acc = 0;
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        const T* g = list_ptr<T>(list, 0, t);
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
            const double v = (double)to_acc(g[i]);
            acc += v * v;
        }
    });
    acc = block_sum(acc, scratch);
    if (!finish) {
        if (threadIdx.x == 0) atomicAdd(total, acc);
        return;
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
    if (!last_block_done(counter, gridDim.x)) return;
    const volatile double* done = partials;
    double sum = 0;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) sum += done[b];
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        *total = add ? *total + sum : sum;
        *counter = 0;
    }
}

// g *= max_norm / (sqrt(*total) + 1e-6) unless that factor is 1 or more: a NaN norm gives a
// NaN factor, which scales every gradient to NaN (as PyTorch's clamp(factor, max=1) does).
// Block 0 also stores the norm, sqrt(*total), in *norm (T): the value clip_grad_norm_ returns.
template <typename T>
__global__ void clip_multi_tensor(const TensorList list, int n, const double* total,
                                  double max_norm, T* norm) {
    typedef typename Acc<T>::type A;
    if (blockIdx.x == 0 && threadIdx.x == 0) *norm = from_acc<T>(sqrt(*total));
    const double factor = max_norm / (sqrt(*total) + 1e-6);
    if (factor >= 1.0) return;
    const A a_factor = (A)factor;
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        T* g = list_ptr<T>(list, 0, t);
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
            g[i] = from_acc<T>(to_acc(g[i]) * a_factor);
        }
    });
}
"""
)

SOURCE = register("grad_norm", _BODY, templated(("sum_squares_multi_tensor", "clip_multi_tensor")))


def sum_squares_(
    grads: list[Any],
    total: Any,
    checked: bool = False,
    *,
    overwrite: bool = False,
    lists: list | None = None,
) -> None:
    """Add the sum of squares of every element of ``grads`` (C-contiguous cupy arrays of one
    dtype and device) to ``total``, a float64 0-d cupy array on that device; with
    ``overwrite``, store it there instead (``total`` may then hold anything: no zeroing
    launch needed). ``checked``: the caller already checked the list
    (``multi_tensor.check_lists``). ``lists``: ``tensor_lists([grads])``, where the caller
    has it (``multi_tensor.checked_lists``; clipping packs once for both kernels)."""
    cupy = require_cupy("sum_squares_")
    name = check_lists("sum_squares_", [grads], checked) if grads else None
    with on_device_of(total):
        # Nothing to sum, or the atomic path (it adds to what is there): 0 first.
        plan = last_block_launches(cupy, grads, total, overwrite, np.float64, 0, lists)
        if not plan.launches:
            return
        fn = kernel(SOURCE, f"sum_squares_multi_tensor<{name}>")
        for index, (struct, count, grid) in enumerate(plan.launches):
            add = np.int32(index > 0 or not plan.overwrite)
            args = (struct, np.int32(count), plan.scratch, plan.counter, plan.finish, add, total)
            launch(fn, (grid,), BLOCK, args)


def clip_(
    grads: list[Any],
    total: Any,
    max_norm: float,
    norm: Any = None,
    checked: bool = False,
    *,
    lists: list | None = None,
) -> Any:
    """Scale ``grads`` in place by ``max_norm / (sqrt(total) + 1e-6)`` where that is below 1
    or NaN; ``total`` (float64 0-d cupy array) is read on the device. Returns the norm
    ``sqrt(total)`` as a 0-d array of the gradients' dtype (written into ``norm`` if given),
    or None for an empty list. ``checked``, ``lists``: as for ``sum_squares_``."""
    cupy = require_cupy("clip_")
    if not grads:
        return None
    name = check_lists("clip_", [grads], checked)
    with on_device_of(grads[0]):
        if norm is None:
            norm = cupy.empty((), grads[0].dtype)
        fn = kernel(SOURCE, f"clip_multi_tensor<{name}>")
        for struct, count, grid in tensor_lists([grads]) if lists is None else lists:
            # An all-empty list still launches one block: it writes the norm.
            args = (struct, np.int32(count), total, f64(max_norm), norm)
            launch(fn, (max(grid, 1),), BLOCK, args)
    return norm


def clip_reference(grads: list[np.ndarray], max_norm: float) -> float:
    """numpy: scale ``grads`` in place as the kernels do; return the total norm."""
    total = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
    factor = max_norm / (total + 1e-6)
    if not factor >= 1:  # NaN too
        for g in grads:
            g *= g.dtype.type(factor)
    return total
