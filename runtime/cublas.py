"""Matrix products on CUDA through cuBLAS, called directly (ctypes).

cupy refuses every cuBLAS call while a stream is being captured into a CUDA graph
(`NotImplementedError: calling cuBLAS API during stream capture`), though cuBLAS itself
supports capture. dtrain therefore runs its CUDA matrix products here: one cuBLAS handle per
device, owned by dtrain, with a fixed workspace (so cuBLAS never allocates during a capture)
and bound to the current stream only when that stream changes (a capture binds it before
the capture begins, see ``runtime/cuda_graph.py``).

Arrays are row-major; cuBLAS is column-major. A row-major ``C = A @ B`` is the column-major
``C^T = B^T @ A^T``, and a row-major matrix read column-major *is* its transpose, so the
product runs as ``gemm(B, A)`` with no copies. A transposed view (``x.T`` of a contiguous
array) is passed with ``CUBLAS_OP_T``; other layouts are copied to contiguous first.
"""

from __future__ import annotations

import ctypes
import math
import threading
from typing import Any, NamedTuple

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy

OP_N, OP_T = 0, 1
_GEMM_DEFAULT = -1


# (cudaDataType of the operands, cublasComputeType, ctypes type of alpha/beta) per dtype.
# float16 accumulates in float32, as PyTorch does; float32 stays full fp32 (no TF32), the
# default of both PyTorch's and cupy's matmul, unless set_float32_matmul_precision
# (runtime/matmul_precision.py) puts TF32's compute type in float32's entry.
# Keyed by numpy dtype (hashing one is cheap; ``dtype.name`` is not). alpha = 1 and beta = 0
# are made once: building ctypes values per call is a measurable share of a small step.
def _one_zero(scalar: type) -> tuple:
    return ctypes.byref(scalar(1.0)), ctypes.byref(scalar(0.0))


_TYPES = {
    np.dtype(np.float16): (2, 68, *_one_zero(ctypes.c_float)),
    np.dtype(np.float32): (0, 68, *_one_zero(ctypes.c_float)),
    np.dtype(np.float64): (1, 70, *_one_zero(ctypes.c_double)),
}
# Products cuBLAS writes in a wider dtype than its operands: float16 operands, float32
# accumulation and a float32 result (a weight gradient that goes to a float32 parameter
# under autocast, with no rounding to float16 and no cast launch after it).
_WIDER_OUT = {(np.dtype(np.float16), np.dtype(np.float32))}
_WORKSPACE_BYTES = 32 * 1024 * 1024  # cuBLAS asks for up to 32 MiB on Hopper
_INT32_MAX = 2**31 - 1

