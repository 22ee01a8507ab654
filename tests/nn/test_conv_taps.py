"""The tap route of convolutions (tensor/nn/functional/conv_taps.py): against the GEMM route
and a loop-over-outputs numpy reference on random shapes, strides, padding, dilation and
groups in 1, 2 and 3 dims, finite differences, PyTorch where installed, and the test device."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain._tensor.nn.functional import conv_taps
from dtrain._tensor.nn.functional.conv import Conv2d
from dtrain._tensor.nn.functional.conv_nd import ConvNd
from dtrain._tensor.nn.functional.conv_taps import ConvTaps, use_taps
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def reference(x, w, b, stride, pads, dilation, groups):
    """Direct definition: every output element is a dot product over its window."""
    x = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    o, cg = w.shape[:2]
    kernel, og = w.shape[2:], o // groups
    size = [
        (x.shape[2 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
        for a in range(len(kernel))
    ]
    out = np.zeros((x.shape[0], o, *size))
    for position in itertools.product(*(range(s) for s in size)):
        window = x[
            (slice(None), slice(None))
            + tuple(
                slice(p * s, p * s + d * (k - 1) + 1, d)
                for p, s, d, k in zip(position, stride, dilation, kernel)
            )
        ]
        for g in range(groups):
            part = window[:, g * cg : (g + 1) * cg].reshape(x.shape[0], -1)
            out[(slice(None), slice(g * og, (g + 1) * og)) + position] = (
                part @ w[g * og : (g + 1) * og].reshape(og, -1).T
            )
    return out + (0 if b is None else b.reshape((1, -1) + (1,) * len(kernel)))


def random_case(rng, dims):
    """A random convolution: (x, w, b) shapes and stride, pads, dilation, groups."""
    groups = int(rng.integers(1, 4))
    cg, og = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, dims))
    stride = tuple(int(s) for s in rng.integers(1, 3, dims))
    dilation = tuple(int(d) for d in rng.integers(1, 3, dims))
    pads = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 3, (dims, 2)))
    size = tuple(
        int(rng.integers(max(1, d * (k - 1) + 1 - lo - hi), 7))
        for k, d, (lo, hi) in zip(kernel, dilation, pads)
    )
    shapes = ((int(rng.integers(1, 4)), cg * groups) + size, (og * groups, cg) + kernel)
    return shapes + ((og * groups,),), dict(
        stride=stride, pads=pads, dilation=dilation, groups=groups
    )


def gemm_route(x, w, b, stride, pads, dilation, groups):
    if len(stride) == 2:
        padding = pads[0] + pads[1]
        return Conv2d.apply(
            x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups
        )
    return ConvNd.apply(x, w, b, stride=stride, pads=pads, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_taps_match_gemm_route_and_reference(dims, seed):
    rng = np.random.default_rng(100 * dims + seed)
    shapes, options = random_case(rng, dims)
    if dims == 1:  # conv1d runs the 2-D ops on a unit height
        shapes = tuple(s[:2] + (1,) + s[2:] if len(s) > 1 else s for s in shapes)
        options = dict(
            stride=(1,) + options["stride"],
            pads=((0, 0),) + options["pads"],
            dilation=(1,) + options["dilation"],
            groups=options["groups"],
        )
    arrays = [rng.standard_normal(s) for s in shapes]
    taps, gemm = [leaf(a) for a in arrays], [leaf(a) for a in arrays]
    out = ConvTaps.apply(*taps, **options)
    expected = gemm_route(*gemm, **options)
    np.testing.assert_allclose(out.detach().numpy(), reference(*arrays, **options), atol=1e-12)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), atol=1e-12)
    direction = rng.standard_normal(out.shape)
    (out * dt.tensor(direction)).sum().backward()
    (expected * dt.tensor(direction)).sum().backward()
    for ours, theirs in zip(taps, gemm):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-11)


@pytest.mark.parametrize(
    "options",
    [
        dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=3),
        dict(stride=(2, 1), pads=((0, 1), (2, 0)), dilation=(1, 2), groups=3),
        dict(stride=(1, 1), pads=((1, 0), (0, 1)), dilation=(2, 1), groups=1),
    ],
)
def test_taps_gradcheck(options):
    rng = np.random.default_rng(1)
    groups = options["groups"]
    x = leaf(rng.standard_normal((2, 2 * groups, 5, 4)))
    w = leaf(rng.standard_normal((2 * groups, 2, 3, 2)))
    b = leaf(rng.standard_normal(2 * groups))
    assert gradcheck(lambda x, w, b: ConvTaps.apply(x, w, b, **options), (x, w, b))


def test_depthwise_conv2d_takes_the_tap_route_and_gradchecks():
    rng = np.random.default_rng(2)
    x, w, b = leaf(rng.standard_normal((2, 4, 6, 5))), leaf(rng.standard_normal((4, 1, 3, 3))), None
    out = F.conv2d(x, w, b, stride=1, padding="same", dilation=2, groups=4)
    assert isinstance(out.grad_fn, ConvTaps) and out.grad_fn.name() == "ConvolutionBackward0"
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding="same", dilation=2, groups=4), (x, w))
    # a channel multiplier of 2, or 2 channels a group: the GEMM route (measured faster)
    assert not use_taps(x._array, (8, 1, 3, 3), 4) and not use_taps(x._array, (2, 2, 3, 3), 2)
    assert use_taps(x._array, (1, 1, 3, 3), 1)
    grouped = F.conv2d(x, leaf(rng.standard_normal((4, 2, 3, 3))), groups=2)
    assert isinstance(grouped.grad_fn, Conv2d)


def test_depthwise_conv1d_and_conv3d_take_the_tap_route():
    rng = np.random.default_rng(3)
    x1, w1 = leaf(rng.standard_normal((2, 3, 7))), leaf(rng.standard_normal((3, 1, 3)))
    out = F.conv1d(x1, w1, stride=2, padding=1, groups=3)
    assert out.grad_fn is not None
    np.testing.assert_allclose(
        out.detach().numpy(),
        reference(x1.detach().numpy(), w1.detach().numpy(), None, (2,), ((1, 1),), (1,), 3),
        atol=1e-12,
    )
    x3, w3 = leaf(rng.standard_normal((2, 3, 4, 3, 5))), leaf(rng.standard_normal((3, 1, 2, 3, 2)))
    out3 = F.conv3d(x3, w3, padding=1, groups=3)
    assert isinstance(out3.grad_fn, ConvTaps)
    assert gradcheck(lambda x, w: F.conv3d(x, w, padding=1, groups=3), (x3, w3))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("flat", [True, False])
def test_taps_over_several_chunks(monkeypatch, flat, threads):
    # chunks of 2 images (and a last one of 1), on 1 or 2 threads, give the values of one
    # chunk of 5
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s) for s in ((5, 6, 7, 6), (6, 1, 3, 3), (6,))]
    options = dict(
        stride=(1, 1) if flat else (2, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=6
    )
    whole = [leaf(a) for a in arrays]
    out = ConvTaps.apply(*whole, **options)
    (out * out).sum().backward()
    monkeypatch.setattr(conv_taps, "CHUNK", 2 * 6 * 9 * 8)
    monkeypatch.setattr(conv_taps, "threads", lambda: threads)
    chunked = [leaf(a) for a in arrays]
    again = ConvTaps.apply(*chunked, **options)
    (again * again).sum().backward()
    np.testing.assert_allclose(again.detach().numpy(), out.detach().numpy(), atol=1e-12)
    for a, b in zip(chunked, whole):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-11)


def test_taps_float32_batch_of_zero_and_unbatched():
    rng = np.random.default_rng(5)
    x = dt.tensor(rng.standard_normal((3, 8, 8)).astype(np.float32), requires_grad=True)
    w = dt.tensor(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), requires_grad=True)
    out = F.conv2d(x, w, padding=1, groups=3)
    assert out.shape == (3, 8, 8) and out.dtype == dt.float32
    expected = reference(
        x.detach().numpy()[None], w.detach().numpy(), None, (1, 1), ((1, 1), (1, 1)), (1, 1), 3
    )
    np.testing.assert_allclose(out.detach().numpy(), expected[0], atol=1e-5)
    out.sum().backward()
    assert x.grad.dtype == dt.float32 and w.grad.dtype == dt.float32
    empty = leaf(np.zeros((0, 3, 4, 4)))
    w64, b64 = leaf(rng.standard_normal((3, 1, 3, 3))), leaf(rng.standard_normal(3))
    zero = F.conv2d(empty, w64, b64, padding=1, groups=3)
    assert zero.shape == (0, 3, 4, 4)
    zero.sum().backward()
    assert empty.grad.shape == (0, 3, 4, 4) and (w64.grad.numpy() == 0).all()


@pytest.mark.parametrize(
    "case",
    [
        ("conv2d", (4, 6, 9, 8), (6, 1, 3, 3), dict(stride=1, padding=1, groups=6)),
        ("conv2d", (2, 4, 9, 8), (4, 1, 5, 3), dict(stride=2, padding=(2, 1), groups=4)),
        ("conv2d", (2, 4, 9, 8), (4, 1, 3, 3), dict(padding="same", dilation=(2, 3), groups=4)),
        ("conv1d", (2, 5, 11), (5, 1, 4), dict(padding="same", groups=5)),
        ("conv3d", (2, 3, 4, 5, 6), (3, 1, 3, 3, 3), dict(stride=(1, 2, 1), padding=1, groups=3)),
    ],
)
def test_depthwise_against_torch(torch, case):
    name, x_shape, w_shape, options = case
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, (w_shape[0],)))
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = getattr(F, name)(*ours, **options)
    expected = getattr(torch.nn.functional, name)(*theirs, **options)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), atol=1e-12)
    direction = rng.standard_normal(out.shape)
    (out * dt.tensor(direction)).sum().backward()
    (expected * torch.tensor(direction)).sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), atol=1e-11)


def test_depthwise_on_the_test_device(test_device):
    # on CUDA a depthwise convolution takes the GEMM route; the values are the same
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s) for s in ((2, 4, 6, 5), (4, 1, 3, 3), (4,))]
    on_cpu = [leaf(a) for a in arrays]
    on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in arrays]
    expected = F.conv2d(*on_cpu, padding=1, groups=4)
    got = F.conv2d(*on_device, padding=1, groups=4)
    assert got.device.type == test_device
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), atol=1e-12)
    (expected * expected).sum().backward()
    (got * got).sum().backward()
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


def test_thread_pool_is_made_again_in_a_forked_child(monkeypatch):
    # a pool inherited through fork() has no threads: the taps make a new one in the child
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in ((4, 3, 5, 5), (3, 1, 3, 3))]
    monkeypatch.setattr(conv_taps, "CHUNK", 3 * 49)
    monkeypatch.setattr(conv_taps, "threads", lambda: 2)
    options = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=3)
    expected = ConvTaps.apply(*map(leaf, arrays), None, **options).detach().numpy()
    pid, pool = conv_taps._pool
    monkeypatch.setattr(conv_taps, "_pool", (pid + 1, pool))  # as a forked child sees it
    got = ConvTaps.apply(*map(leaf, arrays), None, **options).detach().numpy()
    assert conv_taps._pool[0] == pid and conv_taps._pool[1] is not pool
    np.testing.assert_array_equal(got, expected)
