"""normalize, cosine_similarity, interpolate, group_norm, conv1d, 1-D pooling, channel
dropout and their layers: numpy references, finite differences, then PyTorch."""

import warnings

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# ---- normalize / cosine_similarity ---------------------------------------------------------
@pytest.mark.parametrize("p,dim", [(2.0, 1), (1.0, -1), (3.0, 0), (float("inf"), 1)])
def test_normalize(rng, p, dim):
    x = rng.standard_normal((3, 4, 5))
    norm = np.linalg.norm(np.moveaxis(x, dim, -1), ord=p, axis=-1)
    expected = x / np.expand_dims(np.maximum(norm, 1e-12), dim)
    got = F.normalize(leaf(x), p=p, dim=dim)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    assert gradcheck(lambda a: F.normalize(a, p=p, dim=dim), [leaf(x)])


def test_normalize_zero_vector_has_zero_gradient():
    x = leaf([[0.0, 0.0], [3.0, 4.0]])
    out = F.normalize(x, dim=1)
    np.testing.assert_allclose(out.detach().numpy(), [[0, 0], [0.6, 0.8]])
    out.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()
    with pytest.raises(ValueError, match="p=0"):
        F.normalize(dt.ones(2, 2), p=0)


def test_cosine_similarity(rng):
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    expected = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    got = F.cosine_similarity(leaf(a), leaf(b))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    assert gradcheck(F.cosine_similarity, [leaf(a), leaf(b)])
    c = rng.standard_normal(6)  # broadcasts against every row
    expected = a @ c / (np.linalg.norm(a, axis=1) * np.linalg.norm(c))
    got = F.cosine_similarity(leaf(a), leaf(c), dim=-1)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    assert gradcheck(lambda u, v: F.cosine_similarity(u, v, dim=-1), [leaf(a), leaf(c)])


# ---- interpolate ---------------------------------------------------------------------------
def test_interpolate_nearest_and_bilinear_values(rng):
    x = rng.standard_normal((1, 2, 3, 4))
    got = F.interpolate(leaf(x), scale_factor=2).detach().numpy()
    np.testing.assert_array_equal(got, x.repeat(2, axis=2).repeat(2, axis=3))
    # align_corners=True: the corners stay, the middle is the mean of its neighbours
    row = np.array([[[[0.0, 2.0, 6.0]]]])
    got = F.interpolate(leaf(row), size=(1, 5), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(got.detach().numpy()[0, 0, 0], [0, 1, 2, 4, 6])
    # align_corners=False, x2: source positions -0.25 (clamped to 0), 0.25, 0.75, ...
    got = F.interpolate(leaf(row), scale_factor=(1, 2), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(got.detach().numpy()[0, 0, 0], [0, 0.5, 1.5, 3, 5, 6])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2},
        {"size": (5, 3)},
        {"scale_factor": 1.5, "mode": "bilinear"},
        {"size": (2, 7), "mode": "bilinear", "align_corners": True},
    ],
)
def test_interpolate_gradcheck(rng, kwargs):
    x = rng.standard_normal((2, 2, 3, 4))
    assert gradcheck(lambda a: F.interpolate(a, **kwargs), [leaf(x)])


def test_interpolate_errors():
    x = dt.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="exactly one"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="bicubic"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="4-D"):
        F.interpolate(dt.ones(1, 2, 3), scale_factor=2, mode="bilinear")
    up = nn.Upsample(scale_factor=2, mode="bilinear")
    assert up(x).shape == (1, 1, 4, 4)
    assert repr(up) == "Upsample(scale_factor=2.0, mode='bilinear')"


# ---- group_norm ----------------------------------------------------------------------------
def test_group_norm(rng):
    x, w, b = rng.standard_normal((2, 6, 3, 2)), rng.standard_normal(6), rng.standard_normal(6)
    g = x.reshape(2, 3, -1)
    xhat = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(
        x.shape
    )
    expected = xhat * w[:, None, None] + b[:, None, None]
    got = F.group_norm(leaf(x), 3, leaf(w), leaf(b))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda *a: F.group_norm(a[0], 3, a[1], a[2]), [leaf(x), leaf(w), leaf(b)])
    m = nn.GroupNorm(3, 6)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    np.testing.assert_allclose(m(dt.tensor(x)).detach().numpy(), xhat, rtol=1e-6, atol=1e-6)
    assert list(nn.GroupNorm(3, 6, affine=False).parameters()) == []
    with pytest.raises(ValueError, match="divisible"):
        F.group_norm(dt.ones(2, 5, 3), 2)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)


