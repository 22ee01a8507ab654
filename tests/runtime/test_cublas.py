"""dtrain's cuBLAS matmul: the call plan checked on the CPU, the product checked on a GPU.

``plan`` decides, from shapes and strides alone, which operand cuBLAS reads with which
transpose flag, leading dimension and batch stride. The CPU tests replay that plan the way
cuBLAS reads memory (column-major, from each operand's first element) with numpy's
``as_strided`` and require the result to equal ``a @ b``: a wrong flag or leading dimension
fails here, without a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import types

import numpy as np
import pytest

import dtrain as dt
from dtrain.runtime import cublas


def _read(array: np.ndarray, op: int, ld: int, stride: int, rows: int, cols: int, count: int):
    """The (count, rows, cols) matrices ``op(stored)`` that cuBLAS reads from ``array``."""
    item = array.itemsize
    # op N: stored is rows x cols, column-major, (i, j) at i + j * ld; op T: stored is
    # cols x rows and op transposes it.
    strides = (stride * item, item, ld * item) if op == 0 else (stride * item, ld * item, item)
    return np.lib.stride_tricks.as_strided(array, (count, rows, cols), strides, writeable=False)


def _emulate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = cublas.plan(a, b, np)
    op_b = _read(p.b, p.op_b, p.ld_b, p.stride_b, p.n, p.k, p.count)  # B^T: n x k
    op_a = _read(p.a, p.op_a, p.ld_a, p.stride_a, p.k, p.m, p.count)  # A^T: k x m
    c_t = op_b @ op_a  # column-major C^T (n x m) ...
    return np.swapaxes(c_t, -1, -2).reshape(p.batch + (p.m, p.n))  # ... is row-major C


def _operand(rng, shape, layout):
    if layout == "contiguous":
        return rng.standard_normal(shape)
    if layout == "transposed":  # x.T of a contiguous array
        return np.swapaxes(rng.standard_normal(shape[:-2] + shape[::-1][:2]), -1, -2)
    if layout == "padded":  # rows of a wider array (leading dimension > cols)
        return rng.standard_normal(shape[:-1] + (shape[-1] + 3,))[..., : shape[-1]]
    if layout == "strided":  # every other column: no cuBLAS layout, gets copied
        return rng.standard_normal(shape[:-1] + (2 * shape[-1],))[..., ::2]
    raise AssertionError(layout)


LAYOUTS = ["contiguous", "transposed", "padded", "strided"]


@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [
        ((5, 3), (3, 4)),
        ((1, 3), (3, 1)),
        ((4, 1), (1, 6)),
        ((2, 5, 3), (2, 3, 4)),
        ((2, 5, 3), (3, 4)),
        ((5, 3), (3, 2, 3, 4)[1:]),
        ((2, 1, 5, 3), (1, 4, 3, 2)),
        ((3, 2, 5, 3), (3, 2, 3, 4)),
    ],
)
def test_plan_reads_memory_as_numpy_matmul(layout_a, layout_b, shape_a, shape_b):
    rng = np.random.default_rng(0)
    a = _operand(rng, shape_a, layout_a)
    b = _operand(rng, shape_b, layout_b)
    np.testing.assert_allclose(_emulate(a, b), a @ b, rtol=1e-12, atol=1e-12)


def test_plan_keeps_views_of_simple_layouts():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 4))
    p = cublas.plan(base, base.T, np)  # no copy for a matrix and its transpose
    assert np.shares_memory(p.a, base) and np.shares_memory(p.b, base)
    assert (p.op_a, p.op_b) == (0, 1)
    stacked = rng.standard_normal((3, 6, 4))
    p = cublas.plan(stacked, base.T, np)  # the shared matrix is broadcast with stride 0
    assert p.stride_b == 0 and np.shares_memory(p.b, base)
    assert p.stride_a == 24


def test_attention_shaped_views_copy_only_what_cublas_cannot_walk():
    # q @ k^T with q, k split out of one (B, T, 3, H, D) projection and permuted to
    # (B, H, T, D): the batch axes (B, H) do not walk memory with one stride, so they are
    # copied; a contiguous (B*H, T, D) q and its k^T view are read in place.
    rng = np.random.default_rng(2)
    qkv = rng.standard_normal((2, 5, 3, 3, 4))
    q, k = (np.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in (0, 1))
    k_t = np.swapaxes(k, -1, -2)
    p = cublas.plan(q, k_t, np)
    assert not np.shares_memory(p.a, qkv) and not np.shares_memory(p.b, qkv)
    np.testing.assert_allclose(_emulate(q, k_t), q @ k_t, rtol=1e-12)
    flat_q, flat_k = np.ascontiguousarray(q).reshape(6, 5, 4), np.ascontiguousarray(k)
    flat_k = flat_k.reshape(6, 5, 4)
    p = cublas.plan(flat_q, np.swapaxes(flat_k, -1, -2), np)
    assert np.shares_memory(p.a, flat_q) and np.shares_memory(p.b, flat_k)
    assert p.stride_a == p.stride_b == 20
    expected = flat_q @ np.swapaxes(flat_k, -1, -2)
    np.testing.assert_allclose(_emulate(flat_q, np.swapaxes(flat_k, -1, -2)), expected)


def test_supports_only_float_dtypes_cublas_takes():
    f32 = np.zeros((2, 2), np.float32)
    assert cublas.supports(f32, f32)
    assert not cublas.supports(f32, f32.astype(np.float64))
    assert not cublas.supports(f32.astype(np.int64), f32.astype(np.int64))
    assert not cublas.supports(f32[0], f32)


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_cublas_matmul_on_gpu(dtype, layout_a, layout_b):
    import cupy

    rng = np.random.default_rng(3)
    for shape_a, shape_b in [((33, 17), (17, 65)), ((3, 2, 9, 8), (3, 1, 8, 7)), ((4, 9), (9, 1))]:
        a = cupy.asarray(_operand(rng, shape_a, layout_a).astype(dtype))
        b = cupy.asarray(_operand(rng, shape_b, layout_b).astype(dtype))
        if layout_a == "transposed":  # keep the view on the GPU a view
            a = cupy.swapaxes(cupy.ascontiguousarray(cupy.swapaxes(a, -1, -2)), -1, -2)
        if layout_b == "transposed":
            b = cupy.swapaxes(cupy.ascontiguousarray(cupy.swapaxes(b, -1, -2)), -1, -2)
        expected = cupy.asnumpy(a).astype(np.float64) @ cupy.asnumpy(b).astype(np.float64)
        got = cupy.asnumpy(cublas.matmul(a, b)).astype(np.float64)
        tolerance = 2e-2 if dtype == "float16" else 1e-5
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < tolerance, (shape_a, shape_b, error)


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("layout_a", LAYOUTS)
def test_cublas_float32_product_of_float16_operands_on_gpu(layout_a):
    import cupy

    rng = np.random.default_rng(7)
    for shape_a, shape_b in [((96, 256), (256, 384)), ((2, 9, 8), (2, 8, 7))]:
        a = (_operand(rng, shape_a, layout_a) * 300).astype(np.float16)
        b = (rng.standard_normal(shape_b) * 300).astype(np.float16)
        got = cublas.matmul(cupy.asarray(a), cupy.asarray(b), np.float32)
        assert got.dtype == np.float32
        expected = np.matmul(a, b, dtype=np.float64)
        assert np.abs(expected).max() > 65504  # past float16: a float16 result holds inf
        # Each element to within its float32 accumulation error, which scales with the sum
        # of the magnitudes, not with the result (some land near 0: ~1e-7 of that sum).
        bound = 1e-5 * np.matmul(np.abs(a), np.abs(b), dtype=np.float64)
        error = np.abs(cupy.asnumpy(got) - expected)
        assert (error <= bound).all(), (shape_a, float((error / bound).max()))


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
def test_tf32_products_on_gpu_differ_from_float32_within_tf32_error():
    # TF32 rounds the operands to 10 mantissa bits: the product moves by ~1e-4 relative,
    # well past float32's ~1e-7, and stays within ~1e-3. A plain float32 run matches
    # float64 to 1e-5. The Linear path (cuBLASLt, bias epilogue) follows the same switch.
    import cupy

    from dtrain.runtime import matmul_precision

    rng = np.random.default_rng(11)
    a = rng.standard_normal((256, 512)).astype(np.float32)
    b = rng.standard_normal((512, 128)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    x = dt.tensor(a, device="cuda")
    layer = dt.nn.Linear(512, 128).to("cuda")
    with dt.no_grad():
        layer.weight.copy_(dt.tensor(b.T.copy(), device="cuda"))
        layer.bias.zero_()
    errors = {}
    try:
        for precision in ("highest", "high"):
            matmul_precision.set_float32_matmul_precision(precision)
            got = cupy.asnumpy(cublas.matmul(cupy.asarray(a), cupy.asarray(b)))
            linear = layer(x).detach().cpu().numpy()
            errors[precision] = [
                np.linalg.norm(r.astype(np.float64) - expected) / np.linalg.norm(expected)
                for r in (got, linear)
            ]
    finally:
        matmul_precision.set_float32_matmul_precision("highest")
    assert max(errors["highest"]) < 1e-5, errors
    assert min(errors["high"]) > 2e-5 and max(errors["high"]) < 5e-3, errors


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
def test_cublas_matmul_empty_and_zero_inner_dim():
    import cupy

    a = cupy.ones((3, 0), dtype=cupy.float32)
    b = cupy.ones((0, 4), dtype=cupy.float32)
    assert (cublas.matmul(a, b) == 0).all()
    assert cublas.matmul(
        cupy.ones((0, 3), cupy.float32), cupy.ones((3, 2), cupy.float32)
    ).shape == (
        0,
        2,
    )


class _PtrArray(np.ndarray):
    """A numpy array that answers ``.data.ptr`` and ``.device`` as a cupy array does."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self):
        return contextlib.nullcontext()


