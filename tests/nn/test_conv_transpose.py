"""conv_transpose1d/2d, unfold and fold: values against naive numpy loops (always) and
PyTorch (when installed), gradients against finite differences in float64, the layers'
shapes, ``output_size``, reprs and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def conv_transpose_ref(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Every input pixel scatters its weighted kernel onto the output."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    (oph, opw), (dh, dw) = pair(output_padding), pair(dilation)
    n, cin, h, width = x.shape
    _, cout_g, kh, kw = w.shape
    hout = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wout = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = np.zeros((n, cout_g * groups, hout + 2 * ph, wout + 2 * pw))
    cin_g = cin // groups
    for b_, ci, i, j, oc, ki, kj in itertools.product(
        range(n), range(cin), range(h), range(width), range(cout_g), range(kh), range(kw)
    ):
        g = ci // cin_g
        r, c = i * sh + ki * dh, j * sw + kj * dw
        if r < out.shape[2] and c < out.shape[3]:
            out[b_, g * cout_g + oc, r, c] += x[b_, ci, i, j] * w[ci, oc, ki, kj]
    out = out[:, :, ph : ph + hout, pw : pw + wout]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out


CASES = [
    # stride, padding, output_padding, groups, dilation, bias
    (1, 0, 0, 1, 1, True),
    (2, 1, 1, 1, 1, True),
    (2, 0, 0, 2, 1, False),
    (3, 2, 2, 1, 2, True),
    (1, 1, 1, 1, 2, True),  # output_padding >= stride, allowed below the dilation
    ((2, 1), (1, 0), (1, 0), 3, (1, 2), True),
]


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation,bias", CASES)
def test_conv_transpose2d_matches_loops_and_gradcheck(
    rng, stride, padding, output_padding, groups, dilation, bias
):
    x = rng.standard_normal((2, 6, 4, 3))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(2 * groups) if bias else None
    args = (stride, padding, output_padding, groups, dilation)
    out = F.conv_transpose2d(dt.tensor(x), dt.tensor(w), None if b is None else dt.tensor(b), *args)
    np.testing.assert_allclose(out.numpy(), conv_transpose_ref(x, w, b, *args), atol=1e-12)
    inputs = [leaf(x), leaf(w)] + ([leaf(b)] if bias else [])
    assert gradcheck(lambda *t: F.conv_transpose2d(*t[:2], t[2] if bias else None, *args), inputs)


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation,bias", CASES)
def test_conv_transpose2d_one_gradient_at_a_time(
    rng, stride, padding, output_padding, groups, dilation, bias
):
    # Backward lays the columns out differently when the weight needs no gradient: the
    # input's gradient (and the weight's alone) must equal those computed together.
    x, w = rng.standard_normal((3, 6, 4, 3)), rng.standard_normal((6, 2, 3, 2))
    args = (stride, padding, output_padding, groups, dilation)
    both = [leaf(x), leaf(w)]
    out = F.conv_transpose2d(*both, None, *args)
    grad = rng.standard_normal(tuple(out.shape))
    out.backward(dt.tensor(grad))
    for which in (0, 1):
        alone = [dt.tensor(x), dt.tensor(w)]
        alone[which] = leaf((x, w)[which])
        F.conv_transpose2d(*alone, None, *args).backward(dt.tensor(grad))
        np.testing.assert_allclose(alone[which].grad.numpy(), both[which].grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation,bias", CASES)
def test_conv_transpose2d_matches_torch(
    torch, rng, same, stride, padding, output_padding, groups, dilation, bias
):
    x = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(2 * groups)
    args = (stride, padding, output_padding, groups, dilation)
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = F.conv_transpose2d(ours[0], ours[1], ours[2] if bias else None, *args)
    ref = torch.nn.functional.conv_transpose2d(
        theirs[0], theirs[1], theirs[2] if bias else None, *args
    )
    same(out, ref, atol=1e-12)
    grad = rng.standard_normal(tuple(ref.shape))
    out.backward(dt.tensor(grad))
    ref.backward(torch.tensor(grad))
    for a, t in list(zip(ours, theirs))[: 3 if bias else 2]:
        same(a.grad, t.grad, atol=1e-11)


def test_conv_transpose_is_the_adjoint_of_conv(rng):
    # <conv(y), x> == <y, conv_transpose(x)> for the same weight and geometry.
    y = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    conv = F.conv2d(dt.tensor(y), dt.tensor(w), stride=2, padding=1, groups=2).numpy()
    x = rng.standard_normal(conv.shape)
    back = F.conv_transpose2d(
        dt.tensor(x), dt.tensor(w), stride=2, padding=1, output_padding=(0, 1), groups=2
    ).numpy()
    assert back.shape == y.shape
    np.testing.assert_allclose((conv * x).sum(), (y * back).sum(), rtol=1e-10)


def test_conv_transpose1d_and_unbatched(rng):
    x = rng.standard_normal((2, 4, 5))
    w = rng.standard_normal((4, 3, 3))
    out = F.conv_transpose1d(dt.tensor(x), dt.tensor(w), stride=2, padding=1, output_padding=1)
    ref = conv_transpose_ref(x[:, :, None], w[:, :, None], None, (1, 2), (0, 1), (0, 1))
    np.testing.assert_allclose(out.numpy(), ref[:, :, 0], atol=1e-12)
    one = F.conv_transpose2d(dt.tensor(x[0][:, None]), dt.tensor(w[:, :, None]), stride=2)
    assert one.shape == (3, 1, 11)


def test_conv_transpose1d_matches_torch(torch, rng, same):
    x = rng.standard_normal((2, 4, 7))
    w = rng.standard_normal((4, 3, 3))
    b = rng.standard_normal(6)
    ours = F.conv_transpose1d(dt.tensor(x), dt.tensor(w), dt.tensor(b), 2, 1, 1, 2, 1)
    theirs = torch.nn.functional.conv_transpose1d(
        torch.tensor(x), torch.tensor(w), torch.tensor(b), 2, 1, 1, 2, 1
    )
    same(ours, theirs, atol=1e-12)


def test_conv_transpose_layers(rng):
    m = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert m.weight.shape == (4, 3, 3, 3) and m.bias.shape == (6,)
    assert repr(m) == (
        "ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)"
    )
    # PyTorch's init: U(-1/sqrt(fan_in), ...) with fan_in from weight's dim 1 (out / groups).
    bound = 1 / np.sqrt(3 * 9)
    assert np.abs(m.weight.detach().numpy()).max() <= bound
    x = dt.tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    assert m(x).shape == (2, 6, 9, 9)
    assert m(x, output_size=(10, 10)).shape == (2, 6, 10, 10)
    assert m(x, output_size=[2, 6, 10, 9]).shape == (2, 6, 10, 9)
    with pytest.raises(ValueError, match="between 9 and 10"):
        m(x, output_size=(11, 11))
    m1 = nn.ConvTranspose1d(4, 2, 3, stride=3, bias=False)
    assert repr(m1) == "ConvTranspose1d(4, 2, kernel_size=(3,), stride=(3,), bias=False)"
    assert m1(dt.ones(1, 4, 5)).shape == (1, 2, 15)
    assert m1(dt.ones(4, 5), output_size=[17]).shape == (2, 17)


def test_conv_transpose_layer_matches_torch(torch, rng, same, copy_from_torch):
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, dilation=2).double()
    ours = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, dilation=2).double()
    copy_from_torch(ours, theirs)
    x = rng.standard_normal((2, 4, 5, 6))
    same(ours(dt.tensor(x)), theirs(torch.tensor(x)), atol=1e-12)
    same(
        ours(dt.tensor(x), output_size=(12, 12)),
        theirs(torch.tensor(x), output_size=(12, 12)),
        atol=1e-12,
    )
    assert repr(ours) == repr(theirs)


def test_conv_transpose_errors():
    x, w = dt.ones(1, 4, 3, 3), dt.ones(4, 2, 3, 3)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="channels"):
        F.conv_transpose2d(dt.ones(1, 3, 3, 3), w)
    with pytest.raises(ValueError, match="not positive"):
        F.conv_transpose2d(x, w, padding=3)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.ConvTranspose2d(4, 2, 3, padding_mode="reflect")
    with pytest.raises(TypeError, match="float"):
        F.conv_transpose2d(dt.ones(1, 4, 3, 3, dtype="int64"), w)


def unfold_ref(x, kernel, dilation, padding, stride):
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = map(pair, (kernel, dilation, padding, stride))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    n, c = x.shape[:2]
    out = np.zeros((n, c, kh, kw, oh, ow))
    for i, j, a, b in itertools.product(range(kh), range(kw), range(oh), range(ow)):
        out[:, :, i, j, a, b] = xp[:, :, a * sh + i * dh, b * sw + j * dw]
    return out.reshape(n, c * kh * kw, oh * ow)


GEOMETRIES = [(2, 1, 0, 1), (3, 2, 1, 2), ((2, 3), 1, (1, 0), (2, 1))]


@pytest.mark.parametrize("kernel,dilation,padding,stride", GEOMETRIES)
def test_unfold_fold_against_loops_adjoint_and_gradcheck(rng, kernel, dilation, padding, stride):
    x = rng.standard_normal((2, 3, 7, 6))
    cols = F.unfold(dt.tensor(x), kernel, dilation, padding, stride)
    np.testing.assert_array_equal(cols.numpy(), unfold_ref(x, kernel, dilation, padding, stride))
    y = rng.standard_normal(cols.shape)
    folded = F.fold(dt.tensor(y), (7, 6), kernel, dilation, padding, stride).numpy()
    assert folded.shape == x.shape
    np.testing.assert_allclose((cols.numpy() * y).sum(), (x * folded).sum(), rtol=1e-10)
    assert gradcheck(lambda t: F.unfold(t, kernel, dilation, padding, stride), [leaf(x)])
    assert gradcheck(lambda t: F.fold(t, (7, 6), kernel, dilation, padding, stride), [leaf(y)])
    layer = nn.Unfold(kernel, dilation, padding, stride)
    assert layer(dt.tensor(x[0])).shape == cols.shape[1:]  # unbatched
    assert nn.Fold((7, 6), kernel, dilation, padding, stride)(dt.tensor(y[0])).shape == x.shape[1:]


@pytest.mark.parametrize("kernel,dilation,padding,stride", GEOMETRIES)
def test_unfold_fold_match_torch(torch, rng, same, kernel, dilation, padding, stride):
    x = rng.standard_normal((2, 3, 7, 6))
    ref = torch.nn.functional.unfold(torch.tensor(x), kernel, dilation, padding, stride)
    same(F.unfold(dt.tensor(x), kernel, dilation, padding, stride), ref, atol=0)
    cols = ref.numpy()
    same(
        F.fold(dt.tensor(cols), (7, 6), kernel, dilation, padding, stride),
        torch.nn.functional.fold(torch.tensor(cols), (7, 6), kernel, dilation, padding, stride),
        atol=1e-12,
    )
    assert repr(nn.Fold((7, 6), kernel, dilation, padding, stride)) == repr(
        torch.nn.Fold((7, 6), kernel, dilation, padding, stride)
    )


def test_fold_errors():
    with pytest.raises(ValueError, match="blocks"):
        F.fold(dt.ones(1, 12, 5), (4, 4), 2)
    with pytest.raises(ValueError, match="divisible"):
        F.fold(dt.ones(1, 7, 9), (4, 4), 2)