_lock = threading.Lock()  # creating handles
_call_lock = threading.Lock()  # binding a handle to a stream and calling it
_library: ctypes.CDLL | None = None
_handles: dict[int, _Handle] = {}


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than CUBLAS_STATUS_SUCCESS."""


def open_cuda_library(stem: str) -> tuple[ctypes.CDLL | None, list[str]]:
    """``lib<stem>`` of CUDA 13 or 12, the copy already loaded when there is one (dlopen
    reuses it by soname), else the nvidia wheel's, which lives outside the loader's path
    (cupy finds it through cuda.pathfinder, and so does this). (None, the errors) if none."""
    errors = []
    for name in (f"lib{stem}.so.13", f"lib{stem}.so.12", f"lib{stem}.so"):
        try:
            return ctypes.CDLL(name), errors
        except OSError as exc:
            errors.append(str(exc))
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return ctypes.CDLL(load_nvidia_dynamic_lib(stem).abs_path), errors
    except Exception as exc:  # not installed, not found, or not loadable: all mean none here
        errors.append(str(exc))
    return None, errors


def _load_library() -> ctypes.CDLL:
    """libcublas, the copy cupy loaded when there is one (same soname: dlopen reuses it)."""
    global _library
    if _library is not None:
        return _library
    cupy = require_cupy("a matrix product on CUDA")
    cupy.cuda.device.get_cublas_handle()  # makes cupy load its libcublas first
    _library, errors = open_cuda_library("cublas")
    if _library is None:
        raise RuntimeError(
            "cannot load libcublas (" + "; ".join(errors) + "); install the 'cuda' extra "
            "(cupy-cuda13x) with its CUDA libraries, e.g. pip install 'cupy-cuda13x[ctk]'"
        )
    for name, argtypes in _SIGNATURES.items():
        function = getattr(_library, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return _library


_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_longlong
_SIGNATURES = {
    "cublasCreate_v2": [ctypes.POINTER(_P)],
    "cublasSetStream_v2": [_P, _P],
    "cublasSetWorkspace_v2": [_P, _P, ctypes.c_size_t],
    "cublasGemmEx": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _I, _I, _I, _I],
    "cublasGemmStridedBatchedEx": [
        _P, _I, _I, _I, _I, _I, _P,
        _P, _I, _I, _L,
        _P, _I, _I, _L,
        _P, _P, _I, _I, _L,
        _I, _I, _I,
    ],
}  # fmt: skip


def _check(status: int, call: str) -> None:
    if status != 0:
        raise CublasError(f"{call} failed with cuBLAS status {status}")


class _Handle:
    """dtrain's cuBLAS handle on one device, with its workspace and the stream it is bound to."""

    def __init__(self, cupy: Any, library: ctypes.CDLL) -> None:
        self.library = library
        self.pointer = _P()
        _check(library.cublasCreate_v2(ctypes.byref(self.pointer)), "cublasCreate")
        self.workspace = cupy.empty(_WORKSPACE_BYTES, dtype=cupy.uint8)
        self.stream: int | None = None

    def bind(self, stream_pointer: int) -> None:
        """Run later calls on ``stream_pointer`` (no-op when already bound to it)."""
        if self.stream == stream_pointer:
            return
        _check(self.library.cublasSetStream_v2(self.pointer, _P(stream_pointer)), "SetStream")
        # cublasSetStream drops a user workspace: hand ours back every time.
        _check(
            self.library.cublasSetWorkspace_v2(
                self.pointer, _P(self.workspace.data.ptr), _WORKSPACE_BYTES
            ),
            "cublasSetWorkspace",
        )
        self.stream = stream_pointer


def handle() -> _Handle:
    """The current device's handle, bound to the current stream."""
    cupy = require_cupy("a matrix product on CUDA")
    device = cupy.cuda.runtime.getDevice()
    found = _handles.get(device)
    if found is None:
        with _lock:
            found = _handles.get(device)
            if found is None:
                found = _handles[device] = _Handle(cupy, _load_library())
    found.bind(cupy.cuda.get_current_stream().ptr)
    return found


def bind_stream(stream: Any) -> None:
    """Bind the current device's handle to ``stream`` now (before a graph capture begins)."""
    with _call_lock, stream:
        handle()


def _layout(matrix_strides: tuple, rows: int, cols: int, itemsize: int) -> tuple[int, int] | None:
    """(op, ld) that make cuBLAS read this row-major operand as its column-major transpose.

    None when the layout has no such form (the caller copies the operand).
    """
    row_stride, col_stride = matrix_strides
    if (col_stride == itemsize or cols == 1) and row_stride % itemsize == 0:
        ld = row_stride // itemsize if rows > 1 else cols
        if ld >= max(cols, 1):
            return OP_N, ld
    if (row_stride == itemsize or rows == 1) and col_stride % itemsize == 0:
        ld = col_stride // itemsize if cols > 1 else rows
        if ld >= max(rows, 1):
            return OP_T, ld
    return None


