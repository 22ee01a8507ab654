"""max_pool3d, avg_pool3d, adaptive_{avg,max}_pool3d and max_unpool1d/2d/3d: loop numpy
references, finite differences, PyTorch where installed, and the test device."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def windows(size, kernel, stride, pad, ceil_mode):
    """Per axis, each window's [start, end) in unpadded coordinates (PyTorch's rule)."""
    span = kernel
    count = (size + 2 * pad - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (count - 1) * stride >= size + pad:
        count -= 1
    return [(i * stride - pad, i * stride - pad + kernel) for i in range(count)]


def reference_pool(x, kernel, stride, pad, ceil_mode, kind, count_include_pad=True):
    """Loop over output voxels: max (with the flat index of the first maximum) or mean."""
    n, c = x.shape[:2]
    axes = [windows(x.shape[2 + a], kernel[a], stride[a], pad[a], ceil_mode) for a in range(3)]
    out = np.zeros((n, c, *map(len, axes)))
    index = np.zeros(out.shape, dtype=np.int64)
    for position in itertools.product(*(range(len(w)) for w in axes)):
        bounds = [axes[a][position[a]] for a in range(3)]
        inside = [(max(lo, 0), min(hi, x.shape[2 + a])) for a, (lo, hi) in enumerate(bounds)]
        block = x[(slice(None), slice(None)) + tuple(slice(lo, hi) for lo, hi in inside)]
        flat = block.reshape(n, c, -1)
        if kind == "max":
            best = flat.argmax(-1)
            out[(slice(None), slice(None)) + position] = flat.max(-1)
            coords = np.unravel_index(best, block.shape[2:])
            index[(slice(None), slice(None)) + position] = np.ravel_multi_index(
                tuple(coords[a] + inside[a][0] for a in range(3)), x.shape[2:]
            )
        else:
            if count_include_pad:
                divisor = np.prod(
                    [min(hi, x.shape[2 + a] + pad[a]) - lo for a, (lo, hi) in enumerate(bounds)]
                )
            else:
                divisor = block[0, 0].size
            out[(slice(None), slice(None)) + position] = flat.sum(-1) / divisor
    return out, index


POOL_CASES = [
    # kernel, stride, padding, ceil_mode
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), False),
    ((3, 2, 3), (2, 1, 2), (1, 0, 1), False),
    ((3, 3, 2), (2, 2, 3), (1, 1, 0), True),
]


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", POOL_CASES)
def test_max_pool3d_matches_the_loop_reference(kernel, stride, padding, ceil_mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6, 7))
    out, index = F.max_pool3d(
        dt.tensor(x), kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True
    )
    expected, expected_index = reference_pool(x, kernel, stride, padding, ceil_mode, "max")
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(index.numpy(), expected_index)
    assert index.dtype == dt.int64
    assert (
        F.max_pool3d(dt.tensor(x[0]), kernel, stride, padding, ceil_mode=ceil_mode).shape
        == (expected.shape[1:])
    )


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", POOL_CASES)
def test_avg_pool3d_matches_the_loop_reference(
    kernel, stride, padding, ceil_mode, count_include_pad
):
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6, 7))
    out = F.avg_pool3d(dt.tensor(x), kernel, stride, padding, ceil_mode, count_include_pad)
    expected, _ = reference_pool(x, kernel, stride, padding, ceil_mode, "avg", count_include_pad)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    override = F.avg_pool3d(dt.tensor(x), 2, divisor_override=3).numpy()
    np.testing.assert_allclose(override, reference_pool(x, (2,) * 3, (2,) * 3, (0,) * 3,
                               False, "avg")[0] * 8 / 3, atol=1e-12)  # fmt: skip


def test_pool3d_gradients_by_finite_differences():
    rng = np.random.default_rng(2)
    x = leaf(rng.standard_normal((1, 2, 4, 5, 4)))
    assert gradcheck(lambda t: F.max_pool3d(t, 3, 2, 1, ceil_mode=True), [x])
    assert gradcheck(lambda t: F.avg_pool3d(t, (2, 3, 2), (1, 2, 2), (1, 1, 0), True, False), [x])
    assert gradcheck(lambda t: F.adaptive_avg_pool3d(t, (3, 2, 3)), [x])
    assert gradcheck(lambda t: F.adaptive_max_pool3d(t, (3, 4, 3)), [x])


def test_adaptive_pool3d_bins():
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 7, 4))
    out = (3, 4, None)
    avg = F.adaptive_avg_pool3d(dt.tensor(x), out).numpy()
    largest, index = F.adaptive_max_pool3d(dt.tensor(x), (3, 4, 4), return_indices=True)
    assert avg.shape == largest.shape == (2, 3, 3, 4, 4)
    for i, j, k in itertools.product(range(3), range(4), range(4)):
        d = slice(i * 5 // 3, -(-(i + 1) * 5 // 3))
        h = slice(j * 7 // 4, -(-(j + 1) * 7 // 4))
        block = x[:, :, d, h, k : k + 1]
        np.testing.assert_allclose(avg[:, :, i, j, k], block.mean(axis=(2, 3, 4)), atol=1e-12)
        np.testing.assert_array_equal(largest.numpy()[:, :, i, j, k], block.max(axis=(2, 3, 4)))
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, index.numpy().reshape(2, 3, -1), -1).reshape(largest.shape),
        largest.numpy(),
    )
    divisible = F.adaptive_avg_pool3d(dt.tensor(x[0]), (5, 7, 2)).numpy()
    np.testing.assert_allclose(divisible, x[0].reshape(3, 5, 7, 2, 2).mean(-1), atol=1e-12)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_unpool_inverts_max_pool(dims):
    rng = np.random.default_rng(4)
    shape = (2, 3) + (8, 6, 4)[:dims]
    x = rng.standard_normal(shape)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[dims - 1]
    pooled, index = pool(dt.tensor(x), 2, 2, return_indices=True)
    restored = unpool(pooled, index, 2, output_size=shape[2:]).numpy()
    expected = np.zeros((6, x[0, 0].size))
    np.put_along_axis(expected, index.numpy().reshape(6, -1), pooled.numpy().reshape(6, -1), 1)
    np.testing.assert_array_equal(restored, expected.reshape(shape))
    assert (restored != 0).sum() == pooled.numpy().size  # every maximum, nothing else
    assert unpool(pooled, index, 2).shape == shape  # the default size, for even sizes
    odd = unpool(pooled, index, 2, output_size=tuple(s + 1 for s in shape[2:]))
    assert odd.shape == shape[:2] + tuple(s + 1 for s in shape[2:])
    values = leaf(pooled.numpy())
    assert gradcheck(lambda t: unpool(t, index, 2, output_size=shape[2:]), [values])
    with pytest.raises(ValueError, match="output_size"):
        unpool(pooled, index, 2, output_size=tuple(s + 3 for s in shape[2:]))
    with pytest.raises(IndexError, match="outside the output"):
        unpool(pooled, index + 1000, 2)


def test_pool3d_layers():
    x = dt.randn(2, 3, 4, 6, 4)
    pooled, index = nn.MaxPool3d(2, return_indices=True)(x)
    assert pooled.shape == (2, 3, 2, 3, 2)
    assert nn.MaxUnpool3d(2)(pooled, index).shape == (2, 3, 4, 6, 4)
    assert nn.AvgPool3d(3, 1, 1)(x).shape == (2, 3, 4, 6, 4)
    assert nn.AdaptiveAvgPool3d((1, 2, 3))(x).shape == (2, 3, 1, 2, 3)
    out, idx = nn.AdaptiveMaxPool3d(3, return_indices=True)(x)
    assert out.shape == idx.shape == (2, 3, 3, 3, 3)
    one, where = nn.MaxPool1d(2, return_indices=True)(dt.randn(2, 3, 8))
    assert nn.MaxUnpool1d(2)(one, where).shape == (2, 3, 8)
    assert "kernel_size=2" in repr(nn.MaxUnpool2d(2))
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool3d(2, padding=2)(x)


POOL_TORCH = [
    ("max_pool3d", dict(kernel_size=(3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1),
                        dilation=(1, 2, 1), ceil_mode=True, return_indices=True)),
    ("avg_pool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                        count_include_pad=False)),
    ("avg_pool3d", dict(kernel_size=(2, 3, 2), stride=(2, 1, 3), padding=(1, 0, 1),
                        ceil_mode=True)),
    ("adaptive_avg_pool3d", dict(output_size=(3, 4, 5))),
    ("adaptive_max_pool3d", dict(output_size=(3, 4, 5), return_indices=True)),
    ("adaptive_max_pool3d", dict(output_size=(7, 3, 3), return_indices=True)),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs", POOL_TORCH)
def test_pool3d_matches_torch(torch, same, name, kwargs):
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 6, 9))
    ours_x, theirs_x = leaf(x), torch.tensor(x, requires_grad=True)
    out, tout = (
        getattr(F, name)(ours_x, **kwargs),
        getattr(torch.nn.functional, name)(theirs_x, **kwargs),
    )
    if kwargs.get("return_indices"):
        np.testing.assert_array_equal(out[1].numpy(), tout[1].numpy())
        out, tout = out[0], tout[0]
    same(out, tout, atol=1e-12)
    direction = np.random.default_rng(6).standard_normal(out.shape)
    (out * dt.tensor(direction)).sum().backward()
    (tout * torch.tensor(direction)).sum().backward()
    same(ours_x.grad, theirs_x.grad, atol=1e-12)


def test_max_unpool_matches_torch(torch, same):
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 7, 6))
    pooled, index = F.max_pool3d(dt.tensor(x), 3, 2, 1, return_indices=True)
    tpooled, tindex = torch.nn.functional.max_pool3d(torch.tensor(x), 3, 2, 1, return_indices=True)
    ours = F.max_unpool3d(pooled, index, 3, 2, 1, output_size=(5, 7, 6))
    theirs = torch.nn.functional.max_unpool3d(tpooled, tindex, 3, 2, 1, output_size=(5, 7, 6))
    same(ours, theirs)


UNPOOL_DEVICE = {
    "max_pool3d": lambda t: F.max_pool3d(t, 3, 2, 1, ceil_mode=True),
    "avg_pool3d": lambda t: F.avg_pool3d(t, 3, 2, 1, count_include_pad=False),
    "adaptive_avg_pool3d": lambda t: F.adaptive_avg_pool3d(t, (3, 2, 3)),
    "adaptive_max_pool3d": lambda t: F.adaptive_max_pool3d(t, (3, 2, 3)),
    "max_unpool3d": lambda t: F.max_unpool3d(
        *F.max_pool3d(t, 2, return_indices=True), 2, output_size=(4, 5, 4)
    ),
}


@pytest.mark.parametrize("name", sorted(UNPOOL_DEVICE))
def test_pool3d_on_the_test_device(test_device, name):
    fn = UNPOOL_DEVICE[name]
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 5, 4))
    on_cpu, on_device = leaf(x), dt.tensor(x, requires_grad=True, device=test_device)
    expected, got = fn(on_cpu), fn(on_device)
    assert got.device.type == test_device
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), atol=1e-12)
    (expected * expected).sum().backward()
    (got * got).sum().backward()
    np.testing.assert_allclose(on_device.grad.cpu().numpy(), on_cpu.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize(
    "name, call",
    [
        ("max", lambda x: F.max_pool3d(x, 2, padding=1, return_indices=True)),
        ("avg", lambda x: (F.avg_pool3d(x, 2, padding=1), None)),
        ("adaptive_max", lambda x: F.adaptive_max_pool3d(x, (2, 3, 2), return_indices=True)),
        ("adaptive_avg", lambda x: (F.adaptive_avg_pool3d(x, (2, 3, 2)), None)),
    ],
)
def test_pool3d_batch_of_zero(name, call):
    x = leaf(np.zeros((0, 2, 5, 5, 5)))
    out, indices = call(x)
    assert out.shape[:2] == (0, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape
    if indices is not None:
        back = F.max_unpool3d(out, indices, 2, output_size=(5, 5, 5)) if name == "max" else None
        assert back is None or back.shape == (0, 2, 5, 5, 5)


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_max_pool3d_padding_never_wins(dtype):
    # an all -inf (or all int-minimum) window: the first in-bounds element wins, not padding
    lowest = -np.inf if dtype == np.float64 else np.iinfo(dtype).min
    x = np.full((1, 1, 4, 4, 4), lowest, dtype=dtype)
    _, indices = F.max_pool3d(dt.tensor(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(indices.numpy().ravel(), [0, 1, 4, 5, 16, 17, 20, 21])
    ceil = F.max_pool3d(dt.tensor(x[..., :3]), 2, 2, ceil_mode=True, return_indices=True)[1]
    assert ceil.numpy().min() >= 0  # the partial last window: also inside
    if dtype == np.float64:
        x[0, 0, 3, 3, 3] = 1.0
        v = leaf(x)
        pooled, indices = F.max_pool3d(v, 3, 2, 1, return_indices=True)
        pooled.backward(dt.ones(pooled.shape, dtype=dt.float64))
        assert v.grad.numpy().sum() == pooled.numel()  # no gradient lost in the padding
        unpooled = F.max_unpool3d(pooled, indices, 3, 2, 1, output_size=(4, 4, 4))
        assert unpooled.shape == (1, 1, 4, 4, 4)


def test_pool3d_matches_torch_on_minus_inf_windows(torch, same):
    x = np.full((1, 2, 4, 5, 4), -np.inf)
    x[0, 1, 1, 2, 1] = 0.5
    ours = F.max_pool3d(dt.tensor(x), 3, 2, 1, return_indices=True)
    theirs = torch.nn.functional.max_pool3d(torch.tensor(x), 3, 2, 1, return_indices=True)
    same(ours[0], theirs[0])
    same(ours[1], theirs[1])


def test_avg_pool3d_refuses_a_bool_divisor_as_torch():
    x = dt.tensor(np.ones((1, 1, 2, 2, 2)))
    with pytest.raises(TypeError, match="divisor_override"):
        F.avg_pool3d(x, 2, divisor_override=True)
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool3d(x, 2, divisor_override=0)


@pytest.mark.parametrize(
    "pool, shape, name",
    [
        (F.max_pool2d, (1, 1, 4, 4), "MaxPool2DWithIndicesBackward0"),
        (F.avg_pool2d, (1, 1, 4, 4), "AvgPool2DBackward0"),
        (F.max_pool3d, (1, 1, 4, 4, 4), "MaxPool3DWithIndicesBackward0"),
        (F.avg_pool3d, (1, 1, 4, 4, 4), "AvgPool3DBackward0"),
    ],
)
def test_pools_of_every_dimension_share_one_op_and_keep_pytorchs_node_names(pool, shape, name):
    assert pool(dt.randn(*shape, requires_grad=True), 2).grad_fn.name() == name
