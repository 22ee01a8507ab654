"""Layers: forward values against closed forms and numpy, default initialisation, modes,
and (when PyTorch is installed) outputs and gradients against PyTorch with the same weights."""

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def backward_with(out: dt.Tensor, grad: np.ndarray) -> None:
    out.backward(dt.tensor(grad))


# ---- Linear --------------------------------------------------------------------------------
def test_linear_forward_is_x_wt_plus_b(rng):
    layer = nn.Linear(4, 3, dtype=dt.float64)
    w, b = npy(layer.weight), npy(layer.bias)
    for shape in ((5, 4), (2, 5, 4), (4,)):
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(npy(layer(dt.tensor(x))), x @ w.T + b, rtol=1e-12)
    no_bias = nn.Linear(4, 3, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        npy(no_bias(dt.tensor(x))), x @ npy(no_bias.weight).T, rtol=1e-5, atol=1e-6
    )


def test_linear_gradients_closed_form(rng):
    layer = nn.Linear(3, 2, dtype=dt.float64)
    x = leaf(rng.standard_normal((4, 3)))
    g = rng.standard_normal((4, 2))
    backward_with(layer(x), g)
    np.testing.assert_allclose(npy(x.grad), g @ npy(layer.weight))
    np.testing.assert_allclose(npy(layer.weight.grad), g.T @ npy(x))
    np.testing.assert_allclose(npy(layer.bias.grad), g.sum(0))


def test_linear_default_init_is_uniform_within_one_over_sqrt_fan_in():
    dt.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for p in (layer.weight, layer.bias):
        values = npy(p)
        assert values.min() >= -bound and values.max() <= bound
        assert values.min() < -0.9 * bound and values.max() > 0.9 * bound  # fills the range
    weight = npy(layer.weight)
    assert abs(weight.mean()) < 0.01 * bound
    assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # U(-a, a): a/√3
    assert layer.weight.dtype == dt.float32 and layer.weight.requires_grad


def test_linear_rejects_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match=r"in_features.*-1"):
        nn.Linear(-1, 2)
    with pytest.raises(ValueError, match=r"shape \(2, 5\).*5 features.*expects 4"):
        nn.Linear(4, 3)(dt.ones(2, 5))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        nn.Linear(4, 3)(dt.ones(2, 4, dtype=dt.float64))


def test_linear_matches_torch(torch, rng, copy_from_torch, same):
    theirs = torch.nn.Linear(4, 3, dtype=torch.float64)
    ours = nn.Linear(4, 3, dtype=dt.float64)
    copy_from_torch(ours, theirs)
    x = rng.standard_normal((2, 5, 4))
    tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
    g = rng.standard_normal((2, 5, 3))
    to, do = theirs(tx), ours(dx)
    same(do, to)
    to.backward(torch.tensor(g))
    backward_with(do, g)
    same(dx.grad, tx.grad)
    same(ours.weight.grad, theirs.weight.grad)
    same(ours.bias.grad, theirs.bias.grad)