def _as_batched(x: Any, batch: tuple, xp: Any) -> tuple[Any, int, int, int]:
    """``x`` broadcast to ``batch + x.shape[-2:]`` as (array, op, ld, batch stride in items).

    A batch axis that broadcasting stretched gets stride 0, so nothing is copied for it.
    ``xp`` is cupy here, numpy in the tests that check these layouts on the CPU.
    """
    rows, cols = x.shape[-2:]
    if x.shape[:-2] != batch:  # (a new array object per call otherwise: host time)
        x = xp.broadcast_to(x, batch + (rows, cols))
    item = x.itemsize
    layout = _layout(x.strides[-2:], rows, cols, item)
    # Every batch axis must step by a common multiple so one stride walks them all.
    uniform = _uniform_stride(batch, x.strides[:-2], item)
    if layout is None or uniform is None:
        x = xp.ascontiguousarray(x)
        layout = _layout(x.strides[-2:], rows, cols, item)
        uniform = _uniform_stride(batch, x.strides[:-2], item)
    op, ld = layout
    return x, op, ld, uniform


class GemmPlan(NamedTuple):
    """One cuBLAS call computing row-major ``a @ b`` as column-major ``b^T a^T``."""

    batch: tuple
    m: int
    n: int
    k: int
    count: int
    a: Any
    op_a: int
    ld_a: int
    stride_a: int
    b: Any
    op_b: int
    ld_b: int
    stride_b: int


def plan_2d(a: Any, op_a: int, b: Any, op_b: int, mnk: tuple[int, int, int]) -> GemmPlan:
    """The plan of one product ``(m x k) @ (k x n)`` whose operands are the C-contiguous
    arrays ``a`` and ``b`` (of any shape) read as matrices: ``OP_N`` for the matrix as it
    lies (m x k in ``a``), ``OP_T`` for the transpose of what lies (``a`` holding k x m).
    For a Linear layer's products, planned without making reshaped or transposed views."""
    m, n, k = mnk
    ld_a = k if op_a == OP_N else m
    ld_b = n if op_b == OP_N else k
    return GemmPlan((), m, n, k, 1, a, op_a, ld_a, 0, b, op_b, ld_b, 0)


def plan(a: Any, b: Any, xp: Any) -> GemmPlan:
    """Layouts, leading dims and batch strides for ``a @ b`` (copies only odd layouts)."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if a.ndim == 2 and b.ndim == 2:  # the common case, without the broadcasting machinery
        layout_a = _layout(a.strides, m, k, a.itemsize)
        layout_b = _layout(b.strides, k, n, b.itemsize)
        if layout_a is None:
            a = xp.ascontiguousarray(a)
            layout_a = (OP_N, max(k, 1))
        if layout_b is None:
            b = xp.ascontiguousarray(b)
            layout_b = (OP_N, max(n, 1))
        return GemmPlan((), m, n, k, 1, a, *layout_a, 0, b, *layout_b, 0)
    if a.shape[:-2] == b.shape[:-2]:
        batch = a.shape[:-2]
    else:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    a, op_a, ld_a, stride_a = _as_batched(a, batch, xp)
    b, op_b, ld_b, stride_b = _as_batched(b, batch, xp)
    count = math.prod(batch)
    return GemmPlan(batch, m, n, k, count, a, op_a, ld_a, stride_a, b, op_b, ld_b, stride_b)


def _uniform_stride(batch: tuple, strides: tuple, itemsize: int) -> int | None:
    """The one item stride that walks the flattened batch axes, or None if there is none."""
    sizes = [(size, stride) for size, stride in zip(batch, strides) if size != 1]
    if not sizes:
        return 0
    if all(stride == 0 for _, stride in sizes):
        return 0
    expected = sizes[-1][1]
    for size, stride in reversed(sizes):
        if stride != expected:
            return None
        expected = stride * size
    return sizes[-1][1] // itemsize if sizes[-1][1] % itemsize == 0 else None


def supports_dtype(dtype: Any) -> bool:
    """True for the operand dtypes cuBLAS takes here (float16, float32, float64)."""
    return dtype in _TYPES


def supports(a: Any, b: Any) -> bool:
    """True when ``matmul(a, b)`` runs here (floating dtypes cuBLAS takes, int32 sizes)."""
    return (
        a.dtype == b.dtype
        and a.dtype in _TYPES
        and a.ndim >= 2
        and b.ndim >= 2
        and max(a.shape[-2:] + b.shape[-1:]) <= _INT32_MAX
    )


def supports_out(dtype: Any, out_dtype: Any) -> bool:
    """True when cuBLAS writes the product of ``dtype`` operands in ``out_dtype``."""
    return out_dtype == dtype or (dtype, out_dtype) in _WIDER_OUT


def matmul(a: Any, b: Any, out_dtype: Any = None) -> Any:
    """``a @ b`` for cupy arrays of 2 or more dims (batch dims broadcast), through cuBLAS,
    on ``a``'s device; in ``out_dtype`` (default ``a.dtype``) where ``supports_out``."""
    cupy = require_cupy("a matrix product on CUDA")
    out_dtype = a.dtype if out_dtype is None else np.dtype(out_dtype)
    if not supports_out(a.dtype, out_dtype):
        raise ValueError(
            f"cublas.matmul: cuBLAS does not write a product of {a.dtype} operands in "
            f"{out_dtype}; pass out_dtype={a.dtype} (or float32 for float16 operands)"
        )
    with on_device_of(a):
        return _matmul_on_current_device(cupy, a, b, out_dtype)


