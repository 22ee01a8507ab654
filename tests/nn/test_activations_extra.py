"""selu, celu, softsign, softshrink, hardshrink, tanhshrink, threshold, rrelu, the in-place
``name_`` forms, Softmax2d, alpha dropout and dropout3d: numpy references, finite
differences, and PyTorch where installed."""

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck

SCALE, ALPHA = 1.0507009873554805, 1.6732632423543772


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def _elu(x, a):
    return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


# Away from the kinks (|x| near 0, 0.5, 0.3) so finite differences are smooth.
X = np.array([[-2.5, -0.9, -0.7, -0.2, 0.1], [0.2, 0.7, 0.9, 1.4, 3.0]])

REFERENCES = {
    "selu": (lambda t: F.selu(t), lambda x: SCALE * _elu(x, ALPHA)),
    "celu": (lambda t: F.celu(t, 0.7), lambda x: 0.7 * _elu(x / 0.7, 1.0)),
    "softsign": (F.softsign, lambda x: x / (1 + np.abs(x))),
    "tanhshrink": (F.tanhshrink, lambda x: x - np.tanh(x)),
    "softshrink": (
        lambda t: F.softshrink(t, 0.5),
        lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
    ),
    "hardshrink": (lambda t: F.hardshrink(t, 0.5), lambda x: np.where(np.abs(x) > 0.5, x, 0.0)),
    "threshold": (lambda t: F.threshold(t, 0.3, -4.0), lambda x: np.where(x > 0.3, x, -4.0)),
    "rrelu_eval": (
        lambda t: F.rrelu(t, 0.1, 0.3),
        lambda x: np.where(x >= 0, x, 0.2 * x),
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_values_and_gradients(name):
    ours, reference = REFERENCES[name]
    np.testing.assert_allclose(ours(leaf(X)).detach().numpy(), reference(X), rtol=1e-12)
    assert gradcheck(ours, [leaf(X)])


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_match_torch(torch, name, dtype):
    ours, _ = REFERENCES[name]
    theirs = {
        "selu": lambda t: torch.nn.functional.selu(t),
        "celu": lambda t: torch.nn.functional.celu(t, 0.7),
        "softsign": torch.nn.functional.softsign,
        "tanhshrink": torch.nn.functional.tanhshrink,
        "softshrink": lambda t: torch.nn.functional.softshrink(t, 0.5),
        "hardshrink": lambda t: torch.nn.functional.hardshrink(t, 0.5),
        "threshold": lambda t: torch.nn.functional.threshold(t, 0.3, -4.0),
        "rrelu_eval": lambda t: torch.nn.functional.rrelu(t, 0.1, 0.3),
    }[name]
    x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(dtype)
    a = dt.tensor(x, requires_grad=True)
    b = torch.tensor(x, requires_grad=True)
    out_a, out_b = ours(a), theirs(b)
    tol = 1e-6 if dtype == "float32" else 1e-12
    if name == "celu" and dtype == "float64":
        tol = 1e-7  # PyTorch's celu gradient uses 1 / alpha rounded to float32
    np.testing.assert_allclose(out_a.detach().numpy(), out_b.detach().numpy(), rtol=tol, atol=tol)
    out_a.sum().backward()
    out_b.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=tol, atol=tol)


def test_argument_checks():
    with pytest.raises(ZeroDivisionError, match="alpha cannot be 0"):
        F.celu(dt.ones(2), 0.0)
    with pytest.raises(RuntimeError, match="lambda must be >= 0"):
        F.softshrink(dt.ones(2), -1.0)
    with pytest.raises(ValueError, match="lower bound"):
        F.rrelu(dt.ones(2), 0.5, 0.1, training=True)
    with pytest.raises(TypeError, match="floating-point"):
        F.hardshrink(dt.tensor([1, 2]))


def test_rrelu_training_draws_slopes_in_range():
    dt.manual_seed(0)
    x = leaf(-np.ones((200,)))
    y = F.rrelu(x, 0.1, 0.3, training=True)
    slopes = -y.detach().numpy()
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and slopes.std() > 0.03
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slopes)  # the gradient is each drawn slope
    positive = F.rrelu(leaf(np.ones(5)), training=True)
    np.testing.assert_array_equal(positive.detach().numpy(), np.ones(5))