# ---- conv1d / pooling ----------------------------------------------------------------------
def np_conv1d(x, w, b, stride, padding, dilation):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    k = w.shape[-1]
    span = dilation * (k - 1) + 1
    length = (x.shape[-1] - span) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], length))
    for i in range(length):
        window = x[:, :, i * stride : i * stride + span : dilation]
        out[:, :, i] = np.einsum("nck,ock->no", window, w)
    return out + b[None, :, None]


def test_conv1d(rng):
    x, w, b = rng.standard_normal((2, 3, 9)), rng.standard_normal((4, 3, 3)), rng.standard_normal(4)
    got = F.conv1d(leaf(x), leaf(w), leaf(b), stride=2, padding=1, dilation=2)
    np.testing.assert_allclose(got.detach().numpy(), np_conv1d(x, w, b, 2, 1, 2), rtol=1e-10)
    fn = lambda *a: F.conv1d(a[0], a[1], a[2], stride=2, padding=(1,), dilation=2)
    assert gradcheck(fn, [leaf(x), leaf(w), leaf(b)])
    assert F.conv1d(dt.ones(3, 9), dt.ones(4, 3, 3), padding="same").shape == (4, 9)
    with pytest.raises(ValueError, match="3-D input"):
        F.conv1d(dt.ones(1, 3, 4, 4), dt.ones(4, 3, 3))
    m = nn.Conv1d(3, 4, 3, padding=1, bias=False)
    assert m.weight.shape == (4, 3, 3) and m.bias is None
    assert m(dt.ones(2, 3, 9)).shape == (2, 4, 9)
    assert repr(m) == "Conv1d(3, 4, kernel_size=(3,), stride=(1,), padding=(1,), bias=False)"


