"""The gradient of ``split`` and ``chunk``: pieces that cover one axis of an array exactly
once, copied into it in one multi-tensor launch (cupy takes a launch per piece).

The array is seen as (outer, row) with ``row = shape[axis] * inner``: piece ``t`` fills
``span_t = length_t * inner`` elements of every row, from ``offset_t = start_t * inner``.
A ``TensorList`` carries the pieces (row 0), their offsets (row 1) and spans (row 2); rows 1
and 2 hold element counts, not pointers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array, on_device_of
from dtrain.runtime.kernels.build import i64, kernel, launch, register, templated, type_name
from dtrain.runtime.kernels.multi_tensor import BLOCK, MAX_TENSORS, MULTI_TENSOR, tensor_lists

_BODY = (
    MULTI_TENSOR
    + r"""
template <typename T>
__global__ void tile_multi_tensor(const TensorList list, int n, T* out, long long row) {
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        const T* piece = list_ptr<T>(list, 0, t);
        const long long offset = list.ptr[1][t], span = list.ptr[2][t];
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x)
            out[(i / span) * row + offset + i % span] = piece[i];
    });
}
"""
)

SOURCE = register("tile", _BODY, templated(("tile_multi_tensor",)))


def supported(out: Any, pieces: list[Any]) -> bool:
    """Whether the kernel takes these: C-contiguous cupy arrays of ``out``'s float dtype."""
    return (
        is_cuda_array(out)
        and out.flags.c_contiguous
        and type_name(out.dtype) is not None
        and all(is_cuda_array(p) and p.dtype == out.dtype and p.flags.c_contiguous for p in pieces)
    )


def tile_(out: Any, pieces: list[Any], starts: list[int], axis: int) -> None:
    """Copy ``pieces`` into ``out`` along ``axis``, piece ``t`` from index ``starts[t]``
    (the pieces must cover the axis; ``supported(out, pieces)`` must hold)."""
    inner = math.prod(out.shape[axis + 1 :])
    row = out.shape[axis] * inner
    offsets = [start * inner for start in starts]
    spans = [p.shape[axis] * inner for p in pieces]
    with on_device_of(out):
        fn = kernel(SOURCE, f"tile_multi_tensor<{type_name(out.dtype)}>")
        for index, (struct, count, grid) in enumerate(tensor_lists([pieces])):
            first = index * MAX_TENSORS
            struct["ptr"][0, 1, :count] = offsets[first : first + count]
            struct["ptr"][0, 2, :count] = spans[first : first + count]
            if grid:
                launch(fn, (grid,), BLOCK, (struct, np.int32(count), out, i64(row)))


def tile_reference(pieces: list[np.ndarray], axis: int) -> np.ndarray:
    """numpy: the pieces joined along ``axis``, in order."""
    return np.concatenate(pieces, axis=axis)