# ---- LayerNorm -----------------------------------------------------------------------------
def layer_norm_ref(x, dims, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - dims, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def test_layer_norm_module_matches_numpy(rng):
    norm = nn.LayerNorm((3, 4), dtype=dt.float64)
    assert np.all(npy(norm.weight) == 1) and np.all(npy(norm.bias) == 0)
    with dt.no_grad():
        norm.weight.copy_(dt.tensor(rng.standard_normal((3, 4))))
        norm.bias.copy_(dt.tensor(rng.standard_normal((3, 4))))
    x = rng.standard_normal((2, 3, 4)) * 3 + 1
    expected = layer_norm_ref(x, 2, npy(norm.weight), npy(norm.bias))
    np.testing.assert_allclose(npy(norm(dt.tensor(x))), expected, rtol=1e-10, atol=1e-12)
    plain = nn.LayerNorm(4, elementwise_affine=False)
    assert list(plain.parameters()) == []
    x32 = rng.standard_normal((5, 4)).astype(np.float32)
    out = plain(dt.tensor(x32))
    np.testing.assert_allclose(npy(out), layer_norm_ref(x32, 1), atol=1e-5)
    assert out.dtype == dt.float32
    no_bias = nn.LayerNorm(4, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_layer_norm_rejects_wrong_trailing_shape():
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\).*\(2, 4\)"):
        nn.LayerNorm(5)(dt.ones(2, 4))


def test_layer_norm_matches_torch(torch, rng, copy_from_torch, same):
    theirs = torch.nn.LayerNorm((3, 4), dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = nn.LayerNorm((3, 4), dtype=dt.float64)
    copy_from_torch(ours, theirs)
    x = rng.standard_normal((2, 3, 4))
    tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
    to, do = theirs(tx), ours(dx)
    same(do, to)
    g = rng.standard_normal(x.shape)
    to.backward(torch.tensor(g))
    backward_with(do, g)
    same(dx.grad, tx.grad, atol=1e-9)
    same(ours.weight.grad, theirs.weight.grad, atol=1e-9)
    same(ours.bias.grad, theirs.bias.grad)


# ---- BatchNorm -----------------------------------------------------------------------------
def batch_stats(x):
    axes = (0, *range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes), x.size // x.shape[1]


def channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize(
    ("cls", "shape"),
    [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)), (nn.BatchNorm2d, (4, 3, 2, 3))],
)
def test_batch_norm_training_uses_batch_stats_and_updates_running_ones(cls, shape, rng):
    bn = cls(3, dtype=dt.float64)
    with dt.no_grad():
        bn.weight.copy_(dt.tensor([1.0, 2.0, -1.0]))
        bn.bias.copy_(dt.tensor([0.0, 0.5, 1.0]))
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(1, 4):
        x = rng.standard_normal(shape) * 2 + step
        out = npy(bn(dt.tensor(x)))
        mean, var, n = batch_stats(x)
        expected = (x - channel(mean, x.ndim)) / np.sqrt(channel(var, x.ndim) + 1e-5)
        expected = expected * channel(npy(bn.weight), x.ndim) + channel(npy(bn.bias), x.ndim)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * var * n / (n - 1)  # unbiased
        np.testing.assert_allclose(npy(bn.running_mean), running_mean, rtol=1e-12)
        np.testing.assert_allclose(npy(bn.running_var), running_var, rtol=1e-12)
        assert bn.num_batches_tracked.item() == step
    bn.eval()
    x = rng.standard_normal(shape)
    expected = (x - channel(running_mean, x.ndim)) / np.sqrt(channel(running_var, x.ndim) + 1e-5)
    expected = expected * channel(npy(bn.weight), x.ndim) + channel(npy(bn.bias), x.ndim)
    np.testing.assert_allclose(npy(bn(dt.tensor(x))), expected, rtol=1e-10, atol=1e-12)
    assert bn.num_batches_tracked.item() == 3  # eval does not count or update
    np.testing.assert_allclose(npy(bn.running_mean), running_mean, rtol=1e-12)


def test_batch_norm_momentum_none_is_a_cumulative_average(rng):
    bn = nn.BatchNorm1d(2, momentum=None, dtype=dt.float64)
    batches = [rng.standard_normal((5, 2)) + i for i in range(4)]
    for x in batches:
        bn(dt.tensor(x))
    np.testing.assert_allclose(npy(bn.running_mean), np.mean([b.mean(0) for b in batches], 0))
    unbiased = [b.var(0, ddof=1) for b in batches]
    # The first step averages with the initial variance 1 at weight 1 - 1/1 = 0.
    np.testing.assert_allclose(npy(bn.running_var), np.mean(unbiased, 0), rtol=1e-12)
    bn.reset_running_stats()
    assert npy(bn.running_mean).tolist() == [0, 0] and bn.num_batches_tracked.item() == 0


