"""``nn.functional`` (values against numpy, gradients by finite differences in float64),
``nn.init`` and ``nn.utils`` gradient clipping."""

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- linear --------------------------------------------------------------------------------
def test_linear_values_and_gradcheck(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    np.testing.assert_allclose(npy(F.linear(leaf(x), leaf(w), leaf(b))), x @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(npy(F.linear(leaf(x), leaf(w))), x @ w.T, rtol=1e-12)
    assert gradcheck(F.linear, [leaf(x), leaf(w), leaf(b)])
    assert gradcheck(F.linear, [leaf(x), leaf(w)])
    assert gradcheck(lambda v: F.linear(v, leaf(w), leaf(b)), [leaf(x[0, 0])])  # 1-D input


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"input of shape \(2, 3\) has 3 features.*\(5, 4\)"):
        F.linear(dt.ones(2, 3), dt.ones(5, 4))
    with pytest.raises(ValueError, match=r"bias of shape \(4,\).*5 outputs"):
        F.linear(dt.ones(2, 4), dt.ones(5, 4), dt.ones(4))


# ---- normalisation -------------------------------------------------------------------------
def test_layer_norm_values(rng):
    x = rng.standard_normal((3, 2, 4))
    w, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    mean = x.mean(axis=(1, 2), keepdims=True)
    xhat = (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    got = F.layer_norm(leaf(x), (2, 4), leaf(w), leaf(b))
    np.testing.assert_allclose(npy(got), xhat * w + b, rtol=1e-10, atol=1e-12)
    got = F.layer_norm(leaf(x), [2, 4], None, leaf(b))  # a shift without a scale
    np.testing.assert_allclose(npy(got), xhat + b, rtol=1e-10, atol=1e-12)
    got = F.layer_norm(leaf(x), 4, eps=0.5)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 0.5)
    np.testing.assert_allclose(npy(got), ref, rtol=1e-10, atol=1e-12)


def test_layer_norm_gradcheck(rng):
    x = rng.standard_normal((3, 2, 4))
    w, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    assert gradcheck(lambda *a: F.layer_norm(a[0], (2, 4), a[1], a[2]), [leaf(x), leaf(w), leaf(b)])
    assert gradcheck(lambda a, c: F.layer_norm(a, 4, c), [leaf(x), leaf(w[0])])
    assert gradcheck(lambda a, c: F.layer_norm(a, 4, None, c), [leaf(x), leaf(b[0])])
    assert gradcheck(lambda a: F.layer_norm(a, (3, 2, 4)), [leaf(x)])


def test_layer_norm_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"normalized_shape \(3,\).*\(2, 4\)"):
        F.layer_norm(dt.ones(2, 4), (3,))
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected \(4,\)"):
        F.layer_norm(dt.ones(2, 4), 4, dt.ones(3))


