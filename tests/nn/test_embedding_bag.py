"""embedding_bag / EmbeddingBag: a per-bag loop reference, finite differences, PyTorch
where installed, and the test device."""

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck

INDICES = np.array([1, 2, 4, 5, 4, 3, 2, 9, 0, 0, 7], dtype=np.int64)
OFFSETS = np.array([0, 3, 3, 7], dtype=np.int64)  # bag 1 is empty


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def reference(weight, indices, offsets, mode, weights=None, padding_idx=None):
    """One bag at a time; padding entries left out; an empty bag gives zeros."""
    ends = [*offsets[1:], len(indices)]
    out = np.zeros((len(offsets), weight.shape[1]))
    for b, (start, end) in enumerate(zip(offsets, ends)):
        keep = [j for j in range(start, end) if indices[j] != padding_idx]
        if not keep:
            continue
        rows = weight[indices[keep]]
        if weights is not None:
            rows = rows * weights[keep][:, None]
        out[b] = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[mode]
    return out


@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_matches_the_loop_reference(mode, padding_idx):
    weight = np.random.default_rng(0).standard_normal((10, 3))
    out = F.embedding_bag(
        dt.tensor(INDICES), dt.tensor(weight), dt.tensor(OFFSETS), mode=mode,
        padding_idx=padding_idx,
    )  # fmt: skip
    expected = reference(weight, INDICES, OFFSETS, mode, padding_idx=padding_idx)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    last = F.embedding_bag(
        dt.tensor(INDICES), dt.tensor(weight), dt.tensor(np.append(OFFSETS, len(INDICES))),
        mode=mode, include_last_offset=True, padding_idx=padding_idx,
    )  # fmt: skip
    np.testing.assert_allclose(last.numpy(), expected, atol=1e-12)
    square = INDICES[:10].reshape(2, 5)
    rows = F.embedding_bag(dt.tensor(square), dt.tensor(weight), mode=mode, padding_idx=padding_idx)
    np.testing.assert_allclose(
        rows.numpy(), reference(weight, INDICES[:10], [0, 5], mode, padding_idx=padding_idx)
    )


def test_embedding_bag_per_sample_weights():
    rng = np.random.default_rng(1)
    weight, scale = rng.standard_normal((10, 3)), rng.standard_normal(len(INDICES))
    out = F.embedding_bag(
        dt.tensor(INDICES), dt.tensor(weight), dt.tensor(OFFSETS), mode="sum",
        per_sample_weights=dt.tensor(scale),
    )  # fmt: skip
    np.testing.assert_allclose(
        out.numpy(), reference(weight, INDICES, OFFSETS, "sum", scale), atol=1e-12
    )
    with pytest.raises(ValueError, match="only supported for mode='sum'"):
        F.embedding_bag(
            dt.tensor(INDICES), dt.tensor(weight), dt.tensor(OFFSETS),
            per_sample_weights=dt.tensor(scale),
        )  # fmt: skip


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_gradients_by_finite_differences(mode):
    rng = np.random.default_rng(2)
    weight = leaf(rng.standard_normal((10, 3)))
    inputs = [weight]
    if mode == "sum":
        inputs.append(leaf(rng.standard_normal(len(INDICES))))

    def bags(w, scale=None):
        return F.embedding_bag(
            dt.tensor(INDICES), w, dt.tensor(OFFSETS), mode=mode, per_sample_weights=scale,
            padding_idx=0,
        )  # fmt: skip

    assert gradcheck(bags, inputs)
    bags(weight).sum().backward()
    assert (weight.grad.numpy()[0] == 0).all()  # the padding row gets no gradient


def test_embedding_bag_errors():
    weight = dt.randn(10, 3)
    with pytest.raises(ValueError, match="offsets must be None"):
        F.embedding_bag(dt.tensor(INDICES[:10].reshape(2, 5)), weight, dt.tensor(OFFSETS))
    with pytest.raises(ValueError, match="needs a 1-D offsets"):
        F.embedding_bag(dt.tensor(INDICES), weight)
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0"):
        F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(OFFSETS + 1))
    with pytest.raises(IndexError, match="out of range"):
        F.embedding_bag(dt.tensor(INDICES + 5), weight, dt.tensor(OFFSETS))
    with pytest.raises(ValueError, match="not supported"):
        F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(OFFSETS), max_norm=1.0)
    with pytest.raises(ValueError, match="mode"):
        F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(OFFSETS), mode="min")


