"""dtrain's cuBLAS matmul: the call plan checked on the CPU, the product checked on a GPU.

``plan`` decides, from shapes and strides alone, which operand cuBLAS reads with which
transpose flag, leading dimension and batch stride. The CPU tests replay that plan the way
cuBLAS reads memory (column-major, from each operand's first element) with numpy's
``as_strided`` and require the result to equal ``a @ b``: a wrong flag or leading dimension
fails here, without a GPU.
"""

from __future__ import annotations

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


def test_attention_shaped_views_are_not_copied():
    # q @ k^T with q, k split out of one (B, T, 3, H, D) projection and permuted: the
    # batch axes (B, H) do not walk memory with one stride, so those are copied, but a
    # (B*H, T, D) contiguous q and its k^T view are read in place.
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 5, 4))
    k = rng.standard_normal((6, 5, 4))
    p = cublas.plan(q, np.swapaxes(k, -1, -2), np)
    assert np.shares_memory(p.a, q) and np.shares_memory(p.b, k)
    np.testing.assert_allclose(_emulate(q, np.swapaxes(k, -1, -2)), q @ np.swapaxes(k, -1, -2))


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
