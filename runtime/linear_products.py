"""A Linear layer's three matrix products on CUDA, planned straight from its operands.

``y = x @ W^T + b`` over ``x``'s last dim, and in backward ``grad_x = g @ W`` and
``grad_W = g^T @ x`` (with ``grad_b``, the column sums of ``g``, in the same launch). As
matrices, ``x`` and ``g`` are their C-contiguous memory read as (rows, features): cuBLAS
takes such an array, or its transpose, by a leading dimension alone. Planning them from the
arrays as they lie makes no reshaped or transposed view; on a small model each view is a
few µs of host time, and a GPT step made about ninety of them here.

Each function returns None where it does not apply (an operand not C-contiguous, a dtype
cuBLAS lacks, an empty dimension); the caller then takes the general path
(``runtime/linalg.py``) on views.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime import cublas, cublaslt
from dtrain.runtime.backend import cupy_module, on_device_of

_INT32_MAX = 2**31 - 1


def fits(*arrays: Any) -> bool:
    """C-contiguous cupy arrays of one dtype cuBLAS takes, none empty."""
    dtype = arrays[0].dtype
    if not cublas.supports_dtype(dtype):
        return False
    for a in arrays:
        if a.dtype != dtype or not a.size or a.size > _INT32_MAX or not a.flags.c_contiguous:
            return False
    return True


def forward(x: Any, weight: Any, bias: Any = None, relu: bool = False) -> Any | None:
    """``x @ weight.T`` (+ ``bias``, then ReLU with ``relu``) as a new array of shape
    ``x.shape[:-1] + (out_features,)``: one cuBLASLt launch with a bias where it takes the
    case, else the product and an add."""
    if not fits(x, weight):
        return None
    n, k = weight.shape
    p = cublas.plan_2d(x, cublas.OP_N, weight, cublas.OP_T, (x.size // k, n, k))
    shape = (*x.shape[:-1], n)
    with on_device_of(x):
        if bias is not None and cublaslt.takes(p):
            out = cublaslt.plan_bias(p, bias, shape, relu)
            if out is not None:
                return out
        out = cupy_module().empty(shape, dtype=x.dtype)
        cublas.gemm(p, out)
        if bias is not None:
            out += bias  # in place: the product is ours
        if relu:
            cupy_module().maximum(out, 0, out=out)
    return out


def grad_input(grad: Any, weight: Any, input_shape: tuple) -> Any | None:
    """``grad @ weight`` as a new array of ``input_shape``."""
    if not fits(grad, weight):
        return None
    n, k = weight.shape
    p = cublas.plan_2d(grad, cublas.OP_N, weight, cublas.OP_N, (grad.size // n, k, n))
    with on_device_of(grad):
        out = cupy_module().empty(input_shape, dtype=grad.dtype)
        cublas.gemm(p, out)
    return out


def grad_weight(
    grad: Any, x: Any, out_dtype: Any = None, with_bias: bool = False
) -> tuple[Any, Any] | None:
    """``(grad^T @ x, grad's column sums or None)`` in ``out_dtype`` (default the operands'):
    a Linear layer's weight gradient (out_features, in_features) and, ``with_bias``, its bias
    gradient, in one cuBLASLt launch where it takes the case."""
    out_dtype = grad.dtype if out_dtype is None else np.dtype(out_dtype)
    if not fits(grad, x) or not cublas.supports_out(grad.dtype, out_dtype):
        return None
    n, k = grad.shape[-1], x.shape[-1]
    p = cublas.plan_2d(grad, cublas.OP_T, x, cublas.OP_N, (n, k, grad.size // n))
    with on_device_of(grad):
        if with_bias and cublaslt.takes(p):
            both = cublaslt.plan_row_sums(p, out_dtype)
            if both is not None:
                return both
        out = cupy_module().empty((n, k), dtype=out_dtype)
        cublas.gemm(p, out)
        sums = grad.reshape(-1, n).sum(axis=0, dtype=out_dtype) if with_bias else None
    return out, sums
