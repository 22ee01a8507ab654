"""binary_cross_entropy, smooth_l1_loss, huber_loss, kl_div and the legacy
``size_average`` / ``reduce`` keywords: numpy references, finite differences, PyTorch."""

import warnings

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.fixture
def pair(rng):
    p = rng.uniform(0.05, 0.95, size=(4, 5))
    return p, rng.uniform(0, 1, size=(4, 5)), rng.uniform(0.5, 2, size=5)


# ---- binary_cross_entropy ------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_values_and_gradcheck(pair, reduction):
    p, t, w = pair
    loss = -w * (t * np.log(p) + (1 - t) * np.log(1 - p))
    got = F.binary_cross_entropy(leaf(p), dt.tensor(t), dt.tensor(w), reduction=reduction)
    np.testing.assert_allclose(got.detach().numpy(), reduce(loss, reduction), rtol=1e-12)
    fn = lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction)
    assert gradcheck(fn, [leaf(p), leaf(t)])  # the target's gradient too
    assert gradcheck(lambda a: F.binary_cross_entropy(a, dt.tensor(t), dt.tensor(w)), [leaf(p)])


def test_bce_clamps_its_logs_at_minus_100():
    p = leaf([0.0, 1.0, 0.0])
    loss = F.binary_cross_entropy(p, dt.tensor([1.0, 0.0, 0.0]), reduction="none")
    np.testing.assert_array_equal(loss.detach().numpy(), [100.0, 100.0, 0.0])
    loss.sum().backward()
    assert np.isfinite(p.grad.numpy()).all()  # 1/max(p(1-p), 1e-12), not 1/0


def test_bce_checks_its_input():
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(dt.tensor([1.5]), dt.tensor([1.0]))
    with pytest.raises(ValueError, match="target size"):
        F.binary_cross_entropy(dt.tensor([0.5]), dt.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.binary_cross_entropy(dt.tensor([[0.5, 0.5]]), dt.tensor([[1.0, 0.0]]), dt.ones(3))


# ---- smooth_l1 / huber ---------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smooth_l1_and_huber(rng, beta, reduction):
    x, y = rng.standard_normal((3, 7)) * 2, rng.standard_normal((3, 7))
    d = np.abs(x - y)
    smooth = d if beta == 0 else np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    got = F.smooth_l1_loss(leaf(x), leaf(y), reduction=reduction, beta=beta)
    np.testing.assert_allclose(got.detach().numpy(), reduce(smooth, reduction), rtol=1e-12)
    assert gradcheck(lambda a, b: F.smooth_l1_loss(a, b, beta=beta), [leaf(x), leaf(y)])
    if beta:
        huber = np.where(d < beta, 0.5 * d * d, beta * (d - 0.5 * beta))
        got = F.huber_loss(leaf(x), leaf(y), reduction=reduction, delta=beta)
        np.testing.assert_allclose(got.detach().numpy(), reduce(huber, reduction), rtol=1e-12)
        assert gradcheck(lambda a, b: F.huber_loss(a, b, delta=beta), [leaf(x), leaf(y)])


def test_smooth_l1_and_huber_check_their_arguments():
    with pytest.raises(ValueError, match="beta=-1"):
        F.smooth_l1_loss(dt.ones(2), dt.ones(2), beta=-1)
    with pytest.raises(ValueError, match="delta=0"):
        F.huber_loss(dt.ones(2), dt.ones(2), delta=0)
    with pytest.raises(ValueError, match="shape"):
        F.huber_loss(dt.ones(2), dt.ones(3))


# ---- kl_div --------------------------------------------------------------------------------
def test_kl_div(rng):
    logits, other = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    q = np.exp(other) / np.exp(other).sum(1, keepdims=True)
    q[0, 0] = 0.0  # xlogy: contributes 0
    pointwise = np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0) - q * log_p
    got = F.kl_div(leaf(log_p), dt.tensor(q), reduction="batchmean")
    np.testing.assert_allclose(got.detach().numpy(), pointwise.sum() / 4, rtol=1e-12)
    for reduction in ("sum", "none"):
        got = F.kl_div(leaf(log_p), dt.tensor(q), reduction=reduction)
        np.testing.assert_allclose(got.detach().numpy(), reduce(pointwise, reduction))
    with pytest.warns(UserWarning, match="batchmean"):
        got = F.kl_div(leaf(log_p), dt.tensor(q))
    np.testing.assert_allclose(got.detach().numpy(), pointwise.mean(), rtol=1e-12)
    fn = lambda a: F.kl_div(a, dt.tensor(q), reduction="batchmean")
    assert gradcheck(fn, [leaf(log_p)])
    log_q = np.log(q + 0.1)
    got = F.kl_div(leaf(log_p), leaf(log_q), reduction="sum", log_target=True)
    expected = (np.exp(log_q) * (log_q - log_p)).sum()
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    fn = lambda a, b: F.kl_div(a, b, reduction="sum", log_target=True)
    assert gradcheck(fn, [leaf(log_p), leaf(log_q)])
    fn = lambda a, b: F.kl_div(a, b, reduction="sum")
    assert gradcheck(fn, [leaf(log_p), leaf(q + 0.1)])
    with pytest.raises(ValueError, match="reduction"):
        F.kl_div(leaf(log_p), dt.tensor(q), reduction="avg")


