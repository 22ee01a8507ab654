"""BatchNorm3d, InstanceNorm3d, the 3-D and circular padding layers, LPPool1d/2d,
ChannelShuffle and UpsamplingNearest2d/Bilinear2d: numpy references, finite differences,
and PyTorch where installed."""

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=(2, 3, 4, 5, 6))


def test_batchnorm3d_normalises_each_channel(volume):
    m = nn.BatchNorm3d(3)
    out = m(dt.tensor(volume)).detach().numpy()
    mean = volume.mean(axis=(0, 2, 3, 4), keepdims=True)
    var = volume.var(axis=(0, 2, 3, 4), keepdims=True)
    np.testing.assert_allclose(out, (volume - mean) / np.sqrt(var + 1e-5), atol=1e-10)
    unbiased = volume.var(axis=(0, 2, 3, 4), ddof=1)
    np.testing.assert_allclose(
        m.running_var.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-6
    )  # float32 buffers
    with pytest.raises(ValueError, match="5-D"):
        m(dt.ones(2, 3, 4, 5))
    assert list(m.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
    ]  # fmt: skip


def test_instancenorm3d_normalises_each_instance(volume):
    out = nn.InstanceNorm3d(3)(dt.tensor(volume)).numpy()
    mean = volume.mean(axis=(2, 3, 4), keepdims=True)
    var = volume.var(axis=(2, 3, 4), keepdims=True)
    np.testing.assert_allclose(out, (volume - mean) / np.sqrt(var + 1e-5), atol=1e-10)
    assert nn.InstanceNorm3d(3)(dt.tensor(volume[0])).shape == (3, 4, 5, 6)
    assert gradcheck(lambda x: nn.InstanceNorm3d(3)(x), [leaf(volume[:1, :, :2, :3, :3])])


def test_norm3d_matches_torch(torch, volume, copy_from_torch, same):
    for ours, theirs in (
        (nn.BatchNorm3d(3), torch.nn.BatchNorm3d(3)),
        (nn.InstanceNorm3d(3, affine=True), torch.nn.InstanceNorm3d(3, affine=True)),
    ):
        copy_from_torch(ours, theirs)
        x = volume.astype(np.float32)
        same(ours(dt.tensor(x)), theirs(torch.tensor(x)), atol=1e-5, rtol=1e-5)
        assert list(ours.state_dict()) == list(theirs.state_dict())


PADS = [
    (nn.ZeroPad3d, (1, 0, 2, 1, 0, 1), "constant"),
    (nn.ReflectionPad3d, (1, 2, 1, 0, 2, 1), "reflect"),
    (nn.ReplicationPad3d, (2, 0, 1, 3, 0, 1), "edge"),
    (nn.CircularPad3d, (1, 2, 0, 1, 2, 1), "wrap"),
]


@pytest.mark.parametrize("cls,padding,numpy_mode", PADS)
def test_pad3d(volume, cls, padding, numpy_mode):
    left, right, top, bottom, front, back = padding
    widths = [(0, 0), (0, 0), (front, back), (top, bottom), (left, right)]
    got = cls(padding)(dt.tensor(volume)).numpy()
    np.testing.assert_array_equal(got, np.pad(volume, widths, mode=numpy_mode))
    assert cls(1)(dt.tensor(volume[0])).shape == (3, 6, 7, 8)
    assert gradcheck(lambda x: cls(padding)(x), [leaf(volume[:1, :1])])
    if numpy_mode != "constant":  # constant padding takes any rank, as PyTorch
        with pytest.raises(ValueError, match="4-D or 5-D"):
            cls(1)(dt.ones(3, 4, 5))


def test_constant_and_circular_pads():
    x = np.arange(6.0).reshape(1, 2, 3)
    np.testing.assert_array_equal(
        nn.ConstantPad3d(1, 2.5)(dt.tensor(x[None])).numpy(),
        np.pad(x[None], [(0, 0), (1, 1), (1, 1), (1, 1)], constant_values=2.5),
    )
    np.testing.assert_array_equal(
        nn.CircularPad1d((2, 1))(dt.tensor(x)).numpy(),
        np.pad(x, [(0, 0), (0, 0), (2, 1)], mode="wrap"),
    )
    np.testing.assert_array_equal(
        nn.CircularPad2d(1)(dt.tensor(x)).numpy(), np.pad(x, [(0, 0), (1, 1), (1, 1)], mode="wrap")
    )


