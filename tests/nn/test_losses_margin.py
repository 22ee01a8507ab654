"""Margin, embedding and likelihood losses: numpy references, finite differences in float64,
argument checks, and PyTorch (where installed) over reductions and dtypes."""

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck

REDUCTIONS = ["mean", "sum", "none"]


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    a, b, c = (rng.normal(size=(5, 4)) for _ in range(3))
    y = np.array([1.0, -1.0, 1.0, -1.0, -1.0])
    return a, b, c, y


def _softplus(x):
    return np.logaddexp(0, x)


def _multilabel_margin_ref(x, t):
    out = []
    for row, targets in zip(x, t):
        listed = []
        for j in targets:
            if j == -1:
                break
            listed.append(j)
        total = 0.0
        for j in listed:
            for i in range(len(row)):
                if i not in listed:
                    total += max(0.0, 1 - (row[j] - row[i]))
        out.append(total / len(row))
    return np.array(out)


def _multi_margin_ref(x, t, p, margin, w):
    out = []
    for row, y in zip(x, t):
        total = sum(
            max(0.0, margin - row[y] + row[i]) ** p * w[y] for i in range(len(row)) if i != y
        )
        out.append(total / len(row))
    return np.array(out)


TARGETS = np.array([[3, 0, -1, 1], [0, 1, 2, 3], [1, -1, 2, 2], [-1, 1, 1, 1], [2, 2, -1, 0]])
CLASSES = np.array([0, 3, 1, 2, 2])
WEIGHT = np.array([0.5, 1.0, 2.0, 1.5])


def cases(a, b, c, y):
    """name -> (ours(a, b, c) on tensors, numpy reference of the unreduced loss)."""
    cos = (a * b).sum(1) / np.sqrt(((a * a).sum(1) + 1e-12) * ((b * b).sum(1) + 1e-12))
    d_pos = np.linalg.norm(a - b + 1e-6, axis=1)
    d_neg = np.linalg.norm(a - c + 1e-6, axis=1)
    return {
        "margin_ranking": (
            lambda r, x, z, w: F.margin_ranking_loss(
                x[:, 0], z[:, 0], dt.tensor(y), 0.3, reduction=r
            ),
            np.maximum(0, -y * (a[:, 0] - c[:, 0]) + 0.3),
        ),
        "hinge_embedding": (
            lambda r, x, z, w: F.hinge_embedding_loss(x[:, 0], dt.tensor(y), 0.5, reduction=r),
            np.where(y == 1, a[:, 0], np.maximum(0, 0.5 - a[:, 0])),
        ),
        "cosine_embedding": (
            lambda r, x, z, w: F.cosine_embedding_loss(x, w, dt.tensor(y), 0.2, reduction=r),
            np.where(y == 1, 1 - cos, np.maximum(0, cos - 0.2)),
        ),
        "triplet_margin": (
            lambda r, x, z, w: F.triplet_margin_loss(x, w, z, reduction=r),
            np.maximum(0, 1 + d_pos - d_neg),
        ),
        "soft_margin": (
            lambda r, x, z, w: F.soft_margin_loss(x, dt.tensor(np.sign(b)), reduction=r),
            _softplus(-a * np.sign(b)),
        ),
        "multilabel_soft_margin": (
            lambda r, x, z, w: F.multilabel_soft_margin_loss(
                x, dt.tensor((b > 0) * 1.0), dt.tensor(WEIGHT), reduction=r
            ),
            (WEIGHT * ((b > 0) * _softplus(-a) + (b <= 0) * _softplus(a))).mean(1),
        ),
        "multilabel_margin": (
            lambda r, x, z, w: F.multilabel_margin_loss(x, dt.tensor(TARGETS), reduction=r),
            _multilabel_margin_ref(a, TARGETS),
        ),
        "multi_margin_p1": (
            lambda r, x, z, w: F.multi_margin_loss(
                x, dt.tensor(CLASSES), 1, 0.7, dt.tensor(WEIGHT), reduction=r
            ),
            _multi_margin_ref(a, CLASSES, 1, 0.7, WEIGHT),
        ),
        "multi_margin_p2": (
            lambda r, x, z, w: F.multi_margin_loss(x, dt.tensor(CLASSES), 2, reduction=r),
            _multi_margin_ref(a, CLASSES, 2, 1.0, np.ones(4)),
        ),
        "poisson_log": (
            lambda r, x, z, w: F.poisson_nll_loss(x, dt.tensor(np.abs(b * 3)), reduction=r),
            np.exp(a) - np.abs(b * 3) * a,
        ),
        "gaussian": (
            lambda r, x, z, w: F.gaussian_nll_loss(x, dt.tensor(b), z * z + 0.1, reduction=r),
            0.5 * (np.log(c * c + 0.1) + (a - b) ** 2 / (c * c + 0.1)),
        ),
    }


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name",
    [
        "margin_ranking",
        "hinge_embedding",
        "cosine_embedding",
        "triplet_margin",
        "soft_margin",
        "multilabel_soft_margin",
        "multilabel_margin",
        "multi_margin_p1",
        "multi_margin_p2",
        "poisson_log",
        "gaussian",
    ],
)
def test_values_and_gradients(data, name, reduction):
    a, b, c, y = data
    ours, reference = cases(a, b, c, y)[name]
    got = ours(reduction, leaf(a), leaf(c), leaf(b))
    np.testing.assert_allclose(got.detach().numpy(), reduce(reference, reduction), rtol=1e-10)
    assert gradcheck(lambda x, z, w: ours(reduction, x, z, w), [leaf(a), leaf(c), leaf(b)])


