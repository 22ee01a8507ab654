"""Activations added for PyTorch parity: values against numpy, gradients by finite
differences in float64 (inputs kept clear of the kinks), then against PyTorch."""

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def away(shape: tuple, kinks: tuple = (0.0,), seed: int = 0) -> np.ndarray:
    """Values in (-5, 5) at least 0.05 from every kink (finite differences straddle none)."""
    x = np.random.default_rng(seed).uniform(-5, 5, size=shape)
    for k in kinks:
        near = np.abs(x - k) < 0.05
        x[near] = k + 0.1
    return x


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softplus(x):
    return np.logaddexp(0, x)


REFERENCES = {
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x), (0.0,)),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(x)), (0.0,)),
    "relu6": (lambda x: np.clip(x, 0, 6), (0.0, 6.0)),
    "hardtanh": (lambda x: np.clip(x, -1, 1), (-1.0, 1.0)),
    "hardswish": (lambda x: x * np.clip(x + 3, 0, 6) / 6, (-3.0, 3.0)),
    "hardsigmoid": (lambda x: np.clip(x + 3, 0, 6) / 6, (-3.0, 3.0)),
    "mish": (lambda x: x * np.tanh(np_softplus(x)), ()),
    "logsigmoid": (lambda x: np.log(np_sigmoid(x)), ()),
    "silu": (lambda x: x * np_sigmoid(x), ()),
    "relu": (lambda x: np.maximum(x, 0), (0.0,)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_values_and_gradcheck(name):
    reference, kinks = REFERENCES[name]
    x = away((3, 4, 5), kinks)
    x[0, 0, :2] = [7.5, -7.5]  # past every bound
    fn = getattr(F, name)
    np.testing.assert_allclose(fn(leaf(x)).detach().numpy(), reference(x), rtol=1e-12, atol=1e-14)
    assert gradcheck(fn, [leaf(x)])


def test_activation_keywords():
    x = away((4, 6), (0.0,), seed=1)
    np.testing.assert_allclose(
        F.leaky_relu(leaf(x), 0.2).detach().numpy(), np.where(x > 0, x, 0.2 * x)
    )
    np.testing.assert_allclose(
        F.elu(leaf(x), alpha=2.0).detach().numpy(), np.where(x > 0, x, 2 * np.expm1(x))
    )
    np.testing.assert_allclose(
        F.hardtanh(leaf(x), -2.0, 0.5).detach().numpy(), np.clip(x, -2.0, 0.5)
    )
    assert gradcheck(lambda a: F.leaky_relu(a, 0.2), [leaf(x)])
    assert gradcheck(lambda a: F.elu(a, alpha=2.0), [leaf(x)])


@pytest.mark.parametrize(
    "fn", [F.relu, F.silu, F.leaky_relu, F.elu, F.relu6, F.hardswish, F.hardsigmoid, F.mish]
)
def test_inplace_keyword_computes_out_of_place(fn):
    x = dt.tensor([-2.0, 0.5, 3.0])
    before = x.numpy().copy()
    out = fn(x, inplace=True)
    np.testing.assert_array_equal(x.numpy(), before)  # documented: the input is unchanged
    np.testing.assert_allclose(out.numpy(), fn(x).numpy())


def test_gradients_at_the_kinks_follow_pytorch():
    x = leaf([-3.0, 3.0, 0.0, 6.0, -1.0, 1.0])
    F.hardswish(x).sum().backward()  # 0 at -3, 1 at 3 (PyTorch's choice)
    np.testing.assert_allclose(x.grad.numpy()[:2], [0.0, 1.0])
    for fn, expected in ((F.relu6, [0, 1, 0, 0, 0, 1]), (F.hardtanh, [0, 0, 1, 0, 0, 0])):
        x.grad = None
        fn(x).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), expected)
    x.grad = None
    F.leaky_relu(x).sum().backward()
    assert x.grad.numpy()[2] == pytest.approx(0.01)  # x = 0 takes the negative slope


def test_activations_keep_float32_and_zero_dim():
    for name in REFERENCES:
        a = dt.randn(2, 3, requires_grad=True)
        out = getattr(F, name)(a)
        out.sum().backward()
        assert out.dtype == dt.float32 and a.grad.dtype == dt.float32, name
        s = dt.tensor(-0.5, requires_grad=True)
        out = getattr(F, name)(s)
        out.backward()
        assert out.shape == () and s.grad.shape == (), name
    # a numpy float64 slope does not promote float32 input
    assert F.leaky_relu(dt.randn(3), np.float64(0.2)).dtype == dt.float32


def test_glu_and_softmin():
    x = away((2, 6, 3), (), seed=2)
    a, b = x[:, :3], x[:, 3:]
    np.testing.assert_allclose(
        F.glu(leaf(x), dim=1).detach().numpy(), a * np_sigmoid(b), rtol=1e-12
    )
    assert gradcheck(lambda v: F.glu(v, 1), [leaf(x)])
    with pytest.raises(RuntimeError, match="even"):
        F.glu(dt.ones(2, 3))
    e = np.exp(-x)
    np.testing.assert_allclose(
        F.softmin(leaf(x), 1).detach().numpy(), e / e.sum(1, keepdims=True), rtol=1e-12
    )
    with pytest.warns(UserWarning, match="Implicit dimension"):
        F.softmin(dt.ones(2, 3))