def test_batch_norm_functional_values_and_running_update(rng):
    x = rng.standard_normal((5, 3, 2))
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    running_mean, running_var = dt.zeros(3, dtype=dt.float64), dt.ones(3, dtype=dt.float64)
    out = F.batch_norm(leaf(x), running_mean, running_var, training=True, momentum=0.3)
    expected = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
    np.testing.assert_allclose(npy(out), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(npy(running_mean), 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(npy(running_var), 0.7 + 0.3 * var * 10 / 9, rtol=1e-12)
    out = F.batch_norm(leaf(x), running_mean, running_var, training=False, eps=0.1)
    expected = (x - npy(running_mean)[None, :, None]) / np.sqrt(
        npy(running_var)[None, :, None] + 0.1
    )
    np.testing.assert_allclose(npy(out), expected, rtol=1e-10, atol=1e-12)
    out = F.batch_norm(leaf(x), None, None, training=False)  # no running stats: batch stats
    np.testing.assert_allclose(
        npy(out), (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
    )


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(training, rng):
    x = rng.standard_normal((4, 3, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm = dt.tensor(rng.standard_normal(3))
    rv = dt.tensor(rng.uniform(0.5, 2, 3))

    def fn(a, weight, bias):
        # In training the running stats get updated by every call but do not affect the output.
        return F.batch_norm(a, rm, rv, weight, bias, training=training)

    assert gradcheck(fn, [leaf(x), leaf(w), leaf(b)])
    assert gradcheck(lambda a: F.batch_norm(a, None, None, training=True), [leaf(x[:, :, 0])])


def test_batch_norm_functional_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"running_mean has shape \(2,\).*3 channels"):
        F.batch_norm(dt.ones(4, 3), dt.zeros(2), dt.ones(2))
    with pytest.raises(ValueError, match=r"weight has shape \(4,\)"):
        F.batch_norm(dt.ones(4, 3), None, None, dt.ones(4), training=True)
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.batch_norm(dt.ones(4), None, None)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        F.batch_norm(dt.ones(1, 3), dt.zeros(3), dt.ones(3), training=True)


def test_normalization_matches_torch(torch, rng, same):
    x = rng.standard_normal((4, 3, 5))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    tx = torch.tensor(x, requires_grad=True)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    to = torch.nn.functional.batch_norm(tx, trm, trv, torch.tensor(w), torch.tensor(b), True, 0.2)
    dx = leaf(x)
    drm, drv = dt.zeros(3, dtype=dt.float64), dt.ones(3, dtype=dt.float64)
    do = F.batch_norm(dx, drm, drv, dt.tensor(w), dt.tensor(b), True, 0.2)
    same(do, to)
    same(drm, trm)
    same(drv, trv)
    lw = rng.standard_normal(5)
    same(
        F.layer_norm(dx, (5,), None, dt.tensor(lw)),
        torch.nn.functional.layer_norm(tx, (5,), None, torch.tensor(lw)),
    )


def test_batch_norm_float16_statistics_accumulate_in_float32():
    # One sample of 64 is 51, the rest 50: mean 50 + 1/64, variance (1/64)(63/64) = 0.01538.
    # float16 sums of 16384 values of 50 overflow; as PyTorch, the statistics are taken in
    # float32 and rounded to float16 (the mean to 50.0) before normalising.
    x = np.full((64, 3, 16, 16), 50.0, dtype=np.float16)
    x[0] += 1
    out = F.batch_norm(dt.tensor(x), None, None, training=True)
    assert out.dtype == dt.float16
    rstd = np.float16(1 / math.sqrt(np.float16((1 / 64) * (63 / 64)) + 1e-5))
    np.testing.assert_array_equal(npy(out)[0], np.full((3, 16, 16), rstd, dtype=np.float16))
    np.testing.assert_array_equal(npy(out)[1:], 0.0)
    running_mean, running_var = dt.zeros(3, dtype=dt.float16), dt.ones(3, dtype=dt.float16)
    F.batch_norm(dt.tensor(x), running_mean, running_var, training=True, momentum=1.0)
    np.testing.assert_allclose(npy(running_mean), 50 + 1 / 64, rtol=1e-3)
    unbiased = (1 / 64) * (63 / 64) * 16384 / 16383
    np.testing.assert_allclose(npy(running_var), unbiased, rtol=1e-3)


def test_layer_norm_float16_squares_do_not_overflow(rng):
    x = (rng.standard_normal((4, 64)) * 400).astype(np.float16)  # squares beyond 65504
    w, b = rng.standard_normal(64).astype(np.float16), rng.standard_normal(64).astype(np.float16)
    xs = [dt.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = F.layer_norm(xs[0], (64,), xs[1], xs[2])
    wide = x.astype(np.float64)
    xhat = (wide - wide.mean(-1, keepdims=True)) / np.sqrt(wide.var(-1, keepdims=True) + 1e-5)
    assert out.dtype == dt.float16
    np.testing.assert_allclose(npy(out), xhat * w + b, atol=1e-2, rtol=1e-2)
    out.sum().backward()
    assert all(t.grad.dtype == dt.float16 for t in xs)
    np.testing.assert_allclose(npy(xs[1].grad), xhat.sum(0), atol=2e-2, rtol=1e-2)
    assert np.isfinite(npy(xs[0].grad)).all()


def test_float16_normalization_matches_torch(torch, rng, same):
    x = (rng.standard_normal((8, 3, 5, 5)) * 300 + 40).astype(np.float16)
    theirs = torch.nn.functional.batch_norm(torch.tensor(x), None, None, training=True)
    same(F.batch_norm(dt.tensor(x), None, None, training=True), theirs, atol=1e-3, rtol=1e-3)
    theirs = torch.nn.functional.layer_norm(torch.tensor(x), (5, 5))
    same(F.layer_norm(dt.tensor(x), (5, 5)), theirs, atol=1e-3, rtol=1e-3)


# ---- embedding and one_hot -----------------------------------------------------------------
def test_embedding_values_and_gradcheck(rng):
    weight = rng.standard_normal((5, 3))
    idx = dt.tensor([[0, 3], [3, 4]])
    np.testing.assert_array_equal(npy(F.embedding(idx, leaf(weight))), weight[npy(idx)])
    assert gradcheck(lambda w: F.embedding(idx, w), [leaf(weight)])
    # padding_idx zeroes its row's gradient on purpose, so check without using that row.
    assert gradcheck(lambda w: F.embedding(dt.tensor([[0, 1], [1, 4]]), w, 3), [leaf(weight)])


def test_embedding_padding_idx_row_gets_zero_gradient(rng):
    for padding_idx in (3, -2):  # -2 is row 3
        w = leaf(rng.standard_normal((5, 3)))
        F.embedding(dt.tensor([1, 3, 3]), w, padding_idx=padding_idx).sum().backward()
        np.testing.assert_array_equal(npy(w.grad).sum(1), [0, 3, 0, 0, 0])


def test_embedding_out_of_range_names_the_index():
    with pytest.raises(IndexError, match="index 9 is out of range for a table of 5 rows"):
        F.embedding(dt.tensor([1, 9]), dt.ones(5, 2))


def test_one_hot():
    out = F.one_hot(dt.tensor([0, 2, 1]))
    assert out.dtype == dt.int64
    np.testing.assert_array_equal(npy(out), np.eye(3, dtype=np.int64)[[0, 2, 1]])
    out = F.one_hot(dt.tensor([[1], [0]]), num_classes=4)
    assert out.shape == (2, 1, 4) and npy(out)[0, 0].tolist() == [0, 1, 0, 0]
    with pytest.raises(ValueError, match=r"class value 3 is outside \[0, 3\)"):
        F.one_hot(dt.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="class value -1"):
        F.one_hot(dt.tensor([-1, 1]), 3)
    with pytest.raises(TypeError, match="integer"):
        F.one_hot(dt.tensor([0.0]))


def test_one_hot_matches_torch(torch):
    labels = np.array([[3, 0], [1, 2]])
    theirs = torch.nn.functional.one_hot(torch.tensor(labels), 5).numpy()
    np.testing.assert_array_equal(npy(F.one_hot(dt.tensor(labels), 5)), theirs)


# ---- pad -----------------------------------------------------------------------------------
NUMPY_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 2), (2, 0, 1, 1)])
def test_pad_values_and_gradcheck(mode, pads, rng):
    x = rng.standard_normal((2, 3, 4))
    widths = [(0, 0)] * 3
    for i in range(len(pads) // 2):
        widths[2 - i] = (pads[2 * i], pads[2 * i + 1])
    if mode == "constant":
        expected = np.pad(x, widths, mode="constant", constant_values=1.5)
        got = F.pad(leaf(x), pads, mode=mode, value=1.5)
    else:
        expected = np.pad(x, widths, mode=NUMPY_MODE[mode])
        got = F.pad(leaf(x), pads, mode=mode)
    np.testing.assert_array_equal(npy(got), expected)
    assert gradcheck(lambda a: F.pad(a, pads, mode=mode), [leaf(x)])


def test_pad_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"\(1,\) must hold \(before, after\) pairs"):
        F.pad(dt.ones(2, 2), (1,))
    with pytest.raises(ValueError, match="mode 'zeros'"):
        F.pad(dt.ones(2, 2), (1, 1), mode="zeros")
    with pytest.raises(ValueError, match=r"negative padding \(-1, 1\)"):
        F.pad(dt.ones(2, 2), (-1, 1))


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_matches_torch(mode, torch, rng, same):
    x = rng.standard_normal((2, 3, 4, 5))
    pads = (1, 2, 2, 1)
    tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
    to, do = torch.nn.functional.pad(tx, pads, mode=mode), F.pad(dx, pads, mode=mode)
    same(do, to)
    g = rng.standard_normal(to.shape)
    to.backward(torch.tensor(g))
    do.backward(dt.tensor(g))
    same(dx.grad, tx.grad)


# ---- scaled_dot_product_attention ----------------------------------------------------------
def sdpa_reference(q, k, v, additive=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if additive is not None:
        scores = scores + additive
    return softmax(scores) @ v


def qkv(rng):
    return (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((2, 5, 4)),
        rng.standard_normal((2, 5, 2)),
    )


def test_sdpa_values(rng):
    q, k, v = qkv(rng)
    causal = np.where(np.tril(np.ones((3, 5), dtype=bool)), 0.0, -np.inf)
    keep = rng.uniform(size=(2, 1, 5)) > 0.3
    keep[..., 0] = True  # every query sees at least one key
    floats = rng.standard_normal((3, 5))
    cases = [
        ({}, None),
        ({"is_causal": True}, causal),
        ({"attn_mask": dt.tensor(keep)}, np.where(keep, 0.0, -np.inf)),
        ({"attn_mask": dt.tensor(floats)}, floats),
    ]
    for kwargs, additive in cases:
        got = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), **kwargs)
        np.testing.assert_allclose(npy(got), sdpa_reference(q, k, v, additive), rtol=1e-10)
    got = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), scale=0.3)
    np.testing.assert_allclose(npy(got), sdpa_reference(q, k, v, scale=0.3), rtol=1e-10)