def test_batch_norm_without_running_stats_or_affine(rng):
    bn = nn.BatchNorm1d(3, affine=False, track_running_stats=False, dtype=dt.float64)
    assert list(bn.parameters()) == [] and list(bn.buffers()) == []
    assert list(bn.state_dict()) == []
    x = rng.standard_normal((8, 3))
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    bn.eval()  # no running statistics: batch statistics even in eval
    np.testing.assert_allclose(npy(bn(dt.tensor(x))), expected, rtol=1e-10, atol=1e-12)
    no_bias = nn.BatchNorm2d(3, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]
    assert no_bias(dt.randn(2, 3, 2, 2)).shape == (2, 3, 2, 2)


def test_batch_norm_state_dict_names():
    bn = nn.BatchNorm2d(4)
    assert list(bn.state_dict()) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert bn.num_batches_tracked.dtype == dt.int64


def test_batch_norm_loads_a_state_without_num_batches_tracked():
    bn = nn.BatchNorm1d(3)
    bn(dt.randn(4, 3))
    state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    state["running_mean"] = dt.ones(3)
    fresh = nn.BatchNorm1d(3)
    assert fresh.load_state_dict(state) == ([], [])  # strict, as PyTorch for old checkpoints
    np.testing.assert_array_equal(npy(fresh.running_mean), 1.0)
    assert fresh.num_batches_tracked.item() == 0  # left as it was
    with pytest.raises(RuntimeError, match=r"missing keys.*running_var"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "running_var"})
    # inside a model too (the key then carries the module's name)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    old = {k: v for k, v in model.state_dict().items() if k != "1.num_batches_tracked"}
    assert nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).load_state_dict(old) == ([], [])


def test_batch_norm_needs_its_count_from_a_version_2_state_as_pytorch():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    saved = model.state_dict()
    assert saved._metadata["1"]["version"] == 2  # PyTorch's BatchNorm version
    del saved["1.num_batches_tracked"]
    with pytest.raises(RuntimeError, match=r"missing keys \['1.num_batches_tracked'\]"):
        model.load_state_dict(saved)
    saved._metadata["1"]["version"] = 1  # saved before the count existed: optional
    assert model.load_state_dict(saved) == ([], [])


