"""Losses: values against numpy formulas (and PyTorch when installed), gradients by finite
differences in float64, the loss modules, and the errors for bad targets and arguments."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def reduce(loss: np.ndarray, reduction: str, denominator: float) -> np.ndarray:
    if reduction == "none":
        return loss
    return np.asarray(loss.sum() if reduction == "sum" else loss.sum() / denominator)


def cross_entropy_ref(x, target, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """PyTorch's documented formula, classes in dim 1 (or dim 0 for one sample)."""
    logits = np.moveaxis(x, 1, -1) if x.ndim > 1 else x
    classes = logits.shape[-1]
    logp = log_softmax(logits)
    w = np.ones(classes) if weight is None else weight
    if target.dtype.kind == "f":  # class probabilities
        t = np.moveaxis(target, 1, -1) if x.ndim > 1 else target
        t = t * (1 - smoothing) + smoothing / classes
        loss = -(t * w * logp).sum(-1)
        return reduce(loss, reduction, max(loss.size, 1))
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    picked = np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    nll = -picked * w[safe] * keep
    smooth = -(logp * w).sum(-1) * keep
    loss = (1 - smoothing) * nll + smoothing / classes * smooth
    return reduce(loss, reduction, (w[safe] * keep).sum())


def nll_ref(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    logp = np.moveaxis(logp, 1, -1) if logp.ndim > 2 else logp
    w = np.ones(logp.shape[-1]) if weight is None else weight
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    loss = -np.take_along_axis(logp, safe[..., None], -1)[..., 0] * w[safe] * keep
    return reduce(loss, reduction, (w[safe] * keep).sum())


def bce_ref(x, t, weight=None, pos_weight=None, reduction="mean"):
    log_sig = -np.logaddexp(0, -x)  # log σ(x)
    log_one_minus = -np.logaddexp(0, x)  # log (1 - σ(x))
    pw = 1.0 if pos_weight is None else pos_weight
    loss = -(pw * t * log_sig + (1 - t) * log_one_minus)
    if weight is not None:
        loss = loss * weight
    return reduce(loss, reduction, loss.size)


def wrap(value):
    return dt.tensor(value) if isinstance(value, np.ndarray) else value


@pytest.fixture
def data(rng):
    """Logits (5, 4), class targets with one ignored, probabilities, class weights."""
    return {
        "x": rng.standard_normal((5, 4)),
        "t": np.array([0, 3, 1, -100, 2]),
        "p": rng.dirichlet(np.ones(4), 5),
        "w": rng.uniform(0.5, 2.0, 4),
        "x3": rng.standard_normal((2, 4, 3)),
        "t3": np.array([[0, 3, -100], [2, 2, 1]]),
        "p3": np.moveaxis(rng.dirichlet(np.ones(4), (2, 3)), -1, 1),
    }


CE_OPTIONS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.2},
    {"weight": True, "label_smoothing": 0.3},
    {"reduction": "sum"},
    {"reduction": "none", "weight": True, "label_smoothing": 0.1},
]


def ce_kwargs(options, w):
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = w
    return kwargs


def as_ref_kwargs(kwargs):
    out = dict(kwargs)
    if "label_smoothing" in out:
        out["smoothing"] = out.pop("label_smoothing")
    return out


# ---- cross_entropy -------------------------------------------------------------------------
@pytest.mark.parametrize("options", CE_OPTIONS)
@pytest.mark.parametrize("target", ["t", "p", "t3", "p3"])
def test_cross_entropy_values_and_gradcheck(options, target, data):
    x = data["x3"] if target.endswith("3") else data["x"]
    t = data[target]
    kwargs = ce_kwargs(options, data["w"])
    expected = cross_entropy_ref(x, t, **as_ref_kwargs(kwargs))
    got = F.cross_entropy(leaf(x), dt.tensor(t), **{k: wrap(v) for k, v in kwargs.items()})
    np.testing.assert_allclose(npy(got), expected, rtol=1e-10, atol=1e-12)
    fn = lambda a: F.cross_entropy(a, dt.tensor(t), **{k: wrap(v) for k, v in kwargs.items()})
    assert gradcheck(fn, [leaf(x)])