def test_poisson_full_and_rates():
    x = np.array([0.5, 1.5, 2.0, 3.0])
    t = np.array([0.0, 1.0, 2.0, 5.0])
    stirling = np.where(
        t > 1, t * np.log(np.maximum(t, 1)) - t + 0.5 * np.log(2 * np.pi * np.maximum(t, 1)), 0
    )
    got = F.poisson_nll_loss(leaf(x), dt.tensor(t), log_input=False, full=True, reduction="none")
    np.testing.assert_allclose(got.detach().numpy(), x - t * np.log(x + 1e-8) + stirling)
    assert gradcheck(lambda v: F.poisson_nll_loss(v, dt.tensor(t), log_input=False), [leaf(x)])
    with pytest.raises(ValueError, match="is not valid"):
        F.poisson_nll_loss(leaf(x), dt.tensor(t), reduction="avg")


def test_gaussian_shapes_clamp_and_checks():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    var = rng.uniform(0.5, 2, size=(3,))
    got = F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), dt.tensor(var), full=True)
    v = var[:, None]
    expected = (0.5 * (np.log(v) + (x - t) ** 2 / v) + 0.5 * math.log(2 * math.pi)).mean()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    shared = F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), dt.tensor(var[:, None]))
    scalar = F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), 0.7, reduction="none")
    np.testing.assert_allclose(scalar.numpy(), 0.5 * (np.log(0.7) + (x - t) ** 2 / 0.7))
    assert shared.shape == ()
    small = leaf(np.full((3, 4), 1e-9))
    F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), small, reduction="sum").backward()
    # the clamp at eps passes the gradient through: d/dv at v = eps
    expected_grad = 0.5 * (1 / 1e-6 - (x - t) ** 2 / 1e-12)
    np.testing.assert_allclose(small.grad.numpy(), expected_grad, rtol=1e-9)
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), dt.tensor(-np.ones((3, 4))))
    with pytest.raises(ValueError, match="incorrect size"):
        F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), dt.ones(4, 3))
    with pytest.raises(ValueError, match="is not valid"):
        F.gaussian_nll_loss(dt.tensor(x), dt.tensor(t), dt.ones(3, 4), reduction="avg")


