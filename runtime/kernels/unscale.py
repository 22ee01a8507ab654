"""GradScaler's unscale: every gradient multiplied by ``1 / scale`` in place, and a device flag
raised when any of them held an inf or NaN, in one multi-tensor launch.

Done per gradient with cupy, each check is a reduction and each multiply a launch: on a
large MLP the fp16 step spent more host time there than the half-precision GEMMs saved.
As ``torch._amp_foreach_non_finite_check_and_unscale_``, the check reads the values before
they are unscaled, and the product is taken in float (double for float64 gradients) with
``inv_scale`` rounded to float32, as PyTorch keeps it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import BLOCK, MULTI_TENSOR, check_lists, tensor_lists

_BODY = (
    MULTI_TENSOR
    + r"""
// List row 0: the gradients. *found becomes +inf when any element is inf or NaN (every
// writer writes the same value, so the race is harmless); it is never reset here.
template <typename T>
__global__ void unscale_multi_tensor(const TensorList list, int n, float inv_scale,
                                     float* found) {
    typedef typename Acc<T>::type A;
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
    if (bad) *found = __int_as_float(0x7f800000);
}
"""
)

SOURCE = register("unscale", _BODY, templated(("unscale_multi_tensor",)))


def unscale_(grads: list[Any], inv_scale: float, found: Any, checked: bool = False) -> None:
    """Multiply ``grads`` (C-contiguous cupy arrays of one dtype and device) by ``inv_scale``
    (rounded to float32) in place; set ``found`` (a float32 cupy array of one element on
    that device) to +inf if any element was inf or NaN, else leave it as it was.
    ``checked``: the caller already checked the list (``multi_tensor.check_lists``)."""
    require_cupy("unscale_")
    if not grads:
        return
    name = check_lists("unscale_", [grads], checked)
    with grads[0].device:
        fn = kernel(SOURCE, f"unscale_multi_tensor<{name}>")
        for struct, count, grid in tensor_lists([grads]):
            if grid:
                launch(fn, (grid,), BLOCK, (struct, np.int32(count), np.float32(inv_scale), found))


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