def test_sdpa_gradcheck(rng):
    q, k, v = qkv(rng)
    keep = dt.tensor(np.tril(np.ones((3, 5), dtype=bool), 1))
    floats = dt.tensor(rng.standard_normal((3, 5)))
    for kwargs in ({}, {"is_causal": True}, {"attn_mask": keep}, {"attn_mask": floats}):
        fn = lambda a, b, c, kw=kwargs: F.scaled_dot_product_attention(a, b, c, **kw)
        assert gradcheck(fn, [leaf(q), leaf(k), leaf(v)]), kwargs


def test_sdpa_dropout_gradcheck_with_a_fixed_seed(rng):
    q, k, v = qkv(rng)

    def fn(a, b, c):
        dt.manual_seed(5)  # the same mask on every call
        return F.scaled_dot_product_attention(a, b, c, dropout_p=0.3)

    assert gradcheck(fn, [leaf(q), leaf(k), leaf(v)])


def test_sdpa_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="query dim 4 != key dim 3"):
        F.scaled_dot_product_attention(dt.ones(2, 4), dt.ones(2, 3), dt.ones(2, 3))
    with pytest.raises(ValueError, match="2 keys but 3 values"):
        F.scaled_dot_product_attention(dt.ones(2, 4), dt.ones(2, 4), dt.ones(3, 4))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(
            dt.ones(2, 4), dt.ones(2, 4), dt.ones(2, 4), dt.ones(2, 2), is_causal=True
        )


