"""DDP bucket scaling: ``flat *= factor`` in place, and the same fused with a cast (to float16
for the fp16 compression hook, and back).

DDP averages gradients by scaling the all-reduced bucket by ``1 / world_size``; cupy's
``flat *= factor`` would do it too, but this one launch also covers the cast of the
compression hook without a float32 temporary. Elementwise, grid-stride, float math.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import (
    ELEMENTWISE_BLOCK,
    elementwise_grid,
    f64,
    i64,
    kernel,
    launch,
    register,
    templated,
    type_name,
)

_BODY = r"""
template <typename T>
__global__ void scale_inplace(T* x, long long n, double factor) {
    typedef typename Acc<T>::type A;
    const A f = (A)factor;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = from_acc<T>(to_acc(x[i]) * f);
}

// out = (TOut)(x * factor), the product taken in TIn's math type (float for half and float
// input, double for double input).
template <typename TIn, typename TOut>
__global__ void scale_cast(const TIn* x, TOut* out, long long n, double factor) {
    typedef typename Acc<TIn>::type A;
    const A f = (A)factor;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = from_acc<TOut>(to_acc(x[i]) * f);
}
"""

_CASTS = ("float, half_t", "double, half_t", "half_t, float", "half_t, double")
SOURCE = register(
    "bucket",
    _BODY,
    (*templated(("scale_inplace",)), *(f"scale_cast<{pair}>" for pair in _CASTS)),
)


def scale_(flat: Any, factor: float) -> Any:
    """Multiply a C-contiguous cupy array (float16/32/64) by ``factor`` in place; return it.

    Raises:
        ValueError: ``flat`` is not C-contiguous or its dtype has no kernel.
    """
    require_cupy("scale_")
    name = type_name(flat.dtype)
    if name is None or not flat.flags.c_contiguous:
        raise ValueError(
            f"scale_: needs a C-contiguous float16/32/64 cupy array, got dtype {flat.dtype} "
            f"(c_contiguous={flat.flags.c_contiguous}); scale it with `flat *= factor` instead"
        )
    if flat.size:
        with on_device_of(flat):
            fn = kernel(SOURCE, f"scale_inplace<{name}>")
            args = (flat, i64(flat.size), f64(factor))
            launch(fn, elementwise_grid(flat.size), ELEMENTWISE_BLOCK, args)
    return flat


def scale_cast(flat: Any, factor: float, dtype: Any, out: Any = None) -> Any:
    """``(flat * factor).astype(dtype)`` in one launch, between float16 and float32/64.

    Args:
        flat: C-contiguous cupy array.
        factor: the scale (e.g. ``1 / world_size``).
        dtype: the result's dtype: float16 for float32/64 input, float32/64 for float16.
        out: optional C-contiguous array of ``flat``'s size and ``dtype`` to write into.

    Returns:
        ``out``, or a new array shaped like ``flat``.
    """
    cupy = require_cupy("scale_cast")
    pair = f"{type_name(flat.dtype)}, {type_name(dtype)}"
    if pair not in _CASTS:
        raise ValueError(
            f"scale_cast: no kernel from {flat.dtype} to {np.dtype(dtype)}; it casts between "
            "float16 and float32/float64 (use (flat * factor).astype(dtype) otherwise)"
        )
    with on_device_of(flat):
        if out is None:
            out = cupy.empty(flat.shape, dtype)
        if out.dtype != np.dtype(dtype) or out.size != flat.size or not out.flags.c_contiguous:
            raise ValueError(
                f"scale_cast: out must be a C-contiguous {np.dtype(dtype)} array of "
                f"{flat.size} elements, got {out.dtype} with {out.size}"
            )
        if not flat.flags.c_contiguous:
            raise ValueError("scale_cast: flat must be C-contiguous (a DDP bucket is)")
        if flat.size:
            fn = kernel(SOURCE, f"scale_cast<{pair}>")
            args = (flat, out, i64(flat.size), f64(factor))
            launch(fn, elementwise_grid(flat.size), ELEMENTWISE_BLOCK, args)
    return out


def scale_reference(flat: np.ndarray, factor: float, dtype: Any = None) -> np.ndarray:
    """numpy ``scale_`` / ``scale_cast``: ``flat * factor`` in float64, cast to ``dtype``
    (``flat``'s own by default)."""
    return (flat.astype(np.float64) * factor).astype(flat.dtype if dtype is None else dtype)
