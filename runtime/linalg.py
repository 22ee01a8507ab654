"""The one matrix product every op calls: numpy's ``@`` on the CPU, cuBLAS on CUDA."""

from __future__ import annotations

from typing import Any

from dtrain.runtime.backend import is_cuda_array


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` on numpy or cupy arrays (numpy semantics, batch dims broadcast).

    cupy arrays of cuBLAS's float dtypes go through ``dtrain.runtime.cublas``, which works
    inside a CUDA-graph capture where cupy's own ``@`` is refused.
    """
    if is_cuda_array(a):
        from dtrain.runtime import cublas

        if a.ndim >= 2 and b.ndim >= 2 and cublas.supports(a, b):
            return cublas.matmul(a, b)
    return a @ b