def test_batch_norm_rejects_wrong_channels_and_ranks():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\).*3 channels.*\(4, 5\)"):
        nn.BatchNorm1d(3)(dt.ones(4, 5))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\).*4-D.*\(4, 3, 2\)"):
        nn.BatchNorm2d(3)(dt.ones(4, 3, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(dt.ones(1, 3))
    single = nn.BatchNorm1d(3).eval()
    assert single(dt.ones(1, 3)).shape == (1, 3)  # fine in eval: running statistics


@pytest.mark.parametrize(
    ("name", "shape"),
    [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)), ("BatchNorm2d", (4, 3, 2, 3))],
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_matches_torch(name, shape, momentum, torch, rng, copy_from_torch, same):
    theirs = getattr(torch.nn, name)(3, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = getattr(nn, name)(3, momentum=momentum, dtype=dt.float64)
    copy_from_torch(ours, theirs)
    for mode in ("train", "train", "eval"):
        getattr(theirs, mode)()
        getattr(ours, mode)()
        x = rng.standard_normal(shape) * 2 + 1
        tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
        to, do = theirs(tx), ours(dx)
        same(do, to, atol=1e-9)
        g = rng.standard_normal(shape)
        to.backward(torch.tensor(g))
        backward_with(do, g)
        same(dx.grad, tx.grad, atol=1e-9)
        same(ours.weight.grad, theirs.weight.grad, atol=1e-9)
        same(ours.bias.grad, theirs.bias.grad, atol=1e-9)
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            same(getattr(ours, buffer), getattr(theirs, buffer))
        ours.zero_grad()
        theirs.zero_grad()


# ---- Embedding -----------------------------------------------------------------------------
def test_embedding_looks_up_rows_and_padding_row_gets_no_gradient():
    dt.manual_seed(0)
    emb = nn.Embedding(5, 3, padding_idx=-1, dtype=dt.float64)
    assert emb.padding_idx == 4 and repr(emb) == "Embedding(5, 3, padding_idx=4)"
    assert np.all(npy(emb.weight)[4] == 0)
    idx = np.array([[0, 4, 2], [2, 2, 1]])
    out = emb(dt.tensor(idx))
    np.testing.assert_array_equal(npy(out), npy(emb.weight)[idx])
    g = np.arange(18.0).reshape(2, 3, 3)
    backward_with(out, g)
    expected = np.zeros((5, 3))
    np.add.at(expected, idx.reshape(-1), g.reshape(-1, 3))
    expected[4] = 0  # the padding row is never trained
    np.testing.assert_array_equal(npy(emb.weight.grad), expected)


def test_embedding_init_is_standard_normal():
    dt.manual_seed(1)
    weight = npy(nn.Embedding(1000, 50).weight)
    assert abs(weight.mean()) < 0.01 and weight.std() == pytest.approx(1.0, rel=0.02)


def test_embedding_rejects_bad_indices():
    emb = nn.Embedding(5, 2)
    with pytest.raises(IndexError, match=r"index 5 is out of range.*5 rows"):
        emb(dt.tensor([0, 5]))
    with pytest.raises(IndexError, match="index -1"):
        emb(dt.tensor([-1]))
    with pytest.raises(TypeError, match=r"integers.*float32"):
        emb(dt.tensor([0.0]))
    with pytest.raises(ValueError, match="padding_idx 7"):
        nn.Embedding(5, 2, padding_idx=7)


def test_embedding_matches_torch(torch, rng, copy_from_torch, same):
    theirs = torch.nn.Embedding(6, 3, padding_idx=2, dtype=torch.float64)
    ours = nn.Embedding(6, 3, padding_idx=2, dtype=dt.float64)
    copy_from_torch(ours, theirs)
    idx = np.array([[0, 2, 5], [2, 2, 1]])
    to, do = theirs(torch.tensor(idx)), ours(dt.tensor(idx))
    same(do, to)
    g = rng.standard_normal(to.shape)
    to.backward(torch.tensor(g))
    backward_with(do, g)
    same(ours.weight.grad, theirs.weight.grad)


# ---- Dropout -------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_statistics(p):
    dt.manual_seed(0)
    x = dt.ones(200_000)
    out = npy(nn.Dropout(p)(x))
    zero = out == 0
    assert zero.mean() == pytest.approx(p, abs=0.005)
    np.testing.assert_allclose(out[~zero], 1 / (1 - p), rtol=1e-6)  # survivors are scaled
    assert out.mean() == pytest.approx(1.0, abs=0.01)  # so the expectation is kept


def test_dropout_is_identity_in_eval_and_for_p_zero(rng):
    x = dt.tensor(rng.standard_normal((4, 5)))
    drop = nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(npy(drop(x)), npy(x))
    np.testing.assert_array_equal(npy(nn.Dropout(0.0)(x)), npy(x))
    assert not npy(nn.Dropout(1.0)(x)).any()
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


def test_dropout_backward_uses_the_same_mask():
    dt.manual_seed(3)
    x = dt.ones(1000, requires_grad=True)
    out = nn.Dropout(0.4)(x)
    out.sum().backward()
    np.testing.assert_array_equal(npy(x.grad), npy(out))


def test_dropout_is_reproducible_with_manual_seed():
    x = dt.ones(50)
    dt.manual_seed(7)
    first = npy(F.dropout(x, 0.5))
    dt.manual_seed(7)
    np.testing.assert_array_equal(npy(F.dropout(x, 0.5)), first)


def test_dropout_rejects_probability_out_of_range():
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
            nn.Dropout(p)


# ---- MultiheadAttention --------------------------------------------------------------------
def mha_reference(mha, q, k, v, mask=None):
    """Batch-first numpy multi-head attention with ``mask`` added to the scores."""
    w = npy(mha.in_proj_weight)
    b = npy(mha.in_proj_bias)
    e, h = mha.embed_dim, mha.num_heads
    d = e // h

    def heads(x, i):
        y = x @ w[i * e : (i + 1) * e].T + b[i * e : (i + 1) * e]
        return y.reshape(*y.shape[:2], h, d).transpose(0, 2, 1, 3)

    qh, kh, vh = heads(q, 0), heads(k, 1), heads(v, 2)
    scores = qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(d)
    if mask is not None:
        scores = scores + mask
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    attended = (weights @ vh).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], e)
    out = attended @ npy(mha.out_proj.weight).T + npy(mha.out_proj.bias)
    return out, weights