def test_rrelu_module_train_and_eval():
    m = nn.RReLU(0.1, 0.3)
    x = dt.tensor(-np.ones(100))
    assert len(np.unique(m(x).numpy())) > 1
    m.eval()
    np.testing.assert_allclose(m(x).numpy(), -0.2 * np.ones(100))


INPLACE = [
    ("relu_", (), lambda x: np.maximum(x, 0)),
    ("elu_", (0.5,), lambda x: _elu(x, 0.5)),
    ("leaky_relu_", (0.2,), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("hardtanh_", (-0.5, 0.8), lambda x: np.clip(x, -0.5, 0.8)),
    ("selu_", (), lambda x: SCALE * _elu(x, ALPHA)),
    ("celu_", (0.7,), lambda x: 0.7 * _elu(x / 0.7, 1.0)),
    ("threshold_", (0.3, -4.0), lambda x: np.where(x > 0.3, x, -4.0)),
    ("rrelu_", (0.1, 0.3), lambda x: np.where(x >= 0, x, 0.2 * x)),
]


@pytest.mark.parametrize("name,args,reference", INPLACE)
def test_inplace_forms_write_into_the_input(name, args, reference):
    t = dt.tensor(X.copy())
    out = getattr(F, name)(t, *args)
    assert out is t
    np.testing.assert_allclose(t.numpy(), reference(X), rtol=1e-12)


@pytest.mark.parametrize("name,args,reference", INPLACE)
def test_inplace_forms_record_gradients(name, args, reference):
    x = leaf(X)
    y = x * 1.0
    getattr(F, name)(y, *args)
    y.sum().backward()
    expected = leaf(X)
    getattr(F, name[:-1])(expected, *args).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expected.grad.numpy(), rtol=1e-12)


def test_softmax2d():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        nn.Softmax2d()(dt.tensor(x)).numpy(), e / e.sum(axis=1, keepdims=True), rtol=1e-12
    )
    assert nn.Softmax2d()(dt.tensor(x[0])).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="3 or 4 dimensions"):
        nn.Softmax2d()(dt.ones(3, 4))


@pytest.mark.parametrize("feature", [False, True])
def test_alpha_dropout_keeps_mean_and_variance(feature):
    dt.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(400, 300))
    fn = F.feature_alpha_dropout if feature else F.alpha_dropout
    t = leaf(x)
    y = fn(t, 0.3, training=True)
    out = y.detach().numpy()
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05
    a = 1 / np.sqrt((1.7580993408473766**2 * 0.3 + 1) * 0.7)
    dropped = np.isclose(out, -1.7580993408473766 * a * 0.7, rtol=1e-12)
    assert abs(dropped.mean() - 0.3) < 0.02  # dropped units share one value
    y.sum().backward()
    assert set(np.round(np.unique(t.grad.numpy()), 10)) <= {0.0, round(a, 10)}
    assert fn(t, 0.3, training=False) is t
    with pytest.raises(ValueError, match="between 0 and 1"):
        fn(t, 1.5, training=True)


def test_feature_alpha_dropout_drops_whole_channels():
    dt.manual_seed(1)
    y = F.feature_alpha_dropout(dt.ones(8, 6, 5), 0.5, training=True).numpy()
    assert (np.ptp(y, axis=2) == 0).all()


