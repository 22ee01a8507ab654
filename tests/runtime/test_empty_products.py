"""Matrix products with a zero-size dimension, on the CPU and down the CUDA paths (emulator):
zeros or empty results of the right shape, as PyTorch gives, never an error from planning
a layout that has no leading dimension."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emulator import install

import dtrain as dt
import dtrain.nn.functional as F


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch):
    if request.param == "cuda":
        install(monkeypatch)
    return request.param


@pytest.mark.parametrize(
    "x_shape, w_shape", [((2, 0), (3, 0)), ((2, 3), (0, 3)), ((0, 3), (4, 3)), ((2, 0, 3), (4, 3))]
)
def test_linear_with_an_empty_dimension(device, x_shape, w_shape):
    x = dt.ones(*x_shape, device=device, requires_grad=True)
    w = dt.ones(*w_shape, device=device, requires_grad=True)
    b = dt.ones(w_shape[0], device=device, requires_grad=True)
    out = F.linear(x, w, b)
    assert out.shape == (*x_shape[:-1], w_shape[0])
    out.sum().backward()
    assert x.grad.shape == x_shape and w.grad.shape == w_shape
    rows = int(np.prod(x_shape[:-1]))
    # every output is bias + a sum over no features: 1 each, and the bias gets one per row
    np.testing.assert_array_equal(out.detach().cpu().numpy(), 1.0 if x_shape[-1] == 0 else 3.0)
    np.testing.assert_array_equal(b.grad.cpu().numpy(), np.full(w_shape[0], float(rows)))


@pytest.mark.parametrize(
    "a_shape, b_shape", [((2, 0, 3), (3, 4)), ((2, 3, 0), (0, 4)), ((0, 2, 2), (2, 2))]
)
def test_matmul_with_an_empty_dimension(device, a_shape, b_shape):
    a = dt.ones(*a_shape, device=device, requires_grad=True)
    b = dt.ones(*b_shape, device=device, requires_grad=True)
    out = a @ b
    expected = np.ones(a_shape, np.float32) @ np.ones(b_shape, np.float32)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.detach().cpu().numpy(), expected)
    out.sum().backward()
    grad_b = np.full((a_shape[-1], 1), np.prod(a_shape[:-1]), np.float32)  # rows of a, summed
    np.testing.assert_array_equal(b.grad.cpu().numpy(), np.broadcast_to(grad_b, b_shape))
    assert a.grad.shape == a_shape


@pytest.mark.parametrize("causal", [False, True])
def test_attention_over_no_keys_gives_zeros(device, causal):
    q = dt.ones(1, 2, 3, 4, device=device, requires_grad=True)
    k, v = dt.ones(1, 2, 0, 4, device=device), dt.ones(1, 2, 0, 5, device=device)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert out.shape == (1, 2, 3, 5)
    assert not out.detach().cpu().numpy().any()
    out.sum().backward()
    assert q.grad.shape == q.shape and not q.grad.cpu().numpy().any()
