"""GradScaler's unscale: every gradient multiplied by ``1 / scale`` in place, and a device flag
raised when any of them held an inf or NaN, in one multi-tensor launch.

Done per gradient with cupy, each check is a reduction and each multiply a launch: on a
large MLP the fp16 step spent more host time there than the half-precision GEMMs saved.
As ``torch._amp_foreach_non_finite_check_and_unscale_``, the check reads the values before
they are unscaled, and the product is taken in float (double for float64 gradients) with
``inv_scale`` rounded to float32, as PyTorch keeps it.

Each block notes whether it saw an inf or NaN; the last block to finish (counted on the
stream's ``done_counter``) writes the flag, 0 or +inf, so the flag needs no zeroing launch
before the step (as clipping's sum of squares, ``grad_norm.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import (
    BLOCK,
    MULTI_TENSOR,
    check_lists,
    last_block_launches,
)

_BODY = (
    MULTI_TENSOR
    + r"""
// List row 0: the gradients. Each block notes in seen[blockIdx.x] whether any element it
// unscaled was inf or NaN; the last block to count itself done on *counter sets *found to
// +inf if any block saw one and to 0 otherwise (keeping an earlier +inf where keep is set:
// a later launch for the same flag), and sets the counter back to 0. Without a counter
// (finish 0), a block that saw one sets *found to +inf (every writer writes the same value,
// so the race is harmless) and nothing resets it.
template <typename T>
__global__ void unscale_multi_tensor(const TensorList list, int n, float inv_scale,
                                     float* seen, int* counter, int finish, int keep,
                                     float* found) {
    typedef typename Acc<T>::type A;
    __shared__ float scratch[32];
    const A factor = (A)inv_scale;
    bool bad = false;
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        T* g = list_ptr<T>(list, 0, t);
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
            const A v = to_acc(g[i]);
            bad |= !dt_isfinite(v);
            g[i] = from_acc<T>(v * factor);
        }
    });
    const float inf = __int_as_float(0x7f800000);
    if (!finish) {
        if (bad) *found = inf;
        return;
    }
    const float block_bad = block_max(bad ? 1.0f : 0.0f, scratch);
    if (threadIdx.x == 0) seen[blockIdx.x] = block_bad;
    if (!last_block_done(counter, gridDim.x)) return;
    const volatile float* blocks = seen;
    float any = 0;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) any += blocks[b];
    any = block_max(any, scratch);
    if (threadIdx.x == 0) {
        *found = any > 0 || (keep && *found != 0) ? inf : 0.0f;
        *counter = 0;
    }
}
"""
)

SOURCE = register("unscale", _BODY, templated(("unscale_multi_tensor",)))


def unscale_(
    grads: list[Any],
    inv_scale: float,
    found: Any,
    checked: bool = False,
    *,
    overwrite: bool = False,
) -> None:
    """Multiply ``grads`` (C-contiguous cupy arrays of one dtype and device) by ``inv_scale``
    (rounded to float32) in place; set ``found`` (a float32 cupy array of one element on
    that device) to +inf if any element was inf or NaN, else leave it zero or nonzero as it
    was (a nonzero value may come back as +inf), or, with ``overwrite``, set it to 0
    (``found`` may then hold anything: no zeroing launch needed).
    ``checked``: the caller already checked the list (``multi_tensor.check_lists``)."""
    cupy = require_cupy("unscale_")
    name = check_lists("unscale_", [grads], checked) if grads else None
    with on_device_of(found):
        # Nothing to check, or no counter (whose kernels only raise the flag): 0 first.
        plan = last_block_launches(cupy, grads, found, overwrite, np.float32, clear=0)
        if not plan.launches:
            return
        fn = kernel(SOURCE, f"unscale_multi_tensor<{name}>")
        for index, (struct, count, grid) in enumerate(plan.launches):
            keep = np.int32(index > 0 or not plan.overwrite)
            args = (struct, np.int32(count), np.float32(inv_scale), plan.scratch, plan.counter)
            launch(fn, (grid,), BLOCK, (*args, plan.finish, keep, found))


def unscale_reference(grads: list[np.ndarray], inv_scale: float) -> bool:
    """numpy: unscale ``grads`` in place as the kernel does; return whether any held an
    inf or NaN before."""
    found = False
    factor = np.float32(inv_scale)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in grads:
            found = found or not bool(np.isfinite(g).all())
            g *= factor  # float16/32 multiply in float32, float64 in float64
    return found
