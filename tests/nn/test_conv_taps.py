"""The tap route of convolutions (tensor/nn/functional/conv_taps.py): against the GEMM route
and a loop-over-outputs numpy reference on random shapes, strides, padding, dilation and
groups in 1, 2 and 3 dims, finite differences, PyTorch where installed, and the test device."""

import itertools
import os

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


@pytest.fixture(params=["repeat", "broadcast"])
def weights_mode(request, monkeypatch):
    """Both ways the taps multiply by the weights: repeated along the runs, or broadcast."""
    repeat = request.param == "repeat"
    monkeypatch.setattr(conv_taps, "BROADCAST_PLANE", 1 << 30 if repeat else 1)
    monkeypatch.setattr(conv_taps, "REPEAT_BATCH", 0 if repeat else 1 << 30)
    return request.param


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_taps_match_gemm_route_and_reference(dims, seed, weights_mode):
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
def test_taps_gradcheck(options, weights_mode):
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


def spy_on_taps(monkeypatch) -> list:
    """A list that gets one entry per ConvTaps forward."""
    calls, forward = [], ConvTaps.forward

    def counted(self, *args, **kwargs):
        calls.append(args[0].shape)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ConvTaps, "forward", counted)
    return calls


def test_depthwise_conv1d_and_conv3d_take_the_tap_route(monkeypatch):
    rng = np.random.default_rng(3)
    calls = spy_on_taps(monkeypatch)
    x1, w1 = leaf(rng.standard_normal((2, 3, 7))), leaf(rng.standard_normal((3, 1, 3)))
    out = F.conv1d(x1, w1, stride=2, padding=1, groups=3)
    assert calls == [(2, 3, 1, 7)]  # conv1d: the 2-D taps on a unit height
    np.testing.assert_allclose(
        out.detach().numpy(),
        reference(x1.detach().numpy(), w1.detach().numpy(), None, (2,), ((1, 1),), (1,), 3),
        atol=1e-12,
    )
    x3, w3 = leaf(rng.standard_normal((2, 3, 4, 3, 5))), leaf(rng.standard_normal((3, 1, 2, 3, 2)))
    out3 = F.conv3d(x3, w3, padding=1, groups=3)
    assert isinstance(out3.grad_fn, ConvTaps) and len(calls) == 2
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
    # on CUDA a depthwise convolution takes the GEMM route: the reference's values, and the
    # gradients of the CPU (the tap route, checked above against finite differences)
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s) for s in ((2, 4, 6, 5), (4, 1, 3, 3), (4,))]
    on_cpu = [leaf(a) for a in arrays]
    on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in arrays]
    expected = F.conv2d(*on_cpu, padding=1, groups=4)
    got = F.conv2d(*on_device, padding=1, groups=4)
    assert got.device.type == test_device
    values = reference(*arrays, (1, 1), ((1, 1), (1, 1)), (1, 1), 4)
    np.testing.assert_allclose(got.detach().cpu().numpy(), values, atol=1e-12)
    (expected * expected).sum().backward()
    (got * got).sum().backward()
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_shuts_the_thread_pool_down_and_the_child_makes_its_own(monkeypatch):
    # a fork with pool threads alive can deadlock the child (Python 3.12 warns): the pool is
    # shut down before the fork, and the child's (and parent's) next conv makes a new one
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in ((4, 3, 5, 5), (3, 1, 3, 3))]
    monkeypatch.setattr(conv_taps, "CHUNK", 3 * 49)
    monkeypatch.setattr(conv_taps, "threads", lambda: 2)
    options = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=3)
    expected = ConvTaps.apply(*map(leaf, arrays), None, **options).detach().numpy()
    assert conv_taps._pool is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit handlers
        status = 1
        try:
            alone = conv_taps._pool is None
            got = ConvTaps.apply(*map(leaf, arrays), None, **options).detach().numpy()
            made = conv_taps._pool is not None
            status = 0 if alone and made and np.array_equal(got, expected) else 2
        finally:
            os.write(write, bytes([status]))
            os._exit(0)
    os.close(write)
    report = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert report == bytes([0])  # 1: the child raised; 2: a pool inherited or wrong values
    again = ConvTaps.apply(*map(leaf, arrays), None, **options).detach().numpy()
    np.testing.assert_array_equal(again, expected)
    assert conv_taps._pool is not None


