"""The matrix products every op calls: numpy's ``@`` on the CPU, cuBLAS on CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module, is_cuda_array


def matmul(a: Any, b: Any, out_dtype: Any = None) -> Any:
    """``a @ b`` on numpy or cupy arrays (numpy semantics, batch dims broadcast).

    cupy arrays of cuBLAS's float dtypes go through ``dtrain.runtime.cublas``, which works
    inside a CUDA-graph capture where cupy's own ``@`` is refused.

    ``out_dtype`` wider than the operands' (float32 for float16 operands): the product
    accumulated and written in it, never rounded to the operands' dtype on the way.
    """
    if out_dtype is None or out_dtype == a.dtype:
        if is_cuda_array(a):
            from dtrain.runtime import cublas

            if a.ndim >= 2 and b.ndim >= 2 and cublas.supports(a, b):
                return cublas.matmul(a, b)
        return a @ b
    return _matmul_wider(a, b, np.dtype(out_dtype))


def _matmul_wider(a: Any, b: Any, out_dtype: Any) -> Any:
    if is_cuda_array(a):
        from dtrain.runtime import cublas

        if a.ndim >= 2 and b.ndim >= 2 and cublas.supports(a, b):
            if cublas.supports_out(a.dtype, out_dtype):
                return cublas.matmul(a, b, out_dtype)
            return cublas.matmul(a, b).astype(out_dtype)
        return (a @ b).astype(out_dtype)
    # numpy casts both operands up first, then takes the product in out_dtype (float16
    # products in numpy have no BLAS behind them; float32 ones do).
    return np.matmul(a, b, dtype=out_dtype)


def matmul_add_bias(a: Any, b: Any, bias: Any, relu: bool = False) -> Any:
    """``a @ b + bias`` for 2-D ``a``, ``b`` and ``bias`` of ``b.shape[1]``, with ``relu``
    then ``max(., 0)``: on CUDA one cuBLASLt launch where it takes the case
    (``runtime/cublaslt.py``)."""
    if is_cuda_array(a):
        from dtrain.runtime import cublaslt

        out = cublaslt.matmul_bias(a, b, bias, relu)
        if out is not None:
            return out
    out = matmul(a, b)
    out += bias  # in place: the product is ours, so no second array
    if relu:
        get_array_module(out).maximum(out, 0, out=out)
    return out


def matmul_and_row_sums(a: Any, b: Any, out_dtype: Any = None) -> tuple[Any, Any]:
    """``(a @ b, a.sum(axis=1))`` for 2-D ``a`` and ``b``, both in ``out_dtype`` (default
    ``a.dtype``; as in ``matmul``): a Linear layer's weight and bias gradients when ``a`` is
    the transposed output gradient; on CUDA one cuBLASLt launch where it takes the case."""
    if is_cuda_array(a):
        from dtrain.runtime import cublaslt

        both = cublaslt.matmul_row_sums(a, b, out_dtype)
        if both is not None:
            return both
    return matmul(a, b, out_dtype), a.sum(axis=1, dtype=out_dtype)