def test_dropout3d_zeroes_whole_channels():
    dt.manual_seed(0)
    y = F.dropout3d(dt.ones(4, 6, 2, 3, 3), 0.5).numpy()
    per_channel = y.reshape(4, 6, -1)
    assert (np.ptp(per_channel, axis=2) == 0).all()
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert F.dropout3d(dt.ones(6, 2, 3, 3), 0.5).shape == (6, 2, 3, 3)
    with pytest.warns(UserWarning, match="dropout3d"):
        F.dropout3d(dt.ones(6, 2), 0.5)
    m = nn.Dropout3d(0.5).eval()
    x = dt.ones(2, 3, 2, 2, 2)
    assert m(x) is x


def test_module_reprs_match_torch(torch):
    pairs = [
        (nn.SELU(), torch.nn.SELU()),
        (nn.SELU(True), torch.nn.SELU(True)),
        (nn.CELU(0.5), torch.nn.CELU(0.5)),
        (nn.Softsign(), torch.nn.Softsign()),
        (nn.Softshrink(0.2), torch.nn.Softshrink(0.2)),
        (nn.Hardshrink(), torch.nn.Hardshrink()),
        (nn.Tanhshrink(), torch.nn.Tanhshrink()),
        (nn.Threshold(0.1, 20), torch.nn.Threshold(0.1, 20)),
        (nn.Threshold(0.1, 2, True), torch.nn.Threshold(0.1, 2, True)),
        (nn.RReLU(), torch.nn.RReLU()),
        (nn.RReLU(0.1, 0.3, True), torch.nn.RReLU(0.1, 0.3, True)),
        (nn.Softmax2d(), torch.nn.Softmax2d()),
        (nn.AlphaDropout(0.2), torch.nn.AlphaDropout(0.2)),
        (nn.FeatureAlphaDropout(), torch.nn.FeatureAlphaDropout()),
        (nn.Dropout3d(), torch.nn.Dropout3d()),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())


def test_modules_match_functional():
    x = dt.tensor(X)
    np.testing.assert_array_equal(nn.SELU()(x).numpy(), F.selu(x).numpy())
    np.testing.assert_array_equal(nn.CELU(0.5)(x).numpy(), F.celu(x, 0.5).numpy())
    np.testing.assert_array_equal(nn.Softshrink(0.2)(x).numpy(), F.softshrink(x, 0.2).numpy())
    np.testing.assert_array_equal(nn.Hardshrink(0.2)(x).numpy(), F.hardshrink(x, 0.2).numpy())
    np.testing.assert_array_equal(nn.Threshold(0.1, 3)(x).numpy(), F.threshold(x, 0.1, 3).numpy())
    np.testing.assert_array_equal(nn.Softsign()(x).numpy(), F.softsign(x).numpy())
    np.testing.assert_array_equal(nn.Tanhshrink()(x).numpy(), F.tanhshrink(x).numpy())
    assert nn.AlphaDropout(0.5).eval()(x) is x


def test_threshold_selects_value_for_minus_inf():
    out = F.threshold(dt.tensor([-np.inf, 1.0, np.nan]), 0.0, 2.0)
    np.testing.assert_array_equal(out.numpy(), [2.0, 1.0, 2.0])  # NaN > 0 is False
    x = leaf([-np.inf, 0.5, 3.0])
    F.threshold(x, 1.0, 0.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])
    assert nn.Threshold(0.0, 7.0)(dt.tensor([-np.inf])).item() == 7.0


def test_threshold_on_integers_and_selu_celu_reject_them():
    out = F.threshold(dt.tensor([1, -2, 3]), 0.5, 5.7)
    assert out.dtype == dt.int64
    np.testing.assert_array_equal(out.numpy(), [1, 5, 3])  # value cast to the input's dtype
    x = dt.tensor([1, -2, 3])
    assert F.threshold_(x, 0, 5) is x
    np.testing.assert_array_equal(x.numpy(), [1, 5, 3])
    for fn in (F.selu, F.celu):
        with pytest.raises(TypeError, match="floating-point"):
            fn(dt.tensor([1, 2]))


