"""conv2d and 2-D pooling: values against naive numpy loops (always) and PyTorch (when
installed), gradients against finite differences in float64, the layers' shapes, reprs and
default initialisation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from dtrain._tensor.nn.modules.conv import Conv2d
from dtrain._tensor.nn.modules.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from dtrain.autograd import gradcheck


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- naive references: explicit loops over every output element ---------------------------
def conv_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        ph, pw = (0, 0) if padding == "valid" else pair(padding)
        pads = (ph, ph, pw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for b_, oc, i, j in itertools.product(range(n), range(o), range(oh), range(ow)):
        g = oc // og
        patch = xp[
            b_,
            g * cg : (g + 1) * cg,
            i * sh : i * sh + dh * (kh - 1) + 1 : dh,
            j * sw : j * sw + dw * (kw - 1) + 1 : dw,
        ]
        out[b_, oc, i, j] = (patch * w[oc]).sum() + (0.0 if b is None else b[oc])
    return out


def pool_out(size, k, s, p, d, ceil_mode):
    span = d * (k - 1) + 1
    num = size + 2 * p - span + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool_ref(x, k, s=None, p=0, d=1, ceil_mode=False):
    """(values, flat indices h · W + w) by looping over windows, skipping out-of-range cells."""
    (kh, kw), (ph, pw), (dh, dw) = pair(k), pair(p), pair(d)
    sh, sw = pair(k if s is None else s)
    n, c, h, w = x.shape
    oh, ow = pool_out(h, kh, sh, ph, dh, ceil_mode), pool_out(w, kw, sw, pw, dw, ceil_mode)
    values, index = np.zeros((n, c, oh, ow)), np.zeros((n, c, oh, ow), dtype=np.int64)
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        best, where = -np.inf, -1
        for a, e in itertools.product(range(kh), range(kw)):
            r, q = i * sh - ph + a * dh, j * sw - pw + e * dw
            if 0 <= r < h and 0 <= q < w and x[b, ch, r, q] > best:
                best, where = x[b, ch, r, q], r * w + q
        values[b, ch, i, j], index[b, ch, i, j] = best, where
    return values, index


def avg_pool_ref(x, k, s=None, p=0, ceil_mode=False, count_include_pad=True, divisor=None):
    (kh, kw), (ph, pw) = pair(k), pair(p)
    sh, sw = pair(k if s is None else s)
    n, c, h, w = x.shape
    oh, ow = pool_out(h, kh, sh, ph, 1, ceil_mode), pool_out(w, kw, sw, pw, 1, ceil_mode)
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, q0 = i * sh - ph, j * sw - pw
        r1, q1 = min(r0 + kh, h + ph), min(q0 + kw, w + pw)
        size_with_pad = (r1 - r0) * (q1 - q0)
        r0, q0, r1, q1 = max(r0, 0), max(q0, 0), min(r1, h), min(q1, w)
        total = x[:, :, r0:r1, q0:q1].sum(axis=(2, 3))
        count = size_with_pad if count_include_pad else (r1 - r0) * (q1 - q0)
        out[:, :, i, j] = total / (divisor or count)
    return out


def adaptive_ref(x, size):
    oh, ow = pair(size)
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, r1 = (i * h) // oh, math.ceil((i + 1) * h / oh)
        q0, q1 = (j * w) // ow, math.ceil((j + 1) * w / ow)
        out[..., i, j] = x[..., r0:r1, q0:q1].mean(axis=(-2, -1))
    return out


# ---- conv2d ---------------------------------------------------------------------------------
CONV_CASES = [
    # (N, C, H, W, O, kernel, stride, padding, dilation, groups)
    (1, 1, 5, 5, 1, (3, 3), 1, 0, 1, 1),
    (2, 3, 6, 7, 4, (3, 3), 1, 1, 1, 1),
    (3, 2, 7, 6, 3, (2, 3), 2, (1, 0), 1, 1),
    (2, 4, 8, 8, 6, (3, 3), (2, 1), 1, 2, 2),
    (1, 4, 6, 6, 4, (3, 1), 1, (0, 1), (1, 2), 4),  # depthwise
    (2, 3, 6, 5, 2, (2, 2), 1, "same", 1, 1),  # even kernel: asymmetric padding
    (2, 2, 7, 7, 2, (3, 3), 1, "same", 2, 1),
    (1, 3, 5, 6, 2, (1, 1), 1, "valid", 1, 1),
    (2, 6, 9, 9, 4, (3, 3), 3, 2, 1, 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_naive_loops(case, rng):
    n, c, h, w_, o, k, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((o, c // groups, *k))
    b = rng.standard_normal(o)
    expected = conv_ref(x, w, b, stride, padding, dilation, groups)
    out = conv2d(dt.tensor(x), dt.tensor(w), dt.tensor(b), stride, padding, dilation, groups)
    np.testing.assert_allclose(npy(out), expected, atol=1e-12)
    no_bias = conv2d(dt.tensor(x), dt.tensor(w), None, stride, padding, dilation, groups)
    np.testing.assert_allclose(npy(no_bias), expected - b[:, None, None], atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES[1:6])
def test_conv2d_gradcheck(case, rng):
    n, c, h, w_, o, k, stride, padding, dilation, groups = case
    n, h, w_ = 1, min(h, 6), min(w_, 6)  # few elements: gradcheck perturbs each one
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((o, c // groups, *k))
    b = rng.standard_normal(o)
    assert gradcheck(
        lambda x, w, b: conv2d(x, w, b, stride, padding, dilation, groups),
        [leaf(x), leaf(w), leaf(b)],
    )


def test_conv2d_partial_gradients_and_unbatched(rng):
    x, w = rng.standard_normal((3, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    only_input = leaf(x)
    out = conv2d(only_input, dt.tensor(w), padding=1)
    assert out.shape == (2, 5, 5)
    np.testing.assert_allclose(npy(out), conv_ref(x[None], w, padding=1)[0], atol=1e-12)
    out.sum().backward()
    assert only_input.grad.shape == (3, 5, 5)
    assert gradcheck(lambda x: conv2d(x, dt.tensor(w), stride=2), [leaf(x)])
    assert gradcheck(lambda w: conv2d(dt.tensor(x), w, stride=2), [leaf(w)])


def test_conv2d_keeps_float32_and_takes_views(rng):
    x = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    xt, wt, bt = (dt.tensor(a, requires_grad=True) for a in (x, w, b))
    out = conv2d(xt, wt, bt, padding=1)
    assert out.dtype == np.float32
    out.sum().backward()
    assert xt.grad.dtype == wt.grad.dtype == bt.grad.dtype == np.float32
    np.testing.assert_allclose(npy(out), conv_ref(x, w, b, padding=1), rtol=1e-4, atol=1e-4)
    # A non-contiguous (transposed) input, no padding, strided: the windows read it in place.
    view = dt.tensor(np.ascontiguousarray(x.transpose(0, 1, 3, 2))).transpose(2, 3)
    for stride in (1, (1, 2)):
        np.testing.assert_allclose(
            npy(conv2d(view, wt, stride=stride)),
            conv_ref(x, w, stride=stride),
            rtol=1e-4,
            atol=1e-4,
        )


def test_conv2d_errors_name_the_values():
    x = dt.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"input has 3 channels but weight expects 4 "):
        conv2d(x, dt.zeros(8, 4, 3, 3))
    with pytest.raises(ValueError, match="4-D input"):
        conv2d(dt.zeros(1, 2, 3, 8, 8), dt.zeros(8, 3, 3, 3))
    with pytest.raises(ValueError, match=r"larger than the padded input \(10, 10\)"):
        conv2d(x, dt.zeros(4, 3, 11, 3), padding=1)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        conv2d(x, dt.zeros(4, 3, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="not divisible by groups=2"):
        conv2d(dt.zeros(1, 4, 8, 8), dt.zeros(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        conv2d(x, dt.zeros(4, 3, 3, 3), dt.zeros(3))
    with pytest.raises(TypeError, match="float64 but weight is float32"):
        conv2d(dt.zeros(1, 3, 8, 8, dtype=dt.float64), dt.zeros(4, 3, 3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv2d(x, dt.zeros(4, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match="padding='full' is not supported"):
        conv2d(x, dt.zeros(4, 3, 3, 3), padding="full")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d_matches_torch(torch, rng):
    functional = torch.nn.functional
    checked = 0
    for (n, c, o, g, h, w_), k, stride, padding, dilation in itertools.product(
        [(1, 2, 4, 1, 5, 6), (3, 4, 6, 2, 8, 7), (2, 3, 3, 3, 6, 9)],
        [(3, 3), (2, 3), (1, 1)],
        [1, 2, (1, 2)],
        [0, 1, (2, 1), "same", "valid"],
        [1, (2, 1)],
    ):
        if padding == "same" and stride != 1:
            continue
        x, w, b = (rng.standard_normal(s) for s in ((n, c, h, w_), (o, c // g, *k), (o,)))
        ours = [leaf(a) for a in (x, w, b)]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        expected = functional.conv2d(*theirs, stride, padding, dilation, g)
        out = conv2d(*ours, stride, padding, dilation, g)
        np.testing.assert_allclose(npy(out), expected.detach().numpy(), atol=1e-10)
        direction = rng.standard_normal(out.shape)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        for a, t in zip(ours, theirs):
            np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), atol=1e-10)
        checked += 1
    assert checked > 200


# ---- max_pool2d -----------------------------------------------------------------------------
POOL_CASES = [
    # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 6, 6), 2, None, 0, 1, False),
    ((1, 2, 7, 5), 3, 2, 1, 1, False),
    ((2, 2, 7, 7), 3, 2, 1, 1, True),
    ((1, 3, 8, 7), (2, 3), (1, 2), (1, 0), 1, True),
    ((2, 1, 9, 9), 3, 1, 1, 2, False),
    ((3, 2, 5, 6), (3, 2), 3, 0, (1, 2), True),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_naive_loops(case, rng):
    shape, k, s, p, d, ceil_mode = case
    x = rng.standard_normal(shape)
    values, indices = max_pool2d(dt.tensor(x), k, s, p, d, ceil_mode, return_indices=True)
    expected_values, expected_indices = max_pool_ref(x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(npy(values), expected_values)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    assert indices.dtype == np.int64


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_gradcheck(case, rng):
    shape, k, s, p, d, ceil_mode = case
    x = rng.permutation(np.prod(shape)).reshape(shape) / 7.0  # distinct: no ties to split
    x = x[:1]
    assert gradcheck(lambda x: max_pool2d(x, k, s, p, d, ceil_mode), [leaf(x)])


def test_max_pool2d_gradient_goes_to_the_max_once_per_window():
    x = leaf(np.array([[[[1.0, 5.0, 2.0], [0.0, 3.0, 4.0], [6.0, 1.0, 2.0]]]]))
    out = max_pool2d(x, 2, stride=1)  # overlapping windows: 5 is the max of two
    np.testing.assert_array_equal(npy(out), [[[[5.0, 5.0], [6.0, 4.0]]]])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0, 2, 0], [0, 0, 1], [1, 0, 0]]]])


def test_max_pool2d_propagates_nan_and_keeps_dtype(rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    out = max_pool2d(dt.tensor(x, requires_grad=True), 2)
    assert out.dtype == np.float32
    assert np.isnan(npy(out)[0, 0, 0, 0]) and not np.isnan(npy(out)[0, 0, 1:, 1:]).any()
    ints = max_pool2d(dt.tensor(np.arange(16).reshape(1, 4, 4)), 2, padding=1)
    np.testing.assert_array_equal(ints.numpy(), [[[0, 2, 3], [8, 10, 11], [12, 14, 15]]])


def test_max_pool2d_ties_go_to_the_first_position():
    x = np.array([[[[3.0, 3.0, 1.0, 5.0], [0.0, 3.0, 5.0, 5.0]]]], dtype=np.float32)
    out, indices = max_pool2d(dt.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(npy(out), [[[[3.0, 5.0]]]])
    np.testing.assert_array_equal(indices.numpy(), [[[[0, 3]]]])  # row-major first maximum
    zeros = dt.zeros((1, 1, 2, 4), requires_grad=True)
    max_pool2d(zeros, 2).sum().backward()
    np.testing.assert_array_equal(zeros.grad.numpy(), [[[[1, 0, 1, 0], [0, 0, 0, 0]]]])


def test_max_pool2d_ties_match_torch(torch, rng):
    for k, s, p in ((2, None, 0), (3, 1, 1), ((2, 3), 2, 1)):
        x = rng.integers(0, 3, size=(2, 3, 6, 7)).astype(np.float64)  # many ties
        ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
        expected, expected_indices = torch.nn.functional.max_pool2d(
            theirs, k, s, p, return_indices=True
        )
        out, indices = max_pool2d(ours, k, s, p, return_indices=True)
        np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
        direction = rng.standard_normal(out.shape)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-12)


def test_max_pool2d_matches_torch(torch, rng):
    functional = torch.nn.functional
    checked = 0
    for (h, w), k, s, p, d, ceil_mode in itertools.product(
        [(5, 6), (7, 8)], [2, 3, (2, 3)], [None, 1, 2, (2, 1)], [0, 1], [1, 2], [False, True]
    ):
        x = rng.standard_normal((2, 3, h, w))
        ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
        try:
            expected, expected_indices = functional.max_pool2d(theirs, k, s, p, d, ceil_mode, True)
        except RuntimeError:  # too small an input for this kernel: we raise too
            with pytest.raises(ValueError):
                max_pool2d(ours, k, s, p, d, ceil_mode)
            continue
        out, indices = max_pool2d(ours, k, s, p, d, ceil_mode, return_indices=True)
        np.testing.assert_array_equal(npy(out), expected.detach().numpy())
        np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
        direction = rng.standard_normal(out.shape)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-12)
        checked += 1
    assert checked > 150


# ---- avg_pool2d -----------------------------------------------------------------------------
AVG_CASES = [
    # (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 3, 6, 6), 2, None, 0, False, True, None),
    ((1, 2, 7, 5), 3, 2, 1, False, True, None),
    ((1, 2, 7, 5), 3, 2, 1, False, False, None),
    ((2, 2, 7, 7), 3, 2, 1, True, True, None),
    ((2, 2, 7, 7), 3, 2, 1, True, False, None),
    ((1, 3, 8, 7), (2, 3), (1, 2), (1, 0), True, False, None),
    ((2, 1, 5, 5), 2, 1, 1, False, True, 3),
]


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_matches_naive_loops_and_gradcheck(case, rng):
    shape, k, s, p, ceil_mode, include, divisor = case
    x = rng.standard_normal(shape)
    out = avg_pool2d(dt.tensor(x), k, s, p, ceil_mode, include, divisor)
    expected = avg_pool_ref(x, k, s, p, ceil_mode, include, divisor)
    np.testing.assert_allclose(npy(out), expected, atol=1e-12)
    assert gradcheck(lambda x: avg_pool2d(x, k, s, p, ceil_mode, include, divisor), [leaf(x[:1])])


def test_avg_pool2d_keeps_float32(rng):
    x = dt.tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    for kwargs in ({}, {"padding": 1, "count_include_pad": False}, {"ceil_mode": True}):
        out = avg_pool2d(x, 3, 2, **kwargs)
        assert out.dtype == np.float32
        out.sum().backward()
        assert x.grad.dtype == np.float32


def test_avg_pool2d_matches_torch(torch, rng):
    functional = torch.nn.functional
    checked = 0
    for (h, w), k, s, p, ceil_mode, include, divisor in itertools.product(
        [(5, 6), (7, 8)],
        [2, 3, (2, 3)],
        [None, 1, 2, (2, 1)],
        [0, 1],
        [False, True],
        [True, False],
        [None, 5],
    ):
        x = rng.standard_normal((2, 2, h, w))
        ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
        expected = functional.avg_pool2d(theirs, k, s, p, ceil_mode, include, divisor)
        out = avg_pool2d(ours, k, s, p, ceil_mode, include, divisor)
        np.testing.assert_allclose(npy(out), expected.detach().numpy(), atol=1e-12)
        direction = rng.standard_normal(out.shape)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-12)
        checked += 1
    assert checked > 300


def test_avg_pools_of_float16_sum_in_float32(rng):
    x = dt.full((2, 3, 64, 64), 20.0, dtype=dt.float16, requires_grad=True)  # sum 81920
    for out in (avg_pool2d(x, 64), adaptive_avg_pool2d(x, 1), adaptive_avg_pool2d(x, (3, 5))):
        assert out.dtype == np.float16
        np.testing.assert_array_equal(npy(out), 20.0)
        out.sum().backward()
        assert x.grad.dtype == np.float16 and np.isfinite(x.grad.numpy()).all()
        x.grad = None
    # Unequal windows divide by a table of counts (count_include_pad=False), and uneven
    # adaptive bins are weighted: both within float16 rounding of a float64 reference.
    wide = rng.standard_normal((1, 2, 67, 61)) * 100 + 300
    half = dt.tensor(wide.astype(np.float16))
    reference = avg_pool_ref(wide.astype(np.float16).astype(np.float64), 3, 2, 1, True, False)
    np.testing.assert_allclose(npy(avg_pool2d(half, 3, 2, 1, True, False)), reference, rtol=1e-3)
    reference = adaptive_ref(wide.astype(np.float16).astype(np.float64), (5, 7))
    np.testing.assert_allclose(npy(adaptive_avg_pool2d(half, (5, 7))), reference, rtol=1e-3)


def test_float16_avg_pools_match_torch(torch, rng):
    x = (rng.standard_normal((2, 3, 40, 36)) * 50 + 200).astype(np.float16)
    functional = torch.nn.functional
    for ours, theirs in (
        (avg_pool2d(dt.tensor(x), 20), functional.avg_pool2d(torch.tensor(x), 20)),
        (adaptive_avg_pool2d(dt.tensor(x), 1), functional.adaptive_avg_pool2d(torch.tensor(x), 1)),
        (
            adaptive_avg_pool2d(dt.tensor(x), (3, 7)),
            functional.adaptive_avg_pool2d(torch.tensor(x), (3, 7)),
        ),
    ):
        assert ours.dtype == np.float16
        np.testing.assert_allclose(npy(ours), theirs.numpy(), rtol=2e-3)


def test_pool_errors_name_the_values():
    x = dt.zeros(1, 1, 4, 4)
    with pytest.raises(
        ValueError, match=r"padding 2 must be at most half the kernel size \(3, 3\)"
    ):
        max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match="too small"):
        avg_pool2d(x, 5)
    with pytest.raises(ValueError, match="4-D input"):
        max_pool2d(dt.zeros(4, 4), 2)
    with pytest.raises(TypeError, match="not a float"):
        avg_pool2d(dt.zeros(1, 4, 4, dtype=dt.int64), 2)
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        adaptive_avg_pool2d(x, 0)


# ---- adaptive_avg_pool2d --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2, 3, 8, 8), 4),
        ((2, 3, 8, 8), 1),
        ((1, 2, 7, 9), (3, 4)),
        ((2, 5, 6), (4, 4)),
        ((1, 2, 5, 6), (7, 8)),
        ((1, 1, 6, 7), (None, 3)),
    ],
)
def test_adaptive_avg_pool2d_matches_bins_and_gradcheck(shape, size, rng):
    x = rng.standard_normal(shape)
    out = adaptive_avg_pool2d(dt.tensor(x), size)
    full = tuple(shape[-2 + i] if v is None else v for i, v in enumerate(pair(size)))
    np.testing.assert_allclose(npy(out), adaptive_ref(x, full), atol=1e-12)
    assert gradcheck(lambda x: adaptive_avg_pool2d(x, size), [leaf(x[:1])])
    x32 = dt.tensor(x.astype(np.float32))
    assert adaptive_avg_pool2d(x32, size).dtype == np.float32


def test_adaptive_avg_pool2d_matches_torch(torch, rng):
    for (h, w), size in itertools.product([(8, 8), (7, 10), (3, 5)], [1, 2, 3, (4, 5), (None, 2)]):
        x = rng.standard_normal((2, 3, h, w))
        ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
        expected = torch.nn.functional.adaptive_avg_pool2d(theirs, size)
        out = adaptive_avg_pool2d(ours, size)
        np.testing.assert_allclose(npy(out), expected.detach().numpy(), atol=1e-12)
        direction = rng.standard_normal(out.shape)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-12)


# ---- modules --------------------------------------------------------------------------------
def test_conv2d_module_shapes_parameters_and_repr(rng):
    layer = Conv2d(4, 8, 3, stride=2, padding=1, groups=2, dtype=dt.float64)
    assert layer.weight.shape == (8, 2, 3, 3) and layer.bias.shape == (8,)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.dtype == np.float64
    x = rng.standard_normal((2, 4, 9, 7))
    out = layer(dt.tensor(x))
    assert out.shape == (2, 8, 5, 4)
    expected = conv_ref(x, npy(layer.weight), npy(layer.bias), 2, 1, 1, 2)
    np.testing.assert_allclose(npy(out), expected, atol=1e-12)
    assert (
        repr(layer) == "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)"
    )
    plain = Conv2d(1, 16, (3, 5), bias=False, padding="same", dilation=2)
    assert plain.bias is None and [n for n, _ in plain.named_parameters()] == ["weight"]
    assert repr(plain) == (
        "Conv2d(1, 16, kernel_size=(3, 5), stride=(1, 1), padding=same, dilation=(2, 2), "
        "bias=False)"
    )
    assert plain(dt.zeros(2, 1, 6, 7)).shape == (2, 16, 6, 7)
    assert repr(Conv2d(2, 2, 1, padding_mode="circular")) == (
        "Conv2d(2, 2, kernel_size=(1, 1), stride=(1, 1), padding_mode=circular)"
    )


def test_conv2d_module_default_init_statistics():
    dt.manual_seed(0)
    layer = Conv2d(16, 128, 3)  # fan_in = 16 · 3 · 3 = 144: bound 1/12
    bound = 1 / math.sqrt(144)
    weight, bias = npy(layer.weight), npy(layer.bias)
    assert weight.dtype == np.float32
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.98 * bound
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.03 * bound / math.sqrt(3)
    assert abs(weight.mean()) < 0.02 * bound
    assert np.abs(bias).max() <= bound and bias.std() > 0.3 * bound
    grouped = Conv2d(8, 4, (2, 3), groups=4)  # fan_in = 2 · 2 · 3 = 12
    assert np.abs(npy(grouped.weight)).max() <= 1 / math.sqrt(12)


def test_conv2d_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_channels=3 must be divisible by groups=2"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        Conv2d(3, 4, 3, padding_mode="mirror")


def test_conv2d_module_padding_modes_match_torch(torch, rng, copy_from_torch):
    x = rng.standard_normal((2, 3, 6, 7))
    for mode, padding in itertools.product(
        ["zeros", "reflect", "replicate", "circular"], [1, (2, 1), "same"]
    ):
        theirs = torch.nn.Conv2d(3, 4, (3, 2), padding=padding, padding_mode=mode).double()
        ours = Conv2d(3, 4, (3, 2), padding=padding, padding_mode=mode, dtype=dt.float64)
        copy_from_torch(ours, theirs)
        assert repr(ours) == repr(theirs)
        tx, ox = torch.tensor(x, requires_grad=True), leaf(x)
        expected, out = theirs(tx), ours(ox)
        np.testing.assert_allclose(npy(out), expected.detach().numpy(), atol=1e-10)
        expected.sum().backward()
        out.sum().backward()
        np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-10)


def test_pool_modules(rng):
    x = dt.tensor(rng.standard_normal((2, 3, 8, 8)))
    pool = MaxPool2d(2)
    assert pool.stride == 2 and pool(x).shape == (2, 3, 4, 4)
    assert (
        repr(pool) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    )
    values, indices = MaxPool2d((3, 2), 2, 1, return_indices=True, ceil_mode=True)(x)
    assert values.shape == indices.shape == (2, 3, 5, 5)
    avg = AvgPool2d(3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(npy(avg(x)), avg_pool_ref(npy(x), 3, 2, 1, False, False))
    assert repr(avg) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    adaptive = AdaptiveAvgPool2d((1, 1))
    np.testing.assert_allclose(npy(adaptive(x))[..., 0, 0], npy(x).mean(axis=(2, 3)))
    assert repr(adaptive) == "AdaptiveAvgPool2d(output_size=(1, 1))"
    assert repr(AdaptiveAvgPool2d(3)) == "AdaptiveAvgPool2d(output_size=3)"


def test_pool_module_reprs_match_torch(torch):
    for text in [
        "MaxPool2d(2)",
        "MaxPool2d((2, 3), 1, 1, ceil_mode=True)",
        "AvgPool2d(3, 2, 1)",
        "AdaptiveAvgPool2d((None, 2))",
    ]:
        ours = eval(
            text,
            {
                "MaxPool2d": MaxPool2d,
                "AvgPool2d": AvgPool2d,
                "AdaptiveAvgPool2d": AdaptiveAvgPool2d,
            },
        )
        assert repr(ours) == repr(eval("torch.nn." + text, {"torch": torch}))


def test_small_cnn_trains_a_step(rng):
    """conv → relu → pool → conv → relu → adaptive pool → linear map: loss goes down."""
    dt.manual_seed(0)
    c1, c2 = Conv2d(1, 4, 3, padding=1), Conv2d(4, 8, 3, padding=1)
    head = dt.tensor(rng.standard_normal((8, 3)).astype(np.float32) * 0.3, requires_grad=True)
    x = dt.tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
    target = dt.tensor(rng.standard_normal((6, 3)).astype(np.float32))
    params = [c1.weight, c1.bias, c2.weight, c2.bias, head]

    def loss():
        h = max_pool2d(c1(x).relu(), 2)
        h = adaptive_avg_pool2d(c2(h).relu(), 1).reshape(6, 8)
        return ((h @ head - target) ** 2).mean()

    first = loss()
    first.backward()
    with dt.no_grad():
        for p in params:
            p -= 0.1 * p.grad
    assert loss().item() < first.item()


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
def test_conv_and_pools_on_cuda_match_cpu(rng):
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)

    def run(device):
        leaves = [dt.tensor(a, device=device, requires_grad=True) for a in (x, w, b)]
        h = conv2d(*leaves, stride=(1, 2), padding=1, dilation=(2, 1), groups=2)
        pooled = adaptive_avg_pool2d(max_pool2d(h, 2, ceil_mode=True), (3, 2))
        loss = pooled.sum() + (avg_pool2d(h, 3, 1, 1, count_include_pad=False) ** 2).sum()
        loss.backward()
        return [npy(h.cpu())] + [t.grad.cpu().numpy() for t in leaves]

    for mine, reference in zip(run("cuda"), run("cpu")):
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-4)


# ---- both column layouts (conv_columns): channel-major and channel-last -----------------
LAYOUTS = {"channel-major": 10**9, "channel-last": 1}


@pytest.fixture(params=list(LAYOUTS))
def layout(request, monkeypatch):
    """Runs the test with the columns in one layout, whatever the channel count."""
    from dtrain._tensor.nn.functional import conv_columns

    monkeypatch.setattr(conv_columns, "CHANNEL_LAST_MIN", LAYOUTS[request.param])
    return request.param


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_layouts_match_naive_loops_and_gradcheck(case, layout, rng):
    n, c, h, w_, o, k, stride, padding, dilation, groups = case
    x, w, b = (rng.standard_normal(s) for s in ((n, c, h, w_), (o, c // groups, *k), (o,)))
    out = conv2d(dt.tensor(x), dt.tensor(w), dt.tensor(b), stride, padding, dilation, groups)
    np.testing.assert_allclose(
        npy(out), conv_ref(x, w, b, stride, padding, dilation, groups), atol=1e-12
    )
    x = x[:1, :, :6, :6]
    assert gradcheck(
        lambda x, w, b: conv2d(x, w, b, stride, padding, dilation, groups),
        [leaf(x), leaf(w), leaf(b)],
    )


@pytest.mark.parametrize(
    "stride, padding, output_padding, dilation, groups",
    [
        (1, 0, 0, 1, 1),
        (1, 1, 0, 1, 1),
        (2, 1, 1, 1, 1),
        (1, 2, 1, 2, 1),
        (2, 0, 0, 1, 2),
        (1, 2, 0, 1, 1),
    ],
)
def test_conv_transpose2d_layouts_are_conv2d_adjoint_and_gradcheck(
    stride, padding, output_padding, dilation, groups, layout, rng
):
    """<conv_transpose2d(y, w), x> = <y, conv2d(x, w)> for x of the transposed conv's size
    (conv2d cropped to y's)."""
    from dtrain._tensor.nn.functional.conv_transpose import conv_transpose2d

    y, w = rng.standard_normal((2, 4, 4, 5)), rng.standard_normal((4, 6 // groups, 3, 2))
    out = conv_transpose2d(
        dt.tensor(y), dt.tensor(w), None, stride, padding, output_padding, groups, dilation
    )
    x = rng.standard_normal(out.shape)
    forward = conv2d(dt.tensor(x), dt.tensor(w), None, stride, padding, dilation, groups)
    # output_padding can make the convolution's output larger than y.
    assert forward.shape[2:] >= y.shape[2:]
    forward = npy(forward)[:, :, : y.shape[2], : y.shape[3]]
    np.testing.assert_allclose((npy(out) * x).sum(), (y * forward).sum(), rtol=1e-10)
    b = rng.standard_normal(out.shape[1])
    assert gradcheck(
        lambda y, w, b: conv_transpose2d(
            y, w, b, stride, padding, output_padding, groups, dilation
        ),
        [leaf(y[:1]), leaf(w), leaf(b)],
    )


@pytest.mark.parametrize(
    "stride, padding, dilation", [(1, 1, 1), (1, 0, 2), (2, 1, 1), (1, 3, 1), ((1, 2), (2, 0), 1)]
)
def test_conv_layouts_match_torch_with_many_channels_in_float32(
    stride, padding, dilation, layout, torch, rng
):
    """Many channels (channel-last by default), float32: conv2d and conv_transpose2d values
    and all gradients against PyTorch."""
    from dtrain._tensor.nn.functional.conv_transpose import conv_transpose2d

    functional = torch.nn.functional
    x = rng.standard_normal((3, 24, 7, 6)).astype(np.float32)
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation}
    for ours_fn, theirs_fn, weight_shape in (
        (conv2d, functional.conv2d, (32, 24, 3, 3)),
        (conv_transpose2d, functional.conv_transpose2d, (24, 16, 3, 3)),
    ):
        weight = (rng.standard_normal(weight_shape) / 10).astype(np.float32)
        bias = rng.standard_normal(weight_shape[0 if ours_fn is conv2d else 1])
        ours = [dt.tensor(a, requires_grad=True) for a in (x, weight, bias.astype(np.float32))]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias.astype(np.float32))]
        out, expected = ours_fn(*ours, **kwargs), theirs_fn(*theirs, **kwargs)
        assert out.dtype == np.float32
        np.testing.assert_allclose(npy(out), expected.detach().numpy(), rtol=1e-4, atol=1e-4)
        direction = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(dt.tensor(direction))
        expected.backward(torch.tensor(direction))
        for a, t in zip(ours, theirs):
            assert a.grad.dtype == np.float32
            np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("channels", [3, 16])  # both column layouts
def test_an_empty_batch_convolves_and_gives_zero_weight_gradients(channels):
    x = dt.zeros(0, channels, 6, 7, requires_grad=True)
    w = dt.randn(4, channels, 3, 3, requires_grad=True)
    y = dt.nn.functional.conv2d(x, w, padding=1)
    y.sum().backward()
    assert y.shape == (0, 4, 6, 7) and float(w.grad.abs().sum()) == 0.0
    wt = dt.randn(channels, 4, 3, 3, requires_grad=True)
    z = dt.nn.functional.conv_transpose2d(
        dt.zeros(0, channels, 6, 7, requires_grad=True), wt, padding=1
    )
    z.sum().backward()
    assert z.shape == (0, 4, 6, 7) and float(wt.grad.abs().sum()) == 0.0