def test_pad_reprs_match_torch(torch):
    for name, args in [
        ("ZeroPad3d", (1,)), ("ConstantPad3d", (1, 2.0)), ("ReflectionPad3d", ((1,) * 6,)),
        ("ReplicationPad3d", (2,)), ("CircularPad1d", (2,)), ("CircularPad2d", (1,)),
        ("CircularPad3d", (1,)),
    ]:  # fmt: skip
        assert repr(getattr(nn, name)(*args)) == repr(getattr(torch.nn, name)(*args))


def _lp_reference(x, p, k, s):
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]]
            out[:, :, i, j] = (window**p).sum(axis=(2, 3)) ** (1 / p)
    return out


@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_lp_pool2d(p):
    x = np.random.default_rng(1).uniform(0.2, 1.5, size=(2, 3, 5, 7))
    got = F.lp_pool2d(dt.tensor(x), p, (2, 3), (1, 2))
    np.testing.assert_allclose(got.numpy(), _lp_reference(x, p, (2, 3), (1, 2)), rtol=1e-12)
    assert gradcheck(lambda t: nn.LPPool2d(p, 2)(t), [leaf(x[:1, :1])])
    inf = F.lp_pool2d(dt.tensor(-x), float("inf"), 2).numpy()
    np.testing.assert_allclose(inf, _lp_reference(x, 60, (2, 2), (2, 2)), rtol=0.05)