def mha_inputs(rng, n=2, length=3, source=4, embed=8):
    return (
        rng.standard_normal((n, length, embed)),
        rng.standard_normal((n, source, embed)),
        rng.standard_normal((n, source, embed)),
    )


def test_multihead_attention_parameters_and_init():
    mha = nn.MultiheadAttention(8, 2)
    assert [(n, p.shape) for n, p in mha.named_parameters()] == [
        ("in_proj_weight", (24, 8)),
        ("in_proj_bias", (24,)),
        ("out_proj.weight", (8, 8)),
        ("out_proj.bias", (8,)),
    ]
    assert not npy(mha.in_proj_bias).any() and not npy(mha.out_proj.bias).any()
    bound = math.sqrt(6 / (8 + 24))  # xavier_uniform_ over the (3E, E) matrix
    assert np.abs(npy(mha.in_proj_weight)).max() <= bound
    assert isinstance(mha.out_proj, nn.Linear)
    no_bias = nn.MultiheadAttention(8, 2, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["in_proj_weight", "out_proj.weight"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_numpy(batch_first, rng):
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=dt.float64)
    with dt.no_grad():
        mha.in_proj_bias.copy_(dt.tensor(rng.standard_normal(24)))
    q, k, v = mha_inputs(rng)
    expected, weights = mha_reference(mha, q, k, v)

    def arrange(x):
        return dt.tensor(x if batch_first else x.transpose(1, 0, 2))

    out, avg = mha(arrange(q), arrange(k), arrange(v))
    got = npy(out) if batch_first else npy(out).transpose(1, 0, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(npy(avg), weights.mean(1), rtol=1e-10, atol=1e-12)
    _, per_head = mha(arrange(q), arrange(k), arrange(v), average_attn_weights=False)
    np.testing.assert_allclose(npy(per_head), weights, rtol=1e-10, atol=1e-12)
    out2, none = mha(arrange(q), arrange(k), arrange(v), need_weights=False)
    assert none is None
    np.testing.assert_allclose(npy(out2), npy(out), rtol=1e-10, atol=1e-12)


def test_multihead_attention_masks_match_numpy(rng):
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=dt.float64)
    q, k, v = mha_inputs(rng)
    pad = np.zeros((2, 4), dtype=bool)
    pad[0, -1] = pad[1, 0] = True  # True: ignore this key
    block = np.zeros((3, 4), dtype=bool)
    block[1, 2] = True  # True: query 1 may not see key 2
    floats = rng.standard_normal((2 * 2, 3, 4))  # (N * H, L, S)
    inf = np.where(block, -np.inf, 0.0)
    pad_add = np.where(pad, -np.inf, 0.0)[:, None, None, :]
    cases = [
        ({"key_padding_mask": pad}, pad_add),
        ({"attn_mask": block}, inf),
        ({"attn_mask": floats}, floats.reshape(2, 2, 3, 4)),
        ({"attn_mask": block, "key_padding_mask": pad}, inf + pad_add),
        ({"attn_mask": floats, "key_padding_mask": pad}, floats.reshape(2, 2, 3, 4) + pad_add),
        ({"attn_mask": inf, "key_padding_mask": np.where(pad, -np.inf, 0.0)}, inf + pad_add),
    ]
    for kwargs, additive in cases:
        expected, weights = mha_reference(mha, q, k, v, additive)
        for need_weights in (True, False):
            out, avg = mha(
                *map(dt.tensor, (q, k, v)),
                need_weights=need_weights,
                **{name: dt.tensor(m) for name, m in kwargs.items()},
            )
            np.testing.assert_allclose(
                npy(out), expected, rtol=1e-9, atol=1e-12, err_msg=str(kwargs)
            )
            if need_weights:
                np.testing.assert_allclose(npy(avg), weights.mean(1), rtol=1e-9, atol=1e-12)


def test_key_padding_mask_equals_dropping_the_key(rng):
    mha = nn.MultiheadAttention(8, 4, batch_first=True, dtype=dt.float64)
    q, k, v = mha_inputs(rng, n=1)
    pad = dt.tensor([[False, True, False, False]])
    masked, _ = mha(*map(dt.tensor, (q, k, v)), key_padding_mask=pad)
    keep = [0, 2, 3]
    dropped, _ = mha(dt.tensor(q), dt.tensor(k[:, keep]), dt.tensor(v[:, keep]))
    np.testing.assert_allclose(npy(masked), npy(dropped), rtol=1e-10, atol=1e-12)


def test_unbatched_input_equals_a_batch_of_one(rng):
    mha = nn.MultiheadAttention(8, 2, dtype=dt.float64)
    q, k, v = (a[0] for a in mha_inputs(rng, n=1))
    out, w = mha(dt.tensor(q), dt.tensor(k), dt.tensor(v))
    batched, bw = mha(*(dt.tensor(a[:, None]) for a in (q, k, v)))  # (L, 1, E)
    assert out.shape == (3, 8) and w.shape == (3, 4)
    np.testing.assert_allclose(npy(out), npy(batched)[:, 0], rtol=1e-12)
    np.testing.assert_allclose(npy(w), npy(bw)[0], rtol=1e-12)


def test_multihead_attention_gradcheck(rng):
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=dt.float64)
    q, k, v = mha_inputs(rng, n=1, length=2, source=3, embed=4)
    pad = dt.tensor([[False, False, True]])
    assert dt.autograd.gradcheck(
        lambda a, b, c: mha(a, b, c, key_padding_mask=pad)[0], [leaf(q), leaf(k), leaf(v)]
    )


