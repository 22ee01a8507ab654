"""What Conv2d / ConvNd keep from forward to backward: the im2col columns only for a weight
gradient and only when small (conv.py's RECOMPUTE_BYTES); otherwise the input, from which
backward copies the columns again, with the same gradients."""

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain._tensor.nn.functional import conv


def leaf(array, grad=True) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


CASES = {
    "conv2d": (F.conv2d, (2, 4, 6, 5), (6, 2, 3, 3), dict(stride=(1, 2), padding=1, groups=2)),
    "conv2d channel-last": (F.conv2d, (2, 16, 5, 4), (8, 16, 3, 2), dict(padding=(1, 0))),
    "conv3d": (
        F.conv3d,
        (2, 4, 4, 3, 5),
        (6, 2, 3, 2, 3),
        dict(padding=1, dilation=(1, 1, 2), groups=2),
    ),
}


def run(name, rng_seed=0, weight_grad=True):
    fn, x_shape, w_shape, options = CASES[name]
    rng = np.random.default_rng(rng_seed)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, (w_shape[0],)))
    leaves = [leaf(x), leaf(w, weight_grad), leaf(b)]
    out = fn(*leaves, **options)
    node = out.grad_fn
    saved = (node.cols is not None, node.x is not None)
    direction = dt.tensor(rng.standard_normal(out.shape))
    (out * direction).sum().backward(retain_graph=True)
    first = [t.grad.numpy().copy() if t.grad is not None else None for t in leaves]
    (out * direction).sum().backward()  # a second pass recomputes the columns again
    second = [t.grad.numpy() if t.grad is not None else None for t in leaves]
    return saved, first, second


@pytest.mark.parametrize("name", sorted(CASES))
def test_large_columns_are_recomputed_with_the_same_gradients(monkeypatch, name):
    kept, first, second = run(name)
    assert kept == (True, False)  # small columns: kept, as before
    monkeypatch.setattr(conv, "RECOMPUTE_BYTES", 0)
    monkeypatch.setattr(conv, "RECOMPUTE_RATIO", 0)
    saved, again, twice = run(name)
    assert saved == (False, True)  # the input instead
    for a, b in zip(again, first):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    for a, b in zip(twice, again):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-13, atol=1e-13)
    for a, b in zip(second, first):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_columns_kept_without_a_weight_gradient(name):
    saved, first, _ = run(name, weight_grad=False)
    assert saved == (False, False)
    assert first[1] is None and first[0] is not None and first[2] is not None


def test_keeps_columns_rule(monkeypatch):
    x, cols = np.zeros(1000), np.zeros(9000)  # 8 and 72 kB
    assert not conv.keeps_columns(cols, x, weight_grad=False)
    assert conv.keeps_columns(cols, x, weight_grad=True)  # under RECOMPUTE_BYTES
    monkeypatch.setattr(conv, "RECOMPUTE_BYTES", 50_000)
    assert not conv.keeps_columns(cols, x, weight_grad=True)  # > 50 kB and > 4x the input
    monkeypatch.setattr(conv, "RECOMPUTE_RATIO", 10)
    assert conv.keeps_columns(cols, x, weight_grad=True)  # within 10x the input
