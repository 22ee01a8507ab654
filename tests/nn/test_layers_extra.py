"""InstanceNorm, RMSNorm, LocalResponseNorm, adaptive max/1-D pools, pixel shuffles, padding
layers, distances, Bilinear, Embedding.from_pretrained, gumbel_softmax, DataParallel and
the lazy nn.SyncBatchNorm: numpy references always, PyTorch when installed."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def tleaf(torch, array):
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# ---- InstanceNorm ---------------------------------------------------------------------------
def test_instance_norm_against_numpy_and_running_stats(rng):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    m = nn.InstanceNorm2d(4, affine=True, track_running_stats=True).double()
    with dt.no_grad():
        m.weight.copy_(dt.tensor(rng.standard_normal(4)))
        m.bias.copy_(dt.tensor(rng.standard_normal(4)))
    out = m(dt.tensor(x)).detach().numpy()
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    expected = (x - mean) / np.sqrt(var + 1e-5) * w.reshape(4, 1, 1) + b.reshape(4, 1, 1)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    unbiased = x.var(axis=(2, 3), ddof=1).mean(0)
    np.testing.assert_allclose(m.running_mean.numpy(), 0.1 * mean.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(m.running_var.numpy(), 0.9 + 0.1 * unbiased)
    m.eval()  # the running statistics now
    rm, rv = m.running_mean.numpy().reshape(4, 1, 1), m.running_var.numpy().reshape(4, 1, 1)
    np.testing.assert_allclose(
        m(dt.tensor(x)).detach().numpy(),
        (x - rm) / np.sqrt(rv + 1e-5) * w.reshape(4, 1, 1) + b.reshape(4, 1, 1),
        atol=1e-12,
    )
    assert gradcheck(lambda t: F.instance_norm(t), [leaf(x[:2, :2, :3, :3])])
    one = nn.InstanceNorm1d(3)  # defaults: no parameters, no buffers
    assert list(one.state_dict()) == [] and one(dt.tensor(x[0, :3, 0])).shape == (3, 6)
    with pytest.raises(ValueError, match="4 channels"):
        nn.InstanceNorm2d(4, affine=True)(dt.ones(1, 3, 2, 2))


@pytest.mark.parametrize(
    "cls,shape", [("InstanceNorm2d", (3, 4, 5, 6)), ("InstanceNorm1d", (4, 7))]
)
@pytest.mark.parametrize("affine,track", list(itertools.product((False, True), (False, True))))
def test_instance_norm_matches_torch(torch, rng, same, copy_from_torch, cls, shape, affine, track):
    theirs = getattr(torch.nn, cls)(4, affine=affine, track_running_stats=track).double()
    ours = getattr(nn, cls)(4, affine=affine, track_running_stats=track).double()
    if affine:
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
    copy_from_torch(ours, theirs)
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal(shape) * 3 + 1
    a, t = leaf(x), tleaf(torch, x)
    grad = rng.standard_normal(shape)
    ours(a).backward(dt.tensor(grad))
    theirs(t).backward(torch.tensor(grad))
    same(a.grad, t.grad, atol=1e-10)
    if track:
        same(ours.running_mean, theirs.running_mean, atol=1e-12)
        same(ours.running_var, theirs.running_var, atol=1e-12)
        ours.eval()
        theirs.eval()
        same(ours(a), theirs(t), atol=1e-12)


# ---- RMSNorm, LocalResponseNorm -------------------------------------------------------------
def test_rms_norm_against_numpy(rng):
    x = rng.standard_normal((3, 4, 5))
    w = rng.standard_normal((4, 5))
    out = F.rms_norm(dt.tensor(x), (4, 5), dt.tensor(w), eps=1e-3).numpy()
    expected = x / np.sqrt((x * x).mean(axis=(1, 2), keepdims=True) + 1e-3) * w
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert gradcheck(lambda a, b: F.rms_norm(a, 5, b), [leaf(x), leaf(w[0])])
    m = nn.RMSNorm(5)
    assert m.eps is None and m.weight.shape == (5,)
    x32 = dt.tensor(x.astype(np.float32))
    eps32 = np.finfo(np.float32).eps  # eps=None: the dtype's epsilon
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps32)
    np.testing.assert_allclose(m(x32).detach().numpy(), expected, rtol=1e-5)
    half = F.rms_norm(dt.tensor(x.astype(np.float16) * 300), 5)
    assert half.dtype == np.float16 and np.isfinite(half.numpy()).all()
    with pytest.raises(ValueError, match="normalized_shape"):
        F.rms_norm(dt.tensor(x), 4)


def test_rms_norm_matches_torch(torch, rng, same):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for shape, eps in itertools.product((5, (4, 5)), (None, 1e-3)):
        ours, theirs = nn.RMSNorm(shape, eps=eps), torch.nn.RMSNorm(shape, eps=eps)
        assert repr(ours) == repr(theirs)
        a, t = dt.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        same(ours(a), theirs(t), atol=1e-6)
        ours(a).sum().backward()
        theirs(t).sum().backward()
        same(a.grad, t.grad, atol=1e-5)
        same(ours.weight.grad, theirs.weight.grad, atol=1e-4)


def test_local_response_norm(rng):
    x = rng.standard_normal((2, 7, 3))
    size, alpha, beta, k = 3, 0.1, 0.75, 2.0
    out = nn.LocalResponseNorm(size, alpha, beta, k)(dt.tensor(x)).numpy()
    expected = np.empty_like(x)
    for c in range(7):
        window = x[:, max(0, c - size // 2) : c + (size - 1) // 2 + 1]
        expected[:, c] = x[:, c] / (k + alpha / size * (window**2).sum(1)) ** beta
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert gradcheck(lambda t: F.local_response_norm(t, 2), [leaf(x)])


def test_local_response_norm_matches_torch(torch, rng, same):
    x = rng.standard_normal((2, 7, 3, 4))
    same(
        F.local_response_norm(dt.tensor(x), 4, 0.1),
        torch.nn.functional.local_response_norm(torch.tensor(x), 4, 0.1),
        atol=1e-12,
    )


# ---- pooling --------------------------------------------------------------------------------
def adaptive_max_ref(x, out):
    h, w = x.shape[-2:]
    values = np.empty(x.shape[:-2] + out)
    for i, j in itertools.product(range(out[0]), range(out[1])):
        r0, r1 = (i * h) // out[0], -((-(i + 1) * h) // out[0])
        c0, c1 = (j * w) // out[1], -((-(j + 1) * w) // out[1])
        values[..., i, j] = x[..., r0:r1, c0:c1].max(axis=(-2, -1))
    return values


@pytest.mark.parametrize("shape,size", [((2, 3, 7, 9), (3, 4)), ((3, 8, 8), 4), ((2, 3, 5, 5), 7)])
def test_adaptive_max_pool2d(rng, shape, size):
    x = rng.standard_normal(shape)
    values, indices = F.adaptive_max_pool2d(dt.tensor(x), size, return_indices=True)
    np.testing.assert_array_equal(
        values.numpy(), adaptive_max_ref(x, size if isinstance(size, tuple) else (size, size))
    )
    flat = x.reshape(*x.shape[:-2], -1)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, indices.numpy().reshape(*x.shape[:-2], -1), -1),
        values.numpy().reshape(*x.shape[:-2], -1),
    )
    assert gradcheck(lambda t: F.adaptive_max_pool2d(t, size), [leaf(x)])
    assert nn.AdaptiveMaxPool2d(size)(dt.tensor(x)).shape == values.shape


def test_adaptive_1d_pools(rng):
    x = rng.standard_normal((2, 3, 7))
    values, indices = nn.AdaptiveMaxPool1d(3, return_indices=True)(dt.tensor(x))
    np.testing.assert_array_equal(values.numpy(), adaptive_max_ref(x[:, :, None], (1, 3))[:, :, 0])
    np.testing.assert_array_equal(np.take_along_axis(x, indices.numpy(), -1), values.numpy())
    avg = nn.AdaptiveAvgPool1d(3)(dt.tensor(x)).numpy()
    bins = [(0, 3), (2, 5), (4, 7)]
    np.testing.assert_allclose(avg, np.stack([x[..., a:b].mean(-1) for a, b in bins], -1))
    assert gradcheck(lambda t: F.adaptive_avg_pool1d(t, 3), [leaf(x)])
    assert gradcheck(lambda t: F.adaptive_max_pool1d(t, 4), [leaf(x)])


def test_adaptive_pools_match_torch(torch, rng, same):
    for shape, size in (((2, 3, 7, 9), (3, 4)), ((2, 3, 5, 5), (7, None)), ((2, 3, 8, 4), 2)):
        x = rng.standard_normal(shape)
        x[0, 0, 0, :2] = 5.0  # a tie: the first maximum wins
        a, t = leaf(x), tleaf(torch, x)
        ours, oi = nn.AdaptiveMaxPool2d(size, True)(a)
        theirs, ti = torch.nn.AdaptiveMaxPool2d(size, True)(t)
        same(ours, theirs, atol=0)
        same(oi, ti, atol=0)
        grad = rng.standard_normal(tuple(theirs.shape))
        ours.backward(dt.tensor(grad))
        theirs.backward(torch.tensor(grad))
        same(a.grad, t.grad, atol=1e-12)
    x = rng.standard_normal((2, 3, 10))
    same(
        nn.AdaptiveAvgPool1d(4)(dt.tensor(x)), torch.nn.AdaptiveAvgPool1d(4)(torch.tensor(x)), 1e-12
    )
    same(nn.AdaptiveMaxPool1d(4)(dt.tensor(x)), torch.nn.AdaptiveMaxPool1d(4)(torch.tensor(x)), 0)


# ---- pixel shuffle, padding -----------------------------------------------------------------
def test_pixel_shuffle_round_trip(rng):
    x = rng.standard_normal((2, 8, 3, 4))
    out = nn.PixelShuffle(2)(dt.tensor(x)).numpy()
    assert out.shape == (2, 2, 6, 8)
    for c, i, j in itertools.product(range(2), range(2), range(2)):
        np.testing.assert_array_equal(out[:, c, i::2, j::2], x[:, c * 4 + i * 2 + j])
    np.testing.assert_array_equal(nn.PixelUnshuffle(2)(dt.tensor(out)).numpy(), x)
    assert gradcheck(lambda t: F.pixel_shuffle(t, 2), [leaf(x)])
    with pytest.raises(ValueError, match="divisible"):
        F.pixel_shuffle(dt.ones(1, 6, 2, 2), 2)


def test_pixel_shuffle_matches_torch(torch, rng, same):
    x = rng.standard_normal((2, 3, 18, 2, 3))
    same(F.pixel_shuffle(dt.tensor(x), 3), torch.nn.functional.pixel_shuffle(torch.tensor(x), 3))
    y = rng.standard_normal((3, 4, 6))
    same(
        F.pixel_unshuffle(dt.tensor(y), 2), torch.nn.functional.pixel_unshuffle(torch.tensor(y), 2)
    )


PADS = [
    ("ZeroPad2d", (1, 2, 0, 3), {"mode": "constant"}),
    ("ConstantPad2d", 2, {"mode": "constant", "constant_values": 1.5}),
    ("ConstantPad1d", (0, 2), {"mode": "constant", "constant_values": -1.0}),
    ("ReflectionPad2d", (1, 2, 2, 1), {"mode": "reflect"}),
    ("ReflectionPad1d", 2, {"mode": "reflect"}),
    ("ReplicationPad2d", (3, 0, 1, 2), {"mode": "edge"}),
    ("ReplicationPad1d", (1, 4), {"mode": "edge"}),
]


@pytest.mark.parametrize("name,padding,numpy_args", PADS)
def test_padding_layers(rng, name, padding, numpy_args):
    dims = 1 if name.endswith("1d") else 2
    x = rng.standard_normal((2, 3, 4, 5)[: dims + 2])
    args = (padding, numpy_args["constant_values"]) if "Constant" in name else (padding,)
    layer = getattr(nn, name)(*args)
    widths = (padding,) * 2 * dims if isinstance(padding, int) else padding
    pairs = [(0, 0)] * 2 + [tuple(widths[2 * i : 2 * i + 2]) for i in reversed(range(dims))]
    np.testing.assert_array_equal(layer(dt.tensor(x)).numpy(), np.pad(x, pairs, **numpy_args))
    assert gradcheck(layer, [leaf(x)])


@pytest.mark.parametrize("name,padding,numpy_args", PADS)
def test_padding_layers_match_torch(torch, rng, same, name, padding, numpy_args):
    x = rng.standard_normal((2, 3, 4, 5) if name.endswith("2d") else (3, 4, 5))
    args = (padding, numpy_args["constant_values"]) if "Constant" in name else (padding,)
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    same(ours(dt.tensor(x)), theirs(torch.tensor(x)), atol=0)
    assert repr(ours) == repr(theirs)


def test_reflection_pad_too_wide_is_an_error():
    with pytest.raises(ValueError, match="smaller than its size"):
        nn.ReflectionPad1d(3)(dt.ones(1, 2, 3))


# ---- distances, Bilinear, Embedding.from_pretrained, gumbel_softmax -------------------------
def test_distances(rng):
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    for p in (1.0, 2.0, 3.0, np.inf):
        out = nn.PairwiseDistance(p)(dt.tensor(a), dt.tensor(b)).numpy()
        np.testing.assert_allclose(out, np.linalg.norm(a - b + 1e-6, ord=p, axis=-1))
    kept = F.pairwise_distance(dt.tensor(a), dt.tensor(b), keepdim=True)
    assert kept.shape == (5, 1)
    assert gradcheck(lambda t: F.pairwise_distance(t, dt.tensor(b)), [leaf(a)])
    cos = nn.CosineSimilarity(dim=0)(dt.tensor(a), dt.tensor(b)).numpy()
    expected = (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    np.testing.assert_allclose(cos, expected)


def test_distances_match_torch(torch, rng, same):
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((4,))
    for p in (1.0, 2.0, 3.0, float("inf")):
        x, t = leaf(a), tleaf(torch, a)
        ours = F.pairwise_distance(x, dt.tensor(b), p)
        theirs = torch.nn.functional.pairwise_distance(t, torch.tensor(b), p)
        same(ours, theirs, atol=1e-12)
        ours.sum().backward()
        theirs.sum().backward()
        same(x.grad, t.grad, atol=1e-12)


def test_bilinear(rng):
    x1, x2 = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 5))
    w, b = rng.standard_normal((6, 4, 5)), rng.standard_normal(6)
    out = F.bilinear(dt.tensor(x1), dt.tensor(x2), dt.tensor(w), dt.tensor(b)).numpy()
    np.testing.assert_allclose(out, np.einsum("...i,oij,...j->...o", x1, w, x2) + b, atol=1e-12)
    assert gradcheck(F.bilinear, [leaf(x1), leaf(x2), leaf(w), leaf(b)])
    m = nn.Bilinear(4, 5, 6)
    assert m.weight.shape == (6, 4, 5) and np.abs(m.weight.detach().numpy()).max() <= 0.5
    assert repr(m) == "Bilinear(in1_features=4, in2_features=5, out_features=6, bias=True)"
    with pytest.raises(ValueError, match="do not fit"):
        m(dt.ones(2, 5), dt.ones(2, 5))


def test_bilinear_matches_torch(torch, rng, same, copy_from_torch):
    theirs = torch.nn.Bilinear(4, 5, 6).double()
    ours = nn.Bilinear(4, 5, 6).double()
    copy_from_torch(ours, theirs)
    x1, x2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    same(ours(dt.tensor(x1), dt.tensor(x2)), theirs(torch.tensor(x1), torch.tensor(x2)), 1e-12)


def test_embedding_from_pretrained():
    table = dt.tensor(np.arange(12.0).reshape(4, 3))
    m = nn.Embedding.from_pretrained(table, padding_idx=1)
    assert not m.weight.requires_grad and m.padding_idx == 1
    np.testing.assert_array_equal(m(dt.tensor([1, 3])).numpy(), [[3, 4, 5], [9, 10, 11]])
    trained = nn.Embedding.from_pretrained(table, freeze=False)
    assert trained.weight.requires_grad and repr(trained) == "Embedding(4, 3)"
    with pytest.raises(ValueError, match="2-D"):
        nn.Embedding.from_pretrained(dt.ones(3))


def test_gumbel_softmax():
    dt.manual_seed(0)
    logits = dt.tensor(np.log([[0.1, 0.2, 0.7]] * 4000), requires_grad=True)
    soft = F.gumbel_softmax(logits, tau=0.5)
    np.testing.assert_allclose(soft.detach().numpy().sum(-1), 1.0)
    hard = F.gumbel_softmax(logits, hard=True)
    counts = hard.detach().numpy()
    assert set(np.unique(counts)) == {0.0, 1.0} and (counts.sum(-1) == 1).all()
    np.testing.assert_allclose(counts.mean(0), [0.1, 0.2, 0.7], atol=0.03)  # Gumbel-max
    hard.sum().backward()  # straight-through: the soft sample's gradient (0 for a sum)
    np.testing.assert_allclose(logits.grad.numpy(), 0.0, atol=1e-12)


# ---- DataParallel, SyncBatchNorm ------------------------------------------------------------
def test_data_parallel_wraps_and_prefixes(rng):
    inner = nn.Linear(3, 2)
    model = nn.DataParallel(inner)
    assert model.module is inner
    assert list(model.state_dict()) == ["module.weight", "module.bias"]
    x = dt.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    np.testing.assert_array_equal(model(x).detach().numpy(), inner(x).detach().numpy())
    with pytest.warns(UserWarning, match="one device per process"):
        nn.DataParallel(inner, device_ids=[0, 1])
    assert nn.parallel.DataParallel is nn.DataParallel


def test_data_parallel_state_dict_matches_torch(torch, copy_from_torch):
    theirs = torch.nn.DataParallel(torch.nn.Linear(3, 2))
    ours = nn.DataParallel(nn.Linear(3, 2))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_from_torch(ours, theirs)


def test_sync_batchnorm_is_lazy_and_converts():
    code = (
        "import sys, dtrain.nn as nn\n"
        "assert 'dtrain.parallel' not in sys.modules\n"
        "m = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))\n"
        "assert type(m[0]).__name__ == 'SyncBatchNorm' and 'dtrain.parallel' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from dtrain.parallel import SyncBatchNorm

    assert nn.SyncBatchNorm is SyncBatchNorm


# ---- weight_norm ----------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, None, -1])
def test_weight_norm(rng, dim):
    m = nn.Linear(3, 4).double()
    before = m.weight.detach().numpy().copy()
    nn.utils.weight_norm(m, dim=dim)
    assert list(m.state_dict()) == ["bias", "weight_g", "weight_v"]
    whole = dim in (None, -1)  # as PyTorch: -1 is the whole tensor too, and g is 0-d
    axes = None if whole else 1 - dim
    norm = np.sqrt((before**2).sum(axis=axes, keepdims=not whole))
    assert m.weight_g.shape == norm.shape == ((4, 1), (1, 3), (), ())[[0, 1, None, -1].index(dim)]
    np.testing.assert_allclose(m.weight_g.detach().numpy(), norm)
    with dt.no_grad():
        m.weight_g.mul_(2.0)  # the pre-hook recomputes the weight from g and v
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(
        m(dt.tensor(x)).detach().numpy(), x @ (2 * before).T + m.bias.detach().numpy()
    )
    g, v = leaf(m.weight_g.detach().numpy()), leaf(m.weight_v.detach().numpy())
    assert gradcheck(lambda a, b: b * (a / (b * b).sum(axes, keepdim=not whole).sqrt()), [g, v])
    nn.utils.remove_weight_norm(m)
    assert list(m.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(m.weight.detach().numpy(), 2 * before)
    with pytest.raises(ValueError, match="not found"):
        nn.utils.remove_weight_norm(m)


def test_weight_norm_matches_torch(torch, rng, same, copy_from_torch):
    theirs = torch.nn.utils.weight_norm(torch.nn.Conv2d(2, 3, 3).double())
    ours = nn.utils.weight_norm(nn.Conv2d(2, 3, 3).double())
    copy_from_torch(ours, theirs)
    x = rng.standard_normal((2, 2, 5, 5))
    out, ref = ours(dt.tensor(x)), theirs(torch.tensor(x))
    same(out, ref, atol=1e-12)
    (out * out).sum().backward()
    (ref * ref).sum().backward()
    same(ours.weight_g.grad, theirs.weight_g.grad, atol=1e-10)
    same(ours.weight_v.grad, theirs.weight_v.grad, atol=1e-10)


# ---- on --device (cuda, emulated-cuda): the cupy code paths ---------------------------------
DEVICE_CASES = {
    "conv_transpose2d": (lambda a, b: F.conv_transpose2d(a, b, stride=2, padding=1), 2),
    "unfold": (lambda a: F.unfold(a, 2, padding=1), 1),
    "fold": (lambda a: F.fold(a.reshape(2, 4, 15), (4, 6), 2), 1),
    "instance_norm": (F.instance_norm, 1),
    "rms_norm": (lambda a: F.rms_norm(a, 5), 1),
    "local_response_norm": (lambda a: F.local_response_norm(a, 3), 1),
    "adaptive_max_pool2d": (lambda a: F.adaptive_max_pool2d(a, (2, 3)), 1),
    "adaptive_avg_pool1d": (lambda a: F.adaptive_avg_pool1d(a.flatten(2), 4), 1),
    "pixel_shuffle": (lambda a: F.pixel_shuffle(a, 2), 1),
    "pad_reflect": (lambda a: F.pad(a, (1, 2, 2, 1), mode="reflect"), 1),
    "pairwise_distance": (F.pairwise_distance, 2),
    "bilinear": (
        lambda a, b: F.bilinear(a, b, a[0].flatten()[:50].reshape(2, 5, 5), b[1, 0, 0, :2]),
        2,
    ),
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_new_layers_on_the_test_device(test_device, name):
    fn, arity = DEVICE_CASES[name]
    rng = np.random.default_rng(8)
    shapes = [(2, 4, 3, 5)] * arity
    if name == "conv_transpose2d":
        shapes = [(2, 4, 3, 5), (4, 2, 3, 3)]
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


def test_review_fixes_gumbel_rms_norm_and_empty_batches(monkeypatch):
    import dtrain._tensor.nn.functional.activation as activation

    # a uniform draw of exactly 0 must not turn a row into NaN
    real = activation.sample
    monkeypatch.setattr(activation, "sample", lambda *a, **k: real(*a, **k) * np.float32(0))
    soft = F.gumbel_softmax(dt.zeros(2, 3))
    assert np.isfinite(soft.numpy()).all()
    monkeypatch.undo()
    # eps=None in float16 is float32's epsilon (the computing dtype's), as PyTorch
    x = dt.tensor([1e-3, -1e-3, 5e-3], dtype=dt.float16)
    expected = x.float().numpy() / np.sqrt((x.float().numpy() ** 2).mean() + 2**-23)
    np.testing.assert_allclose(F.rms_norm(x, (3,)).float().numpy(), expected, rtol=2e-3)
    # empty batches give empty results
    assert F.adaptive_max_pool2d(dt.zeros(0, 3, 5, 5), (2, 2)).shape == (0, 3, 2, 2)
    assert F.instance_norm(dt.zeros(0, 3, 5, 5)).shape == (0, 3, 5, 5)
    with pytest.raises(ValueError, match="running_mean and running_var together"):
        F.instance_norm(dt.zeros(1, 3, 5, 5), running_mean=dt.zeros(3))
