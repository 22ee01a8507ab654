"""Matrix products with a bias epilogue, through cuBLASLt (ctypes): one launch for a Linear
layer's ``x @ W^T + b``, and one for its weight gradient together with its bias gradient.

On a small model a step is bound by host time per launch, and a Linear layer otherwise costs
two launches each way: the product, then the bias add (forward) or the column sum of the
gradient (backward, a cupy reduction, the dearer kind). cuBLASLt folds both into the matrix
product's epilogue, as PyTorch's ``addmm`` does.

Layout, as in ``runtime/cublas.py``: row-major ``out = a @ b`` (m x n) is column-major
``D = op(A) op(B)`` (n x m) with A = ``b``'s memory and B = ``a``'s memory.

- ``CUBLASLT_EPILOGUE_BIAS`` adds a vector along D's rows (n of them): a bias over ``out``'s
  columns. ``CUBLASLT_EPILOGUE_RELU_BIAS`` then applies ReLU (a Linear layer followed by a
  ReLU in a ``Sequential``: ``nn/modules/container.py``).
- ``CUBLASLT_EPILOGUE_BGRADB`` sums op(B) (k x m) over k, giving m values: ``a``'s row sums.
  For a Linear layer, ``a = grad^T``, so this is the bias gradient.

Only 2-D products of one operand dtype, every dimension above 1, take this path; the
result (and the vector) may be float32 for float16 operands (``cublas.supports_out``).
Whatever cuBLASLt has no algorithm for gets None back, and the caller
(``runtime/linalg.py``) runs the plain product and a separate add or sum. A failed cuBLASLt
setup or call turns the path off for the process, with a warning, so a library that
misbehaves costs speed, not results.
``DTRAIN_CUBLASLT=0`` turns it off from the start.
"""

from __future__ import annotations

import contextlib
import ctypes
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from dtrain.runtime import cublas
from dtrain.runtime.backend import on_device_of
from dtrain.runtime.config import read_config

# cublasLt.h (CUDA 13; unchanged since CUDA 11)
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
_DESC_BIAS_DATA_TYPE = 26
_PREF_MAX_WORKSPACE_BYTES = 1
# Minimum alignments of A, B, C, D the algorithm may assume (default 256 bytes each).
_PREF_MIN_ALIGNMENT = (5, 6, 7, 8)
_MAX_ALIGNMENT = 256
EPILOGUE_BIAS, EPILOGUE_RELU_BIAS, EPILOGUE_BGRADB = 4, 6, 512
_STATUS_NOT_SUPPORTED = 15
_CUDA_R_32F, _CUDA_R_64F = 0, 1
_CACHE_LIMIT = 512  # plans kept; a new shape past this evicts the oldest


class _Algo(ctypes.Structure):
    """cublasLtMatmulAlgo_t: opaque, 8 x uint64."""

    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    """cublasLtMatmulHeuristicResult_t."""

    _fields_ = [
        ("algo", _Algo),
        ("workspace_size", ctypes.c_size_t),
        ("state", ctypes.c_int),
        ("waves_count", ctypes.c_float),
        ("reserved", ctypes.c_int * 4),
    ]


_P = ctypes.c_void_p
_I = ctypes.c_int
_SIGNATURES = {
    "cublasLtCreate": [ctypes.POINTER(_P)],
    "cublasLtMatmulDescCreate": [ctypes.POINTER(_P), _I, _I],
    "cublasLtMatmulDescDestroy": [_P],
    "cublasLtMatmulDescSetAttribute": [_P, _I, _P, ctypes.c_size_t],
    "cublasLtMatrixLayoutCreate": [
        ctypes.POINTER(_P), _I, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64
    ],
    "cublasLtMatrixLayoutDestroy": [_P],
    "cublasLtMatmulPreferenceCreate": [ctypes.POINTER(_P)],
    "cublasLtMatmulPreferenceSetAttribute": [_P, _I, _P, ctypes.c_size_t],
    "cublasLtMatmulPreferenceDestroy": [_P],
    "cublasLtMatmulAlgoGetHeuristic": [
        _P, _P, _P, _P, _P, _P, _P, _I, ctypes.POINTER(_HeuristicResult), ctypes.POINTER(_I)
    ],
    "cublasLtMatmul": [
        _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.POINTER(_Algo), _P,
        ctypes.c_size_t, _P,
    ],
}  # fmt: skip


class _Plan(NamedTuple):
    """Cached descriptors of one product shape, and the algorithm cuBLASLt chose for it."""

    desc: int
    layout_a: int
    layout_b: int
    layout_d: int
    algo: _Algo