def test_pool1d(rng):
    x = rng.standard_normal((2, 3, 7))
    got = F.max_pool1d(leaf(x), 2).detach().numpy()
    np.testing.assert_array_equal(got, x[..., :6].reshape(2, 3, 3, 2).max(-1))
    got = F.avg_pool1d(leaf(x), 3, 2).detach().numpy()
    expected = np.stack([x[..., i : i + 3].mean(-1) for i in (0, 2, 4)], -1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    values, indices = F.max_pool1d(dt.tensor(x), 3, 2, return_indices=True)
    np.testing.assert_array_equal(np.take_along_axis(x, indices.numpy(), -1), values.numpy())
    assert gradcheck(lambda a: F.max_pool1d(a, 3, 2, 1), [leaf(x)])
    assert gradcheck(lambda a: F.avg_pool1d(a, 3, 2, 1, count_include_pad=False), [leaf(x)])
    assert nn.MaxPool1d(2)(dt.tensor(x)).shape == (2, 3, 3)
    assert nn.AvgPool1d(3)(dt.tensor(x[0])).shape == (3, 2)


# ---- channel dropout -----------------------------------------------------------------------
def test_channel_dropout_zeros_whole_channels():
    dt.manual_seed(0)
    x = dt.ones(8, 16, 3, 3)
    y = nn.Dropout2d(0.5)(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    assert all(len(np.unique(y[i, c])) == 1 for i in range(8) for c in range(16))
    y = F.dropout1d(dt.ones(16, 5), 0.5).numpy()  # unbatched (C, L)
    assert set(np.unique(y)) == {0.0, 2.0} and all(len(np.unique(r)) == 1 for r in y)
    m = nn.Dropout1d(0.5).eval()
    np.testing.assert_array_equal(m(dt.ones(2, 3, 4)).numpy(), 1.0)
    with pytest.raises(RuntimeError, match="2D or 3D"):
        F.dropout1d(dt.ones(2, 3, 4, 5))
    with pytest.warns(UserWarning, match="3D input"):
        F.dropout2d(dt.ones(2, 3, 4))
    x = leaf(np.ones((4, 6, 2)))
    y = F.dropout1d(x, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.detach().numpy())


# ---- against PyTorch -----------------------------------------------------------------------
def test_functional_extras_match_torch(torch, same, rng):
    tf = torch.nn.functional
    x, y = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    im = rng.standard_normal((2, 3, 5, 7))
    w1, b1 = rng.standard_normal((6, 2, 3)), rng.standard_normal(6)
    gw, gb = rng.standard_normal(4), rng.standard_normal(4)
    cases = [
        (lambda f, a: f.normalize(a, dim=1), [x]),
        (lambda f, a: f.normalize(a, p=1.5, dim=-1, eps=0.1), [x]),
        (lambda f, a, b: f.cosine_similarity(a, b), [x, y]),
        (lambda f, a, b: f.cosine_similarity(a, b, dim=-1), [x, y[0, 0]]),
        (lambda f, a: f.group_norm(a, 2), [x]),
        (lambda f, a, w, b: f.group_norm(a, 2, w, b), [x, gw, gb]),
        (lambda f, a, w, b: f.conv1d(a, w, b, 2, 1, 1, 2), [x, w1, b1]),
        (lambda f, a: f.max_pool1d(a, 2, 1, 1, ceil_mode=True), [x]),
        (lambda f, a: f.avg_pool1d(a, 3, 2, 1), [x]),
    ]
    for kwargs in (
        {"scale_factor": 2},
        {"scale_factor": 1.7},
        {"size": (3, 4)},
        {"size": (8, 11)},
        {"scale_factor": (0.5, 2.5)},
    ):
        cases.append((lambda f, a, k=kwargs: f.interpolate(a, **k), [im]))
        for corners in (False, True):
            cases.append(
                (
                    lambda f, a, k=kwargs, c=corners: f.interpolate(
                        a, mode="bilinear", align_corners=c, **k
                    ),
                    [im],
                )
            )
    cases.append((lambda f, a: f.interpolate(a, scale_factor=3, mode="linear"), [x]))
    for fn, arrays in cases:
        ours = [leaf(a) for a in arrays]
        theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
        out, ref = fn(F, *ours), fn(tf, *theirs)
        same(out, ref, atol=1e-12)
        g = rng.standard_normal(tuple(ref.shape))
        (out * dt.tensor(g)).sum().backward()
        (ref * torch.tensor(g)).sum().backward()
        for a, b in zip(ours, theirs):
            same(a.grad, b.grad, atol=1e-12)


def test_layers_match_torch(torch, same, copy_from_torch, rng):
    x = rng.standard_normal((2, 4, 9)).astype(np.float32)
    pairs = [
        (
            nn.Conv1d(4, 6, 3, padding=1, padding_mode="circular"),
            torch.nn.Conv1d(4, 6, 3, padding=1, padding_mode="circular"),
        ),
        (nn.Conv1d(4, 6, 3, stride=2, groups=2), torch.nn.Conv1d(4, 6, 3, stride=2, groups=2)),
        (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4)),
        (nn.MaxPool1d(3, 2), torch.nn.MaxPool1d(3, 2)),
        (nn.AvgPool1d(3), torch.nn.AvgPool1d(3)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        copy_from_torch(ours, theirs)
        same(ours(dt.tensor(x)), theirs(torch.tensor(x)), atol=1e-5, rtol=1e-5)
    assert repr(nn.GroupNorm(2, 4, affine=False)) == repr(torch.nn.GroupNorm(2, 4, affine=False))
    for text in ("Dropout1d()", "Dropout2d(0.2)", "Upsample(size=3, mode='bilinear')"):
        assert repr(eval("nn." + text)) == repr(eval("torch.nn." + text))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = nn.Conv1d(2, 4, 5)
    fan_in = 2 * 5  # PyTorch's default initialisation bound
    assert np.abs(conv.weight.detach().numpy()).max() <= 1 / np.sqrt(fan_in)


# ---- on --device (cuda, emulated-cuda): the cupy code paths ---------------------------------
DEVICE_CASES = {
    "leaky_relu": (lambda a: F.leaky_relu(a, 0.2), 1),
    "elu": (F.elu, 1),
    "relu6": (F.relu6, 1),
    "hardtanh": (F.hardtanh, 1),
    "hardswish": (F.hardswish, 1),
    "hardsigmoid": (F.hardsigmoid, 1),
    "mish": (F.mish, 1),
    "logsigmoid": (F.logsigmoid, 1),
    "glu": (lambda a: F.glu(a, 1), 1),
    "prelu": (F.prelu, 2),
    "bce": (lambda a, b: F.binary_cross_entropy(a.sigmoid(), b.sigmoid()), 2),
    "smooth_l1": (lambda a, b: F.smooth_l1_loss(a, b, beta=0.5), 2),
    "huber": (lambda a, b: F.huber_loss(a, b, delta=0.5), 2),
    "kl_div": (lambda a, b: F.kl_div(a, b.softmax(-1), reduction="batchmean"), 2),
    "kl_div_log": (lambda a, b: F.kl_div(a, b, log_target=True, reduction="sum"), 2),
    "normalize": (lambda a: F.normalize(a, dim=1), 1),
    "cosine": (lambda a, b: F.cosine_similarity(a, b), 2),
    "interpolate": (lambda a: F.interpolate(a, scale_factor=2, mode="bilinear"), 1),
    "nearest": (lambda a: F.interpolate(a, size=(3, 7)), 1),
    "group_norm": (lambda a: F.group_norm(a, 2), 1),
    "conv1d": (lambda a, b: F.conv1d(a.flatten(2), b.flatten(2)[:, :, :3]), 2),
    "pool1d": (
        lambda a: F.max_pool1d(a.flatten(2), 2).sum(-1) + F.avg_pool1d(a.flatten(2), 3).sum(-1),
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_new_ops_on_the_test_device(test_device, name):
    fn, arity = DEVICE_CASES[name]
    rng = np.random.default_rng(8)
    shapes = {"prelu": [(2, 4, 3, 5), (4,)]}.get(name, [(2, 4, 3, 5)] * arity)
    if name == "conv1d":
        shapes = [(2, 4, 3, 5), (6, 4, 1, 3)]
    arrays = [rng.standard_normal(s) for s in shapes]
    on_cpu = [leaf(a) for a in arrays]
    on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in arrays]
    expected, got = fn(*on_cpu), fn(*on_device)
    assert got.device.type == test_device
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), atol=1e-12)
    expected.sum().backward()
    got.sum().backward()
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("value", [300.0, 1e-4])
def test_float16_normalize_and_cosine_similarity_take_their_norms_in_float32(value):
    # squared in float16, 300 overflows (the norm is inf) and 1e-4 underflows (it is 0)
    x = dt.full((2, 4), value, dtype=dt.float16, requires_grad=True)
    unit = F.normalize(x, dim=1)
    assert unit.dtype == dt.float16
    np.testing.assert_allclose(unit.detach().numpy(), np.full((2, 4), 0.5))
    similarity = F.cosine_similarity(x, x)
    assert similarity.dtype == dt.float16
    np.testing.assert_allclose(similarity.detach().numpy(), [1.0, 1.0], rtol=1e-3)
    similarity.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_glu_of_an_empty_dim_is_empty():
    assert F.glu(dt.zeros(0, 4), 0).shape == (0, 4)
    assert F.glu(dt.zeros(3, 0), 1).shape == (3, 0)


def test_nll_loss_mean_with_every_target_ignored_has_zero_gradients():
    # the mean divides by 0: the loss is NaN (as PyTorch), the gradients 0, not NaN
    log_probs = dt.tensor(np.log(np.full((3, 4), 0.25, np.float32)), requires_grad=True)
    loss = F.nll_loss(log_probs, dt.tensor([-100, -100, -100]))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(log_probs.grad.numpy(), np.zeros((3, 4)))


def test_containers_extended_with_themselves_double():
    modules = dt.nn.ModuleList([dt.nn.ReLU(), dt.nn.Tanh()])
    modules += modules
    assert [type(m).__name__ for m in modules] == ["ReLU", "Tanh", "ReLU", "Tanh"]
    params = dt.nn.ParameterList([dt.nn.Parameter(dt.ones(1))])
    params.extend(params)
    assert len(params) == 2 and params[1] is params[0]
    table = dt.nn.ParameterDict({"a": dt.nn.Parameter(dt.ones(1))})
    copy = dt.nn.ParameterDict(table)
    table.update(dt.nn.ParameterDict({"b": dt.nn.Parameter(dt.zeros(2))}))
    assert list(copy.keys()) == ["a"] and list(table.keys()) == ["a", "b"]