def test_multihead_attention_dropout_follows_training_mode(rng):
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    q = dt.tensor(rng.standard_normal((2, 3, 8)).astype(np.float32))
    dt.manual_seed(0)
    _, w = mha(q, q, q, average_attn_weights=False)
    assert (npy(w) == 0).any()  # the weights returned are the dropped ones, as PyTorch
    mha.eval()
    _, w = mha(q, q, q, average_attn_weights=False)
    np.testing.assert_allclose(npy(w).sum(-1), 1.0, rtol=1e-5)


def test_multihead_attention_rejects_bad_configurations():
    with pytest.raises(ValueError, match=r"embed_dim 8.*num_heads 3"):
        nn.MultiheadAttention(8, 3)
    with pytest.raises(NotImplementedError, match="kdim=4"):
        nn.MultiheadAttention(8, 2, kdim=4)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        nn.MultiheadAttention(8, 2, add_bias_kv=True)
    mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match="query has embedding size 6, expected 8"):
        mha(dt.ones(3, 1, 6), dt.ones(3, 1, 6), dt.ones(3, 1, 6))
    with pytest.raises(ValueError, match=r"3-D.*2-D"):
        mha(dt.ones(8), dt.ones(8), dt.ones(8))


def test_multihead_attention_names_a_mask_of_the_wrong_shape():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = dt.ones(2, 3, 8)
    with pytest.raises(
        ValueError, match=r"key_padding_mask has shape \(3, 2\), expected \(batch, source_len\) "
    ):
        mha(x, x, x, key_padding_mask=dt.ones(3, 2, dtype=dt.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2,\), expected \(source"):
        mha(x[0], x[0], x[0], key_padding_mask=dt.ones(2, dtype=dt.bool))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(2, 4\), expected"):
        mha(x, x, x, attn_mask=dt.ones(2, 4, dtype=dt.bool))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the NaN weights
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_fully_padded_sample(batch_first, rng):
    # A sample whose every key is padding attends to nothing: zeros before out_proj (as
    # PyTorch's SDPA) when the weights are not asked for; NaN with them (as PyTorch too).
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=dt.float64)
    q, k, v = (leaf(a if batch_first else a.swapaxes(0, 1)) for a in mha_inputs(rng))
    pad = np.zeros((2, 4), dtype=bool)
    pad[1] = True
    padded, other = (1, 0) if batch_first else ((slice(None), 1), (slice(None), 0))
    out, _ = mha(q, k, v, key_padding_mask=dt.tensor(pad), need_weights=False)
    np.testing.assert_allclose(npy(out)[padded], np.broadcast_to(npy(mha.out_proj.bias), (3, 8)))
    out.sum().backward()
    assert all(np.isfinite(npy(t.grad)).all() for t in (q, k, v, mha.in_proj_weight))
    np.testing.assert_array_equal(npy(q.grad)[padded], 0.0)
    out, _ = mha(q, k, v, key_padding_mask=dt.tensor(pad), need_weights=True)
    assert np.isnan(npy(out)[padded]).all() and not np.isnan(npy(out)[other]).any()


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_multihead_attention_fully_padded_sample_matches_torch(torch, rng, copy_from_torch, same):
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = nn.MultiheadAttention(8, 2, batch_first=True, dtype=dt.float64)
    copy_from_torch(ours, theirs)
    arrays = mha_inputs(rng)
    pad = np.zeros((2, 4), dtype=bool)
    pad[1] = True
    pad[0, 0] = True
    for need_weights in (False, True):
        tin = [torch.tensor(a, requires_grad=True) for a in arrays]
        din = [leaf(a) for a in arrays]
        to, _ = theirs(*tin, key_padding_mask=torch.tensor(pad), need_weights=need_weights)
        do, _ = ours(*din, key_padding_mask=dt.tensor(pad), need_weights=need_weights)
        same(do, to, atol=1e-9)
        if not need_weights:
            to.sum().backward()
            do.sum().backward()
            for a, b in zip(din, tin):
                same(a.grad, b.grad, atol=1e-9)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_matches_torch(
    batch_first, need_weights, torch, rng, copy_from_torch, same
):
    e, h, n, length, source = 8, 2, 2, 3, 4
    theirs = torch.nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=dt.float64)
    copy_from_torch(ours, theirs)

    def shaped(size):
        return (n, size, e) if batch_first else (size, n, e)

    pad = np.zeros((n, source), dtype=bool)
    pad[0, -1] = True
    block = np.zeros((length, source), dtype=bool)
    block[1, 0] = True
    masks = [
        {},
        {"key_padding_mask": pad},
        {"attn_mask": block},
        {"attn_mask": rng.standard_normal((n * h, length, source))},
        {"attn_mask": block, "key_padding_mask": pad},
        {"average_attn_weights": False},
    ]
    for kwargs in masks:
        arrays = [rng.standard_normal(shaped(s)) for s in (length, source, source)]
        tin = [torch.tensor(a, requires_grad=True) for a in arrays]
        din = [leaf(a) for a in arrays]
        tkw = {k: torch.tensor(m) if isinstance(m, np.ndarray) else m for k, m in kwargs.items()}
        dkw = {k: dt.tensor(m) if isinstance(m, np.ndarray) else m for k, m in kwargs.items()}
        to, tw = theirs(*tin, need_weights=need_weights, **tkw)
        do, dw = ours(*din, need_weights=need_weights, **dkw)
        same(do, to, atol=1e-9)
        assert (dw is None) == (tw is None)
        if tw is not None:
            same(dw, tw, atol=1e-9)
        g = rng.standard_normal(to.shape)
        to.backward(torch.tensor(g))
        backward_with(do, g)
        for a, b in zip(din, tin):
            same(a.grad, b.grad, atol=1e-9)
        for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == tname
            same(p.grad, tp.grad, atol=1e-9)
        ours.zero_grad()
        theirs.zero_grad()