def test_sdpa_rejects_a_mask_of_the_wrong_shape():
    q, k = dt.ones(1, 1, 2, 4), dt.ones(1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 2\) must broadcast to the "):
        F.scaled_dot_product_attention(q, k, k, attn_mask=dt.ones(3, 2, dtype=dt.bool))
    with pytest.raises(ValueError, match=r"\(\.\.\., L, S\) = \(1, 1, 2, 3\)"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=dt.ones(2, 2, 3))  # would widen


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_row_with_no_key_is_zero_with_zero_gradient(kind, rng):
    q, k, v = qkv(rng)
    keep = np.ones((3, 5), dtype=bool)
    keep[1] = False  # query 1 may see no key
    keep[0, 2] = False
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf)
    ins = [leaf(a) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ins, attn_mask=dt.tensor(mask))
    np.testing.assert_array_equal(npy(out)[:, 1], 0.0)  # as PyTorch 2.5+, not NaN
    expected = sdpa_reference(q[:, [0, 2]], k, v, np.where(keep, 0.0, -np.inf)[[0, 2]])
    np.testing.assert_allclose(npy(out)[:, [0, 2]], expected, rtol=1e-10)
    out.backward(dt.tensor(rng.standard_normal(out.shape)))
    grads = [npy(t.grad) for t in ins]
    assert all(np.isfinite(g).all() for g in grads)
    np.testing.assert_array_equal(grads[0][:, 1], 0.0)
    fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=dt.tensor(mask))
    assert gradcheck(fn, [leaf(q), leaf(k), leaf(v)])


def test_sdpa_row_with_no_key_matches_torch(torch, rng, same):
    q, k, v = qkv(rng)
    keep = rng.uniform(size=(2, 3, 5)) > 0.5
    keep[0, 1] = keep[1, 2] = False
    for mask in (keep, np.where(keep, 0.0, -np.inf)):
        _sdpa_against_torch(torch, rng, same, (q, k, v), {"attn_mask": mask})