def test_embedding_bag_module():
    bag = nn.EmbeddingBag(10, 4, mode="sum", padding_idx=-1)
    assert bag.padding_idx == 9 and (bag.weight.detach().numpy()[9] == 0).all()
    assert bag(dt.tensor(INDICES), dt.tensor(OFFSETS)).shape == (4, 4)
    table = dt.randn(10, 4)
    frozen = nn.EmbeddingBag.from_pretrained(table, mode="max")
    assert not frozen.weight.requires_grad and frozen.mode == "max"
    np.testing.assert_array_equal(frozen.weight.numpy(), table.numpy())
    square = dt.tensor(INDICES[:10].reshape(5, 2))
    assert frozen(square).shape == (5, 4)
    assert nn.EmbeddingBag.from_pretrained(table, freeze=False).weight.requires_grad
    assert "mode='max'" in repr(frozen)
    with pytest.raises(ValueError, match="mode"):
        nn.EmbeddingBag(10, 4, mode="min")


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["offsets", "last_offset", "2d"])
def test_embedding_bag_matches_torch(torch, same, mode, layout):
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((10, 4))
    kwargs = {"mode": mode, "padding_idx": 4}
    if layout == "2d":
        indices, offsets = INDICES[:10].reshape(2, 5), None
    else:
        indices, offsets = INDICES, OFFSETS
        if layout == "last_offset":
            offsets, kwargs["include_last_offset"] = np.append(OFFSETS, len(INDICES)), True
    scale = rng.standard_normal(indices.shape) if mode == "sum" else None
    ours_w, theirs_w = leaf(weight), torch.tensor(weight, requires_grad=True)
    ours_s = None if scale is None else leaf(scale)
    theirs_s = None if scale is None else torch.tensor(scale, requires_grad=True)
    out = F.embedding_bag(
        dt.tensor(indices), ours_w, None if offsets is None else dt.tensor(offsets),
        per_sample_weights=ours_s, **kwargs,
    )  # fmt: skip
    tout = torch.nn.functional.embedding_bag(
        torch.tensor(indices), theirs_w, None if offsets is None else torch.tensor(offsets),
        per_sample_weights=theirs_s, **kwargs,
    )  # fmt: skip
    same(out, tout, atol=1e-12)
    direction = rng.standard_normal(out.shape)
    (out * dt.tensor(direction)).sum().backward()
    (tout * torch.tensor(direction)).sum().backward()
    same(ours_w.grad, theirs_w.grad, atol=1e-12)
    if scale is not None:
        same(ours_s.grad, theirs_s.grad, atol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_on_the_test_device(test_device, mode):
    rng = np.random.default_rng(4)
    weight, scale = rng.standard_normal((10, 3)), rng.standard_normal(len(INDICES))
    results = []
    for device in ("cpu", test_device):
        ours_w = dt.tensor(weight, requires_grad=True, device=device)
        ours_s = dt.tensor(scale, requires_grad=True, device=device) if mode == "sum" else None
        out = F.embedding_bag(
            dt.tensor(INDICES, device=device), ours_w, dt.tensor(OFFSETS, device=device), mode=mode,
            per_sample_weights=ours_s, padding_idx=2,
        )  # fmt: skip
        assert out.device.type == device
        (out * out).sum().backward()
        grads = [ours_w.grad.cpu().numpy()] + (
            [] if ours_s is None else [ours_s.grad.cpu().numpy()]
        )
        results.append((out.detach().cpu().numpy(), grads))
    (expected, expected_grads), (got, got_grads) = results
    np.testing.assert_allclose(got, expected, atol=1e-12)
    for a, b in zip(got_grads, expected_grads):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_float16_sums_and_counts_in_float32(mode):
    # float16 counts stop at 2048 and float16 sums drift: the bags are summed in float32
    rng = np.random.default_rng(5)
    table = (np.abs(rng.standard_normal((10, 2))) + 1).astype(np.float16)
    indices = rng.integers(0, 10, 3000)
    weight = dt.tensor(table, requires_grad=True)
    out = F.embedding_bag(dt.tensor(indices), weight, dt.tensor(np.array([0])), mode=mode)
    assert out.dtype == dt.float16
    rows = table.astype(np.float64)[indices]
    expected = rows.mean(0) if mode == "mean" else rows.sum(0)
    np.testing.assert_allclose(out.detach().numpy().astype(np.float64)[0], expected, rtol=1e-3)
    out.sum().backward()
    counts = np.bincount(indices, minlength=10)[:, None] * np.ones((1, 2))
    expected_grad = counts / len(indices) if mode == "mean" else counts
    assert weight.grad.dtype == dt.float16
    np.testing.assert_allclose(weight.grad.numpy(), expected_grad, rtol=1e-3)


def test_embedding_bag_backward_with_long_runs_and_empty_bags():
    # one index repeated past the row-assignment ranks, others once; empty bags at the end
    rng = np.random.default_rng(6)
    indices = np.concatenate([np.full(20, 3), rng.integers(0, 10, 9), np.full(11, 7)])
    rng.shuffle(indices)
    offsets = np.array([0, 12, 12, 40, 40])
    table = rng.standard_normal((10, 3))
    scale = rng.standard_normal(len(indices))
    direction = rng.standard_normal((len(offsets), 3))
    weight, weights = leaf(table), leaf(scale)
    out = F.embedding_bag(
        dt.tensor(indices), weight, dt.tensor(offsets), mode="sum", per_sample_weights=weights
    )
    np.testing.assert_allclose(
        out.detach().numpy(), reference(table, indices, offsets, "sum", scale), atol=1e-12
    )
    (out * dt.tensor(direction)).sum().backward()
    bag = np.searchsorted(offsets, np.arange(len(indices)), side="right") - 1
    expected = np.zeros_like(table)
    np.add.at(expected, indices, direction[bag] * scale[:, None])
    np.testing.assert_allclose(weight.grad.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        weights.grad.numpy(), (direction[bag] * table[indices]).sum(1), atol=1e-12
    )

    def bags(w):
        return F.embedding_bag(dt.tensor(indices), w, dt.tensor(offsets), mode="mean")

    assert gradcheck(bags, [leaf(table)])


def test_embedding_bag_offsets_checked_as_torch():
    weight = dt.randn(10, 3)
    with pytest.raises(ValueError, match=r"offsets\[-1\] can not be greater"):
        F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(np.array([0, 3, 12])))
    with pytest.raises(ValueError, match="must not decrease"):
        F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(np.array([0, 5, 3])))
    with pytest.raises(ValueError, match="last offset must be the input's length 11, got 9"):
        F.embedding_bag(
            dt.tensor(INDICES), weight, dt.tensor(np.array([0, 3, 9])), include_last_offset=True
        )
    ends = F.embedding_bag(dt.tensor(INDICES), weight, dt.tensor(np.array([0, 11, 11])))
    assert (ends.numpy()[1:] == 0).all()  # offsets at the end: empty bags


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_float16_on_the_test_device(test_device, mode):
    # cupy's maximum.at / minimum.at take neither float16 nor int64
    rng = np.random.default_rng(7)
    table = rng.standard_normal((10, 3)).astype(np.float16)
    results = []
    for device in ("cpu", test_device):
        weight = dt.tensor(table, requires_grad=True, device=device)
        out = F.embedding_bag(
            dt.tensor(INDICES, device=device), weight, dt.tensor(OFFSETS, device=device),
            mode=mode, padding_idx=2,
        )  # fmt: skip
        (out.float() * out.float()).sum().backward()
        results.append((out.detach().cpu().numpy(), weight.grad.cpu().numpy()))
    (expected, expected_grad), (got, got_grad) = results
    assert got.dtype == np.float16 and got_grad.dtype == np.float16
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-3)
    reference_out = reference(table.astype(np.float64), INDICES, OFFSETS, mode, padding_idx=2)
    np.testing.assert_allclose(got.astype(np.float64), reference_out, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_float16_matches_torch(torch, mode):
    rng = np.random.default_rng(8)
    table = (np.abs(rng.standard_normal((10, 2))) + 1).astype(np.float16)
    indices = rng.integers(0, 10, 3000)
    offsets = np.array([0, 1000, 2990])
    ours = F.embedding_bag(dt.tensor(indices), dt.tensor(table), dt.tensor(offsets), mode=mode)
    theirs = torch.nn.functional.embedding_bag(
        torch.tensor(indices), torch.tensor(table), torch.tensor(offsets), mode=mode
    )
    np.testing.assert_allclose(
        ours.numpy().astype(np.float64), theirs.numpy().astype(np.float64), rtol=2e-3
    )
