"""conv3d / conv_transpose3d and Conv3d / ConvTranspose3d: a loop-over-outputs numpy
reference, finite differences, PyTorch where installed, and the test device."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def reference_conv3d(x, w, b, stride, padding, dilation, groups):
    """Direct definition: every output voxel is a dot product over its window."""
    x = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding))
    n = x.shape[0]
    o, cg = w.shape[:2]
    kernel = w.shape[2:]
    out_size = [
        (x.shape[2 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(3)
    ]
    og = o // groups
    out = np.zeros((n, o, *out_size))
    for i, j, k in itertools.product(*(range(s) for s in out_size)):
        window = x[
            :,
            :,
            i * stride[0] : i * stride[0] + dilation[0] * (kernel[0] - 1) + 1 : dilation[0],
            j * stride[1] : j * stride[1] + dilation[1] * (kernel[1] - 1) + 1 : dilation[1],
            k * stride[2] : k * stride[2] + dilation[2] * (kernel[2] - 1) + 1 : dilation[2],
        ]
        for g in range(groups):
            part = window[:, g * cg : (g + 1) * cg]
            out[:, g * og : (g + 1) * og, i, j, k] = np.einsum(
                "ncdhw,ocdhw->no", part, w[g * og : (g + 1) * og]
            )
    return out + (0 if b is None else b.reshape(1, -1, 1, 1, 1))


def reference_conv_transpose3d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Scatter each input voxel's kernel-weighted contribution, then crop the padding."""
    n, cin = x.shape[:2]
    cout_g, kernel = w.shape[1], w.shape[2:]
    cin_g = cin // groups
    size = [
        (x.shape[2 + a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 + output_padding[a]
        for a in range(3)
    ]
    full = np.zeros((n, cout_g * groups, *size))
    for i, j, k in itertools.product(*(range(s) for s in x.shape[2:])):
        for g in range(groups):
            contribution = np.einsum(
                "nc,cokhw->nokhw",
                x[:, g * cin_g : (g + 1) * cin_g, i, j, k],
                w[g * cin_g : (g + 1) * cin_g],
            )
            full[
                :,
                g * cout_g : (g + 1) * cout_g,
                i * stride[0] : i * stride[0] + dilation[0] * (kernel[0] - 1) + 1 : dilation[0],
                j * stride[1] : j * stride[1] + dilation[1] * (kernel[1] - 1) + 1 : dilation[1],
                k * stride[2] : k * stride[2] + dilation[2] * (kernel[2] - 1) + 1 : dilation[2],
            ] += contribution
    p = padding
    out = full[:, :, p[0] : size[0] - p[0], p[1] : size[1] - p[1], p[2] : size[2] - p[2]]
    return out + (0 if b is None else b.reshape(1, -1, 1, 1, 1))


CONV_CASES = [
    # stride, padding, dilation, groups
    ((1, 1, 1), (0, 0, 0), (1, 1, 1), 1),
    ((2, 1, 2), (1, 0, 2), (1, 2, 1), 2),
    ((1, 3, 1), (0, 1, 1), (2, 1, 1), 1),
]


@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_CASES)
def test_conv3d_matches_the_direct_definition(stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6, 7))
    w = rng.standard_normal((6, 4 // groups, 3, 2, 3))
    b = rng.standard_normal(6)
    out = F.conv3d(dt.tensor(x), dt.tensor(w), dt.tensor(b), stride, padding, dilation, groups)
    expected = reference_conv3d(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    unbatched = F.conv3d(dt.tensor(x[0]), dt.tensor(w), None, stride, padding, dilation, groups)
    np.testing.assert_allclose(unbatched.numpy(), expected[0] - b.reshape(-1, 1, 1, 1), atol=1e-12)


def test_conv3d_same_and_valid_padding():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 4, 5, 6)), rng.standard_normal((3, 2, 2, 3, 4))
    same = F.conv3d(dt.tensor(x), dt.tensor(w), padding="same", dilation=(1, 2, 1))
    assert same.shape == (1, 3, 4, 5, 6)
    # 'same' pads the odd extra element at the end: (0, 1), (2, 2), (1, 2)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (2, 2), (1, 2)))
    expected = reference_conv3d(padded, w, None, (1, 1, 1), (0, 0, 0), (1, 2, 1), 1)
    np.testing.assert_allclose(same.numpy(), expected, atol=1e-12)
    valid = F.conv3d(dt.tensor(x), dt.tensor(w), padding="valid")
    assert valid.shape == (1, 3, 3, 3, 3)
    with pytest.raises(ValueError, match="stride 1"):
        F.conv3d(dt.tensor(x), dt.tensor(w), padding="same", stride=2)
    with pytest.raises(ValueError, match="channels"):
        F.conv3d(dt.tensor(x), dt.tensor(rng.standard_normal((3, 3, 1, 1, 1))))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv3d(dt.tensor(x), dt.tensor(rng.standard_normal((3, 2, 5, 1, 1))))


@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_CASES[:2])
def test_conv3d_gradients_by_finite_differences(stride, padding, dilation, groups):
    rng = np.random.default_rng(2)
    x = leaf(rng.standard_normal((1, 4, 4, 4, 5)))
    w = leaf(rng.standard_normal((2, 4 // groups, 2, 2, 3)))
    b = leaf(rng.standard_normal(2))
    assert gradcheck(lambda *a: F.conv3d(*a, stride, padding, dilation, groups), [x, w, b])


TRANSPOSE_CASES = [
    # stride, padding, output_padding, dilation, groups
    ((1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), 1),
    ((2, 1, 3), (1, 0, 1), (1, 0, 2), (1, 2, 1), 2),
    ((2, 2, 1), (0, 1, 0), (1, 1, 1), (1, 1, 2), 1),  # output_padding >= stride, < dilation
]


@pytest.mark.parametrize("stride, padding, output_padding, dilation, groups", TRANSPOSE_CASES)
def test_conv_transpose3d_matches_the_scatter_definition(
    stride, padding, output_padding, dilation, groups
):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 4, 3))
    w = rng.standard_normal((4, 6 // groups, 3, 2, 3))
    b = rng.standard_normal(6)
    args = (stride, padding, output_padding, groups, dilation)
    out = F.conv_transpose3d(dt.tensor(x), dt.tensor(w), dt.tensor(b), *args)
    np.testing.assert_allclose(out.numpy(), reference_conv_transpose3d(x, w, b, *args), atol=1e-12)


@pytest.mark.parametrize("stride, padding, output_padding, dilation, groups", TRANSPOSE_CASES)
def test_conv_transpose3d_gradients_by_finite_differences(
    stride, padding, output_padding, dilation, groups
):
    rng = np.random.default_rng(4)
    x = leaf(rng.standard_normal((1, 2, 2, 3, 2)))
    w = leaf(rng.standard_normal((2, 4 // groups, 2, 2, 3)))
    b = leaf(rng.standard_normal(4))
    args = (stride, padding, output_padding, groups, dilation)
    assert gradcheck(lambda *a: F.conv_transpose3d(*a, *args), [x, w, b])
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose3d(x, w, None, 1, 0, 1)


def test_conv3d_layers_shapes_and_repr():
    conv = nn.Conv3d(4, 6, (3, 1, 2), stride=2, padding=1, groups=2, bias=False)
    assert conv.weight.shape == (6, 2, 3, 1, 2) and conv.bias is None
    assert conv(dt.randn(2, 4, 5, 5, 5)).shape == (2, 6, 3, 4, 3)
    assert "padding=(1, 1, 1)" in repr(conv)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv3d(1, 1, 1, padding_mode="mirror")
    up = nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1)
    assert up.weight.shape == (4, 2, 3, 3, 3)
    assert up(dt.randn(1, 4, 3, 3, 3)).shape == (1, 2, 5, 5, 5)
    assert up(dt.randn(1, 4, 3, 3, 3), output_size=(6, 5, 6)).shape == (1, 2, 6, 5, 6)
    assert up(dt.randn(4, 3, 3, 3)).shape == (2, 5, 5, 5)


def test_conv3d_padding_modes_pad_first():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4, 4, 4))
    conv = nn.Conv3d(2, 3, 3, padding=(1, 0, 1), padding_mode="replicate").double()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (1, 1)), mode="edge")
    expected = reference_conv3d(
        padded, conv.weight.detach().numpy(), conv.bias.detach().numpy(), (1,) * 3, (0,) * 3,
        (1,) * 3, 1,
    )  # fmt: skip
    np.testing.assert_allclose(conv(dt.tensor(x)).detach().numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv3d_layer_matches_torch(torch, copy_from_torch, same, mode):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5, 6, 5))
    kwargs = dict(stride=(1, 2, 1), padding=(1, 2, 0), dilation=(2, 1, 1), groups=2)
    ours = nn.Conv3d(4, 6, (2, 3, 2), padding_mode=mode, **kwargs).double()
    theirs = torch.nn.Conv3d(4, 6, (2, 3, 2), padding_mode=mode, **kwargs).double()
    copy_from_torch(ours, theirs)
    ours_x, theirs_x = leaf(x), torch.tensor(x, requires_grad=True)
    out, tout = ours(ours_x), theirs(theirs_x)
    same(out, tout, atol=1e-12)
    out.sum().backward()
    tout.sum().backward()
    same(ours_x.grad, theirs_x.grad, atol=1e-12)
    same(ours.weight.grad, theirs.weight.grad, atol=1e-11)
    same(ours.bias.grad, theirs.bias.grad, atol=1e-11)


