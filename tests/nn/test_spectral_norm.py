"""Spectral normalisation, both forms: ``nn.utils.parametrizations.spectral_norm`` and the
hook-based ``nn.utils.spectral_norm``. Power iteration against a numpy reference, gradients
against finite differences, and training runs (state dicts with ``u``/``v``) against
PyTorch (skipped without it)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.utils.parametrize as P
from dtrain.autograd import gradcheck
from dtrain.nn.utils import parametrizations


def unit(x: np.ndarray) -> np.ndarray:
    return x / max(np.linalg.norm(x), 1e-12)


def matrix(weight: np.ndarray, dim: int) -> np.ndarray:
    return np.moveaxis(weight, dim, 0).reshape(weight.shape[dim], -1)


def with_singular_values(rng, values, shape=(3, 4)) -> np.ndarray:
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    return u @ np.diag(values) @ v[: len(values)]


# ---- parametrizations.spectral_norm -------------------------------------------------------
def test_parametrization_power_iteration(rng):
    m = nn.Linear(4, 3).double()
    w = with_singular_values(rng, [5.0, 1.0, 0.5])
    with dt.no_grad():
        m.weight.copy_(dt.tensor(w))
    parametrizations.spectral_norm(m)
    sn = m.parametrizations.weight[0]
    keys = ["bias", "parametrizations.weight.original", "parametrizations.weight.0._u"]
    assert list(m.state_dict()) == [*keys, "parametrizations.weight.0._v"]
    assert sn._u.shape == (3,) and sn._v.shape == (4,)
    # 16 iterations at registration (15 and the consistency check's): sigma has converged.
    np.testing.assert_allclose(m.weight.detach().numpy(), w / 5.0, atol=1e-8)
    v0 = sn._v.numpy().copy()
    out = m.weight.detach().numpy()  # training mode: one step, in place
    u = unit(w @ v0)
    v = unit(w.T @ u)
    np.testing.assert_allclose(sn._u.numpy(), u, atol=1e-14)
    np.testing.assert_allclose(sn._v.numpy(), v, atol=1e-14)
    np.testing.assert_allclose(out, w / (u @ w @ v), atol=1e-14)
    m.eval()
    u1 = sn._u.numpy().copy()
    m.weight  # noqa: B018
    np.testing.assert_array_equal(sn._u.numpy(), u1)  # eval: no update
    x = dt.tensor(rng.standard_normal((2, 4)))
    assert gradcheck(lambda o: m(x), [m.parametrizations.weight.original])


def test_parametrization_graph_keeps_its_vectors(rng):
    # A second training-mode access updates _u/_v in place; the first access's graph must
    # still differentiate with the vectors it used: d/dW sum(W / uᵀWv) = 1/σ - sum(W) uvᵀ/σ².
    m = parametrizations.spectral_norm(nn.Linear(4, 3).double())
    sn = m.parametrizations.weight[0]
    first = m.weight
    u, v = sn._u.numpy().copy(), sn._v.numpy().copy()
    m.weight  # noqa: B018
    assert not np.array_equal(sn._u.numpy(), u)
    first.sum().backward()
    w = m.parametrizations.weight.original.detach().numpy()
    sigma = u @ w @ v
    expected = np.ones_like(w) / sigma - w.sum() * np.outer(u, v) / sigma**2
    np.testing.assert_allclose(m.parametrizations.weight.original.grad.numpy(), expected)


def test_parametrization_forms(rng):
    conv_t = parametrizations.spectral_norm(nn.ConvTranspose2d(2, 5, 3).double())
    assert conv_t.parametrizations.weight[0]._u.shape == (5,)  # dim 1: the output channels
    assert conv_t.parametrizations.weight[0]._v.shape == (2 * 9,)
    conv = nn.Conv2d(2, 5, 3).double()
    w = np.moveaxis(with_singular_values(rng, [3.0, 1.0], (2, 45)).reshape(2, 5, 3, 3), 0, 1)
    np.testing.assert_allclose(np.linalg.svd(matrix(w, 1), compute_uv=False), [3, 1])
    with dt.no_grad():
        conv.weight.copy_(dt.tensor(w))
    parametrizations.spectral_norm(conv, dim=1)
    assert conv.parametrizations.weight[0]._u.shape == (2,)
    conv.eval()
    np.testing.assert_allclose(conv.weight.detach().numpy(), w / 3.0, atol=1e-10)
    m = nn.Linear(3, 3).double()
    parametrizations.spectral_norm(m, "bias")  # 1-D: divided by its norm, no buffers
    bias = m.parametrizations.bias.original.detach().numpy()
    np.testing.assert_allclose(m.bias.detach().numpy(), unit(bias))
    assert list(m.parametrizations.bias[0].state_dict()) == []
    with pytest.raises(ValueError, match="n_power_iterations must be positive"):
        parametrizations.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)
    with pytest.raises(IndexError, match="out of range"):
        parametrizations.spectral_norm(nn.Linear(2, 2), dim=2)
    with pytest.raises(ValueError, match="no parameter or buffer 'weights'"):
        parametrizations.spectral_norm(nn.Linear(2, 2), "weights")
    P.remove_parametrizations(m, "bias")
    np.testing.assert_allclose(m.bias.detach().numpy(), unit(bias))


# ---- hook-based spectral_norm -------------------------------------------------------------
def test_hook_power_iteration(rng):
    m = nn.Linear(4, 3).double()
    w = rng.standard_normal((3, 4))
    with dt.no_grad():
        m.weight.copy_(dt.tensor(w))
    weight = m.weight
    assert nn.utils.spectral_norm(m, n_power_iterations=2) is m
    assert list(m.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    assert m.weight_orig is weight
    u, v = m.weight_u.numpy().copy(), m.weight_v.numpy().copy()
    np.testing.assert_allclose([np.linalg.norm(u), np.linalg.norm(v)], [1, 1])
    x = rng.standard_normal((2, 4))
    out = m(dt.tensor(x)).detach().numpy()
    for _ in range(2):  # v first, as PyTorch's hook
        v = unit(w.T @ u)
        u = unit(w @ v)
    np.testing.assert_allclose(m.weight_u.numpy(), u, atol=1e-14)
    np.testing.assert_allclose(m.weight_v.numpy(), v, atol=1e-14)
    ref = w / (u @ w @ v)
    np.testing.assert_allclose(m.weight.detach().numpy(), ref, atol=1e-14)
    np.testing.assert_allclose(out, x @ ref.T + m.bias.detach().numpy(), atol=1e-14)
    m.eval()
    trained = m.weight_u.numpy().copy()
    m(dt.tensor(x))
    np.testing.assert_array_equal(m.weight_u.numpy(), trained)  # eval: no update
    xt = dt.tensor(x)
    assert gradcheck(lambda o: m(xt), [m.weight_orig])
    with pytest.raises(RuntimeError, match="already has one"):
        nn.utils.spectral_norm(m)
    nn.utils.remove_spectral_norm(m)
    assert list(m.state_dict()) == ["bias", "weight"]
    assert isinstance(m.weight, nn.Parameter)
    np.testing.assert_allclose(m.weight.detach().numpy(), ref, atol=1e-14)
    with pytest.raises(ValueError, match="not found"):
        nn.utils.remove_spectral_norm(m)


def test_hook_graph_keeps_its_vectors(rng):
    # The second forward updates weight_u/_v in place; the first graph keeps its vectors.
    m = nn.utils.spectral_norm(nn.Linear(4, 3).double())
    x = rng.standard_normal((2, 4))
    first = m(dt.tensor(x))
    u, v = m.weight_u.numpy().copy(), m.weight_v.numpy().copy()
    m(dt.tensor(x))
    first.sum().backward()
    w = m.weight_orig.detach().numpy()
    sigma = u @ w @ v
    g = np.outer(np.ones(3), x.sum(0))  # d sum(out) / d weight
    expected = g / sigma - (g * w).sum() * np.outer(u, v) / sigma**2
    np.testing.assert_allclose(m.weight_orig.grad.numpy(), expected)


def test_hook_forms():
    conv_t = nn.utils.spectral_norm(nn.ConvTranspose2d(2, 5, 3))
    assert conv_t.weight_u.shape == (5,) and conv_t.weight_v.shape == (18,)
    with pytest.raises(ValueError, match="no parameter 'weights'"):
        nn.utils.spectral_norm(nn.Linear(2, 2), "weights")
    with pytest.raises(ValueError, match="n_power_iterations must be positive"):
        nn.utils.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)


# ---- against PyTorch ----------------------------------------------------------------------
def _train_both(torch, ours, theirs, x, same, steps=3):
    """SGD steps in training mode (u and v move every forward), then one eval forward:
    outputs, gradients and whole state dicts must agree after every step."""
    opt = dt.optim.SGD(ours.parameters(), lr=0.05)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.05)
    tx = torch.tensor(x)
    for _ in range(steps):
        out, ref = ours(dt.tensor(x)), theirs(tx)
        same(out, ref, atol=1e-12)
        opt.zero_grad()
        topt.zero_grad()
        (out * out).sum().backward()
        (ref * ref).sum().backward()
        for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == tname
            same(p.grad, tp.grad, atol=1e-10)
        opt.step()
        topt.step()
        state, tstate = ours.state_dict(), theirs.state_dict()
        assert list(state) == list(tstate)
        for key in state:
            same(state[key], tstate[key], atol=1e-12)
    ours.eval()
    theirs.eval()
    same(ours(dt.tensor(x)), theirs(tx), atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "conv", "conv_transpose"])
def test_parametrization_matches_torch(torch, rng, same, copy_from_torch, kind):
    make = {
        "linear": (lambda n: n.Linear(4, 3), (5, 4)),
        "conv": (lambda n: n.Conv2d(2, 3, 3), (2, 2, 5, 5)),
        "conv_transpose": (lambda n: n.ConvTranspose2d(2, 3, 3), (2, 2, 4, 4)),
    }
    build, shape = make[kind]
    theirs = torch.nn.utils.parametrizations.spectral_norm(
        build(torch.nn).double(), n_power_iterations=2
    )
    ours = parametrizations.spectral_norm(build(nn).double(), n_power_iterations=2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_from_torch(ours, theirs)
    _train_both(torch, ours, theirs, rng.standard_normal(shape), same)


@pytest.mark.parametrize("kind", ["linear", "conv_transpose"])
def test_hook_matches_torch(torch, rng, same, copy_from_torch, kind):
    make = {
        "linear": (lambda n: n.Linear(4, 3), (5, 4)),
        "conv_transpose": (lambda n: n.ConvTranspose2d(2, 3, 3), (2, 2, 4, 4)),
    }
    build, shape = make[kind]
    theirs = torch.nn.utils.spectral_norm(build(torch.nn).double())
    ours = nn.utils.spectral_norm(build(nn).double())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_from_torch(ours, theirs)
    _train_both(torch, ours, theirs, rng.standard_normal(shape), same)
    torch.nn.utils.remove_spectral_norm(theirs)
    nn.utils.remove_spectral_norm(ours)
    same(ours.weight, theirs.weight, atol=1e-12)


# ---- on --device (cuda, emulated-cuda): to() moves originals and buffers --------------------
@pytest.mark.parametrize("form", ["parametrization", "hook", "weight_norm"])
def test_on_device(rng, test_device, form):
    apply = {
        "parametrization": parametrizations.spectral_norm,
        "hook": nn.utils.spectral_norm,
        "weight_norm": parametrizations.weight_norm,
    }[form]
    cpu = apply(nn.Conv2d(2, 3, 3).double())
    moved = copy.deepcopy(cpu).to(test_device)
    for tensor in (*moved.parameters(), *moved.buffers()):
        assert tensor.device.type == dt.device(test_device).type
    x = rng.standard_normal((2, 2, 5, 5))
    for _ in range(2):  # training mode: u and v move on both
        out, ref = moved(dt.tensor(x, device=test_device)), cpu(dt.tensor(x))
        np.testing.assert_allclose(out.cpu().detach().numpy(), ref.detach().numpy(), atol=1e-12)
        (out * out).sum().backward()
        (ref * ref).sum().backward()
    for (name, p), q in zip(moved.state_dict().items(), cpu.state_dict().values()):
        np.testing.assert_allclose(p.cpu().numpy(), q.numpy(), atol=1e-12, err_msg=name)
    for p, q in zip(moved.parameters(), cpu.parameters()):
        np.testing.assert_allclose(p.grad.cpu().numpy(), q.grad.numpy(), atol=1e-10)