def _sdpa_against_torch(torch, rng, same, qkv_arrays, kwargs):
    """SDPA's output and input gradients in dtrain and torch, from the same arrays."""
    tkw = {n: torch.tensor(m) if isinstance(m, np.ndarray) else m for n, m in kwargs.items()}
    dkw = {n: dt.tensor(m) if isinstance(m, np.ndarray) else m for n, m in kwargs.items()}
    tin = [torch.tensor(a, requires_grad=True) for a in qkv_arrays]
    din = [leaf(a) for a in qkv_arrays]
    to = torch.nn.functional.scaled_dot_product_attention(*tin, **tkw)
    do = F.scaled_dot_product_attention(*din, **dkw)
    same(do, to)
    g = rng.standard_normal(to.shape)
    to.backward(torch.tensor(g))
    do.backward(dt.tensor(g))
    for a, b in zip(din, tin):
        same(a.grad, b.grad)


def test_sdpa_matches_torch(torch, rng, same):
    q, k, v = qkv(rng)
    keep = rng.uniform(size=(2, 3, 5)) > 0.3
    keep[..., 0] = True
    floats = rng.standard_normal((3, 5))
    for kwargs in (
        {},
        {"is_causal": True},
        {"attn_mask": keep},
        {"attn_mask": floats},
        {"scale": 0.2},
    ):
        _sdpa_against_torch(torch, rng, same, (q, k, v), kwargs)


# ---- dropout -------------------------------------------------------------------------------
def test_dropout_gradcheck_with_a_fixed_seed(rng):
    def fn(a):
        dt.manual_seed(11)  # the same mask on every call
        return F.dropout(a, 0.4)

    x = rng.standard_normal((4, 5))
    out = fn(leaf(x))
    kept = npy(out) != 0
    np.testing.assert_allclose(npy(out)[kept], x[kept] / 0.6)
    assert gradcheck(fn, [leaf(x)])


def test_dropout_functional_modes():
    x = dt.ones(10)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert not npy(F.dropout(x, 1.0)).any()
    with pytest.raises(ValueError, match=r"but got 1.5"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"but got -0.5"):
        F.dropout(x, -0.5, training=False)


# ---- gradient clipping ---------------------------------------------------------------------
def params_with_grads(*grads):
    params = []
    for g in grads:
        p = nn.Parameter(dt.zeros(len(g), dtype=dt.float64))
        p.grad = dt.tensor(np.asarray(g, dtype=np.float64))
        params.append(p)
    return params


def test_clip_grad_norm_scales_all_gradients_together():
    params = params_with_grads([3.0, 0.0], [0.0, 4.0])
    norm = nn.utils.clip_grad_norm_(params, max_norm=1.0)
    assert isinstance(norm, dt.Tensor) and norm.item() == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(npy(params[0].grad), [3 * scale, 0])
    np.testing.assert_allclose(npy(params[1].grad), [0, 4 * scale])
    total = math.hypot(*npy(params[0].grad), *npy(params[1].grad))
    assert total == pytest.approx(1.0, abs=1e-6)


def test_clip_grad_norm_leaves_small_gradients_and_skips_missing_ones():
    params = params_with_grads([0.3, 0.4])
    params.append(nn.Parameter(dt.ones(2)))  # no gradient: ignored
    norm = nn.utils.clip_grad_norm_(iter(params), max_norm=1.0)
    assert norm.item() == pytest.approx(0.5)
    np.testing.assert_array_equal(npy(params[0].grad), [0.3, 0.4])
    assert nn.utils.clip_grad_norm_([nn.Parameter(dt.ones(1))], 1.0).item() == 0.0


@pytest.mark.parametrize(
    ("norm_type", "expected"),
    [(1.0, 10.0), (2.0, math.sqrt(30.0)), (3, 100.0 ** (1 / 3)), (math.inf, 4.0), ("inf", 4.0)],
)
def test_clip_grad_norm_types(norm_type, expected):
    params = params_with_grads([1.0, -2.0], [-3.0, 4.0])
    norm = nn.utils.clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    assert norm.item() == pytest.approx(expected)
    scale = 0.5 / (expected + 1e-6)
    np.testing.assert_allclose(npy(params[1].grad), [-3 * scale, 4 * scale])