# ---- small layers --------------------------------------------------------------------------
def test_activation_modules_equal_their_functions(rng):
    x = dt.tensor(rng.standard_normal((3, 4)))
    pairs = [
        (nn.ReLU(), F.relu(x)),
        (nn.GELU(), F.gelu(x)),
        (nn.GELU("tanh"), F.gelu(x, approximate="tanh")),
        (nn.SiLU(), F.silu(x)),
        (nn.Tanh(), F.tanh(x)),
        (nn.Sigmoid(), F.sigmoid(x)),
        (nn.Softplus(beta=2.0), F.softplus(x, 2.0)),
        (nn.Softmax(dim=0), F.softmax(x, 0)),
        (nn.LogSoftmax(dim=1), F.log_softmax(x, 1)),
    ]
    for module, expected in pairs:
        np.testing.assert_allclose(npy(module(x)), npy(expected), err_msg=repr(module))
    np.testing.assert_allclose(npy(nn.ReLU()(x)), np.maximum(npy(x), 0))


def test_identity_flatten_unflatten():
    x = dt.randn(2, 3, 4)
    assert nn.Identity(5, key=1)(x) is x
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    assert nn.Unflatten(1, (3, 1))(x).shape == (2, 3, 1, 4)
    assert nn.Unflatten(-1, (2, 2))(x).shape == (2, 3, 2, 2)


