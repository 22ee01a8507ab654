"""Transformer layers: values against a numpy reference (attention, LayerNorm, feed-forward,
both norm placements, masks), gradients against finite differences, structure, and (when
PyTorch is installed) outputs and every gradient against PyTorch with the same weights."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.nn.modules.linear import Linear
from dtrain._tensor.nn.modules.normalization import LayerNorm
from dtrain._tensor.nn.modules.transformer import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from dtrain.autograd import gradcheck

F64 = {"dtype": dt.float64}


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# ---- numpy reference (batch_first layout (N, L, E)) -----------------------------------------
def np_layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def np_attention(q_in, kv_in, p, prefix, heads, mask=None, padding=None):
    """PyTorch's MultiheadAttention; ``mask`` float (L, S) added, ``padding`` bool (N, S)."""
    e = q_in.shape[-1]
    w, b = p[prefix + "in_proj_weight"], p[prefix + "in_proj_bias"]
    q, k, v = q_in @ w[:e].T + b[:e], kv_in @ w[e : 2 * e].T + b[e : 2 * e], kv_in @ w[2 * e :].T
    v = v + b[2 * e :]
    n, length, d = q.shape[0], q.shape[1], e // heads
    q, k, v = (t.reshape(n, -1, heads, d).transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    if mask is not None:
        scores = scores + mask
    if padding is not None:
        scores = np.where(padding[:, None, None, :], -np.inf, scores)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    weights = scores / scores.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(n, length, e)
    return out @ p[prefix + "out_proj.weight"].T + p[prefix + "out_proj.bias"]


def np_ff(x, p, activation):
    hidden = x @ p["linear1.weight"].T + p["linear1.bias"]
    return activation(hidden) @ p["linear2.weight"].T + p["linear2.bias"]


def np_norm(x, p, i):
    return np_layer_norm(x, p[f"norm{i}.weight"], p[f"norm{i}.bias"])


def np_encoder_layer(x, p, heads, norm_first, mask=None, padding=None):
    relu = lambda h: np.maximum(h, 0)
    if norm_first:
        y = np_norm(x, p, 1)
        x = x + np_attention(y, y, p, "self_attn.", heads, mask, padding)
        return x + np_ff(np_norm(x, p, 2), p, relu)
    x = np_norm(x + np_attention(x, x, p, "self_attn.", heads, mask, padding), p, 1)
    return np_norm(x + np_ff(x, p, relu), p, 2)


def np_decoder_layer(x, memory, p, heads, norm_first, tgt_mask=None, mem_padding=None):
    relu = lambda h: np.maximum(h, 0)

    def cross(y):
        return np_attention(y, memory, p, "multihead_attn.", heads, None, mem_padding)

    if norm_first:
        y = np_norm(x, p, 1)
        x = x + np_attention(y, y, p, "self_attn.", heads, tgt_mask)
        x = x + cross(np_norm(x, p, 2))
        return x + np_ff(np_norm(x, p, 3), p, relu)
    x = np_norm(x + np_attention(x, x, p, "self_attn.", heads, tgt_mask), p, 1)
    x = np_norm(x + cross(x), p, 2)
    return np_norm(x + np_ff(x, p, relu), p, 3)


def params_of(module, prefix=""):
    return {n[len(prefix) :]: npy(t) for n, t in module.named_parameters() if n.startswith(prefix)}


def randomize(module, rng):
    """Non-trivial values everywhere (LayerNorm weights and biases included)."""
    for p in module.parameters():
        p.data = dt.tensor(rng.standard_normal(p.shape) * 0.3, dtype=p.dtype)


# ---- torch-free --------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_numpy_reference_with_masks(norm_first, rng):
    dt.manual_seed(0)
    layer = TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first, **F64
    )
    randomize(layer, rng)
    p = params_of(layer)
    x = rng.standard_normal((3, 5, 8))
    np.testing.assert_allclose(
        npy(layer(dt.tensor(x))), np_encoder_layer(x, p, 2, norm_first), rtol=1e-10, atol=1e-12
    )
    mask = Transformer.generate_square_subsequent_mask(5, dtype=dt.float64)
    padding = np.zeros((3, 5), bool)
    padding[0, 3:] = padding[2, 4] = True
    out = layer(dt.tensor(x), src_mask=mask, src_key_padding_mask=dt.tensor(padding))
    ref = np_encoder_layer(x, p, 2, norm_first, npy(mask), padding)
    np.testing.assert_allclose(npy(out), ref, rtol=1e-10, atol=1e-12)
    # A bool mask (True = masked out) and is_causal=True give the same as the float mask.
    bool_mask = dt.tensor(np.triu(np.ones((5, 5), bool), 1))
    np.testing.assert_allclose(
        npy(layer(dt.tensor(x), src_mask=bool_mask)),
        np_encoder_layer(x, p, 2, norm_first, npy(mask)),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        npy(layer(dt.tensor(x), is_causal=True)),
        np_encoder_layer(x, p, 2, norm_first, npy(mask)),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_numpy_reference(norm_first, rng):
    dt.manual_seed(0)
    layer = TransformerDecoderLayer(8, 4, 16, dropout=0.0, norm_first=norm_first, **F64)
    randomize(layer, rng)
    p = params_of(layer)
    tgt, memory = rng.standard_normal((4, 2, 8)), rng.standard_normal((6, 2, 8))  # (L, N, E)
    mask = Transformer.generate_square_subsequent_mask(4, dtype=dt.float64)
    padding = np.zeros((2, 6), bool)
    padding[1, 4:] = True
    out = layer(
        dt.tensor(tgt), dt.tensor(memory), tgt_mask=mask, memory_key_padding_mask=dt.tensor(padding)
    )
    ref = np_decoder_layer(
        tgt.transpose(1, 0, 2), memory.transpose(1, 0, 2), p, 4, norm_first, npy(mask), padding
    )
    np.testing.assert_allclose(npy(out), ref.transpose(1, 0, 2), rtol=1e-10, atol=1e-12)


def test_stacks_are_deep_copies_and_apply_the_final_norm(rng):
    dt.manual_seed(0)
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, **F64)
    encoder = TransformerEncoder(layer, 2, norm=LayerNorm(8, **F64))
    assert [n for n, _ in encoder.named_children()] == ["layers", "norm"]
    first, second = encoder.layers
    assert first is not layer and first.linear1.weight is not second.linear1.weight
    np.testing.assert_array_equal(npy(first.linear1.weight), npy(layer.linear1.weight))
    randomize(encoder, rng)
    p = params_of(encoder)
    x = rng.standard_normal((2, 3, 8))
    ref = x
    for i in range(2):
        ref = np_encoder_layer(ref, params_of(encoder, f"layers.{i}."), 2, False)
    ref = np_layer_norm(ref, p["norm.weight"], p["norm.bias"])
    np.testing.assert_allclose(npy(encoder(dt.tensor(x))), ref, rtol=1e-10, atol=1e-12)
    decoder = TransformerDecoder(TransformerDecoderLayer(8, 2, 16, 0.0, **F64), 3)
    assert len(decoder.layers) == 3 and decoder.norm is None