@pytest.mark.parametrize("alpha", [-1.0, -0.4])
def test_celu_negative_alpha_branches_on_x(alpha):
    x = np.array([-2.0, -0.5, 0.5, 2.0])
    expected = np.where(x > 0, x, alpha * np.expm1(x / alpha))  # PyTorch's definition
    np.testing.assert_allclose(F.celu(leaf(x), alpha).detach().numpy(), expected, rtol=1e-12)
    assert gradcheck(lambda t: F.celu(t, alpha), [leaf(x)])


def test_hardshrink_is_not_a_softshrink():
    assert not isinstance(nn.Hardshrink(), nn.Softshrink)
    assert not isinstance(nn.Softshrink(), nn.Hardshrink)
    assert nn.Hardshrink(0.3).lambd == 0.3


# Includes the float16 neighbours of the constants, where rounding them to half first flips
# a comparison.
HALF_X = np.r_[np.linspace(-3, 3, 2001), [0.7, -0.7, 0.3, -0.3]].astype(np.float16)
HALF = {
    "selu": (F.selu, ()),
    "celu": (F.celu, (0.7,)),
    "softshrink": (F.softshrink, (0.3,)),
    "threshold": (F.threshold, (0.7, -1.3)),
}


@pytest.mark.parametrize("name", sorted(HALF))
def test_half_computes_in_float32_and_rounds_once(name):
    fn, args = HALF[name]
    x = HALF_X
    expected = fn(dt.tensor(x.astype(np.float32)), *args).numpy().astype(np.float16)
    out = fn(dt.tensor(x), *args)
    assert out.dtype == dt.float16
    np.testing.assert_array_equal(out.numpy(), expected)


def test_half_hardshrink_rounds_lambd_to_half_as_torch():
    # Unlike the others, PyTorch's hardshrink kernel compares in half: float16(0.7) is not
    # above float16(0.7).
    assert F.hardshrink(dt.tensor(np.float16([0.7, -0.7])), 0.7).numpy().tolist() == [0, 0]


def test_half_threshold_compares_in_float32():
    # float16(0.7) is 0.7002 > 0.7 in float32; rounding 0.7 to half first would say equal.
    assert F.threshold(dt.tensor(np.float16(0.7)), 0.7, 0.0).item() == np.float16(0.7)


def test_half_gradients_flow(rng):
    x = dt.tensor(rng.standard_normal(8).astype(np.float16), requires_grad=True)
    F.selu(x).sum().backward()
    assert x.grad.dtype == dt.float16
    v = x.detach().numpy().astype(np.float64)
    expected = np.where(v > 0, SCALE, SCALE * ALPHA * np.exp(v))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=2e-3)


@pytest.mark.parametrize("name", sorted(HALF))
def test_half_matches_torch(torch, name):
    fn, args = HALF[name]
    x = HALF_X
    theirs = getattr(torch.nn.functional, name)(torch.from_numpy(x), *args).numpy()
    np.testing.assert_array_equal(fn(dt.tensor(x), *args).numpy(), theirs)


def test_celu_negative_alpha_and_threshold_inf_match_torch(torch):
    x = np.array([-np.inf, -2.0, -0.5, 0.5, 2.0, np.inf])
    for alpha in (-1.0, 0.6):
        theirs = torch.nn.functional.celu(torch.from_numpy(x), alpha).numpy()
        np.testing.assert_allclose(F.celu(dt.tensor(x), alpha).numpy(), theirs, rtol=1e-12)
    theirs = torch.nn.functional.threshold(torch.from_numpy(x), 0.0, 3.0).numpy()
    np.testing.assert_array_equal(F.threshold(dt.tensor(x), 0.0, 3.0).numpy(), theirs)
    ints = torch.nn.functional.threshold(torch.tensor([1, -2, 3]), 0.5, 5.7).numpy()
    np.testing.assert_array_equal(F.threshold(dt.tensor([1, -2, 3]), 0.5, 5.7).numpy(), ints)
