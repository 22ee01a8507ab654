"""dtrain's cuBLASLt bias epilogues: the calls checked on the CPU against an emulation of the
C API, the attributes against the real library where it loads, the products on a GPU.

``_FakeLt`` carries out ``cublasLtMatmul`` on host memory the way cuBLASLt defines it:
column-major operands read from raw addresses with the layouts' leading dimensions, the
descriptor's transpose flags, ``EPILOGUE_BIAS`` adding a vector along D's rows and
``EPILOGUE_BGRADB`` writing op(B)'s sums over k. A swapped operand, flag, layout or vector
gives a wrong product or a wrong sum here, without a GPU.
"""

from __future__ import annotations

import ctypes
import os
import types
import warnings

import numpy as np
import pytest
from test_cublas import LAYOUTS, _operand, _ptr

import dtrain as dt
from dtrain.runtime import cublas, cublaslt, linalg

_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, -1: None}


def _value(x):
    """The integer behind a pointer argument, however it was passed."""
    x = getattr(x, "_obj", x)  # ctypes.byref(...)
    return getattr(x, "value", x)


class _FakeLt:
    """The cuBLASLt calls dtrain makes, on host memory."""

    def __init__(self, heuristic_status: int = 0, matmul_status: int = 0) -> None:
        self.objects: dict[int, dict] = {}
        self.heuristic_status = heuristic_status
        self.matmul_status = matmul_status
        self.matmuls = 0
        self.destroyed = 0
        self.preferences: dict[int, int] = {}
        self.live_preferences = 0
        self.create_status = 0

    def _new(self, out, **fields) -> int:
        key = len(self.objects) + 1000
        self.objects[key] = fields
        out._obj.value = key
        return 0

    def cublasLtCreate(self, out):  # noqa: N802 - cuBLASLt's names
        return self.create_status or self._new(out, kind="handle")

    def cublasLtMatmulDescCreate(self, out, compute, scale):  # noqa: N802
        return self._new(out, kind="desc", compute=compute, scale=scale, attrs={})

    def cublasLtMatmulDescSetAttribute(self, desc, attribute, buffer, size):  # noqa: N802
        value = buffer._obj
        if size != ctypes.sizeof(value):
            return 7  # CUBLAS_STATUS_INVALID_VALUE
        self.objects[_value(desc)]["attrs"][attribute] = value.value
        return 0

    def cublasLtMatrixLayoutCreate(self, out, data_type, rows, cols, ld):  # noqa: N802
        if ld < rows:
            return 7
        return self._new(out, kind="layout", dtype=_DTYPES[data_type], rows=rows, cols=cols, ld=ld)

    def cublasLtMatmulPreferenceCreate(self, out):  # noqa: N802
        self.live_preferences += 1
        return self._new(out, kind="preference")

    def cublasLtMatmulPreferenceSetAttribute(self, preference, attribute, buffer, size):  # noqa: N802
        if size != ctypes.sizeof(buffer._obj):
            return 7
        self.preferences[attribute] = buffer._obj.value
        return 0

    def cublasLtMatmulPreferenceDestroy(self, preference):  # noqa: N802
        self.live_preferences -= 1
        return 0

    def cublasLtMatmulAlgoGetHeuristic(  # noqa: N802
        self, handle, desc, a, b, c, d, preference, requested, results, found
    ):
        if self.heuristic_status != 0:
            return self.heuristic_status
        results._obj.state = 0
        found._obj.value = 1
        return 0

    def cublasLtMatmulDescDestroy(self, desc):  # noqa: N802
        self.destroyed += 1
        return 0

    def cublasLtMatrixLayoutDestroy(self, layout):  # noqa: N802
        self.destroyed += 1
        return 0

    def _matrix(self, address: int, layout: dict) -> np.ndarray:
        dtype, rows, cols, ld = (layout[k] for k in ("dtype", "rows", "cols", "ld"))
        item = np.dtype(dtype).itemsize
        span = (rows - 1) + (cols - 1) * ld + 1
        raw = np.dtype(f"u{item}")  # ctypes has no float16: read the bits, then view them
        pointer = ctypes.cast(address, ctypes.POINTER(np.ctypeslib.as_ctypes_type(raw)))
        base = np.ctypeslib.as_array(pointer, shape=(span,)).view(dtype)
        return np.lib.stride_tricks.as_strided(base, (rows, cols), (item, ld * item))

    def cublasLtMatmul(  # noqa: N802
        self, handle, desc, alpha, a, layout_a, b, layout_b, beta, c, layout_c, d, layout_d,
        algo, workspace, workspace_size, stream,
    ):  # fmt: skip
        self.matmuls += 1
        if self.matmul_status:
            return self.matmul_status
        attrs = self.objects[_value(desc)]["attrs"]
        layouts = [self.objects[_value(x)] for x in (layout_a, layout_b, layout_d)]
        op_a = self._matrix(a, layouts[0])
        op_b = self._matrix(b, layouts[1])
        op_a = op_a.T if attrs.get(cublaslt._DESC_TRANSA, 0) else op_a
        op_b = op_b.T if attrs.get(cublaslt._DESC_TRANSB, 0) else op_b
        out = self._matrix(d, layouts[2])
        if op_a.shape[1] != op_b.shape[0] or out.shape != (op_a.shape[0], op_b.shape[1]):
            return 7
        product = op_a.astype(np.float64) @ op_b.astype(np.float64)
        epilogue = attrs.get(cublaslt._DESC_EPILOGUE, 1)
        vector_type = _DTYPES[attrs.get(cublaslt._DESC_BIAS_DATA_TYPE, -1)]
        if vector_type != layouts[2]["dtype"]:
            return 7  # dtrain's vectors are always of D's type
        vector = types.SimpleNamespace(dtype=vector_type, ld=1)
        if epilogue in (cublaslt.EPILOGUE_BIAS, cublaslt.EPILOGUE_RELU_BIAS):
            bias = self._matrix(attrs[cublaslt._DESC_BIAS_POINTER], vars(vector) | {
                "rows": out.shape[0], "cols": 1})  # fmt: skip
            product += bias.astype(np.float64)
            if epilogue == cublaslt.EPILOGUE_RELU_BIAS:  # cublasLt.h: bias first, then ReLU
                np.maximum(product, 0, out=product)
        elif epilogue == cublaslt.EPILOGUE_BGRADB:
            sums = self._matrix(attrs[cublaslt._DESC_BIAS_POINTER], vars(vector) | {
                "rows": op_b.shape[1], "cols": 1})  # fmt: skip
            sums[:, 0] = op_b.astype(np.float64).sum(axis=0)
        out[...] = product
        return 0