def test_prelu_values_and_gradients():
    x = away((2, 3, 4), (0.0,), seed=3)
    w = np.array([0.25, -0.5, 2.0])
    expected = np.where(x > 0, x, w[None, :, None] * x)
    np.testing.assert_allclose(F.prelu(leaf(x), leaf(w)).detach().numpy(), expected)
    assert gradcheck(F.prelu, [leaf(x), leaf(w)])
    assert gradcheck(F.prelu, [leaf(x), leaf([0.3])])
    assert gradcheck(F.prelu, [leaf(x[0, 0]), leaf([0.3])])  # 1-D input: one slope
    with pytest.raises(ValueError, match="1 slope or one per channel"):
        F.prelu(dt.ones(2, 3), dt.ones(2))


def test_activation_modules():
    x = dt.tensor(away((2, 4, 3), (0.0, -3.0, 3.0, 6.0), seed=4))
    pairs = [
        (nn.LeakyReLU(0.2, inplace=True), F.leaky_relu(x, 0.2)),
        (nn.ELU(alpha=0.5), F.elu(x, 0.5)),
        (nn.ReLU6(), F.relu6(x)),
        (nn.Hardtanh(-2.0, 2.0), F.hardtanh(x, -2.0, 2.0)),
        (nn.Hardswish(), F.hardswish(x)),
        (nn.Hardsigmoid(), F.hardsigmoid(x)),
        (nn.Mish(), F.mish(x)),
        (nn.LogSigmoid(), F.logsigmoid(x)),
        (nn.SiLU(inplace=True), F.silu(x)),
        (nn.GLU(dim=1), F.glu(x, 1)),
        (nn.Softmin(dim=1), F.softmin(x, 1)),
    ]
    for module, expected in pairs:
        np.testing.assert_array_equal(module(x).numpy(), expected.numpy(), err_msg=repr(module))
    assert repr(nn.LeakyReLU(0.2, True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"
    assert repr(nn.SiLU(inplace=True)) == "SiLU(inplace=True)"
    assert repr(nn.ReLU6()) == "ReLU6()"
    assert repr(nn.PReLU(3)) == "PReLU(num_parameters=3)"


def test_prelu_module_learns_its_slopes():
    m = nn.PReLU(num_parameters=2, init=0.1)
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    np.testing.assert_allclose(m.weight.detach().numpy(), [0.1, 0.1])
    x = dt.tensor([[[-1.0, 2.0], [-3.0, -4.0]]])
    m(x).sum().backward()
    np.testing.assert_allclose(m.weight.grad.numpy(), [-1.0, -7.0])


# ---- against PyTorch -----------------------------------------------------------------------
TORCH_CALLS = [
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.3}),
    ("elu", {"alpha": 1.5}),
    ("relu6", {}),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}),
    ("hardswish", {}),
    ("hardsigmoid", {}),
    ("mish", {}),
    ("logsigmoid", {}),
    ("silu", {"inplace": True}),
    ("relu", {"inplace": True}),
    ("glu", {"dim": 1}),
    ("softmin", {"dim": -1}),
]


@pytest.mark.parametrize("name,kwargs", TORCH_CALLS)
def test_activations_match_torch(torch, same, name, kwargs):
    x = np.random.default_rng(5).standard_normal((3, 4, 6)) * 4
    x[0, 0, :6] = [0.0, -3.0, 3.0, 6.0, -1.0, 1.0]  # every kink
    g = np.random.default_rng(6).standard_normal(x.shape)
    ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
    out, ref = (
        getattr(F, name)(ours, **kwargs),
        getattr(torch.nn.functional, name)(
            theirs if not kwargs.get("inplace") else theirs.clone(), **kwargs
        ),
    )
    same(out, ref, atol=1e-14)
    (out * dt.tensor(g[tuple(slice(n) for n in out.shape)])).sum().backward()
    (ref * torch.tensor(g[tuple(slice(n) for n in ref.shape)])).sum().backward()
    # hardsigmoid: PyTorch's gradient is 1/6 rounded to float32, even for float64
    same(ours.grad, theirs.grad, atol=1e-7 if name == "hardsigmoid" else 1e-14)


def test_prelu_and_modules_match_torch(torch, same):
    x = np.random.default_rng(7).standard_normal((2, 3, 4))
    ours, theirs = nn.PReLU(3).double(), torch.nn.PReLU(3).double()
    a, b = leaf(x), torch.tensor(x, requires_grad=True)
    same(ours(a), theirs(b))
    ours(a).sum().backward()
    theirs(b).sum().backward()
    same(a.grad, b.grad)
    same(ours.weight.grad, theirs.weight.grad)
    for text in (
        "LeakyReLU(0.2, True)",
        "ELU()",
        "ReLU6(True)",
        "Hardswish()",
        "Mish()",
        "Hardtanh()",
        "GLU()",
        "Softmin(1)",
        "PReLU()",
        "LogSigmoid()",
        "SiLU()",
    ):
        assert repr(eval("nn." + text)) == repr(eval("torch.nn." + text)), text


def test_elu_is_finite_for_large_negative_input():
    out = F.elu(dt.tensor([-1000.0, -math.inf]))
    np.testing.assert_array_equal(out.numpy(), [-1.0, -1.0])