def _ptr(array: np.ndarray) -> _PtrArray:
    return array.view(_PtrArray)


_CUDA_TYPES = {0: np.float32, 1: np.float64, 2: np.float16}  # cudaDataType codes


class _FakeCublas:
    """cuBLAS's GemmEx / GemmStridedBatchedEx emulated on host memory: operands are read
    column-major from raw addresses with the given leading dimensions, strides and data
    types, exactly as cuBLAS reads them, so the argument order dtrain passes is what is
    checked."""

    def __init__(self) -> None:
        self.calls = []
        self.types = []  # (A/B type, C type) of each call
        self.computes = []  # the cublasComputeType of each call

    def _matrices(self, address, code, op, rows, cols, ld, stride, count):
        """The (count, rows, cols) matrices op(S) at ``address``: S is column-major with
        leading dimension ``ld``, rows x cols for op N and cols x rows for op T."""
        dtype = np.dtype(_CUDA_TYPES[code])
        item = dtype.itemsize
        stored_rows, stored_cols = (rows, cols) if op == 0 else (cols, rows)
        span = (count - 1) * stride + (stored_rows - 1) + (stored_cols - 1) * ld + 1
        raw = np.dtype(f"u{item}")  # ctypes has no float16: read the bits, then view them
        pointer = ctypes.cast(address, ctypes.POINTER(np.ctypeslib.as_ctypes_type(raw)))
        base = np.ctypeslib.as_array(pointer, shape=(span,)).view(dtype)
        strides = (stride * item, item, ld * item) if op == 0 else (stride * item, ld * item, item)
        return np.lib.stride_tricks.as_strided(base, (count, rows, cols), strides)

    def _run(self, transa, transb, m, n, k, a, lda, stride_a, b, ldb, stride_b, c, ldc,
             stride_c, count, types):  # fmt: skip
        atype, btype, ctype = types
        if atype != btype:
            return 7  # CUBLAS_STATUS_INVALID_VALUE
        self.types.append((atype, ctype))
        op_a = self._matrices(a, atype, transa, m, k, lda, stride_a, count)
        op_b = self._matrices(b, btype, transb, k, n, ldb, stride_b, count)
        out = self._matrices(c, ctype, 0, m, n, ldc, stride_c, count)
        out[...] = np.matmul(op_a, op_b, dtype=np.float64)
        return 0

    def cublasGemmStridedBatchedEx(  # noqa: N802 - cuBLAS's name
        self, handle, transa, transb, m, n, k, alpha, a, atype, lda, stride_a,
        b, btype, ldb, stride_b, beta, c, ctype, ldc, stride_c, count, compute, algo,
    ):  # fmt: skip
        self.calls.append("batched")
        self.computes.append(compute)
        return self._run(
            transa, transb, m, n, k, a, lda, stride_a, b, ldb, stride_b, c, ldc, stride_c, count,
            (atype, btype, ctype),
        )  # fmt: skip

    def cublasGemmEx(  # noqa: N802 - cuBLAS's name
        self, handle, transa, transb, m, n, k, alpha, a, atype, lda,
        b, btype, ldb, beta, c, ctype, ldc, compute, algo,
    ):  # fmt: skip
        self.calls.append("single")
        self.computes.append(compute)
        types = (atype, btype, ctype)
        return self._run(transa, transb, m, n, k, a, lda, 0, b, ldb, 0, c, ldc, 0, 1, types)


