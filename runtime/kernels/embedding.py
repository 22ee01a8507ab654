"""An embedding table's gradient in one launch, the same from run to run.

cupy's way is two launches: a zeroed table, then ``cupyx.scatter_add`` of the looked-up
rows' gradients, whose atomic adds land in any order (float sums then differ in the last
bits between runs). Here one block per table row scans every index and adds, in index
order, the gradient rows that looked it up; the row of ``padding_idx`` gets nothing. A
gradient the table already has from elsewhere (a tied output layer's) can be added in the
same pass. Each row reads all the indices, so this is for tables and batches whose product
is small (``supported``); larger ones keep the scatter.
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
// Block v (and v + gridDim.x, ...): table row v of the gradient, a column per thread: the
// gradient rows i with indices[i] == v summed in index order, plus addend's row v where
// has_addend is set; nothing from the lookup for padding_idx (-1: none).
template <typename T>
__global__ void embedding_backward(const long long* indices, const T* grad, const T* addend,
                                   int has_addend, T* out, long long n, long long rows,
                                   long long cols, long long padding_idx) {
    typedef typename Acc<T>::type A;
    for (long long v = blockIdx.x; v < rows; v += gridDim.x) {
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            A sum = has_addend ? to_acc(addend[v * cols + c]) : A(0);
            if (v != padding_idx) {
                for (long long i = 0; i < n; ++i) {
                    if (indices[i] == v) sum += to_acc(grad[i * cols + c]);
                }
            }
            out[v * cols + c] = from_acc<T>(sum);
        }
    }
}
"""

SOURCE = register("embedding", _BODY, templated(("embedding_backward",)))

# Each table row's block reads every index, so rows * lookups bounds the work: 2**20 is,
# e.g., a 256-row table looked up 4096 times (the char-GPT's tables are 96 and 64 rows).
# Not yet timed on a GPU; bench/gpu_step.py's char-GPT step includes it.
_MAX_WORK = 1 << 20
_MAX_GRID = 4096


def supported(indices: Any, grad: Any, rows: int) -> bool:
    """Whether the kernel takes this lookup's gradient: a float16/32/64 gradient, integer
    indices, and a table small enough for every row to scan every index."""
    return (
        type_name(grad.dtype) is not None
        and indices.dtype.kind in "iu"
        and rows * indices.size <= _MAX_WORK
    )


@on_array_device
def embedding_backward(
    grad: Any, indices: Any, rows: int, padding_idx: int | None = None, addend: Any = None
) -> Any:
    """The gradient of a (rows, cols) table whose rows ``indices`` were looked up, from the
    lookup's output gradient ``grad`` (``indices.shape + (cols,)``), plus ``addend`` (a
    (rows, cols) gradient the table has from elsewhere; read only) where given."""
    cupy = require_cupy("embedding_backward")
    cols = grad.shape[-1]
    # C-contiguous arrays go to the kernel as they are, whatever their shape: no reshape
    # (a view costs host time)
    indices = contiguous(indices, dtype=np.int64)
    grad = contiguous(grad)
    out = cupy.empty((rows, cols), grad.dtype)
    if out.size:
        add = grad if addend is None else contiguous(addend, dtype=grad.dtype)
        fn = kernel(SOURCE, f"embedding_backward<{type_name(grad.dtype)}>")
        pad = -1 if padding_idx is None else padding_idx
        args = (indices, grad, add, np.int32(addend is not None), out, i64(indices.size))
        launch(
            fn, (min(rows, _MAX_GRID),), row_block(cols), (*args, i64(rows), i64(cols), i64(pad))
        )
    return out


def embedding_backward_reference(
    grad: np.ndarray, indices: np.ndarray, rows: int, padding_idx: Any = None, addend: Any = None
) -> np.ndarray:
    """numpy ``embedding_backward``, computed in float64."""
    cols = grad.shape[-1]
    out = np.zeros((rows, cols)) if addend is None else addend.astype(np.float64)
    lookups = np.zeros((rows, cols))
    np.add.at(lookups, indices.reshape(-1), grad.reshape(-1, cols).astype(np.float64))
    if padding_idx is not None:
        lookups[padding_idx] = 0
    return (out + lookups).astype(grad.dtype)