def test_cross_entropy_ignore_index_and_one_sample(data):
    x = data["x"]
    t = np.array([1, 1, 2, 0, 3])
    got = F.cross_entropy(leaf(x), dt.tensor(t), ignore_index=1)
    np.testing.assert_allclose(npy(got), cross_entropy_ref(x, t, ignore_index=1), rtol=1e-12)
    assert gradcheck(lambda a: F.cross_entropy(a, dt.tensor(t), ignore_index=1), [leaf(x)])
    one = x[0]
    got = F.cross_entropy(leaf(one), dt.tensor(2))  # (C,) logits and a scalar target
    assert got.shape == () and got.item() == pytest.approx(-log_softmax(one)[2])
    assert F.cross_entropy(leaf(one), dt.tensor(2), reduction="none").shape == ()
    got = F.cross_entropy(leaf(one), dt.tensor(data["p"][0]))
    assert got.item() == pytest.approx(-(data["p"][0] * log_softmax(one)).sum())


def test_cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient(data):
    # As PyTorch: the mean over no samples is NaN, and no sample sends back a gradient.
    x = leaf(data["x"])
    loss = F.cross_entropy(x, dt.tensor(np.full(len(data["x"]), -100)))
    loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros_like(data["x"]))


def test_cross_entropy_equals_nll_of_log_softmax(data):
    x, t, w = data["x"], data["t"], data["w"]
    a = F.cross_entropy(leaf(x), dt.tensor(t), dt.tensor(w))
    b = F.nll_loss(F.log_softmax(leaf(x), 1), dt.tensor(t), dt.tensor(w))
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_cross_entropy_keeps_float32_and_is_stable():
    x = dt.tensor([[1000.0, 0.0], [0.0, -1000.0]])
    loss = F.cross_entropy(x, dt.tensor([1, 0]), reduction="none")
    assert loss.dtype == dt.float32
    np.testing.assert_allclose(npy(loss), [1000.0, 0.0])