class _State:
    def __init__(self) -> None:
        self.library: Any = None  # the loaded libcublasLt, or False once the path is off
        self.off_reason: str | None = None
        self.handles: dict[int, int] = {}  # device -> cublasLtHandle_t
        self.plans: dict[tuple, _Plan | None] = {}  # None: cuBLASLt has no algorithm
        self.vectors: dict[int, int] = {}  # descriptor -> the vector pointer it holds


_state = _State()


def off_reason() -> str | None:
    """Why the cuBLASLt path is off (None while it is on or not yet tried)."""
    return _state.off_reason


def status() -> str:
    """Whether the path is on, and for how many product shapes cuBLASLt had an algorithm."""
    if _state.off_reason is not None:
        return f"off: {_state.off_reason}"
    taken = sum(plan is not None for plan in _state.plans.values())
    return f"on: {taken} product shapes in an epilogue, {len(_state.plans) - taken} without"


@contextlib.contextmanager
def bias_as_own_launch() -> Iterator[None]:
    """Inside this block, products with a bias run as a plain product and a separate add or
    sum: what ``bench/gpu_step.py`` compares with the epilogue. Not thread-safe."""
    saved = _state.library
    _state.library = False
    try:
        yield
    finally:
        _state.library = saved


def _turn_off(reason: str) -> None:
    _state.library = False
    _state.off_reason = reason


def _load_library() -> Any:
    """libcublasLt, the copy libcublas already pulled in (same soname), or False."""
    if _state.library is not None:
        return _state.library
    if not read_config().cublaslt:
        _turn_off("DTRAIN_CUBLASLT=0")
        return False
    cublas._load_library()  # loads libcublas, which loads its libcublasLt
    library, errors = cublas.open_cuda_library("cublasLt")
    if library is None:
        _turn_off("cannot load libcublasLt (" + "; ".join(errors) + ")")
        return False
    _declare(library)
    _state.library = library
    return library


def _declare(library: Any) -> None:
    for name, argtypes in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int


def _check(status: int, call: str) -> None:
    if status != 0:
        raise cublas.CublasError(f"{call} failed with cuBLAS status {status}")


def _set(library: Any, desc: Any, attribute: int, value: Any) -> None:
    status = library.cublasLtMatmulDescSetAttribute(
        desc, attribute, ctypes.byref(value), ctypes.sizeof(value)
    )
    _check(status, f"cublasLtMatmulDescSetAttribute({attribute})")


def _handle(library: Any, device: int) -> int:
    found = _state.handles.get(device)
    if found is None:
        pointer = _P()
        _check(library.cublasLtCreate(ctypes.byref(pointer)), "cublasLtCreate")
        found = _state.handles[device] = pointer.value
    return found


def _preference(library: Any, alignments: tuple[int, int, int, int]) -> int:
    """A heuristic preference: our workspace, and the alignments of A, B, C and D in bytes
    (cuBLASLt assumes 256 unless told, and an algorithm that needs more fails at the call)."""
    pointer = _P()
    _check(library.cublasLtMatmulPreferenceCreate(ctypes.byref(pointer)), "PreferenceCreate")
    values = [(_PREF_MAX_WORKSPACE_BYTES, ctypes.c_uint64(cublas._WORKSPACE_BYTES))]
    values += [
        (attribute, ctypes.c_uint32(a)) for attribute, a in zip(_PREF_MIN_ALIGNMENT, alignments)
    ]
    for attribute, value in values:
        status = library.cublasLtMatmulPreferenceSetAttribute(
            pointer, attribute, ctypes.byref(value), ctypes.sizeof(value)
        )
        _check(status, f"cublasLtMatmulPreferenceSetAttribute({attribute})")
    return pointer.value


def _layout(library: Any, data_type: int, rows: int, cols: int, ld: int) -> int:
    pointer = _P()
    status = library.cublasLtMatrixLayoutCreate(ctypes.byref(pointer), data_type, rows, cols, ld)
    _check(status, "cublasLtMatrixLayoutCreate")
    return pointer.value


def _alignment(pointer: int) -> int:
    """The largest power of two up to 256 that divides ``pointer``: cuBLASLt picks algorithms
    by operand alignment, so a plan is only reused for operands aligned as well."""
    return min(_MAX_ALIGNMENT, pointer & -pointer) if pointer else _MAX_ALIGNMENT


