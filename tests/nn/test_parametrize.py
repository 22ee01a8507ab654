"""``nn.utils.parametrize`` and ``nn.utils.parametrizations.weight_norm``: values against
numpy, gradients against finite differences, and state dicts, outputs and gradients against
PyTorch (skipped without it)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.utils.parametrize as P
from dtrain.autograd import gradcheck
from dtrain.nn.utils import parametrizations


class Symmetric(nn.Module):
    """The upper triangle mirrored (PyTorch's tutorial example); no right_inverse."""

    def forward(self, x):
        return x.triu() + x.triu(1).mT


class SymmetricInv(Symmetric):
    """With a right_inverse: the upper triangle."""

    def right_inverse(self, a):
        return a.triu()


class Scale(nn.Module):
    """``factor · X``, with its exact right inverse."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def right_inverse(self, a):
        return a / self.factor


class Split(nn.Module):
    """``a + 2b`` from two tensors; right_inverse halves: original0 and original1."""

    def forward(self, a, b):
        return a + 2 * b

    def right_inverse(self, x):
        return x / 2, x / 4


def sym(a: np.ndarray) -> np.ndarray:
    return np.triu(a) + np.triu(a, 1).T


def linear(n: int = 3, m: int = 3) -> nn.Linear:
    return nn.Linear(n, m).double()


# ---- torch-free ---------------------------------------------------------------------------
def test_register_symmetric(rng):
    m = linear()
    weight = m.weight
    before = weight.detach().numpy().copy()
    assert P.register_parametrization(m, "weight", Symmetric()) is m
    assert type(m).__name__ == "ParametrizedLinear" and isinstance(m, nn.Linear)
    assert P.type_before_parametrizations(m) is nn.Linear
    assert P.is_parametrized(m) and P.is_parametrized(m, "weight")
    assert not P.is_parametrized(m, "bias") and not P.is_parametrized(linear())
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert m.parametrizations.weight.original is weight  # the optimizer's tensor moved
    assert isinstance(m.parametrizations.weight, P.ParametrizationList)
    assert "weight" not in m._parameters
    np.testing.assert_array_equal(m.weight.detach().numpy(), sym(before))
    x = rng.standard_normal((4, 3))
    out = m(dt.tensor(x))
    np.testing.assert_allclose(out.detach().numpy(), x @ sym(before).T + m.bias.detach().numpy())
    assert "ParametrizedLinear(" in repr(m) and "(0): Symmetric()" in repr(m)


def test_gradient_reaches_original_and_optimizer(rng):
    m = linear()
    P.register_parametrization(m, "weight", Symmetric())
    x = dt.tensor(rng.standard_normal((4, 3)))
    original = m.parametrizations.weight.original
    assert any(p is original for p in m.parameters())
    assert [name for name, _ in m.named_parameters()] == [
        "bias",
        "parametrizations.weight.original",
    ]
    assert gradcheck(lambda o: m(x), [original])
    opt = dt.optim.SGD(m.parameters(), lr=0.1)
    before = original.detach().numpy().copy()
    (m(x) ** 2).sum().backward()
    grad = original.grad.numpy().copy()
    assert np.abs(np.tril(grad, -1)).max() == 0  # the lower triangle is not used
    opt.step()
    np.testing.assert_allclose(original.detach().numpy(), before - 0.1 * grad)
    np.testing.assert_allclose(m.weight.detach().numpy(), sym(before - 0.1 * grad))


def test_right_inverse_and_assignment(rng):
    m = linear()
    weight = m.weight.detach().numpy().copy()
    P.register_parametrization(m, "weight", Scale(2.0))
    # right_inverse ran at registration: module.weight keeps its value.
    np.testing.assert_allclose(m.parametrizations.weight.original.detach().numpy(), weight / 2)
    np.testing.assert_allclose(m.weight.detach().numpy(), weight)
    target = rng.standard_normal((3, 3))
    original = m.parametrizations.weight.original
    m.weight = dt.tensor(target)
    assert m.parametrizations.weight.original is original
    np.testing.assert_allclose(original.detach().numpy(), target / 2)
    np.testing.assert_allclose(m.weight.detach().numpy(), target)
    with pytest.raises(KeyError, match="already has an attribute"):
        m.weight = nn.Parameter(dt.tensor(target))
    s = linear()
    P.register_parametrization(s, "weight", Symmetric())
    with pytest.raises(RuntimeError, match="right_inverse"):
        s.weight = dt.tensor(target)


def test_right_inverse_with_several_tensors(rng):
    m = linear()
    weight = m.weight.detach().numpy().copy()
    P.register_parametrization(m, "weight", Split())
    keys = ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert list(m.state_dict()) == keys
    plist = m.parametrizations.weight
    assert not plist.is_tensor and plist.ntensors == 2
    assert isinstance(plist.original0, nn.Parameter) and plist.original1.requires_grad
    np.testing.assert_allclose(plist.original0.detach().numpy(), weight / 2)
    np.testing.assert_allclose(m.weight.detach().numpy(), weight)
    x = dt.tensor(rng.standard_normal((2, 3)))
    assert gradcheck(lambda a, b: m(x), [plist.original0, plist.original1])
    target = rng.standard_normal((3, 3))
    m.weight = dt.tensor(target)
    np.testing.assert_allclose(plist.original1.detach().numpy(), target / 4)
    np.testing.assert_allclose(m.weight.detach().numpy(), target)
    with pytest.raises(ValueError, match="leave_parametrized=True"):
        P.remove_parametrizations(m, "weight", leave_parametrized=False)
    P.remove_parametrizations(m, "weight")
    assert isinstance(m.weight, nn.Parameter) and m.weight.is_leaf
    np.testing.assert_allclose(m.weight.detach().numpy(), target)
    assert type(m) is nn.Linear and list(m.state_dict()) == ["bias", "weight"]


def test_stacked(rng):
    m = linear()
    weight = m.weight.detach().numpy().copy()
    P.register_parametrization(m, "weight", Symmetric())
    P.register_parametrization(m, "weight", Scale(3.0))
    assert len(m.parametrizations.weight) == 2
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original"]
    np.testing.assert_allclose(m.weight.detach().numpy(), 3 * sym(weight))  # in order
    x = dt.tensor(rng.standard_normal((2, 3)))
    assert gradcheck(lambda o: m(x), [m.parametrizations.weight.original])

    class Widen(nn.Module):
        def forward(self, x):
            return dt.cat([x, x], 0)

    with pytest.raises(ValueError, match="unsafe=True"):
        P.register_parametrization(m, "weight", Widen())
    assert len(m.parametrizations.weight) == 2
    P.register_parametrization(m, "weight", Widen(), unsafe=True)
    assert m.weight.shape == (6, 3) and m.parametrizations.weight.unsafe
    with pytest.raises(ValueError, match="unsafe=True"):
        P.register_parametrization(linear(), "weight", Widen())


@pytest.mark.parametrize("leave", [True, False])
def test_remove(rng, leave):
    m = linear()
    weight = m.weight.detach().numpy().copy()
    P.register_parametrization(m, "weight", Scale(2.0))
    P.register_parametrization(m, "bias", Scale(5.0))
    original = m.parametrizations.weight.original
    P.remove_parametrizations(m, "weight", leave_parametrized=leave)
    assert m.weight is original  # the same object: an optimizer holding it goes on
    np.testing.assert_allclose(m.weight.detach().numpy(), weight if leave else weight / 2)
    assert P.is_parametrized(m) and not P.is_parametrized(m, "weight")
    assert type(m).__name__ == "ParametrizedLinear" and not hasattr(type(m), "weight")
    assert sorted(m.state_dict()) == ["parametrizations.bias.original", "weight"]
    P.remove_parametrizations(m, "bias", leave_parametrized=leave)
    assert type(m) is nn.Linear and "parametrizations" not in m._modules
    assert list(m.state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError, match="no parametrization on 'weight'"):
        P.remove_parametrizations(m, "weight")


def test_errors():
    m = linear()
    with pytest.raises(ValueError, match="no parameter, buffer or parametrized tensor"):
        P.register_parametrization(m, "weights", Symmetric())
    nobias = nn.Linear(3, 3, bias=False)
    with pytest.raises(ValueError, match="is None"):
        P.register_parametrization(nobias, "bias", Symmetric())

    class Broken(nn.Module):
        def forward(self, x):
            return x * self.missing

    with pytest.raises(AttributeError, match="missing"):
        P.register_parametrization(m, "weight", Broken())
    P.register_parametrization(m, "weight", Broken(), unsafe=True)
    with pytest.raises(RuntimeError, match=r"computing parametrized 'weight' failed.*missing"):
        m.weight  # noqa: B018
    with pytest.raises(RuntimeError, match="state_dict"):
        pickle.dumps(m)


def test_buffer_and_training_mode():
    bn = nn.BatchNorm1d(3).double()
    bn.eval()
    scale = Scale(2.0)
    P.register_parametrization(bn, "running_var", scale)
    assert not scale.training  # follows the module, as PyTorch
    assert "parametrizations.running_var.original" in bn.state_dict()
    assert not isinstance(bn.parametrizations.running_var.original, nn.Parameter)
    np.testing.assert_allclose(bn.running_var.numpy(), np.ones(3))
    bn.train()
    assert scale.training


def test_cached():
    calls = []

    class Counting(Scale):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    m = linear()
    P.register_parametrization(m, "weight", Counting(2.0))
    calls.clear()
    with P.cached():
        first = m.weight
        with P.cached():
            assert m.weight is first
        assert m.weight is first
    assert len(calls) == 1
    assert m.weight is not first and len(calls) == 2


def test_to_deepcopy_and_state_dict_round_trip(rng):
    m = linear()
    P.register_parametrization(m, "weight", Symmetric())
    P.register_parametrization(m, "weight", Scale(2.0))
    m.float()
    assert m.parametrizations.weight.original.dtype == np.float32 and m.weight.dtype == np.float32
    m.double()
    x = dt.tensor(rng.standard_normal((2, 3)))
    ref = m(x).detach().numpy()

    clone = copy.deepcopy(m)
    assert type(clone).__name__ == "ParametrizedLinear" and type(clone) is not type(m)
    assert clone.parametrizations.weight.original is not m.parametrizations.weight.original
    np.testing.assert_array_equal(clone(x).detach().numpy(), ref)
    P.remove_parametrizations(clone, "weight")  # leaves the original's class alone
    np.testing.assert_array_equal(m(x).detach().numpy(), ref)
    P.register_parametrization(clone, "bias", Scale(2.0))
    assert not hasattr(type(m), "bias") and "bias" in m._parameters

    fresh = linear()
    P.register_parametrization(fresh, "weight", Symmetric())
    P.register_parametrization(fresh, "weight", Scale(2.0))
    fresh.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(fresh(x).detach().numpy(), ref)
    with pytest.raises(RuntimeError, match="missing keys"):
        linear().load_state_dict(m.state_dict())


def test_inside_a_model_with_an_optimizer(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    P.register_parametrization(model[0], "weight", Scale(0.5))
    keys = ["0.bias", "0.parametrizations.weight.original", "2.weight", "2.bias"]
    assert list(model.state_dict()) == keys
    opt = dt.optim.Adam(model.parameters(), lr=0.01)
    x, y = dt.tensor(rng.standard_normal((8, 3))), dt.tensor(rng.standard_normal((8, 2)))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---- parametrizations.weight_norm ---------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, None, -1, -2])
def test_weight_norm_parametrization(rng, dim):
    m = linear(3, 4)
    before = m.weight.detach().numpy().copy()
    parametrizations.weight_norm(m, dim=dim)
    keys = ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert list(m.state_dict()) == keys
    whole = dim in (None, -1)
    axes = None if whole else 1 - dim % 2
    norm = np.sqrt((before**2).sum(axis=axes, keepdims=not whole))
    g = m.parametrizations.weight.original0
    assert g.shape == norm.shape
    np.testing.assert_allclose(g.detach().numpy(), norm)
    np.testing.assert_allclose(m.parametrizations.weight.original1.detach().numpy(), before)
    np.testing.assert_allclose(m.weight.detach().numpy(), before)
    with dt.no_grad():
        g.mul_(2.0)
    np.testing.assert_allclose(m.weight.detach().numpy(), 2 * before)
    x = dt.tensor(rng.standard_normal((2, 3)))
    assert gradcheck(lambda a, b: m(x), [g, m.parametrizations.weight.original1])
    P.remove_parametrizations(m, "weight")
    np.testing.assert_allclose(m.weight.detach().numpy(), 2 * before)
    with pytest.raises(ValueError, match="out of range"):
        parametrizations.weight_norm(linear(), dim=2)


@pytest.fixture
def emulated_cuda(monkeypatch):
    """CUDA on the CPU (``tests/runtime/cuda_emulator``): ``device="cuda"`` works here."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    return install(monkeypatch)


@pytest.mark.parametrize("parametrization", [Scale(2.0), Split()], ids=["one", "several"])
def test_assignment_on_another_device_is_refused(emulated_cuda, rng, parametrization):
    # As PyTorch's set_: the original may not silently move to the value's device.
    m = linear().to("cuda")
    P.register_parametrization(m, "weight", parametrization)
    before = m.weight.detach().cpu().numpy()
    originals = list(m.parametrizations.weight.parameters())
    with pytest.raises(
        RuntimeError, match=r"original0? \(on cuda:0\) to a tensor on cpu.*'cuda:0'"
    ):
        m.weight = dt.tensor(rng.standard_normal((3, 3)))
    assert all(str(t.device) == "cuda:0" for t in originals)
    np.testing.assert_array_equal(m.weight.detach().cpu().numpy(), before)
    target = rng.standard_normal((3, 3))
    m.weight = dt.tensor(target, device="cuda")
    assert str(m.weight.device) == "cuda:0"
    np.testing.assert_allclose(m.weight.detach().cpu().numpy(), target)


# ---- against PyTorch ----------------------------------------------------------------------
def _torch_modules(torch):
    class TSymmetric(torch.nn.Module):
        def forward(self, x):
            return x.triu() + x.triu(1).mT

        def right_inverse(self, a):
            return a.triu()

    class TScale(torch.nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

        def right_inverse(self, a):
            return a / self.factor

    return TSymmetric, TScale


def _train_both(torch, ours, theirs, x, same, steps=3):
    """A few SGD steps on both; outputs, gradients and state dicts must agree throughout."""
    opt = dt.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
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
            same(state[key], tstate[key], atol=1e-10)


def test_stacked_matches_torch(torch, rng, same, copy_from_torch):
    t_symmetric, t_scale = _torch_modules(torch)
    theirs = torch.nn.Linear(3, 3).double()
    ours = linear()
    torch.nn.utils.parametrize.register_parametrization(theirs, "weight", t_symmetric())
    torch.nn.utils.parametrize.register_parametrization(theirs, "weight", t_scale(2.0))
    P.register_parametrization(ours, "weight", SymmetricInv())
    P.register_parametrization(ours, "weight", Scale(2.0))
    assert type(ours).__name__ == type(theirs).__name__
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_from_torch(ours, theirs)
    _train_both(torch, ours, theirs, rng.standard_normal((4, 3)), same)
    target = sym(rng.standard_normal((3, 3)))
    theirs.weight = torch.tensor(target)
    ours.weight = dt.tensor(target)
    same(ours.parametrizations.weight.original, theirs.parametrizations.weight.original)
    # (PyTorch's deep copies share the generated class, so removing on one breaks the other:
    # one removal per side here.)
    unparametrized = copy.deepcopy(ours)
    P.remove_parametrizations(unparametrized, "weight", leave_parametrized=False)
    same(unparametrized.weight, theirs.parametrizations.weight.original)
    torch.nn.utils.parametrize.remove_parametrizations(theirs, "weight")
    P.remove_parametrizations(ours, "weight")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    same(ours.weight, theirs.weight)


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_torch(torch, rng, same, copy_from_torch, dim):
    theirs = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(2, 3, 3).double(), dim=dim)
    ours = parametrizations.weight_norm(nn.Conv2d(2, 3, 3).double(), dim=dim)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape), key
    copy_from_torch(ours, theirs)
    _train_both(torch, ours, theirs, rng.standard_normal((2, 2, 5, 5)), same)
    torch.nn.utils.parametrize.remove_parametrizations(theirs, "weight")
    P.remove_parametrizations(ours, "weight")
    same(ours.weight, theirs.weight, atol=1e-12)


def test_assignment_on_another_device_is_refused_as_torch(torch, emulated_cuda):
    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

        def right_inverse(self, x):
            return x

    theirs = torch.nn.Linear(2, 2).to("meta")  # torch CPU builds have no cuda: meta stands in
    torch.nn.utils.parametrize.register_parametrization(theirs, "weight", Identity())
    with pytest.raises(RuntimeError, match="devices must match"):
        theirs.weight = torch.zeros(2, 2)
    ours = linear().to("cuda")
    P.register_parametrization(ours, "weight", Scale(1.0))
    with pytest.raises(RuntimeError, match="devices must match"):
        ours.weight = dt.zeros(3, 3, dtype=dt.float64)