def test_lp_pool1d():
    x = np.random.default_rng(2).uniform(0.2, 1.5, size=(2, 3, 9))
    got = nn.LPPool1d(2, 3, 2)(dt.tensor(x)).numpy()
    expected = _lp_reference(x[:, :, None, :], 2, (1, 3), (1, 2))[:, :, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert gradcheck(lambda t: F.lp_pool1d(t, 3, 2), [leaf(x[:1])])
    assert repr(nn.LPPool1d(1.5, 2, 1, True)) == (
        "LPPool1d(norm_type=1.5, kernel_size=2, stride=1, ceil_mode=True)"
    )


@pytest.mark.parametrize("p", [1, 2, float("inf")])
def test_lp_pool_matches_torch(torch, same, p):
    x = np.random.default_rng(3).uniform(0.1, 1, size=(2, 4, 6, 7))
    same(F.lp_pool2d(dt.tensor(x), p, 3, 2, True), torch.nn.functional.lp_pool2d(
        torch.tensor(x), p, 3, 2, True), atol=1e-12)  # fmt: skip
    same(F.lp_pool1d(dt.tensor(x[0]), p, 2), torch.nn.functional.lp_pool1d(
        torch.tensor(x[0]), p, 2), atol=1e-12)  # fmt: skip
    assert repr(nn.LPPool2d(p, 3)) == repr(torch.nn.LPPool2d(p, 3))


def test_channel_shuffle():
    x = np.arange(2 * 6 * 2, dtype=np.float64).reshape(2, 6, 2)
    got = nn.ChannelShuffle(2)(dt.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x[:, [0, 3, 1, 4, 2, 5]])
    assert gradcheck(lambda t: F.channel_shuffle(t, 3), [leaf(x)])
    with pytest.raises(ValueError, match="divisible"):
        F.channel_shuffle(dt.tensor(x), 4)
    assert repr(nn.ChannelShuffle(2)) == "ChannelShuffle(groups=2)"


def test_channel_shuffle_matches_torch(torch, same):
    x = np.random.default_rng(0).normal(size=(2, 6, 3, 4))
    same(F.channel_shuffle(dt.tensor(x), 3), torch.nn.functional.channel_shuffle(
        torch.tensor(x), 3))  # fmt: skip


def test_upsampling_layers():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    near = nn.UpsamplingNearest2d(scale_factor=2)(dt.tensor(x)).numpy()
    np.testing.assert_array_equal(near, x.repeat(2, axis=2).repeat(2, axis=3))
    bilinear = nn.UpsamplingBilinear2d(size=(3, 3))(dt.tensor(x)).numpy()  # align_corners
    np.testing.assert_allclose(bilinear[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    assert repr(nn.UpsamplingNearest2d(scale_factor=2)) == (
        "UpsamplingNearest2d(scale_factor=2.0, mode='nearest')"
    )


def test_upsampling_matches_torch(torch, same):
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    for name, kwargs in (("UpsamplingNearest2d", {"size": (7, 9)}),
                         ("UpsamplingBilinear2d", {"scale_factor": 2})):  # fmt: skip
        ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
        same(ours(dt.tensor(x)), theirs(torch.tensor(x)), atol=1e-12)
        assert repr(ours) == repr(theirs)


def test_lp_pool_gradient_finite_on_all_zero_windows():
    x = leaf([[[-1.0, -2.0, 3.0, 4.0]]])
    F.lp_pool1d(F.relu(x), 2, 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[0.0, 0.0, 0.6, 0.8]]], rtol=1e-12)
    image = leaf(np.r_[np.zeros(8), np.arange(1.0, 9.0)].reshape(1, 1, 4, 4))
    nn.LPPool2d(3, 2)(image).sum().backward()
    assert np.isfinite(image.grad.numpy()).all()
    assert (image.grad.numpy()[..., :2, :] == 0).all()
    # An odd power whose window sums negative still gives NaN, as PyTorch.
    assert np.isnan(F.lp_pool1d(dt.tensor([[[-1.0, -2.0]]]), 3, 2).item())


def test_lp_pool_zero_windows_match_torch(torch):
    x = np.array([[[-1.0, -2.0, 3.0, 4.0, 0.0, 0.0]]])
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.lp_pool1d(torch.relu(theirs), 2, 2).sum().backward()
    ours = leaf(x)
    F.lp_pool1d(F.relu(ours), 2, 2).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


def test_circular_pad_wraps_at_most_once_and_crops():
    x = np.arange(4.0).reshape(1, 1, 4)
    np.testing.assert_array_equal(
        F.pad(dt.tensor(x), (4, 0), "circular").numpy(), np.pad(x, [(0, 0), (0, 0), (4, 0)], "wrap")
    )
    with pytest.raises(RuntimeError, match="more than once"):
        F.pad(dt.tensor(x), (5, 0), "circular")
    with pytest.raises(RuntimeError, match="more than once"):
        nn.CircularPad1d((0, 5))(dt.tensor(x))
    np.testing.assert_array_equal(
        F.pad(dt.tensor(x), (-1, 2), "circular").numpy(), [[[1.0, 2.0, 3.0, 1.0, 2.0]]]
    )
    np.testing.assert_array_equal(
        F.pad(dt.tensor(x), (2, -1), "circular").numpy(), [[[1.0, 2.0, 0.0, 1.0, 2.0]]]
    )
    assert gradcheck(lambda t: F.pad(t, (-1, 2, 1, -1), "circular"), [leaf(np.ones((1, 3, 4)))])
    with pytest.raises(RuntimeError, match="more than once"):
        F.pad(dt.tensor(x), (2, -3), "circular")  # 2 > the 1 element left (PyTorch fails too)
    with pytest.raises(ValueError, match="negative padding"):
        F.pad(dt.tensor(x), (-1, 0), "reflect")


def test_circular_pad_matches_torch(torch):
    x = np.random.default_rng(4).normal(size=(1, 2, 3, 4))
    for padding in [(4, 0, 3, 0), (-1, 2, 1, -2), (2, -2, 0, 1), (1, -3, -1, 0)]:
        theirs = torch.nn.functional.pad(torch.tensor(x), padding, "circular").numpy()
        np.testing.assert_array_equal(F.pad(dt.tensor(x), padding, "circular").numpy(), theirs)
    with pytest.raises(RuntimeError, match="more than once"):
        torch.nn.functional.pad(torch.tensor(x), (5, 0, 0, 0), "circular")