# ---- modules and the legacy keywords -------------------------------------------------------
def test_new_loss_modules_equal_their_functions(pair):
    p, t, w = (dt.tensor(a) for a in pair)
    pairs = [
        (nn.BCELoss(w)(p, t), F.binary_cross_entropy(p, t, w)),
        (nn.BCELoss(reduction="sum")(p, t), F.binary_cross_entropy(p, t, reduction="sum")),
        (nn.SmoothL1Loss(beta=0.3)(p, t), F.smooth_l1_loss(p, t, beta=0.3)),
        (nn.HuberLoss("sum", 0.3)(p, t), F.huber_loss(p, t, "sum", 0.3)),
        (
            nn.KLDivLoss(reduction="batchmean", log_target=True)(p, t),
            F.kl_div(p, t, reduction="batchmean", log_target=True),
        ),
    ]
    for got, expected in pairs:
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert list(nn.BCELoss(w).state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="reduction"):
        nn.SmoothL1Loss(reduction="batchmean")


@pytest.mark.parametrize(
    "size_average,reduce,expected",
    [(None, None, None), (False, None, "sum"), (None, False, "none"), (True, True, "mean")],
)
def test_legacy_reduction_keywords(size_average, reduce, expected):
    kwargs = {"size_average": size_average, "reduce": reduce}
    x, y = dt.tensor([[1.0, 2.0], [3.0, 5.0]]), dt.tensor([[0.0, 2.0], [1.0, 1.0]])
    if expected is None:  # nothing given: no warning, the reduction stands
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert nn.MSELoss(reduction="sum", **kwargs).reduction == "sum"
        return
    for make in (nn.MSELoss, nn.L1Loss, nn.BCELoss, nn.SmoothL1Loss, nn.KLDivLoss, nn.NLLLoss):
        with pytest.warns(UserWarning, match=f"reduction='{expected}'"):
            assert make(**kwargs).reduction == expected
    with pytest.warns(UserWarning, match="deprecated"):
        assert nn.CrossEntropyLoss(None, size_average, -100, reduce).reduction == expected
    with pytest.warns(UserWarning, match="deprecated"):
        got = F.mse_loss(x, y, **kwargs)
    np.testing.assert_array_equal(got.numpy(), F.mse_loss(x, y, reduction=expected).numpy())
    with pytest.warns(UserWarning, match="deprecated"):
        got = F.cross_entropy(x, dt.tensor([0, 1]), **kwargs)
    expected_ce = F.cross_entropy(x, dt.tensor([0, 1]), reduction=expected)
    np.testing.assert_array_equal(got.numpy(), expected_ce.numpy())


# ---- against PyTorch -----------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_losses_match_torch(torch, same, rng, reduction):
    tf = torch.nn.functional
    p = rng.uniform(0, 1, size=(3, 4))
    p[0, :2] = [0.0, 1.0]
    t, w = rng.uniform(0, 1, size=(3, 4)), rng.uniform(0, 2, size=4)
    x, y = rng.standard_normal((3, 4)) * 2, rng.standard_normal((3, 4))
    cases = [
        ("binary_cross_entropy", (p, t), {"weight": w}),
        ("smooth_l1_loss", (x, y), {"beta": 0.7}),
        ("smooth_l1_loss", (x, y), {"beta": 0.0}),
        ("huber_loss", (x, y), {"delta": 1.3}),
        ("kl_div", (x, t), {}),
        ("kl_div", (x, y), {"log_target": True}),
    ]
    for name, (a, b), kwargs in cases:
        da, db = leaf(a), leaf(b)
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        dk = {k: dt.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        tk = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = getattr(F, name)(da, db, reduction=reduction, **dk)
            theirs = getattr(tf, name)(ta, tb, reduction=reduction, **tk)
        same(ours, theirs, atol=1e-12)
        ours.sum().backward()
        theirs.sum().backward()
        # BCE's gradient at p = 0 or 1 is ~1e12 (PyTorch's epsilon is 1e-12 in float32)
        same(da.grad, ta.grad, atol=1e-9, rtol=1e-7)
        if name != "binary_cross_entropy":  # PyTorch's target gradient there is unclamped
            same(db.grad, tb.grad, atol=1e-9)


def test_batchmean_and_legacy_match_torch(torch, same, rng):
    x, t = rng.standard_normal((5, 3)), rng.uniform(0, 1, (5, 3))
    same(
        nn.KLDivLoss(reduction="batchmean")(dt.tensor(x), dt.tensor(t)),
        torch.nn.KLDivLoss(reduction="batchmean")(torch.tensor(x), torch.tensor(t)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kwargs in ({"size_average": False}, {"reduce": False}, {"size_average": True}):
            ours, theirs = nn.L1Loss(**kwargs), torch.nn.L1Loss(**kwargs)
            assert ours.reduction == theirs.reduction
            same(ours(dt.tensor(x), dt.tensor(t)), theirs(torch.tensor(x), torch.tensor(t)))
