"""LayerNorm, attention and embedding kernels on arrays of any shape, and the cupy views and
allocations their wrappers make (each costs host time on a GPU, launch or not).

The kernels take a C-contiguous array as a bare pointer, whatever its shape, so the wrappers
pass N-d arrays as they are and make outputs in their final shape. The value tests run the
kernels' own CUDA C (on a GPU, or compiled for the CPU by ``host_cuda``); the counting tests
run on the emulator, whose arrays count views and allocations.
"""

from __future__ import annotations

import math
import sys

import cuda_emulator
import host_cuda
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain.runtime import kernels

DTYPES = [np.float32, np.float64, np.float16]
TOL = {np.float64: 1e-10, np.float32: 2e-5, np.float16: 2e-2}


@pytest.fixture
def cp(monkeypatch):
    """cupy; without a GPU, the emulator running each kernel's CUDA C on the CPU."""
    if dt.cuda_is_available():
        import cupy

        return cupy
    if host_cuda.compiler() is None:
        pytest.skip("no GPU, and no g++ to run the kernels' CUDA C on the CPU")
    cuda_emulator.install(monkeypatch, kernels="source")
    return sys.modules["cupy"]


@pytest.fixture
def emulator(monkeypatch):
    return cuda_emulator.install(monkeypatch)


def _close(actual, expected, dtype, scale=1.0):
    actual = actual.get() if hasattr(actual, "get") else actual
    tol = TOL[dtype] * scale
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected.astype(np.float64), rtol=tol, atol=tol
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("shape", "dims", "transposed"),
    [((2, 3, 5), 1, False), ((2, 3, 5), 2, False), ((4, 3, 6), 1, True), ((3, 70), 1, False)],
)
def test_gpu_layer_norm_of_nd_input(cp, shape, dims, transposed, dtype):
    rng = np.random.default_rng(31)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    if transposed:  # not C-contiguous: the wrapper copies it once
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    param_shape = shape[len(shape) - dims :]
    w, b = (rng.standard_normal(param_shape).astype(dtype) for _ in range(2))
    g, addend = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    x_dev = cp.asarray(x)
    if transposed:
        x_dev = x_dev.transpose(1, 0, 2).copy().transpose(1, 0, 2)
        assert not x_dev.flags.c_contiguous
    out, stats = kernels.layer_norm_forward(x_dev, cp.asarray(w), cp.asarray(b), 1e-5, dims)
    ref_out, ref_stats = kernels.layer_norm_forward_reference(x, w, b, 1e-5, dims)
    rows = math.prod(shape[: len(shape) - dims])
    assert out.shape == shape and stats.shape == ref_stats.shape == (2, rows)
    _close(out, ref_out, dtype, 10)
    _close(stats, ref_stats, dtype, 10)
    grads = kernels.layer_norm_backward(
        cp.asarray(g), x_dev, cp.asarray(w), stats, dims=dims, addend=cp.asarray(addend)
    )
    refs = kernels.layer_norm_backward_reference(g, x, w, ref_stats, addend, dims)
    assert [t.shape for t in grads] == [shape, param_shape, param_shape]
    for got, want, scale in zip(grads, refs, (10, 10 * math.sqrt(rows), 10 * math.sqrt(rows))):
        _close(got, want, dtype, scale)
    grad_x, grad_w, grad_b = kernels.layer_norm_backward(
        cp.asarray(g), x_dev, None, stats, dims=dims, param_grads=False
    )
    assert grad_w is None and grad_b is None
    _close(grad_x, kernels.layer_norm_backward_reference(g, x, None, ref_stats, dims=dims)[0],
           dtype, 10)  # fmt: skip


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_reference_over_two_dims_matches_cpu_op(affine):
    rng = np.random.default_rng(32)
    xa, upstream = rng.standard_normal((2, 4, 3, 5)) * 2 + 1, rng.standard_normal((2, 4, 3, 5))
    wa, ba = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    x = dt.tensor(xa, requires_grad=True)
    w, b = (dt.tensor(wa, requires_grad=True), dt.tensor(ba, requires_grad=True))
    w, b = (w, b) if affine else (None, None)
    out = F.layer_norm(x, (3, 5), w, b, eps=1e-5)
    (out * dt.tensor(upstream)).sum().backward()
    params = (wa, ba) if affine else (None, None)
    ref_out, stats = kernels.layer_norm_forward_reference(xa, *params, 1e-5, dims=2)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-10)
    gx, gw, gb = kernels.layer_norm_backward_reference(upstream, xa, params[0], stats, dims=2)
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-9, atol=1e-10)
    if affine:
        np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(b.grad.numpy(), gb, rtol=1e-9, atol=1e-10)


# ---- views and allocations -------------------------------------------------------------------
def _host_calls(emulator, fn):
    with emulator.counting():
        result = fn()
    calls = emulator.host_calls
    return result, calls["view"], calls["allocation (empty)"]


def _cuda(shape, seed=0, dtype=np.float32):
    return dt.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype)).to("cuda")


@pytest.mark.parametrize("normalized", [(16,), (8, 16)])
def test_layer_norm_op_makes_no_views(emulator, normalized):
    # forward: the output and the (2, rows) statistics; backward: grad_x, the partials and
    # the parameters' pair of gradients, returned as its two rows
    x = _cuda((4, 8, 16)).requires_grad_()
    w, b = (_cuda(normalized, s).requires_grad_() for s in (1, 2))
    out, views, allocations = _host_calls(emulator, lambda: F.layer_norm(x, normalized, w, b))
    assert (views, allocations) == (0, 2)
    node = out.grad_fn
    grad = _cuda((4, 8, 16), 3)._array
    grads, views, allocations = _host_calls(emulator, lambda: node._backward(grad, None))
    assert (views, allocations) == (2, 3)
    assert [g.shape for g in grads] == [(4, 8, 16), normalized, normalized]


@pytest.mark.parametrize("packed", [True, False])
def test_attention_views_and_allocations(emulator, packed):
    batch, length, heads, dim = 2, 5, 3, 4
    qkv = _cuda((batch, length, 3 * heads * dim))._array.reshape(batch, length, 3, heads, dim)
    if packed:  # a GPT block's split qkv projection
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    else:
        q, k, v = (_cuda((batch, heads, length, dim), s)._array for s in range(3))
    (out, saved), views, allocations = _host_calls(
        emulator, lambda: kernels.attention_forward(q, k, v, 0.5, True)
    )
    assert (views, allocations) == (1, 2)  # y and its (b, h, l, d) view; lse with room for D
    grad = _cuda(out.shape, 4)._array
    grads, views, allocations = _host_calls(
        emulator, lambda: kernels.attention_backward(grad, q, k, v, saved, 0.5, True)
    )
    assert (views, allocations) == ((5, 1) if packed else (3, 3))
    refs = kernels.attention_backward_reference(
        *(np.asarray(a.view(np.ndarray)) for a in (grad, q, k, v)), 0.5, True
    )
    for got, want in zip(grads, refs):
        np.testing.assert_allclose(got.view(np.ndarray), want, rtol=1e-5, atol=1e-6)


def test_embedding_backward_makes_no_views(emulator):
    indices = dt.tensor(np.arange(12).reshape(3, 4) % 5).to("cuda")._array
    grad = _cuda((3, 4, 6))._array
    table, views, allocations = _host_calls(
        emulator, lambda: kernels.embedding_backward(grad, indices, 5)
    )
    assert (views, allocations) == (0, 1)
    np.testing.assert_allclose(
        table.view(np.ndarray),
        kernels.embedding_backward_reference(grad.view(np.ndarray), indices.view(np.ndarray), 5),
    )