def test_argument_checks():
    x = dt.ones(3, 4)
    with pytest.raises(RuntimeError, match="same dimension"):
        F.margin_ranking_loss(dt.ones(3), dt.ones(3), dt.ones(3, 1))
    with pytest.raises(RuntimeError, match="same size"):
        F.cosine_embedding_loss(x, dt.ones(3, 5), dt.ones(3))
    with pytest.raises(RuntimeError, match="multi-target"):
        F.cosine_embedding_loss(x, x, dt.ones(3, 1))
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        F.triplet_margin_loss(x, x, dt.ones(4))
    with pytest.raises(ValueError, match="greater than 0"):
        F.triplet_margin_with_distance_loss(x, x, x, margin=0.0)
    with pytest.raises(ValueError, match="only p == 1 and p == 2"):
        F.multi_margin_loss(x, dt.tensor([0, 1, 2]), p=3)
    with pytest.raises(RuntimeError, match="out of range"):
        F.multi_margin_loss(x, dt.tensor([0, 1, 4]))
    with pytest.raises(RuntimeError, match="target values"):
        F.multilabel_margin_loss(x, dt.tensor(np.full((3, 4), 4)))
    with pytest.raises(RuntimeError, match="inconsistent target size"):
        F.multilabel_margin_loss(x, dt.tensor(np.zeros((3, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match="reduction"):
        nn.SoftMarginLoss(reduction="avg")
    with pytest.raises(ValueError, match="greater than 0"):
        nn.TripletMarginWithDistanceLoss(margin=-1.0)


def test_triplet_with_custom_distance_and_swap(data):
    a, b, c, _ = data

    def l1(u, v):
        return (u - v).abs().sum(-1)

    got = F.triplet_margin_with_distance_loss(
        dt.tensor(a), dt.tensor(b), dt.tensor(c), distance_function=l1, swap=True,
        reduction="none",
    )  # fmt: skip
    d_pos = np.abs(a - b).sum(-1)
    d_neg = np.minimum(np.abs(a - c).sum(-1), np.abs(b - c).sum(-1))
    np.testing.assert_allclose(got.numpy(), np.maximum(0, 1 + d_pos - d_neg), rtol=1e-12)
    module = nn.TripletMarginWithDistanceLoss(distance_function=l1, swap=True, reduction="none")
    np.testing.assert_allclose(module(dt.tensor(a), dt.tensor(b), dt.tensor(c)).numpy(), got)


def test_unbatched_class_losses(data):
    a = data[0]
    one = F.multi_margin_loss(dt.tensor(a[1]), dt.tensor(np.int64(3)), reduction="none")
    batch = F.multi_margin_loss(dt.tensor(a), dt.tensor(CLASSES), reduction="none")
    assert one.shape == () and np.isclose(one.numpy(), batch.numpy()[1])
    one = F.multilabel_margin_loss(dt.tensor(a[0]), dt.tensor(TARGETS[0]), reduction="none")
    assert one.shape == () and np.isclose(one.numpy(), _multilabel_margin_ref(a, TARGETS)[0])


TORCH_CALLS = {
    "MarginRankingLoss": ({"margin": 0.3}, "pair_y"),
    "HingeEmbeddingLoss": ({"margin": 0.5}, "one_y"),
    "CosineEmbeddingLoss": ({"margin": 0.2}, "pair_y"),
    "TripletMarginLoss": ({"margin": 0.8, "p": 1.5, "swap": True}, "triple"),
    "TripletMarginWithDistanceLoss": ({"swap": True}, "triple"),
    "SoftMarginLoss": ({}, "one_sign"),
    "MultiLabelSoftMarginLoss": ({"weight": WEIGHT}, "one_binary"),
    "MultiLabelMarginLoss": ({}, "one_labels"),
    "MultiMarginLoss": ({"p": 2, "margin": 0.6, "weight": WEIGHT}, "one_class"),
    "PoissonNLLLoss": ({"full": True}, "one_count"),
    "GaussianNLLLoss": ({"full": True}, "one_var"),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(TORCH_CALLS))
def test_modules_match_torch(torch, data, name, dtype, reduction):
    a, b, c, y = (v.astype(dtype) for v in data)
    kwargs, form = TORCH_CALLS[name]

    def build(lib, wrap_tensor):
        options = {
            k: (wrap_tensor(v.astype(dtype)) if isinstance(v, np.ndarray) else v)
            for k, v in kwargs.items()
        }
        return getattr(lib, name)(reduction=reduction, **options)

    def args(wrap_tensor, grad):
        x = wrap_tensor(a)
        x.requires_grad_(True) if grad else None
        extra = {
            "pair_y": (wrap_tensor(c[:, 0] if name == "MarginRankingLoss" else c), wrap_tensor(y)),
            "one_y": (wrap_tensor(y[:, None] * np.ones((1, 4), dtype=dtype)),),
            "triple": (wrap_tensor(b), wrap_tensor(c)),
            "one_sign": (wrap_tensor(np.sign(b)),),
            "one_binary": (wrap_tensor((b > 0).astype(dtype)),),
            "one_labels": (wrap_tensor(TARGETS),),
            "one_class": (wrap_tensor(CLASSES),),
            "one_count": (wrap_tensor(np.abs(b * 3).round()),),
            "one_var": (wrap_tensor(b), wrap_tensor(c * c + 0.01)),
        }[form]
        if name == "MarginRankingLoss":
            x = wrap_tensor(a[:, 0])
            x.requires_grad_(True) if grad else None
        return x, extra

    x_ours, rest_ours = args(dt.tensor, True)
    x_theirs, rest_theirs = args(torch.tensor, True)
    ours = build(nn, dt.tensor)(x_ours, *rest_ours)
    theirs = build(torch.nn, torch.tensor)(x_theirs, *rest_theirs)
    tol = 2e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(x_ours.grad.numpy(), x_theirs.grad.numpy(), rtol=tol, atol=tol)
    assert repr(build(nn, dt.tensor)) == repr(build(torch.nn, torch.tensor))
    ours_keys = list(build(nn, dt.tensor).state_dict())
    assert ours_keys == list(build(torch.nn, torch.tensor).state_dict())


def test_legacy_keywords_warn():
    with pytest.warns(UserWarning, match="reduction='sum'"):
        loss = F.soft_margin_loss(dt.ones(3), dt.ones(3), size_average=False)
    np.testing.assert_allclose(loss.numpy(), 3 * np.log1p(np.exp(-1)), rtol=1e-6)
    with pytest.warns(UserWarning, match="reduction='none'"):
        module = nn.MarginRankingLoss(reduce=False)
    assert module.reduction == "none"


def test_poisson_full_gradient_in_target():
    # The Stirling term depends on the target, so its gradient does too (t > 1 only).
    t, x = np.array([0.5, 2.0, 3.0]), np.array([0.1, 0.2, 0.3])
    target, rate = leaf(t), leaf(x)
    F.poisson_nll_loss(rate, target, full=True, reduction="sum").backward()
    stirling_grad = np.where(t > 1, np.log(t) + 0.5 / t, 0.0)
    np.testing.assert_allclose(target.grad.numpy(), -x + stirling_grad, rtol=1e-12)
    t2 = np.array([0.0, 1.5, 2.5, 4.0])
    assert gradcheck(lambda v: F.poisson_nll_loss(dt.tensor(np.ones(4)), v, full=True), [leaf(t2)])


def test_gaussian_float_var_with_infinite_input():
    got = F.gaussian_nll_loss(
        dt.tensor([np.inf, -np.inf, 0.0]), dt.tensor([0.0, 0.0, 0.0]), 1.0, reduction="none"
    )
    np.testing.assert_array_equal(got.numpy(), [np.inf, np.inf, 0.0])


def test_triplet_margin_loss_rejects_nonpositive_margin():
    x = dt.ones(3, 4)
    for margin in (0.0, -1.0):
        with pytest.raises(ValueError, match="greater than 0"):
            F.triplet_margin_loss(x, x, x, margin=margin)


def test_target_shapes_pytorch_accepts(data):
    a = data[0]
    unbatched = F.multi_margin_loss(dt.tensor(a[1]), dt.tensor([3]), reduction="none")
    reference = F.multi_margin_loss(dt.tensor(a[1]), dt.tensor(np.int64(3)), reduction="none")
    assert unbatched.shape == () and np.isclose(unbatched.numpy(), reference.numpy())
    one_row = F.multi_margin_loss(dt.tensor(a[1:2]), dt.tensor(np.int64(3)), reduction="none")
    np.testing.assert_allclose(one_row.numpy(), [reference.numpy()])
    with pytest.raises(RuntimeError, match="inconsistent target size"):
        F.multi_margin_loss(dt.tensor(a[1]), dt.tensor([[3]]))
    x1, x2 = dt.tensor(a), dt.tensor(data[1])
    broadcast = F.cosine_embedding_loss(x1, x2, dt.tensor([-1.0]), reduction="none")
    full = F.cosine_embedding_loss(x1, x2, dt.tensor(-np.ones(5)), reduction="none")
    np.testing.assert_allclose(broadcast.numpy(), full.numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError, match="rows"):
        F.cosine_embedding_loss(x1, x2, dt.tensor([1.0, -1.0]))


def test_fixed_cases_match_torch(torch, data):
    tf = torch.nn.functional
    t, x = np.array([0.5, 2.0, 3.0]), np.array([0.1, 0.2, 0.3])
    target = torch.tensor(t, requires_grad=True)
    tf.poisson_nll_loss(torch.tensor(x), target, full=True, reduction="sum").backward()
    ours = leaf(t)
    F.poisson_nll_loss(dt.tensor(x), ours, full=True, reduction="sum").backward()
    np.testing.assert_allclose(ours.grad.numpy(), target.grad.numpy(), rtol=1e-12)
    inf = np.array([np.inf, 0.0])
    theirs = tf.gaussian_nll_loss(torch.tensor(inf), torch.zeros(2), 1.0, reduction="none")
    got = F.gaussian_nll_loss(dt.tensor(inf), dt.zeros(2), 1.0, reduction="none")
    np.testing.assert_array_equal(got.numpy(), theirs.numpy())
    a, b = data[0], data[1]
    theirs = tf.multi_margin_loss(torch.tensor(a[1]), torch.tensor([3]))
    np.testing.assert_allclose(
        F.multi_margin_loss(dt.tensor(a[1]), dt.tensor([3])).numpy(), theirs.numpy(), rtol=1e-12
    )
    theirs = tf.cosine_embedding_loss(
        torch.tensor(a), torch.tensor(b), torch.tensor([-1.0]), reduction="none"
    )
    got = F.cosine_embedding_loss(dt.tensor(a), dt.tensor(b), dt.tensor([-1.0]), reduction="none")
    np.testing.assert_allclose(got.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="greater than 0"):
        tf.triplet_margin_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), margin=0.0)