# ---- size arguments: any integer, numpy's included -----------------------------------------
def test_layers_take_numpy_integer_sizes():
    i = np.int64
    assert nn.Linear(np.prod((2, 3)), 4).weight.shape == (4, 6)
    assert nn.Linear(np.int32(3), i(4)).in_features == 3
    assert type(nn.Linear(i(3), 4).in_features) is int  # repr and state match plain ints
    assert nn.Conv2d(i(2), i(4), i(3), stride=i(1), padding=i(1)).weight.shape == (4, 2, 3, 3)
    assert nn.Conv2d(2, 4, 3, groups=i(2)).weight.shape == (4, 1, 3, 3)
    assert nn.LayerNorm(i(5)).weight.shape == (5,)
    assert nn.LayerNorm((i(2), i(3))).normalized_shape == (2, 3)
    assert nn.BatchNorm1d(i(5)).running_mean.shape == (5,)
    assert nn.MultiheadAttention(i(4), i(2)).in_proj_weight.shape == (12, 4)


def test_numpy_integer_sizes_match_torch(torch):
    def shapes(module):
        i = np.int64
        return [
            tuple(module.Linear(np.prod((2, 3)), 4).weight.shape),
            tuple(module.Conv2d(i(2), 4, 3, groups=i(2)).weight.shape),
            tuple(module.LayerNorm(i(5)).weight.shape),
            tuple(module.MultiheadAttention(i(4), 2).in_proj_weight.shape),
        ]

    assert shapes(nn) == shapes(torch.nn)


def test_a_size_that_is_not_an_integer_names_the_argument():
    with pytest.raises(TypeError, match="Linear: out_features must be an int, got True"):
        nn.Linear(2, True)
    with pytest.raises(TypeError, match=r"Linear: in_features must be an int, got 2\.0"):
        nn.Linear(2.0, 3)
    with pytest.raises(TypeError, match="Conv2d: groups must be an int"):
        nn.Conv2d(2, 2, 3, groups=1.5)
    with pytest.raises(ValueError, match="Conv2d: in_channels must be an int >= 1, got 0"):
        nn.Conv2d(0, 2, 3)
    with pytest.raises(TypeError, match="LayerNorm: normalized_shape must be an int"):
        nn.LayerNorm("5")
    with pytest.raises(TypeError, match="BatchNorm2d: num_features must be an int"):
        nn.BatchNorm2d(2.5)
    with pytest.raises(TypeError, match="MultiheadAttention: embed_dim must be an int"):
        nn.MultiheadAttention(4.0, 2)