@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
@pytest.mark.parametrize(
    ("shape_a", "shape_b"), [((5, 3), (3, 4)), ((2, 5, 3), (2, 3, 4)), ((2, 1, 5, 3), (1, 4, 3, 2))]
)
def test_matmul_passes_cublas_the_right_arguments(
    monkeypatch, layout_a, layout_b, shape_a, shape_b
):
    # dtrain.runtime.cublas.matmul end to end, with cupy and libcublas replaced by numpy and
    # the emulation above: a swapped operand, flag or leading dimension gives a wrong product.
    library = _install_fake_cublas(monkeypatch)
    rng = np.random.default_rng(5)
    a = _ptr(_operand(rng, shape_a, layout_a))
    b = _ptr(_operand(rng, shape_b, layout_b))
    out = cublas.matmul(a, b)
    np.testing.assert_allclose(np.asarray(out), np.asarray(a) @ np.asarray(b), rtol=1e-12)
    assert library.calls == (["single"] if len(shape_a) == 2 else ["batched"])
    assert library.types == [(1, 1)]


def _install_fake_cublas(monkeypatch) -> _FakeCublas:
    fake_cupy = types.SimpleNamespace(
        empty=lambda shape, dtype: _ptr(np.full(shape, np.nan, dtype)),
        broadcast_to=lambda x, shape: _ptr(np.broadcast_to(x, shape)),
        ascontiguousarray=lambda x: _ptr(np.ascontiguousarray(x)),
    )
    library = _FakeCublas()
    monkeypatch.setattr(cublas, "require_cupy", lambda what: fake_cupy)
    monkeypatch.setattr(cublas, "handle", lambda: types.SimpleNamespace(library=library, pointer=0))
    return library