def test_cross_entropy_rejects_bad_targets_and_arguments(data):
    x = dt.tensor(data["x"])
    with pytest.raises(ValueError, match=r"target of shape \(4,\).*\(5, 4\).*\(5,\)"):
        F.cross_entropy(x, dt.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"target of shape \(5, 3\)"):
        F.cross_entropy(x, dt.ones(5, 3))
    with pytest.raises(IndexError, match="target 4 is out of range for 4 classes"):
        F.cross_entropy(x, dt.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(IndexError, match="target -1 is out of range"):
        F.cross_entropy(x, dt.tensor([0, 1, 2, 3, -1]))
    with pytest.raises(ValueError, match=r"reduction must be one of .*'avg'"):
        F.cross_entropy(x, dt.tensor(data["t"]), reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be in .* 1.5"):
        F.cross_entropy(x, dt.tensor(data["t"]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight has shape \(3,\).*\(4,\)"):
        F.cross_entropy(x, dt.tensor(data["t"]), weight=dt.ones(3))


CE_TORCH_CASES = [
    *itertools.product(["t", "p", "t3", "p3"], CE_OPTIONS),
    ("t", {"ignore_index": 1, "weight": True}),
]


def test_cross_entropy_matches_torch(torch, data, same):
    tnn = torch.nn.functional
    for target, options in CE_TORCH_CASES:
        x = data["x3"] if target.endswith("3") else data["x"]
        t = data[target]
        if options.get("ignore_index") == 1:
            t = np.array([1, 3, 1, 0, 2])
        kwargs = ce_kwargs(options, data["w"])
        tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
        to = tnn.cross_entropy(
            tx,
            torch.tensor(t),
            **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()},
        )
        do = F.cross_entropy(dx, dt.tensor(t), **{k: wrap(v) for k, v in kwargs.items()})
        same(do, to)
        g = np.random.default_rng(1).standard_normal(to.shape)
        to.backward(torch.tensor(g))
        do.backward(dt.tensor(g))
        same(dx.grad, tx.grad)


# ---- nll_loss ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight": True},
        {"reduction": "sum"},
        {"reduction": "none", "weight": True},
        {"ignore_index": 2},
    ],
)
@pytest.mark.parametrize("nd", [False, True])
def test_nll_loss_values_and_gradcheck(kwargs, nd, data):
    kwargs = ce_kwargs(kwargs, data["w"])
    x = log_softmax(np.moveaxis(data["x3"], 1, -1)) if nd else log_softmax(data["x"])
    x = np.moveaxis(x, -1, 1) if nd else x
    t = data["t3"] if nd else data["t"]
    if "ignore_index" in kwargs:
        t = np.where(t == -100, kwargs["ignore_index"], t)
    expected = nll_ref(x, t, **kwargs)
    dkw = {k: wrap(v) for k, v in kwargs.items()}
    np.testing.assert_allclose(npy(F.nll_loss(leaf(x), dt.tensor(t), **dkw)), expected, rtol=1e-12)
    assert gradcheck(lambda a: F.nll_loss(a, dt.tensor(t), **dkw), [leaf(x)])


def test_nll_loss_rejects_bad_targets():
    logp = dt.zeros(3, 4)
    with pytest.raises(IndexError, match="target -1 is out of range for 4 classes"):
        F.nll_loss(logp, dt.tensor([0, -1, 2]))
    with pytest.raises(IndexError, match="target 4"):
        F.nll_loss(logp, dt.tensor([0, 4, 2]))
    with pytest.raises(TypeError, match=r"integers.*float32"):
        F.nll_loss(logp, dt.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target of shape \(2,\).*\(3, 4\)"):
        F.nll_loss(logp, dt.tensor([0, 1]))
    with pytest.raises(ValueError, match="'mean_all'"):
        F.nll_loss(logp, dt.tensor([0, 1, 2]), reduction="mean_all")


def test_nll_loss_matches_torch(torch, data, same):
    x = np.moveaxis(log_softmax(np.moveaxis(data["x3"], 1, -1)), -1, 1)
    for kwargs in (
        {},
        {"weight": data["w"]},
        {"reduction": "none"},
        {"reduction": "sum", "ignore_index": 2},
    ):
        t = np.where(data["t3"] == -100, kwargs.get("ignore_index", -100), data["t3"])
        tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
        tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        to = torch.nn.functional.nll_loss(tx, torch.tensor(t), **tkw)
        do = F.nll_loss(dx, dt.tensor(t), **{k: wrap(v) for k, v in kwargs.items()})
        same(do, to)
        g = np.ones(to.shape)
        to.backward(torch.tensor(g))
        do.backward(dt.tensor(g))
        same(dx.grad, tx.grad)


# ---- regression losses ---------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_l1_values_and_gradcheck(reduction, rng):
    x = rng.standard_normal((3, 4))
    y = x + rng.uniform(0.1, 1.0, (3, 4)) * rng.choice([-1, 1], (3, 4))  # no kink of |x - y|
    for fn, ref in ((F.mse_loss, (x - y) ** 2), (F.l1_loss, np.abs(x - y))):
        got = fn(leaf(x), leaf(y), reduction=reduction)
        np.testing.assert_allclose(npy(got), reduce(ref, reduction, ref.size), rtol=1e-12)
        assert gradcheck(lambda a, b, f=fn: f(a, b, reduction=reduction), [leaf(x), leaf(y)])


def test_mse_and_l1_of_float16_do_not_overflow():
    # 4096 errors of 20: the sums (1.6e6 and 81920) overflow float16, the means do not.
    x = dt.full((64, 64), 20.0, dtype=dt.float16, requires_grad=True)
    y = dt.zeros((64, 64), dtype=dt.float16)
    for fn, expected, slope in ((F.mse_loss, 400.0, 2 * 20 / 4096), (F.l1_loss, 20.0, 1 / 4096)):
        loss = fn(x, y)
        assert loss.dtype == dt.float16 and loss.item() == expected
        loss.backward()
        assert x.grad.dtype == dt.float16
        np.testing.assert_allclose(x.grad.numpy(), slope, rtol=1e-3)
        x.grad = None


def test_regression_losses_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) and target shape \(3,\) differ"):
        F.mse_loss(dt.ones(2, 3), dt.ones(3))
    with pytest.raises(ValueError, match=r"l1_loss: input shape \(2,\)"):
        F.l1_loss(dt.ones(2), dt.ones(2, 1))
    for fn in (F.mse_loss, F.l1_loss):
        with pytest.raises(ValueError, match="'average'"):
            fn(dt.ones(2), dt.ones(2), reduction="average")


def test_regression_losses_match_torch(torch, rng, same):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for name in ("mse_loss", "l1_loss"):
        for reduction in ("mean", "sum", "none"):
            tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
            to = getattr(torch.nn.functional, name)(tx, torch.tensor(y), reduction=reduction)
            do = getattr(F, name)(dx, dt.tensor(y), reduction=reduction)
            same(do, to)
            to.sum().backward()
            do.sum().backward()
            same(dx.grad, tx.grad)


# ---- binary_cross_entropy_with_logits ------------------------------------------------------
BCE_OPTIONS = [
    {},
    {"weight": True},
    {"pos_weight": True},
    {"weight": True, "pos_weight": True, "reduction": "sum"},
    {"reduction": "none", "pos_weight": True},
]


def bce_kwargs(options, rng):
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = rng.uniform(0.5, 2.0, (5, 4))
    if kwargs.pop("pos_weight", False):
        kwargs["pos_weight"] = rng.uniform(0.5, 3.0, 4)  # one per class, broadcast over rows
    return kwargs


@pytest.mark.parametrize("options", BCE_OPTIONS)
def test_bce_with_logits_values_and_gradcheck(options, rng):
    x, y = rng.standard_normal((5, 4)) * 3, rng.uniform(0, 1, (5, 4))
    kwargs = bce_kwargs(options, rng)
    dkw = {k: wrap(v) for k, v in kwargs.items()}
    got = F.binary_cross_entropy_with_logits(leaf(x), dt.tensor(y), **dkw)
    np.testing.assert_allclose(npy(got), bce_ref(x, y, **kwargs), rtol=1e-10)
    fn = lambda a, b: F.binary_cross_entropy_with_logits(a, b, **dkw)
    assert gradcheck(fn, [leaf(x), leaf(y)])  # differentiable in the target too


def test_bce_with_logits_is_stable_for_large_logits():
    x = dt.tensor([-1000.0, 1000.0, -1000.0, 1000.0])
    y = dt.tensor([0.0, 1.0, 1.0, 0.0])
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(npy(loss), [0.0, 0.0, 1000.0, 1000.0])
    x.requires_grad_(True)
    F.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    np.testing.assert_allclose(npy(x.grad), [0.0, 0.0, -1.0, 1.0])


def test_bce_with_logits_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"input shape \(2, 2\) and target shape \(2,\)"):
        F.binary_cross_entropy_with_logits(dt.ones(2, 2), dt.ones(2))
    with pytest.raises(ValueError, match="'mean '"):
        F.binary_cross_entropy_with_logits(dt.ones(2), dt.ones(2), reduction="mean ")


