"""Activation checkpointing: the same values and gradients as running the segment plainly,
no activations kept, dropout masks reproduced, tuple outputs, checkpoint_sequential."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.utils.checkpoint import checkpoint, checkpoint_sequential


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _mlp(seed: int = 0) -> nn.Module:
    dt.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)
    ).double()


def _grads(model, x):
    return [p.grad.numpy().copy() for p in model.parameters()], x.grad.numpy().copy()


def test_values_and_gradients_match_the_plain_run():
    x_np = np.random.default_rng(0).standard_normal((5, 6))
    plain, ckpt = _mlp(), _mlp()
    x1 = dt.tensor(x_np, requires_grad=True)
    x2 = dt.tensor(x_np, requires_grad=True)
    dt.manual_seed(7)
    y1 = plain(x1)
    (y1**2).sum().backward()
    dt.manual_seed(7)
    y2 = checkpoint(ckpt, x2, use_reentrant=False)
    after_forward = dt.rand(3).numpy()  # the caller's stream as the plain run left it
    (y2**2).sum().backward()
    dt.manual_seed(7)
    plain(x1.detach())
    assert np.array_equal(dt.rand(3).numpy(), after_forward)
    np.testing.assert_array_equal(y1.detach().numpy(), y2.detach().numpy())
    (pg1, xg1), (pg2, xg2) = _grads(plain, x1), _grads(ckpt, x2)
    np.testing.assert_allclose(xg2, xg1, rtol=1e-12, atol=1e-14)
    for a, b in zip(pg1, pg2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_without_preserved_rng_dropout_masks_differ():
    x = dt.tensor(np.ones((50, 6)), requires_grad=True)
    plain, ckpt = _mlp(), _mlp()
    dt.manual_seed(3)
    plain(x).sum().backward()
    dt.manual_seed(3)
    checkpoint(ckpt, x, preserve_rng_state=False).sum().backward()
    assert not np.allclose(plain[0].weight.grad.numpy(), ckpt[0].weight.grad.numpy())


def test_parameters_get_gradients_when_no_input_requires_grad():
    lin = nn.Linear(3, 2).double()
    x = dt.tensor(np.ones((4, 3)))
    checkpoint(lin, x).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.full((2, 3), 4.0))
    np.testing.assert_allclose(lin.bias.grad.numpy(), np.full(2, 4.0))


def test_activations_are_not_kept():
    calls = []

    def segment(x, scale=1.0):
        calls.append(dt.is_grad_enabled())
        return (x.exp() * scale).sin()

    x = dt.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = checkpoint(segment, x, scale=2.0)
    assert calls == [False]  # forward ran without a graph
    assert y.grad_fn is not None
    y.sum().backward()
    assert calls == [False, True]  # recomputed with grad in backward
    expected = np.cos(np.exp(x.detach().numpy()) * 2) * 2 * np.exp(x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_tuple_outputs_and_non_tensors():
    def segment(a, b):
        return a * b, (a + b).exp(), "label"

    a = dt.tensor(np.array([0.5, -1.0]), requires_grad=True)
    b = dt.tensor(np.array([2.0, 0.25]), requires_grad=True)
    p, q, label = checkpoint(segment, a, b)
    assert label == "label"
    (p.sum() * 3 + q.sum()).backward()
    e = np.exp(a.detach().numpy() + b.detach().numpy())
    np.testing.assert_allclose(a.grad.numpy(), 3 * b.detach().numpy() + e, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), 3 * a.detach().numpy() + e, rtol=1e-12)


def test_no_grad_mode_returns_plain_outputs():
    with dt.no_grad():
        y = checkpoint(lambda x: x * 2, dt.ones(3, requires_grad=True))
    assert y.grad_fn is None


def test_in_place_change_of_an_input_is_refused():
    x = dt.tensor(np.ones(3), requires_grad=True)
    h = x * 1.0
    y = checkpoint(lambda t: t * t, h)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


def test_checkpoint_sequential_matches_the_plain_model():
    x_np = np.random.default_rng(1).standard_normal((4, 6))
    plain, ckpt = _mlp(2).eval(), _mlp(2).eval()
    x1 = dt.tensor(x_np, requires_grad=True)
    x2 = dt.tensor(x_np, requires_grad=True)
    F.mse_loss(plain(x1), dt.zeros(4, 3, dtype=dt.float64)).backward()
    out = checkpoint_sequential(ckpt, 3, x2, use_reentrant=False)
    F.mse_loss(out, dt.zeros(4, 3, dtype=dt.float64)).backward()
    (pg1, xg1), (pg2, xg2) = _grads(plain, x1), _grads(ckpt, x2)
    np.testing.assert_allclose(xg2, xg1, rtol=1e-12)
    for a, b in zip(pg1, pg2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_bad_options():
    with pytest.raises(ValueError, match="context_fn"):
        checkpoint(lambda x: x, dt.ones(2), context_fn=lambda: None)
    with pytest.raises(ValueError, match="unexpected keyword"):
        checkpoint_sequential([lambda x: x], 1, dt.ones(2), foo=1)


def test_gradients_match_torch(torch):
    x_np = np.random.default_rng(2).standard_normal((3, 4))
    w_np = np.random.default_rng(3).standard_normal((4, 4))

    def ours(x, w):
        return (x @ w).tanh() @ w

    x = dt.tensor(x_np, requires_grad=True)
    w = dt.tensor(w_np, requires_grad=True)
    checkpoint(ours, x, w).sum().backward()
    tx = torch.tensor(x_np, requires_grad=True)
    tw = torch.tensor(w_np, requires_grad=True)
    torch.utils.checkpoint.checkpoint(
        lambda a, b: (a @ b).tanh() @ b, tx, tw, use_reentrant=False
    ).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)