def _describe(
    library: Any,
    lt: int,
    p: cublas.GemmPlan,
    dtypes: tuple[Any, Any],
    epilogue: int,
    alignments: tuple,
) -> _Plan | None:
    """Descriptors and an algorithm for plan ``p`` with ``epilogue``, ``dtypes`` (the
    operands', the result's and the vector's) and operands aligned to ``alignments`` (a's,
    b's, out's, the vector's); None if cuBLASLt has no algorithm."""
    dtype, out_dtype = dtypes
    data_type, compute_type = cublas._TYPES[dtype][:2]
    out_type = cublas._TYPES[out_dtype][0]
    scale_type = _CUDA_R_64F if dtype == np.float64 else _CUDA_R_32F
    desc = _P()
    _check(
        library.cublasLtMatmulDescCreate(ctypes.byref(desc), compute_type, scale_type),
        "cublasLtMatmulDescCreate",
    )
    layouts: list[int] = []
    preference = None
    plan = None
    try:
        _set(library, desc, _DESC_TRANSA, ctypes.c_int32(p.op_b))
        _set(library, desc, _DESC_TRANSB, ctypes.c_int32(p.op_a))
        _set(library, desc, _DESC_EPILOGUE, ctypes.c_uint32(epilogue))
        _set(library, desc, _DESC_BIAS_DATA_TYPE, ctypes.c_int32(out_type))
        # The heuristic reads the bias pointer's alignment only: an address aligned as the
        # vector is stands in for it (each call sets the real one).
        _set(library, desc, _DESC_BIAS_POINTER, _P(alignments[3]))
        # A (b's memory) is n x k as stored for op N, k x n for op T; B (a's memory) likewise.
        rows_a, cols_a = (p.n, p.k) if p.op_b == cublas.OP_N else (p.k, p.n)
        rows_b, cols_b = (p.k, p.m) if p.op_a == cublas.OP_N else (p.m, p.k)
        shapes = (
            (data_type, rows_a, cols_a, p.ld_b),
            (data_type, rows_b, cols_b, p.ld_a),
            (out_type, p.n, p.m, p.n),
        )
        for layout_type, rows, cols, ld in shapes:
            layouts.append(_layout(library, layout_type, rows, cols, ld))
        result = _HeuristicResult()
        found = _I(0)
        # Lt's A is b's memory and its B is a's; C and D are out.
        lt_alignments = (alignments[1], alignments[0], alignments[2], alignments[2])
        preference = _preference(library, lt_alignments)
        status = library.cublasLtMatmulAlgoGetHeuristic(
            lt, desc, layouts[0], layouts[1], layouts[2], layouts[2], preference, 1,
            ctypes.byref(result), ctypes.byref(found),
        )  # fmt: skip
        # Any refusal means no algorithm: NOT_SUPPORTED, or INVALID_VALUE, which PyTorch
        # meets for operands of one row or column.
        if status == 0 and found.value >= 1 and result.state == 0:
            plan = _Plan(desc.value, *layouts, result.algo)
        return plan
    finally:
        if preference is not None:
            library.cublasLtMatmulPreferenceDestroy(preference)
        if plan is None:
            library.cublasLtMatmulDescDestroy(desc)
            for layout in layouts:
                library.cublasLtMatrixLayoutDestroy(layout)


def _evict_oldest(library: Any) -> None:
    key = next(iter(_state.plans))
    plan = _state.plans.pop(key)
    if plan is not None:
        _state.vectors.pop(plan.desc, None)
        library.cublasLtMatmulDescDestroy(plan.desc)
        for layout in (plan.layout_a, plan.layout_b, plan.layout_d):
            library.cublasLtMatrixLayoutDestroy(layout)


def _run(p: cublas.GemmPlan, vector: Any, out: Any, epilogue: int) -> bool:
    """Plan ``p``'s product into ``out`` with ``epilogue`` reading or writing ``vector``;
    False where cuBLASLt does not take it (nothing was launched then)."""
    library = _load_library()
    if not library:
        return False
    import cupy

    dtype = p.a.dtype
    compute_type, alpha, beta = cublas._TYPES[dtype][1:]
    pointers = (p.a.data.ptr, p.b.data.ptr, out.data.ptr, vector.data.ptr)
    device = cupy.cuda.runtime.getDevice()
    alignments = (
        _alignment(pointers[0]), _alignment(pointers[1]), _alignment(pointers[2]),
        _alignment(pointers[3]),
    )  # fmt: skip
    dtypes = (dtype, out.dtype)
    key = (
        device, dtypes, epilogue, p.op_a, p.op_b, p.m, p.n, p.k, p.ld_a, p.ld_b, alignments,
        compute_type,  # float32's changes with set_float32_matmul_precision
    )  # fmt: skip
    with cublas._call_lock:  # the plan's descriptor is shared: set its bias and call at once
        blas = cublas.handle()  # binds the workspace both libraries use to this stream
        try:
            lt = _handle(library, device)
            if key not in _state.plans:
                if len(_state.plans) >= _CACHE_LIMIT:
                    _evict_oldest(library)
                _state.plans[key] = _describe(library, lt, p, dtypes, epilogue, alignments)
            plan = _state.plans[key]
            if plan is None:
                return False
            if _state.vectors.get(plan.desc) != pointers[3]:  # a layer's bias: set once
                _set(library, plan.desc, _DESC_BIAS_POINTER, _P(pointers[3]))
                _state.vectors[plan.desc] = pointers[3]
        except cublas.CublasError as exc:
            return _give_up(str(exc))
        status = library.cublasLtMatmul(
            lt, plan.desc, alpha,
            pointers[1], plan.layout_a, pointers[0], plan.layout_b,
            beta, pointers[2], plan.layout_d, pointers[2], plan.layout_d,
            ctypes.byref(plan.algo), blas.workspace.data.ptr, cublas._WORKSPACE_BYTES,
            blas.stream,
        )  # fmt: skip
    if status != 0:
        return _give_up(f"cublasLtMatmul failed with cuBLAS status {status}")
    return True