def test_bce_with_logits_matches_torch(torch, rng, same):
    for options in BCE_OPTIONS:
        x, y = rng.standard_normal((5, 4)) * 3, rng.uniform(0, 1, (5, 4))
        kwargs = bce_kwargs(options, rng)
        tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
        dx, dy = leaf(x), leaf(y)
        tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        to = torch.nn.functional.binary_cross_entropy_with_logits(tx, ty, **tkw)
        do = F.binary_cross_entropy_with_logits(dx, dy, **{k: wrap(v) for k, v in kwargs.items()})
        same(do, to)
        to.sum().backward()
        do.sum().backward()
        same(dx.grad, tx.grad)
        same(dy.grad, ty.grad)


# ---- loss modules --------------------------------------------------------------------------
def test_loss_modules_equal_their_functions(data, rng):
    x, t, p, w = (dt.tensor(data[k]) for k in ("x", "t", "p", "w"))
    y = dt.tensor(rng.standard_normal((5, 4)))
    pairs = [
        (
            nn.CrossEntropyLoss(w, label_smoothing=0.1)(x, t),
            F.cross_entropy(x, t, w, label_smoothing=0.1),
        ),
        (nn.CrossEntropyLoss(reduction="sum")(x, p), F.cross_entropy(x, p, reduction="sum")),
        (nn.NLLLoss(w, reduction="sum")(x, t), F.nll_loss(x, t, w, reduction="sum")),
        (nn.MSELoss()(x, y), F.mse_loss(x, y)),
        (nn.L1Loss(reduction="none")(x, y), F.l1_loss(x, y, reduction="none")),
        (
            nn.BCEWithLogitsLoss(pos_weight=w)(x, p),
            F.binary_cross_entropy_with_logits(x, p, pos_weight=w),
        ),
    ]
    for got, expected in pairs:
        np.testing.assert_array_equal(npy(got), npy(expected))


def test_loss_module_state_and_validation():
    loss = nn.CrossEntropyLoss(weight=dt.ones(3))
    assert list(loss.state_dict()) == ["weight"] and list(loss.parameters()) == []
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    assert list(nn.BCEWithLogitsLoss(pos_weight=dt.ones(2)).state_dict()) == ["pos_weight"]
    assert repr(nn.NLLLoss(reduction="sum")) == "NLLLoss()"  # PyTorch shows no arguments
    with pytest.raises(ValueError, match="'batchmean'"):
        nn.MSELoss(reduction="batchmean")
    loss.double()
    assert loss.weight.dtype == dt.float64


def test_loss_modules_match_torch(torch, data, same):
    x, t = data["x"], data["t"]
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(data["w"]), label_smoothing=0.2)
    ours = nn.CrossEntropyLoss(weight=dt.tensor(data["w"]), label_smoothing=0.2)
    same(ours(dt.tensor(x), dt.tensor(t)), theirs(torch.tensor(x), torch.tensor(t)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