def test_conv_transpose3d_layer_matches_torch(torch, copy_from_torch, same):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 3, 4, 3))
    kwargs = dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), groups=2)
    ours = nn.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs).double()
    theirs = torch.nn.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs).double()
    copy_from_torch(ours, theirs)
    ours_x, theirs_x = leaf(x), torch.tensor(x, requires_grad=True)
    out, tout = ours(ours_x), theirs(theirs_x)
    same(out, tout, atol=1e-12)
    out.sum().backward()
    tout.sum().backward()
    same(ours_x.grad, theirs_x.grad, atol=1e-12)
    same(ours.weight.grad, theirs.weight.grad, atol=1e-11)


DEVICE_CASES = {
    "conv3d": (
        lambda x, w, b: F.conv3d(x, w, b, (1, 2, 1), 1, (2, 1, 1), 2),
        ((2, 4, 4, 5, 4), (6, 2, 2, 3, 2), (6,)),
    ),
    "conv_transpose3d": (
        lambda x, w, b: F.conv_transpose3d(x, w, b, 2, 1, (1, 0, 1), 2),
        ((2, 4, 3, 2, 3), (4, 3, 2, 3, 2), (6,)),
    ),
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_conv3d_on_the_test_device(test_device, name):
    fn, shapes = DEVICE_CASES[name]
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in shapes]
    on_cpu = [leaf(a) for a in arrays]
    on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in arrays]
    expected, got = fn(*on_cpu), fn(*on_device)
    assert got.device.type == test_device
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), atol=1e-12)
    (expected * expected).sum().backward()
    (got * got).sum().backward()
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("transpose", [False, True])
def test_conv3d_batch_of_zero(transpose):
    # an empty batch gives empty outputs and gradients, as conv2d and PyTorch
    rng = np.random.default_rng(9)
    x = leaf(np.zeros((0, 4, 3, 4, 5)))
    w = leaf(rng.standard_normal((4, 3, 2, 2, 2) if transpose else (6, 2, 2, 2, 2)))
    b = leaf(rng.standard_normal(6))
    if transpose:
        out = F.conv_transpose3d(x, w, b, stride=2, padding=1, groups=2)
        assert out.shape == (0, 6, 4, 6, 8)
    else:
        out = F.conv3d(x, w, b, padding=1, groups=2)
        assert out.shape == (0, 6, 4, 5, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape and (w.grad.numpy() == 0).all() and (b.grad.numpy() == 0).all()