def sum_gradients(x, w, pad):
    """The gradients of ``conv2d(x, w, padding=pad, groups=C).sum()`` (depthwise, stride 1),
    by their definition: each weight's is the sum of the inputs it meets, each input's the sum
    of the weights that meet it (an inf or NaN spreads within its channel only)."""
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    oh, ow = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    grad_w, grad_x = np.zeros_like(w), np.zeros_like(padded)
    for i, j in itertools.product(range(kh), range(kw)):
        grad_w[:, 0, i, j] = padded[:, :, i : i + oh, j : j + ow].sum(axis=(0, 2, 3))
        grad_x[:, :, i : i + oh, j : j + ow] += w[None, :, 0, i, j, None, None]
    return grad_x[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]], grad_w


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("where", ["x", "w"])
def test_a_non_finite_value_stays_in_its_channel(padding, where, weights_mode):
    # the taps' runs read past each channel's plane (into the next channel or image): an inf
    # there must not reach another channel's gradient
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((3, 1, 3, 3))
    if where == "x":
        x[0, 1, 0, 0] = x[1, 2, 3, 3] = np.inf  # the last channel of image 0 meets image 1's
    else:
        w[1, 0, 2, 2] = w[2, 0, 0, 0] = np.inf
    leaves = [leaf(x), leaf(w)]
    options = dict(stride=(1, 1), pads=((padding,) * 2,) * 2, dilation=(1, 1), groups=3)
    ConvTaps.apply(*leaves, None, **options).sum().backward()
    for ours, expected in zip(leaves, sum_gradients(x, w, padding)):
        ours = ours.grad.numpy()
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(ours[finite], expected[finite], atol=1e-12)
    channel_0 = leaves[1].grad.numpy()[0] if where == "x" else leaves[0].grad.numpy()[:, 0]
    assert np.isfinite(channel_0).all()


def test_non_finite_channels_against_torch(torch):
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((3, 1, 3, 3))
    x[0, 2, 4, 3], w[1, 0, 0, 1] = np.inf, np.nan
    ours = [leaf(x), leaf(w)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w)]
    F.conv2d(*ours, padding=1, groups=3).sum().backward()
    torch.nn.functional.conv2d(*theirs, padding=1, groups=3).sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_array_equal(np.isfinite(a.grad.numpy()), np.isfinite(t.grad.numpy()))


def test_tap_threads_follow_omp_num_threads_and_set_num_threads(monkeypatch):
    # one count: dt.get_num_threads() is what the taps run on; its default is OMP_NUM_THREADS
    from dtrain._tensor import settings

    made = []

    class Pool(conv_taps.ThreadPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            made.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(conv_taps, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(conv_taps, "_pool", None)
    monkeypatch.setattr(conv_taps, "CHUNK", 3 * 49)  # one image a chunk: 4 chunks
    monkeypatch.setitem(settings._state, "threads", None)
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(s) for s in ((4, 3, 5, 5), (3, 1, 3, 3))]
    options = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=3)
    for omp, expected in (("1", []), ("2", [2])):
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        monkeypatch.setattr(settings, "_default_threads", None)  # as in a new process
        assert conv_taps.threads() == dt.get_num_threads() == int(omp)
        ConvTaps.apply(*map(leaf, arrays), None, **options).sum().backward()
        assert made == expected
    monkeypatch.setitem(settings._state, "threads", 3)  # as set_num_threads(3)
    assert conv_taps.threads() == dt.get_num_threads() == 3
    ConvTaps.apply(*map(leaf, arrays), None, **options)
    assert made == [2, 3]
    conv_taps._pool.shutdown()