def test_transformer_shapes_init_and_mask():
    dt.manual_seed(0)
    model = Transformer(16, 4, 2, 1, 32, dropout=0.0, batch_first=True)
    names = [n for n, _ in model.named_parameters()]
    assert "encoder.layers.1.self_attn.in_proj_weight" in names
    assert "decoder.layers.0.multihead_attn.out_proj.weight" in names
    assert "encoder.norm.weight" in names and "decoder.norm.bias" in names
    w = npy(model.encoder.layers[0].linear1.weight)
    bound = math.sqrt(6 / (16 + 32))  # Xavier-uniform on every matrix
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    out = model(dt.randn(3, 7, 16), dt.randn(3, 5, 16))
    assert out.shape == (3, 5, 16)
    assert model(dt.randn(7, 16), dt.randn(5, 16)).shape == (5, 16)  # unbatched
    mask = Transformer.generate_square_subsequent_mask(3)
    expected = np.array([[0, -np.inf, -np.inf], [0, 0, -np.inf], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(npy(mask), expected)
    assert mask.dtype == np.float32
    with pytest.raises(RuntimeError, match="batch number of src and tgt"):
        model(dt.randn(3, 7, 16), dt.randn(2, 5, 16))
    with pytest.raises(RuntimeError, match="d_model=16"):
        model(dt.randn(3, 7, 8), dt.randn(3, 5, 8))


def test_activations_and_errors(rng):
    x = rng.standard_normal((2, 3, 8))
    gelu_layer = TransformerEncoderLayer(8, 2, 16, 0.0, activation="gelu", **F64)
    custom = TransformerEncoderLayer(8, 2, 16, 0.0, activation=dt.nn.GELU(), **F64)
    custom.load_state_dict(gelu_layer.state_dict())
    np.testing.assert_allclose(npy(custom(dt.tensor(x))), npy(gelu_layer(dt.tensor(x))))
    relu_layer = TransformerEncoderLayer(8, 2, 16, 0.0, **F64)
    relu_layer.load_state_dict(gelu_layer.state_dict())
    assert not np.allclose(npy(relu_layer(dt.tensor(x))), npy(gelu_layer(dt.tensor(x))))
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        TransformerEncoderLayer(8, 2, activation="tanh")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TransformerEncoderLayer(8, 3)


def test_dropout_only_in_training(rng):
    dt.manual_seed(0)
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.5, **F64)
    x = dt.tensor(rng.standard_normal((3, 2, 8)))
    layer.eval()
    first = npy(layer(x))
    np.testing.assert_array_equal(first, npy(layer(x)))
    layer.train()
    assert not np.allclose(first, npy(layer(x)))


def test_gradients_match_finite_differences(rng):
    dt.manual_seed(0)
    layer = TransformerDecoderLayer(4, 2, 6, dropout=0.0, norm_first=True, **F64)
    tgt, memory = leaf(rng.standard_normal((3, 1, 4))), leaf(rng.standard_normal((2, 1, 4)))
    mask = Transformer.generate_square_subsequent_mask(3, dtype=dt.float64)
    fn = lambda t, m, *ps: layer(t, m, tgt_mask=mask)
    assert gradcheck(fn, [tgt, memory, *layer.parameters()])
    enc = TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", **F64)
    assert gradcheck(lambda s, *ps: enc(s), [tgt, *enc.parameters()])


def test_causal_mask_is_detected_as_pytorch(rng):
    from dtrain._tensor.nn.modules.transformer import _detect_is_causal_mask

    mask = Transformer.generate_square_subsequent_mask(4)
    assert _detect_is_causal_mask(mask, None, 4)
    assert not _detect_is_causal_mask(mask, None, 3)
    assert not _detect_is_causal_mask(dt.zeros(4, 4), None, 4)
    assert _detect_is_causal_mask(None, True, 4) and not _detect_is_causal_mask(mask, False, 4)


# ---- against PyTorch -------------------------------------------------------------------------
def _copy(ours, theirs):
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(
        {k: dt.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    )


def _masks(kind, length, source, batch):
    """(ours, theirs) keyword masks for the self-attention of ``length`` and keys ``source``."""
    if kind == "none":
        return {}, {}
    if kind == "causal":
        m = np.triu(np.full((length, length), -np.inf), 1)
        return {"mask": m}, {}
    if kind == "bool":
        m = np.triu(np.ones((length, length), bool), 1)
        m[:, 0] = False
        return {"mask": m}, {}
    padding = np.zeros((batch, source), bool)
    padding[0, -2:] = True
    return {}, {"padding": padding}


def _backward_both(torch, pairs, rng):
    weights = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    sum((t * torch.tensor(w)).sum() for (_, t), w in zip(pairs, weights)).backward()
    sum((d * dt.tensor(w)).sum() for (d, _), w in zip(pairs, weights)).backward()


def _check_grads(ours, theirs, leaves):
    named = dict(theirs.named_parameters())
    pairs = leaves + [(p, named[n]) for n, p in ours.named_parameters()]
    for d, t in pairs:
        np.testing.assert_allclose(npy(d.grad), t.grad.numpy(), rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize(
    "norm_first, batch_first, masks, activation",
    [
        (False, False, "none", "relu"),
        (True, False, "causal", "relu"),
        (False, True, "bool", "gelu"),
        (True, True, "padding", "relu"),
        (False, False, "padding", "gelu"),
    ],
)
def test_encoder_matches_torch(torch, norm_first, batch_first, masks, activation, rng):
    torch.manual_seed(0)
    kw = dict(dropout=0.1, activation=activation, batch_first=batch_first, norm_first=norm_first)
    t_layer = torch.nn.TransformerEncoderLayer(8, 2, 16, **kw)
    theirs = (
        torch.nn.TransformerEncoder(
            t_layer, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False
        )
        .double()
        .eval()
    )
    ours = TransformerEncoder(
        TransformerEncoderLayer(8, 2, 16, **kw, **F64), 2, LayerNorm(8, **F64)
    ).eval()
    _copy(ours, theirs)
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal((3, 5, 8))  # (N, L, E); the padding mask is (N, S) in both layouts
    if not batch_first:
        x = x.transpose(1, 0, 2).copy()
    mask_kw, pad_kw = _masks(masks, 5, 5, 3)
    t_kw = {k: torch.tensor(v) for k, v in mask_kw.items()}
    d_kw = {k: dt.tensor(v) for k, v in mask_kw.items()}
    if pad_kw:
        t_kw["src_key_padding_mask"] = torch.tensor(pad_kw["padding"])
        d_kw["src_key_padding_mask"] = dt.tensor(pad_kw["padding"])
    tx, dx = torch.tensor(x, requires_grad=True), leaf(x)
    t_out, d_out = theirs(tx, **t_kw), ours(dx, **d_kw)
    np.testing.assert_allclose(npy(d_out), t_out.detach().numpy(), rtol=1e-9, atol=1e-11)
    _backward_both(torch, [(d_out, t_out)], rng)
    _check_grads(ours, theirs, [(dx, tx)])


@pytest.mark.parametrize(
    "norm_first, masks", list(itertools.product([False, True], ["causal", "padding"]))
)
@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_transformer_matches_torch(torch, norm_first, masks, rng):
    torch.manual_seed(0)
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=16)
    theirs = torch.nn.Transformer(**kw, norm_first=norm_first).double().eval()
    ours = Transformer(**kw, norm_first=norm_first, **F64).eval()
    _copy(ours, theirs)
    assert repr(ours) == repr(theirs)
    src, tgt = rng.standard_normal((6, 2, 8)), rng.standard_normal((4, 2, 8))
    t_kw, d_kw = {}, {}
    if masks == "causal":
        t_kw["tgt_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(4).double()
        d_kw["tgt_mask"] = Transformer.generate_square_subsequent_mask(4, dtype=dt.float64)
        np.testing.assert_array_equal(npy(d_kw["tgt_mask"]), t_kw["tgt_mask"].numpy())
        mem = np.zeros((4, 6))
        mem[:, -1] = -np.inf
        t_kw["memory_mask"], d_kw["memory_mask"] = torch.tensor(mem), dt.tensor(mem)
    else:
        src_pad, tgt_pad = np.zeros((2, 6), bool), np.zeros((2, 4), bool)
        src_pad[1, 4:] = tgt_pad[0, 3] = True
        for name, value in (
            ("src_key_padding_mask", src_pad),
            ("memory_key_padding_mask", src_pad),
            ("tgt_key_padding_mask", tgt_pad),
        ):
            t_kw[name], d_kw[name] = torch.tensor(value), dt.tensor(value)
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    ds, dtt = leaf(src), leaf(tgt)
    t_out, d_out = theirs(ts, tt, **t_kw), ours(ds, dtt, **d_kw)
    np.testing.assert_allclose(npy(d_out), t_out.detach().numpy(), rtol=1e-9, atol=1e-11)
    _backward_both(torch, [(d_out, t_out)], rng)
    _check_grads(ours, theirs, [(ds, ts), (dtt, tt)])


def test_decoder_layer_batch_first_gelu_bias_free_matches_torch(torch, rng):
    torch.manual_seed(0)
    kw = dict(dropout=0.2, activation="gelu", batch_first=True, bias=False)
    theirs = torch.nn.TransformerDecoderLayer(8, 4, 12, **kw).double().eval()
    ours = TransformerDecoderLayer(8, 4, 12, **kw, **F64).eval()
    _copy(ours, theirs)
    tgt, memory = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    tt, tm = (torch.tensor(a, requires_grad=True) for a in (tgt, memory))
    dtt, dm = leaf(tgt), leaf(memory)
    mask = np.triu(np.ones((3, 3), bool), 1)
    t_out = theirs(tt, tm, tgt_mask=torch.tensor(mask), tgt_is_causal=True)
    d_out = ours(dtt, dm, tgt_mask=dt.tensor(mask), tgt_is_causal=True)
    np.testing.assert_allclose(npy(d_out), t_out.detach().numpy(), rtol=1e-9, atol=1e-11)
    _backward_both(torch, [(d_out, t_out)], rng)
    _check_grads(ours, theirs, [(dtt, tt), (dm, tm)])


def test_encoder_layer_inference_matches_torch_fast_path(torch, rng):
    """Without grad and with no padding mask PyTorch takes its fused path: same numbers."""
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    ours = TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    _copy(ours, theirs)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    with torch.no_grad():
        t_out = theirs(torch.tensor(x))
    with dt.no_grad():
        d_out = ours(dt.tensor(x))
    np.testing.assert_allclose(npy(d_out), t_out.numpy(), rtol=1e-4, atol=1e-5)


def test_linear_is_the_building_block():
    layer = TransformerEncoderLayer(8, 2, 16)
    assert isinstance(layer.linear1, Linear) and tuple(layer.linear1.weight.shape) == (16, 8)


def test_same_numbers_on_the_test_device(test_device, rng):
    """With ``--device=cuda`` (or emulated-cuda) every op takes its CUDA branch."""
    dt.manual_seed(0)
    cpu = Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True)
    moved = Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True)
    moved.load_state_dict(cpu.state_dict())
    moved.to(test_device)
    src, tgt = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 3, 8))
    results = []
    for model, device in ((cpu, "cpu"), (moved, test_device)):
        mask = Transformer.generate_square_subsequent_mask(3, device=device)
        s = dt.tensor(src, dtype=dt.float32, device=device, requires_grad=True)
        t = dt.tensor(tgt, dtype=dt.float32, device=device)
        out = model(s, t, tgt_mask=mask)
        out.sum().backward()
        grads = [s.grad] + [p.grad for p in model.parameters()]
        results.append([out.detach().cpu().numpy()] + [g.cpu().numpy() for g in grads])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