def test_clip_grad_norm_single_tensor_and_nonfinite():
    (p,) = params_with_grads([6.0, 8.0])
    assert nn.utils.clip_grad_norm_(p, 5.0).item() == pytest.approx(10.0)
    np.testing.assert_allclose(npy(p.grad), [3.0, 4.0], rtol=1e-6)
    (bad,) = params_with_grads([1.0, float("nan")])
    with pytest.raises(RuntimeError, match="nan"):
        nn.utils.clip_grad_norm_(bad, 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_matches_torch(torch):
    grads = [np.array([1.0, -2.0, 0.5]), np.array([[3.0, 4.0]])]
    theirs = []
    for g in grads:
        tp = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        tp.grad = torch.tensor(g)
        theirs.append(tp)
    ours = params_with_grads(grads[0], grads[1].reshape(-1))
    for norm_type in (2.0, 1.0, math.inf):
        tn = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type=norm_type)
        dn = nn.utils.clip_grad_norm_(ours, 1.5, norm_type=norm_type)
        assert dn.item() == pytest.approx(tn.item())
        np.testing.assert_allclose(npy(ours[0].grad), theirs[0].grad.numpy())


def test_clip_grad_norm_float16_sums_do_not_overflow():
    p = nn.Parameter(dt.zeros(1000, dtype=dt.float16))
    p.grad = dt.full((1000,), 10.0, dtype=dt.float16)  # the sum of squares, 1e5, overflows
    norm = nn.utils.clip_grad_norm_([p], 1.0)
    assert norm.dtype == dt.float16 and norm.item() == pytest.approx(math.sqrt(1e5), rel=1e-3)
    assert p.grad.dtype == dt.float16
    np.testing.assert_allclose(npy(p.grad), 10 / math.sqrt(1e5), rtol=1e-3)
    p.grad = dt.full((1000,), 300.0, dtype=dt.float16)  # each square overflows
    for norm_type in (2.0, 3.0):
        expected = 300 * 1000 ** (1 / norm_type)
        got = nn.utils.clip_grad_norm_([p], 1e9, norm_type=norm_type)
        assert float(got) == pytest.approx(expected, rel=1e-3)


def test_clip_grad_norm_orders_zero_and_below_take_the_norm_of_the_norms():
    # As PyTorch: each gradient's norm, then the same norm of those.
    params = params_with_grads([0.0, 3.0, -4.0, 0.0, 2.0], [1.0, 0.0], [0.0, 0.0])
    norm = nn.utils.clip_grad_norm_(params, max_norm=1.0, norm_type=0)
    assert norm.item() == 2.0  # two gradients have a non-zero element
    np.testing.assert_allclose(npy(params[1].grad), [1 / (2 + 1e-6), 0.0])
    for norm_type in (-math.inf, -1.0):  # a zero norm (params[2]) makes these 0: no clip
        params = params_with_grads([3.0, -4.0], [0.0, 0.0])
        assert nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type).item() == 0.0
        np.testing.assert_array_equal(npy(params[0].grad), [3.0, -4.0])
    params = params_with_grads([3.0, -4.0], [-2.0, 5.0])
    assert nn.utils.clip_grad_norm_(params, 10.0, norm_type=-math.inf).item() == 2.0


def test_clip_grad_norm_unusual_orders_match_torch(torch):
    grads = [np.array([0.0, 3.0, -4.0, 0.0, 2.0]), np.array([1.0, 0.0]), np.array([-0.5, 6.0])]
    for norm_type in (0.0, 0.5, -1.0, -math.inf):
        theirs = []
        for g in grads:
            tp = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
            tp.grad = torch.tensor(g)
            theirs.append(tp)
        ours = params_with_grads(*grads)
        tn = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type=norm_type)
        dn = nn.utils.clip_grad_norm_(ours, 1.5, norm_type=norm_type)
        assert dn.item() == pytest.approx(tn.item()), norm_type
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(npy(a.grad), b.grad.numpy(), rtol=1e-12)
    tp = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    tp.grad = torch.full((1000,), 10.0, dtype=torch.float16)
    p = nn.Parameter(dt.zeros(1000, dtype=dt.float16))
    p.grad = dt.full((1000,), 10.0, dtype=dt.float16)
    tn, dn = torch.nn.utils.clip_grad_norm_([tp], 1.0), nn.utils.clip_grad_norm_([p], 1.0)
    assert dn.item() == tn.item()
    np.testing.assert_array_equal(npy(p.grad), tp.grad.numpy())