def _matmul_on_current_device(cupy: Any, a: Any, b: Any, out_dtype: Any) -> Any:
    if a.size == 0 or b.size == 0:  # nothing to plan (empty layouts have no leading dim)
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        return cupy.zeros(batch + (a.shape[-2], b.shape[-1]), dtype=out_dtype)
    p = plan(a, b, cupy)
    out = cupy.empty(p.batch + (p.m, p.n), dtype=out_dtype)
    gemm(p, out)
    return out


def gemm(p: GemmPlan, out: Any) -> None:
    """Write plan ``p``'s product into ``out``: C-contiguous, ``p.batch + (p.m, p.n)`` items,
    of a dtype ``supports_out`` allows for the operands' (on the current device; every
    dimension above 0)."""
    data_type, compute_type, alpha, beta = _TYPES[p.a.dtype]
    out_type = _TYPES[out.dtype][0]
    # Bind and call as one step: another thread may bind the shared handle to its stream.
    with _call_lock:
        blas = handle()
        status = _gemm(blas, p, out, data_type, out_type, compute_type, alpha, beta)
    _check(status, "cublasGemmEx" if p.count == 1 else "cublasGemmStridedBatchedEx")


def _gemm(blas: _Handle, p: GemmPlan, out: Any, *types: Any) -> int:
    """The cuBLAS call for plan ``p`` into ``out``; returns cuBLAS's status."""
    data_type, out_type, compute_type, alpha, beta = types
    # Column-major C^T (n x m) = op(B^T) (n x k) @ op(A^T) (k x m).
    if p.count == 1:
        return blas.library.cublasGemmEx(
            blas.pointer, p.op_b, p.op_a, p.n, p.m, p.k, alpha,
            p.b.data.ptr, data_type, p.ld_b,
            p.a.data.ptr, data_type, p.ld_a,
            beta, out.data.ptr, out_type, p.n,
            compute_type, _GEMM_DEFAULT,
        )  # fmt: skip
    return blas.library.cublasGemmStridedBatchedEx(
        blas.pointer, p.op_b, p.op_a, p.n, p.m, p.k, alpha,
        p.b.data.ptr, data_type, p.ld_b, p.stride_b,
        p.a.data.ptr, data_type, p.ld_a, p.stride_a,
        beta, out.data.ptr, out_type, p.n, p.m * p.n,
        p.count, compute_type, _GEMM_DEFAULT,
    )  # fmt: skip