@pytest.mark.parametrize(("shape_a", "shape_b"), [((5, 3), (3, 4)), ((2, 5, 3), (2, 3, 4))])
def test_float16_operands_can_give_a_float32_product(monkeypatch, shape_a, shape_b):
    # A weight gradient under autocast: float16 operands, written in float32 (CUDA_R_32F
    # for C, CUDA_R_16F for A and B), accumulated without rounding to float16. The values
    # are past float16's range (65504) once multiplied out, so a float16 C would hold inf.
    library = _install_fake_cublas(monkeypatch)
    rng = np.random.default_rng(6)
    a = _ptr((rng.standard_normal(shape_a) * 300).astype(np.float16))
    b = _ptr((rng.standard_normal(shape_b) * 300).astype(np.float16))
    out = cublas.matmul(a, b, np.float32)
    assert out.dtype == np.float32 and library.types == [(2, 0)]
    expected = np.matmul(np.asarray(a), np.asarray(b), dtype=np.float64)
    assert np.abs(expected).max() > 65504
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="float32 for float16 operands"):
        cublas.matmul(_ptr(np.ones((2, 2), np.float32)), _ptr(np.ones((2, 2), np.float32)), "f2")


def test_float32_matmul_precision_picks_tf32_for_float32_products_only(monkeypatch):
    # CUBLAS_COMPUTE_32F (68) by default; CUBLAS_COMPUTE_32F_FAST_TF32 (77) for float32
    # operands under "high"/"medium" (or backends.cuda.matmul.allow_tf32); float16 operands
    # keep 68, float64 keeps CUBLAS_COMPUTE_64F (70).
    import dtrain as dt
    from dtrain.runtime import matmul_precision

    monkeypatch.setattr(matmul_precision, "_precision", "highest")
    library = _install_fake_cublas(monkeypatch)
    operands = {dtype: _ptr(np.ones((3, 2), dtype)) for dtype in (np.float32, np.float16)}
    try:
        cublas.matmul(operands[np.float32], operands[np.float32].T)
        dt.set_float32_matmul_precision("high")
        assert dt.backends.cuda.matmul.allow_tf32
        for dtype in (np.float32, np.float16):
            cublas.matmul(operands[dtype], operands[dtype].T)
        cublas.matmul(_ptr(np.ones((2, 2))), _ptr(np.ones((2, 2))))
        dt.backends.cuda.matmul.allow_tf32 = False
        assert dt.get_float32_matmul_precision() == "highest"
        cublas.matmul(operands[np.float32], operands[np.float32].T)
    finally:
        matmul_precision.set_float32_matmul_precision("highest")
    assert library.computes == [68, 77, 68, 70, 68]
    with pytest.raises(ValueError, match="unknown precision 'fast'; use one of highest"):
        dt.set_float32_matmul_precision("fast")


def test_supports_out_takes_only_the_same_dtype_or_float16_to_float32():
    f16, f32, f64 = (np.dtype(t) for t in (np.float16, np.float32, np.float64))
    assert cublas.supports_out(f32, f32) and cublas.supports_out(f16, f32)
    assert not cublas.supports_out(f32, f64) and not cublas.supports_out(f32, f16)


def test_open_cuda_library_says_why_none_loads():
    library, errors = cublas.open_cuda_library("dtrain_no_such_library")
    assert library is None
    assert len(errors) == 4  # three sonames, then the wheels through cuda.pathfinder
    assert "libdtrain_no_such_library.so.13" in errors[0]