@pytest.mark.parametrize("kernel", [3, 7])
def test_float16_accumulates_in_float32(kernel):
    # each output is rounded to float16 once: within one float16 spacing of the exact value
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float16)
    w = (rng.standard_normal((8, 1, kernel, kernel)) / kernel).astype(np.float16)
    b = rng.standard_normal(8).astype(np.float16)
    pad = kernel // 2
    out = F.conv2d(dt.tensor(x), dt.tensor(w), dt.tensor(b), padding=pad, groups=8)
    assert out.dtype == dt.float16
    exact = reference(
        x.astype(np.float64),
        w.astype(np.float64),
        b.astype(np.float64),
        (1, 1),
        ((pad, pad), (pad, pad)),
        (1, 1),
        8,
    )
    spacing = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert (np.abs(out.numpy().astype(np.float64) - exact) <= spacing).all()


def test_float16_error_against_torch(torch):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 16, 16, 16))
    w = rng.standard_normal((16, 1, 7, 7)) / 7
    exact = reference(x, w, None, (1, 1), ((3, 3), (3, 3)), (1, 1), 16)
    ours = (
        F.conv2d(
            dt.tensor(x.astype(np.float16)), dt.tensor(w.astype(np.float16)), padding=3, groups=16
        )
        .numpy()
        .astype(np.float64)
    )
    theirs = (
        torch.nn.functional.conv2d(
            torch.tensor(x).half(), torch.tensor(w).half(), padding=3, groups=16
        )
        .double()
        .numpy()
    )
    truth = reference(
        x.astype(np.float16).astype(np.float64),
        w.astype(np.float16).astype(np.float64),
        None,
        (1, 1),
        ((3, 3), (3, 3)),
        (1, 1),
        16,
    )
    assert np.abs(ours - truth).max() <= 1.01 * np.abs(theirs - truth).max()
    assert exact.shape == ours.shape


def test_one_small_image_without_backward_takes_the_gemm_route(monkeypatch):
    # measured 2-5x faster there (docs/benchmarks.md); with backward, or a large image, the taps
    rng = np.random.default_rng(14)
    calls = spy_on_taps(monkeypatch)
    w = leaf(rng.standard_normal((4, 1, 3, 3)))
    for shape, grad, taps in (
        ((1, 4, 8, 8), False, False),
        ((1, 4, 8, 8), True, True),
        ((2, 4, 8, 8), False, True),
        ((1, 4, 64, 64), False, True),
    ):
        calls.clear()
        x = rng.standard_normal(shape)
        with dt.set_grad_enabled(grad):
            out = F.conv2d(leaf(x), w, padding=1, groups=4)
        assert bool(calls) == taps, shape
        values = reference(x, w.detach().numpy(), None, (1, 1), ((1, 1), (1, 1)), (1, 1), 4)
        np.testing.assert_allclose(out.detach().numpy(), values, atol=1e-12)


@pytest.mark.parametrize("n, workers", [(32, 2), (10, 2), (5, 2), (7, 3), (3, 4), (40, 3)])
def test_chunks_are_even_among_the_threads(monkeypatch, n, workers):
    # 64 channels of 18x18 at CHUNK 2^18: 12 images a chunk at most
    monkeypatch.setattr(conv_taps, "threads", lambda: workers)
    monkeypatch.setattr(conv_taps, "CHUNK", (12 if n in (32, 40) else 1) * 64 * 18 * 18)
    t = conv_taps.taps((n, 64, 16, 16), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 64)
    rows, chunks = conv_taps._chunks(t, 64)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks)) and rows <= 12
    assert max(hi - lo for lo, hi in chunks) == rows
    parts = conv_taps._parts(chunks, workers)
    assert list(itertools.chain(*parts)) == chunks
    per_thread = [sum(hi - lo for lo, hi in part) for part in parts]
    assert max(per_thread) - min(per_thread) <= 1, per_thread
