"""A Linear layer's products on the CUDA path (``runtime/linear_products.py``), run on the
CPU through the emulator, which reads each operand through the plan's op and leading
dimension as cuBLAS would: the values and gradients of the CPU path, for inputs of any
leading shape, with and without a bias, frozen parts, non-contiguous inputs and float16
under autocast; and no reshape or transpose view made on the way."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emulator import install

import dtrain as dt
import dtrain.nn.functional as F
from dtrain._tensor.nn.functional.linear import linear_relu

SHAPES = [(5, 3), (2, 4, 3), (2, 2, 3, 3), (1, 3)]


@pytest.fixture
def emulator(monkeypatch):
    return install(monkeypatch)


def _run(device, x, w, b, grad, requires=(True, True, True), relu=False, transpose=False):
    """Output and gradients of ``linear`` (or ``linear_relu``) on ``device``."""
    tx = dt.tensor(x, device=device, requires_grad=requires[0])
    tw = dt.tensor(w, device=device, requires_grad=requires[1])
    tb = None if b is None else dt.tensor(b, device=device, requires_grad=requires[2])
    inp = tx.transpose(0, 1) if transpose else tx
    out = linear_relu(inp, tw, tb) if relu else F.linear(inp, tw, tb)
    out.backward(dt.tensor(grad, device=device))
    grads = [None if t is None or t.grad is None else t.grad.cpu().numpy() for t in (tx, tw, tb)]
    return out.detach().cpu().numpy(), grads


def _inputs(shape, out_features=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out_features, shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype)
    grad = rng.standard_normal((*shape[:-1], out_features)).astype(dtype)
    return x, w, b, grad


def _assert_same(got, want, rtol=1e-12):
    out, grads = got
    np.testing.assert_allclose(out, want[0], rtol=rtol, atol=rtol)
    for g, w in zip(grads, want[1]):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_the_cuda_path_matches_the_cpu(emulator, shape, bias):
    x, w, b, grad = _inputs(shape)
    b = b if bias else None
    _assert_same(_run("cuda", x, w, b, grad), _run("cpu", x, w, b, grad))


@pytest.mark.parametrize(
    "requires",
    [(True, False, False), (False, True, True), (True, True, False), (False, False, True)],
    ids=str,
)
def test_frozen_parts_get_no_gradient_and_the_rest_match(emulator, requires):
    x, w, b, grad = _inputs((3, 2, 3))
    _assert_same(_run("cuda", x, w, b, grad, requires), _run("cpu", x, w, b, grad, requires))


def test_a_non_contiguous_input_takes_the_general_path_with_the_same_values(emulator):
    x, w, b, _ = _inputs((3, 2, 3))
    grad = np.random.default_rng(1).standard_normal((2, 3, 4))
    _assert_same(
        _run("cuda", x, w, b, grad, transpose=True), _run("cpu", x, w, b, grad, transpose=True)
    )


def test_linear_relu_on_the_cuda_path_matches_the_cpu(emulator):
    x, w, b, grad = _inputs((2, 5, 3), seed=3)
    _assert_same(_run("cuda", x, w, b, grad, relu=True), _run("cpu", x, w, b, grad, relu=True))


def test_a_linear_layer_makes_no_views_on_contiguous_inputs(emulator):
    x, w, b, grad = _inputs((2, 4, 3), dtype=np.float32)
    tx = dt.tensor(x, device="cuda", requires_grad=True)
    tw = dt.tensor(w, device="cuda", requires_grad=True)
    tb = dt.tensor(b, device="cuda", requires_grad=True)
    g = dt.tensor(grad, device="cuda")
    with emulator.counting() as launches:
        F.linear(tx, tw, tb).backward(g)
    assert emulator.host_calls["view"] == 0, dict(emulator.host_calls)
    # forward: product + bias; backward: weight and bias gradients together, input gradient
    assert launches["cuBLASLt gemm + epilogue"] == 2 and launches["cuBLAS gemm"] == 1


def test_float16_under_autocast_writes_float32_weight_gradients(emulator):
    x, w, b, grad = _inputs((2, 3, 4), dtype=np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        layer = dt.nn.Linear(4, 4).to(device)
        with dt.no_grad():
            layer.weight.copy_(dt.tensor(w[:, :4].copy()))
            layer.bias.copy_(dt.tensor(b))
        tx = dt.tensor(x, device=device)
        with dt.autocast(device, dtype=dt.float16):
            out = layer(tx)
        assert out.dtype == dt.float16
        out.float().backward(dt.tensor(grad, device=device))
        assert layer.weight.grad.dtype == dt.float32 and layer.bias.grad.dtype == dt.float32
        results[device] = (layer.weight.grad.cpu().numpy(), layer.bias.grad.cpu().numpy())
    for got, want in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
