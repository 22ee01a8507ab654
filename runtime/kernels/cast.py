"""Autocast's casts of parameters, float32 to float16, many in one launch.

Under ``autocast`` every float32 parameter an op uses is cast to float16 once per region:
a launch per parameter, each costing cupy's host time (a char-GPT step has ~40 of them).
Autocast remembers which parameters' casts its last region used, and at the first such cast
of the next region casts them all here, one multi-tensor launch per ``MAX_TENSORS`` of them
(``dtrain._tensor.amp.cast``). The rounding is the same as ``astype``'s (to nearest even).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import kernel, launch, register, type_name
from dtrain.runtime.kernels.multi_tensor import BLOCK, MULTI_TENSOR, check_lists, tensor_lists

_BODY = (
    MULTI_TENSOR
    + r"""
// List rows: 0 the sources (TIn), 1 the casts (TOut), of one size each.
template <typename TIn, typename TOut>
__global__ void cast_multi_tensor(const TensorList list, int n) {
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        const TIn* x = list_ptr<TIn>(list, 0, t);
        TOut* out = list_ptr<TOut>(list, 1, t);
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x)
            out[i] = from_acc<TOut>(to_acc(x[i]));
    });
}
"""
)

_PAIRS = ("float, half_t",)
SOURCE = register("cast", _BODY, tuple(f"cast_multi_tensor<{pair}>" for pair in _PAIRS))


def cast_multi_tensor(sources: list[Any], dtype: Any, checked: bool = False) -> list[Any]:
    """New arrays of ``dtype`` holding ``sources`` (C-contiguous float32 cupy arrays of one
    device) converted: one launch per ``MAX_TENSORS`` arrays. ``checked``: the caller picked
    the sources with ``multi_tensor.fusable`` and grouped them by device already.

    Raises:
        ValueError: a pair of dtypes without a kernel (float32 to float16 only), or sources
            the multi-tensor launch cannot take.
    """
    cupy = require_cupy("cast_multi_tensor")
    if not sources:
        return []
    name = check_lists("cast_multi_tensor", [sources], checked)
    pair = f"{name}, {type_name(np.dtype(dtype))}"
    if pair not in _PAIRS:
        raise ValueError(
            f"cast_multi_tensor: no kernel from {sources[0].dtype} to {np.dtype(dtype)}; it "
            "casts float32 to float16 (use astype otherwise)"
        )
    with on_device_of(sources[0]):
        outs = [cupy.empty(x.shape, dtype) for x in sources]
        fn = kernel(SOURCE, f"cast_multi_tensor<{pair}>")
        for struct, count, grid in tensor_lists([sources, outs]):
            if grid:
                launch(fn, (grid,), BLOCK, (struct, np.int32(count)))
    return outs


def cast_reference(sources: list[np.ndarray], dtype: Any) -> list[np.ndarray]:
    """numpy: ``astype`` of each."""
    return [x.astype(dtype) for x in sources]