def _give_up(reason: str) -> bool:
    """Turn the path off for the process, say so once, and return False (nothing ran)."""
    _turn_off(reason)
    warnings.warn(
        f"dtrain: {reason}; matrix products with a bias now run as a product and a "
        "separate add for the rest of this process (set DTRAIN_CUBLASLT=0 to skip the try)",
        RuntimeWarning,
        stacklevel=4,
    )
    return False


def _eligible(a: Any, b: Any) -> bool:
    """2-D operands cuBLAS takes, every dimension above 1: cuBLASLt's heuristic refuses some
    products of one row or column (PyTorch keeps those off its Lt path too)."""
    return (
        a.ndim == 2
        and b.ndim == 2
        and min(a.shape[0], a.shape[1], b.shape[1]) > 1
        and cublas.supports(a, b)
        and _state.library is not False
    )


def takes(p: cublas.GemmPlan) -> bool:
    """Whether plan ``p`` (of operands cuBLAS takes) may go through cuBLASLt: one product,
    every dimension above 1, the path not turned off."""
    return p.count == 1 and min(p.m, p.n, p.k) > 1 and _state.library is not False


def _bias_fits(bias: Any, dtype: Any, n: int) -> bool:
    return bias.dtype == dtype and bias.shape == (n,) and bias.strides == (bias.itemsize,)


def matmul_bias(a: Any, b: Any, bias: Any, relu: bool = False) -> Any | None:
    """``a @ b + bias`` (cupy, 2-D; ``bias`` of ``b.shape[1]``), with ``relu`` then
    ``max(., 0)``, in one launch, or None where cuBLASLt does not take it."""
    if not _eligible(a, b) or not _bias_fits(bias, a.dtype, b.shape[1]):
        return None
    import cupy

    with on_device_of(a):
        p = cublas.plan(a, b, cupy)
        return plan_bias(p, bias, (a.shape[0], b.shape[1]), relu)


def plan_bias(p: cublas.GemmPlan, bias: Any, shape: tuple, relu: bool = False) -> Any | None:
    """Plan ``p``'s product plus ``bias`` (then ReLU with ``relu``) as a new array of
    ``shape`` (``p.m * p.n`` items), on the current device; None where cuBLASLt does not
    take it. ``p`` must pass ``takes``; ``bias`` is checked here."""
    if not _bias_fits(bias, p.a.dtype, p.n):
        return None
    import cupy

    out = cupy.empty(shape, dtype=p.a.dtype)
    return out if _run(p, bias, out, EPILOGUE_RELU_BIAS if relu else EPILOGUE_BIAS) else None


def matmul_row_sums(a: Any, b: Any, out_dtype: Any = None) -> tuple[Any, Any] | None:
    """``(a @ b, a.sum(axis=1))`` (cupy, 2-D) in one launch, both in ``out_dtype`` (default
    ``a.dtype``), or None where cuBLASLt does not take it. With ``a = grad^T`` these are a
    Linear layer's weight and bias gradients."""
    out_dtype = a.dtype if out_dtype is None else np.dtype(out_dtype)
    if not _eligible(a, b) or not cublas.supports_out(a.dtype, out_dtype):
        return None
    import cupy

    with on_device_of(a):
        return plan_row_sums(cublas.plan(a, b, cupy), out_dtype)


def plan_row_sums(p: cublas.GemmPlan, out_dtype: Any) -> tuple[Any, Any] | None:
    """Plan ``p``'s product (m x n) and the row sums of its first operand (m), both new
    arrays in ``out_dtype``, on the current device; None where cuBLASLt does not take it.
    ``p`` must pass ``takes``, ``out_dtype`` ``cublas.supports_out``."""
    import cupy

    out = cupy.empty((p.m, p.n), dtype=out_dtype)
    sums = cupy.empty(p.m, dtype=out_dtype)
    return (out, sums) if _run(p, sums, out, EPILOGUE_BGRADB) else None