def test_clip_grad_value():
    params = params_with_grads([-3.0, 0.2, 5.0])
    assert nn.utils.clip_grad_value_(params, 1.0) is None
    np.testing.assert_array_equal(npy(params[0].grad), [-1.0, 0.2, 1.0])
    (p,) = params_with_grads([0.5, -0.7])
    nn.utils.clip_grad_value_(p, 0.6)
    np.testing.assert_array_equal(npy(p.grad), [0.5, -0.6])


# ---- init ----------------------------------------------------------------------------------
def test_calculate_gain():
    init = nn.init
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("conv2d") == init.calculate_gain("conv_transpose3d") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="'a'"):
        init.calculate_gain("leaky_relu", "a")


def test_calculate_gain_matches_torch(torch):
    for name in ("linear", "conv1d", "sigmoid", "tanh", "relu", "selu"):
        assert nn.init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    for slope in (None, 0.0, 0.3):
        assert nn.init.calculate_gain("leaky_relu", slope) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope)
        )


def uniform_bound_and_std(values):
    return np.abs(values).max(), values.std()


def test_xavier_bounds_and_std():
    dt.manual_seed(0)
    w = dt.empty(300, 200)
    nn.init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / 500)
    top, std = uniform_bound_and_std(npy(w))
    assert bound * 0.99 < top <= bound and std == pytest.approx(bound / math.sqrt(3), rel=0.02)
    nn.init.xavier_normal_(w)
    assert npy(w).std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    conv = dt.empty(16, 8, 3, 3)  # receptive field 9: fan_in 72, fan_out 144
    nn.init.xavier_uniform_(conv)
    assert np.abs(npy(conv)).max() <= math.sqrt(6 / (72 + 144))


@pytest.mark.parametrize(("mode", "fan"), [("fan_in", 200), ("fan_out", 300)])
def test_kaiming_bounds_and_std(mode, fan):
    dt.manual_seed(0)
    w = dt.empty(300, 200)
    nn.init.kaiming_uniform_(w, mode=mode, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan)
    top, std = uniform_bound_and_std(npy(w))
    assert bound * 0.99 < top <= bound and std == pytest.approx(bound / math.sqrt(3), rel=0.02)
    nn.init.kaiming_normal_(w, mode=mode, nonlinearity="relu")
    assert npy(w).std() == pytest.approx(math.sqrt(2 / fan), rel=0.02)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), mode=mode)  # Linear's default: 1/√fan
    assert np.abs(npy(w)).max() <= 1 / math.sqrt(fan)


def test_simple_fills_and_truncated_normal():
    dt.manual_seed(0)
    p = nn.Parameter(dt.empty(1000))
    assert nn.init.uniform_(p, -2.0, 3.0) is p and p.grad_fn is None and p.requires_grad
    assert npy(p).min() >= -2 and npy(p).max() <= 3 and npy(p).mean() == pytest.approx(0.5, abs=0.1)
    nn.init.normal_(p, 1.0, 0.5)
    assert npy(p).mean() == pytest.approx(1.0, abs=0.05) and npy(p).std() == pytest.approx(
        0.5, rel=0.1
    )
    nn.init.trunc_normal_(p, 0.0, 1.0, a=-0.5, b=0.5)
    assert npy(p).min() >= -0.5 and npy(p).max() <= 0.5 and npy(p).std() > 0.25
    assert np.all(npy(nn.init.constant_(p, 0.25)) == 0.25)
    assert np.all(npy(nn.init.zeros_(p)) == 0) and np.all(npy(nn.init.ones_(p)) == 1)


def test_init_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"at least 2 dims.*\(5,\)"):
        nn.init.xavier_uniform_(dt.empty(5))
    with pytest.raises(ValueError, match="'fan_avg'"):
        nn.init.kaiming_normal_(dt.empty(3, 3), mode="fan_avg")
    with pytest.warns(UserWarning, match="zero-element"):
        nn.init.kaiming_uniform_(dt.empty(0, 3))


def test_init_fills_are_reproducible_under_manual_seed():
    dt.manual_seed(4)
    a = npy(nn.Linear(5, 5).weight).copy()
    dt.manual_seed(4)
    np.testing.assert_array_equal(npy(nn.Linear(5, 5).weight), a)