def _aligned_empty(shape, dtype) -> np.ndarray:
    """NaN-filled memory starting on a 256-byte boundary, as cupy's pool hands out (numpy's
    own alignment varies, and the plan cache is keyed by alignment)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + 256, np.uint8)
    start = -raw.ctypes.data % 256
    out = raw[start : start + size].view(dtype).reshape(shape)
    out[...] = np.nan
    return _ptr(out)


@pytest.fixture
def fake_cuda(monkeypatch):
    """cupy, the cuBLAS handle and libcublasLt replaced by host-memory stand-ins."""

    def install(library: _FakeLt) -> _FakeLt:
        fake_cupy = types.SimpleNamespace(
            empty=_aligned_empty,
            broadcast_to=lambda x, shape: _ptr(np.broadcast_to(x, shape)),
            ascontiguousarray=lambda x: _ptr(np.ascontiguousarray(x)),
            cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0)),
        )
        monkeypatch.setitem(__import__("sys").modules, "cupy", fake_cupy)
        workspace = _ptr(np.zeros(8, np.uint8))
        blas = types.SimpleNamespace(workspace=workspace, stream=0)
        monkeypatch.setattr(cublas, "handle", lambda: blas)
        state = cublaslt._State()
        state.library = library
        monkeypatch.setattr(cublaslt, "_state", state)
        return library

    return install


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_matmul_bias_passes_cublaslt_the_right_arguments(fake_cuda, dtype, layout_a, layout_b):
    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(0)
    a = _ptr(_operand(rng, (5, 3), layout_a).astype(dtype))
    b = _ptr(_operand(rng, (3, 4), layout_b).astype(dtype))
    bias = _ptr(rng.standard_normal(4).astype(dtype))
    out = cublaslt.matmul_bias(a, b, bias)
    expected = np.asarray(a) @ np.asarray(b) + np.asarray(bias)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
    assert library.matmuls == 1


def test_matmul_bias_with_relu_asks_for_the_relu_bias_epilogue(fake_cuda):
    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(5)
    a, b = _ptr(rng.standard_normal((5, 3))), _ptr(rng.standard_normal((3, 4)))
    bias = _ptr(rng.standard_normal(4))
    out = cublaslt.matmul_bias(a, b, bias, relu=True)
    expected = np.maximum(np.asarray(a) @ np.asarray(b) + np.asarray(bias), 0)
    assert (expected == 0).any() and (expected > 0).any()
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
    plain = cublaslt.matmul_bias(a, b, bias)  # a plan of its own: the epilogue is in the key
    assert (np.asarray(plain) < 0).any() and library.matmuls == 2


def test_a_float32_plan_follows_the_matmul_precision(fake_cuda):
    # The cached plan of a float32 product was made for CUBLAS_COMPUTE_32F (68); after
    # set_float32_matmul_precision("high") the same shapes get a TF32 plan (77) of their own.
    from dtrain.runtime import matmul_precision

    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(9)
    a, b = (_ptr(rng.standard_normal(s).astype(np.float32)) for s in ((5, 3), (3, 4)))
    bias = _ptr(rng.standard_normal(4).astype(np.float32))

    def computes() -> list:
        return [o["compute"] for o in library.objects.values() if o.get("kind") == "desc"]

    try:
        cublaslt.matmul_bias(a, b, bias)
        matmul_precision.set_float32_matmul_precision("high")
        cublaslt.matmul_bias(a, b, bias)
        cublaslt.matmul_bias(a, b, bias)  # cached now
    finally:
        matmul_precision.set_float32_matmul_precision("highest")
    assert computes() == [68, 77] and library.matmuls == 3


@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_matmul_row_sums_passes_cublaslt_the_right_arguments(fake_cuda, layout_a, layout_b):
    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(1)
    a = _ptr(_operand(rng, (6, 7), layout_a))
    b = _ptr(_operand(rng, (7, 2), layout_b))
    product, sums = cublaslt.matmul_row_sums(a, b)
    np.testing.assert_allclose(np.asarray(product), np.asarray(a) @ np.asarray(b), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sums), np.asarray(a).sum(axis=1), rtol=1e-12)
    assert library.matmuls == 1


def test_float16_operands_give_float32_products_and_row_sums(fake_cuda):
    # A Linear layer's weight and bias gradients under autocast: float16 grad and input,
    # both results written in float32 by one call (D and the bias vector CUDA_R_32F).
    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(8)
    grad = (rng.standard_normal((40, 3)) * 300).astype(np.float16)
    x = (rng.standard_normal((40, 5)) * 300).astype(np.float16)
    grad_w, grad_b = cublaslt.matmul_row_sums(_ptr(grad).T, _ptr(x), np.float32)
    assert grad_w.dtype == grad_b.dtype == np.float32 and library.matmuls == 1
    expected = np.matmul(grad.T, x, dtype=np.float64)
    assert np.abs(expected).max() > 65504  # a float16 result would hold inf
    np.testing.assert_allclose(np.asarray(grad_w), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_b), grad.sum(axis=0, dtype=np.float64), rtol=1e-6)
    layouts = [o for o in library.objects.values() if o["kind"] == "layout"]
    assert [o["dtype"] for o in layouts] == [np.float16, np.float16, np.float32]
    # the same shape in float16 is a plan of its own (its results overflow to inf)
    with np.errstate(over="ignore"):
        assert cublaslt.matmul_row_sums(_ptr(grad).T, _ptr(x))[0].dtype == np.float16
    assert len(cublaslt._state.plans) == 2
    single = _ptr(grad.astype(np.float32)).T, _ptr(x.astype(np.float32))
    assert cublaslt.matmul_row_sums(*single, np.float16) is None  # no narrower result


def test_linear_layer_runs_each_way_in_one_cublaslt_call(fake_cuda):
    # A Linear layer's own layouts: x @ W^T (W^T a transposed view) forward, grad^T @ x with
    # the bias gradient backward.
    library = fake_cuda(_FakeLt())
    rng = np.random.default_rng(2)
    x, weight, bias = rng.standard_normal((8, 5)), rng.standard_normal((3, 5)), np.ones(3)
    grad = rng.standard_normal((8, 3))
    out = cublaslt.matmul_bias(_ptr(x), _ptr(weight).T, _ptr(bias))
    np.testing.assert_allclose(np.asarray(out), x @ weight.T + bias, rtol=1e-12)
    grad_w, grad_b = cublaslt.matmul_row_sums(_ptr(grad).T, _ptr(x))
    np.testing.assert_allclose(np.asarray(grad_w), grad.T @ x, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad_b), grad.sum(axis=0), rtol=1e-12)
    assert library.matmuls == 2
    assert len(cublaslt._state.plans) == 2  # one plan per shape and epilogue, reused:
    cublaslt.matmul_bias(_ptr(x), _ptr(weight).T, _ptr(bias))
    assert len(cublaslt._state.plans) == 2 and library.matmuls == 3


@pytest.mark.parametrize(
    "status", [cublaslt._STATUS_NOT_SUPPORTED, 7], ids=["unsupported", "invalid"]
)
def test_no_algorithm_falls_back_and_is_remembered(fake_cuda, status):
    library = fake_cuda(_FakeLt(heuristic_status=status))
    a, b, bias = _ptr(np.ones((2, 3))), _ptr(np.ones((3, 4))), _ptr(np.ones(4))
    assert cublaslt.matmul_bias(a, b, bias) is None
    assert cublaslt.matmul_bias(a, b, bias) is None
    assert library.matmuls == 0 and library.destroyed == 4  # the plan's descriptors freed
    assert library.live_preferences == 0
    assert list(cublaslt._state.plans.values()) == [None]
    assert cublaslt.off_reason() is None  # other shapes may still have an algorithm


def test_failed_call_turns_the_path_off_with_a_warning(fake_cuda):
    library = fake_cuda(_FakeLt(matmul_status=13))  # CUBLAS_STATUS_EXECUTION_FAILED
    a, b, bias = _ptr(np.ones((2, 3))), _ptr(np.ones((3, 4))), _ptr(np.ones(4))
    with pytest.warns(RuntimeWarning, match="status 13.*DTRAIN_CUBLASLT=0"):
        assert cublaslt.matmul_bias(a, b, bias) is None
    assert "status 13" in cublaslt.off_reason()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cublaslt.matmul_row_sums(a, b) is None  # off: no second try, no warning
    assert library.matmuls == 1


def test_a_failed_setup_turns_the_path_off_with_a_warning(fake_cuda):
    library = fake_cuda(_FakeLt())
    library.create_status = 1  # CUBLAS_STATUS_NOT_INITIALIZED
    a, b, bias = _ptr(np.ones((2, 3))), _ptr(np.ones((3, 4))), _ptr(np.ones(4))
    with pytest.warns(RuntimeWarning, match="cublasLtCreate failed"):
        assert cublaslt.matmul_bias(a, b, bias) is None
    assert cublaslt.status().startswith("off: cublasLtCreate failed")


def test_cases_cublaslt_is_not_asked():
    f32 = np.ones((2, 3), np.float32)
    assert cublaslt.matmul_bias(f32, f32.T, np.ones(2, np.float64)) is None  # bias dtype
    assert cublaslt.matmul_bias(f32, f32.T, np.ones(4, np.float32)[::2]) is None  # strided
    assert cublaslt.matmul_bias(f32, f32.T, np.ones(3, np.float32)) is None  # wrong length
    assert cublaslt.matmul_bias(f32[None], f32.T, np.ones(2, np.float32)) is None  # 3-D
    assert cublaslt.matmul_row_sums(f32[:0], f32.T) is None  # empty
    # one row, one output column, one inner element: cuBLASLt's heuristic may refuse them
    assert cublaslt.matmul_bias(f32[:1], f32.T, np.ones(2, np.float32)) is None
    assert cublaslt.matmul_bias(f32, f32[:1].T, np.ones(1, np.float32)) is None
    assert cublaslt.matmul_row_sums(f32[:, :1], f32[:1]) is None


def test_dtrain_cublaslt_0_turns_the_path_off(monkeypatch):
    monkeypatch.setenv("DTRAIN_CUBLASLT", "0")
    monkeypatch.setattr(cublaslt, "_state", cublaslt._State())
    assert cublaslt._load_library() is False
    assert cublaslt.off_reason() == "DTRAIN_CUBLASLT=0"


def _real_library():
    """libcublasLt where it loads (the GPU machine; ``DTRAIN_TEST_LIBCUBLASLT`` names a copy,
    e.g. from the nvidia-cublas wheel: its descriptor calls need no GPU)."""
    for name in (os.environ.get("DTRAIN_TEST_LIBCUBLASLT"), "libcublasLt.so.13"):
        if name:
            try:
                library = ctypes.CDLL(name)
            except OSError:
                continue
            cublaslt._declare(library)
            return library
    pytest.skip("libcublasLt does not load here (set DTRAIN_TEST_LIBCUBLASLT to a copy)")


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        (cublaslt._DESC_TRANSA, ctypes.c_int32(1)),
        (cublaslt._DESC_TRANSB, ctypes.c_int32(0)),
        (cublaslt._DESC_EPILOGUE, ctypes.c_uint32(cublaslt.EPILOGUE_BIAS)),
        (cublaslt._DESC_EPILOGUE, ctypes.c_uint32(cublaslt.EPILOGUE_BGRADB)),
        (cublaslt._DESC_BIAS_DATA_TYPE, ctypes.c_int32(0)),
        (cublaslt._DESC_BIAS_POINTER, ctypes.c_void_p(256)),
    ],
)
def test_real_library_takes_each_attribute_as_dtrain_sets_it(attribute, value):
    # A wrong attribute number usually names an attribute of another size, which cuBLASLt
    # refuses (CUBLAS_STATUS_INVALID_VALUE); reading it back checks the value landed.
    library = _real_library()
    desc = ctypes.c_void_p()
    assert library.cublasLtMatmulDescCreate(ctypes.byref(desc), 68, cublaslt._CUDA_R_32F) == 0
    cublaslt._set(library, desc, attribute, value)
    read = type(value)()
    written = ctypes.c_size_t()
    get = library.cublasLtMatmulDescGetAttribute
    get.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                    ctypes.POINTER(ctypes.c_size_t)]  # fmt: skip
    status = get(desc, attribute, ctypes.byref(read), ctypes.sizeof(read), ctypes.byref(written))
    assert status == 0 and written.value == ctypes.sizeof(value) and read.value == value.value
    assert library.cublasLtMatmulDescDestroy(desc) == 0


def test_real_library_takes_the_layouts_and_preference():
    library = _real_library()
    layout = cublaslt._layout(library, 0, 5, 3, 8)
    assert library.cublasLtMatrixLayoutDestroy(layout) == 0
    preference = cublaslt._preference(library, (256, 16, 8, 4))
    assert library.cublasLtMatmulPreferenceDestroy(preference) == 0


def test_heuristic_is_told_each_operands_alignment(fake_cuda):
    # cuBLASLt assumes 256-byte operands unless told: a view 4 bytes into an allocation
    # must be named so, or the algorithm it picks may refuse that view at the call.
    library = fake_cuda(_FakeLt())
    base = np.zeros(64 + 16, np.float32)
    x = _ptr(base[1:65].reshape(8, 8))  # 4 bytes past a 64-byte aligned start at best
    w, bias = _ptr(np.ones((8, 8), np.float32)), _ptr(np.ones(8, np.float32))
    cublaslt.matmul_bias(x, w.T, bias)
    a_alignment = library.preferences[cublaslt._PREF_MIN_ALIGNMENT[1]]  # x is Lt's B
    assert a_alignment == x.ctypes.data & -x.ctypes.data and a_alignment <= 4
    assert library.preferences[cublaslt._PREF_MAX_WORKSPACE_BYTES] == cublas._WORKSPACE_BYTES


def test_heuristic_result_has_the_c_struct_size():
    # cublasLtMatmulAlgo_t is 8 x uint64; the result adds size_t, int, float and int[4].
    assert ctypes.sizeof(cublaslt._Algo) == 64
    assert ctypes.sizeof(cublaslt._HeuristicResult) == 96


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("m", "k", "n"), [(64, 96, 288), (7, 33, 5), (256, 784, 1024)])
def test_epilogues_on_gpu(dtype, m, k, n):
    import cupy

    rng = np.random.default_rng(3)
    x = cupy.asarray(rng.standard_normal((m, k)).astype(dtype))
    weight = cupy.asarray(rng.standard_normal((n, k)).astype(dtype))
    bias = cupy.asarray(rng.standard_normal(n).astype(dtype))
    grad = cupy.asarray(rng.standard_normal((m, n)).astype(dtype))
    out = cublaslt.matmul_bias(x, weight.T, bias)
    rectified = cublaslt.matmul_bias(x, weight.T, bias, relu=True)
    both = cublaslt.matmul_row_sums(grad.T, x)
    assert cublaslt.off_reason() is None
    if dtype != "float64":  # the cases a Linear layer meets in training must take the path
        assert out is not None and both is not None, "cuBLASLt found no algorithm"
        assert rectified is not None, "cuBLASLt found no algorithm for RELU_BIAS"
    tolerance = 2e-2 if dtype == "float16" else 1e-5
    x64, w64, g64 = (cupy.asnumpy(t).astype(np.float64) for t in (x, weight, grad))
    checks = []
    if out is not None:
        checks.append((out, x64 @ w64.T + cupy.asnumpy(bias).astype(np.float64)))
    if rectified is not None:
        expected = np.maximum(x64 @ w64.T + cupy.asnumpy(bias).astype(np.float64), 0)
        checks.append((rectified, expected))
        # no negative output (where the float64 sum and the GPU's straddle 0, either may be 0)
        assert (cupy.asnumpy(rectified) >= 0).all()
    if both is not None:
        checks += [(both[0], g64.T @ x64), (both[1], g64.sum(axis=0))]
    for got, expected in checks:
        got = cupy.asnumpy(got).astype(np.float64)
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < tolerance, (dtype, m, k, n, error)


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize(("m", "k", "n"), [(64, 96, 288), (256, 784, 1024)])
def test_float32_row_sums_epilogue_of_float16_operands_on_gpu(m, k, n):
    # What a Linear layer's backward asks under autocast: float32 weight and bias gradients
    # from float16 operands, in one call.
    import cupy

    rng = np.random.default_rng(9)
    x = rng.standard_normal((m, k)).astype(np.float16)
    grad = (rng.standard_normal((m, n)) * 100).astype(np.float16)
    operands = cupy.asarray(grad).T, cupy.asarray(x)
    both = cublaslt.matmul_row_sums(*operands, np.float32)
    assert cublaslt.off_reason() is None
    if both is None:  # no algorithm for this epilogue's types: the two-launch path, checked
        warnings.warn("cuBLASLt has no BGRADB algorithm for float16 -> float32", stacklevel=1)
        both = linalg.matmul_and_row_sums(*operands, np.float32)
    assert both[0].dtype == both[1].dtype == np.float32
    expected_w = np.matmul(grad.T, x, dtype=np.float64)
    expected_b = grad.sum(axis=0, dtype=np.float64)
    for got, expected in ((both[0], expected_w), (both[1], expected_b)):
        got = cupy.asnumpy(got).astype(np.float64)
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_status_and_the_switch_for_measuring(fake_cuda):
    library = fake_cuda(_FakeLt())
    a, b, bias = _ptr(np.ones((2, 3))), _ptr(np.ones((3, 4))), _ptr(np.ones(4))
    assert cublaslt.matmul_bias(a, b, bias) is not None
    with cublaslt.bias_as_own_launch():
        assert cublaslt.matmul_bias(a, b, bias) is None
    assert cublaslt.matmul_bias(a, b, bias) is not None and library.matmuls == 2
    assert cublaslt.status() == "on: 1 product shapes in an epilogue, 0 without"


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize(("m", "k", "n"), [(1, 8, 5), (6, 1, 5), (6, 8, 1), (1, 1, 1)])
def test_products_with_a_dimension_of_one_take_the_plain_path_on_gpu(m, k, n):
    import cupy

    from dtrain.runtime import linalg

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    bias = rng.standard_normal(n)
    got = linalg.matmul_add_bias(cupy.asarray(a), cupy.asarray(b), cupy.asarray(bias))
    np.testing.assert_allclose(cupy.asnumpy(got), a @ b + bias, rtol=1e-10)
    product, sums = linalg.matmul_and_row_sums(cupy.asarray(a), cupy.asarray(b))
    np.testing.assert_allclose(cupy.asnumpy(product), a @ b, rtol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(sums), a.sum(axis=1), rtol=1e-10)
    assert cublaslt.off_reason() is None


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_epilogues_on_gpu_with_unaligned_views(dtype):
    # Operands that start 2 or 4 bytes into an allocation, with odd leading dimensions: the
    # heuristic is told their alignment, so the call works (or the plain path is taken).
    import cupy

    rng = np.random.default_rng(4)
    x = cupy.asarray(rng.standard_normal((33, 18)).astype(dtype))[:, 1:]
    weight = cupy.asarray(rng.standard_normal((9, 18)).astype(dtype))[:, 1:]
    bias = cupy.asarray(rng.standard_normal(10).astype(dtype))[1:]
    out = cublaslt.matmul_bias(x, weight.T, bias)
    both = cublaslt.matmul_row_sums(x.T, x)
    assert cublaslt.off_reason() is None, cublaslt.off_reason()
    x64, w64 = cupy.asnumpy(x).astype(np.float64), cupy.asnumpy(weight).astype(np.float64)
    tolerance = 2e-2 if dtype == "float16" else 1e-5
    expected = [x64 @ w64.T + cupy.asnumpy(bias).astype(np.float64), x64.T @ x64, x64.sum(0)]
    got = ([out] if out is not None else [None]) + (list(both) if both is not None else [None] * 2)
    for value, want in zip(got, expected):
        if value is not None:
            value = cupy.asnumpy(value).astype(np.float64)
            assert np.linalg.norm(value - want) / np.linalg.norm(want) < tolerance
