"""Recurrent layers and ``nn.utils.rnn``: values against a numpy reference of the
recurrences, gradients against finite differences, parameter names/shapes/init, errors,
a small training run, and (when PyTorch is installed) outputs, final states and every
gradient against PyTorch with the same weights."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.nn.modules.rnn import GRU, LSTM, RNN
from dtrain._tensor.nn.modules.rnn_cells import GRUCell, LSTMCell, RNNCell
from dtrain._tensor.nn.rnn_utils import pad_sequence, unpad_sequence
from dtrain._tensor.ops.rnn_cell import gru_step, lstm_step, rnn_step
from dtrain.autograd import gradcheck

CLASSES = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
OPTIONS = [
    {},
    {"batch_first": True},
    {"bidirectional": True},
    {"num_layers": 2},
    {"num_layers": 2, "bidirectional": True, "batch_first": True},
    {"bias": False},
]


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# ---- numpy reference ---------------------------------------------------------------------
def np_step(mode, x, h, c, p, suffix):
    """One step of PyTorch's documented recurrences, in numpy."""
    w_ih, w_hh = p["weight_ih" + suffix], p["weight_hh" + suffix]
    b_ih = p.get("bias_ih" + suffix, 0.0)
    b_hh = p.get("bias_hh" + suffix, 0.0)
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if mode == "RNN_TANH":
        return np.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return np.maximum(gi + gh, 0), None
    if mode == "GRU":
        (ir, iz, in_), (hr, hz, hn) = np.split(gi, 3, -1), np.split(gh, 3, -1)
        r, z = sigmoid(ir + hr), sigmoid(iz + hz)
        n = np.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    i, f, g, o = np.split(gi + gh, 4, -1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    if "weight_hr" + suffix in p:
        h = h @ p["weight_hr" + suffix].T
    return h, c


def np_rnn(mode, p, x, h0, c0, num_layers, bidirectional):
    """(L, N, I) input → (output, h_n, c_n) by the recurrences, layer by layer."""
    directions = 2 if bidirectional else 1
    hs, cs = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            h, c = h0[k], None if c0 is None else c0[k]
            out = [None] * len(x)
            for t in reversed(range(len(x))) if d else range(len(x)):
                h, c = np_step(mode, x[t], h, c, p, suffix)
                out[t] = h
            outs.append(np.stack(out))
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, -1)
    return x, np.stack(hs), None if c0 is None else np.stack(cs)


def make(name, dtype=dt.float64, **options):
    dt.manual_seed(0)
    return CLASSES[name](3, 4, dtype=dtype, **options)


def mode_of(module):
    return module.mode


# ---- torch-free: parameters, shapes, values ---------------------------------------------------
@pytest.mark.parametrize("name", list(CLASSES))
def test_parameter_names_shapes_and_init(name):
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[name]
    module = CLASSES[name](3, 5, num_layers=2, bidirectional=True)
    shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
    expected = {}
    for layer, suffix in itertools.product((0, 1), ("", "_reverse")):
        fan_in = 3 if layer == 0 else 10
        expected[f"weight_ih_l{layer}{suffix}"] = (gates * 5, fan_in)
        expected[f"weight_hh_l{layer}{suffix}"] = (gates * 5, 5)
        expected[f"bias_ih_l{layer}{suffix}"] = (gates * 5,)
        expected[f"bias_hh_l{layer}{suffix}"] = (gates * 5,)
    assert list(shapes) == list(expected)  # PyTorch's order, too
    assert shapes == expected
    bound = 1 / math.sqrt(5)
    values = np.concatenate([npy(p).ravel() for p in module.parameters()])
    assert values.min() >= -bound and values.max() <= bound and values.std() > 0.4 * bound
    no_bias = CLASSES[name](3, 5, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert len(module.all_weights) == 4 and len(module.all_weights[0]) == 4


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_values_match_numpy_reference(name, options, rng):
    module = make(name, **options)
    p = {n: npy(t) for n, t in module.named_parameters()}
    layers, bidir = options.get("num_layers", 1), options.get("bidirectional", False)
    states = layers * (2 if bidir else 1)
    x = rng.standard_normal((5, 2, 3))
    h0 = rng.standard_normal((states, 2, 4))
    c0 = rng.standard_normal((states, 2, 4)) if name == "LSTM" else None
    ref_out, ref_h, ref_c = np_rnn(mode_of(module), p, x, h0, c0, layers, bidir)
    given = x.transpose(1, 0, 2) if options.get("batch_first") else x
    hx = (dt.tensor(h0), dt.tensor(c0)) if name == "LSTM" else dt.tensor(h0)
    out, state = module(dt.tensor(given), hx)
    h_n, c_n = state if name == "LSTM" else (state, None)
    if options.get("batch_first"):
        ref_out = ref_out.transpose(1, 0, 2)
    np.testing.assert_allclose(npy(out), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(npy(h_n), ref_h, rtol=1e-10, atol=1e-12)
    if name == "LSTM":
        np.testing.assert_allclose(npy(c_n), ref_c, rtol=1e-10, atol=1e-12)


def test_relu_rnn_and_lstm_projection_match_numpy_reference(rng):
    x = rng.standard_normal((4, 2, 3))
    module = make("RNN", nonlinearity="relu", num_layers=2)
    p = {n: npy(t) for n, t in module.named_parameters()}
    out, h_n = module(dt.tensor(x))
    ref_out, ref_h, _ = np_rnn("RNN_RELU", p, x, np.zeros((2, 2, 4)), None, 2, False)
    np.testing.assert_allclose(npy(out), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(npy(h_n), ref_h, rtol=1e-10, atol=1e-12)
    lstm = make("LSTM", proj_size=2, bidirectional=True)
    assert tuple(lstm.weight_hr_l0.shape) == (2, 4) and tuple(lstm.weight_hh_l0.shape) == (16, 2)
    p = {n: npy(t) for n, t in lstm.named_parameters()}
    out, (h_n, c_n) = lstm(dt.tensor(x))
    ref = np_rnn("LSTM", p, x, np.zeros((2, 2, 2)), np.zeros((2, 2, 4)), 1, True)
    assert out.shape == (4, 2, 4) and h_n.shape == (2, 2, 2) and c_n.shape == (2, 2, 4)
    for ours, theirs in zip((out, h_n, c_n), ref):
        np.testing.assert_allclose(npy(ours), theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CLASSES))
def test_shapes_batch_first_unbatched_and_default_state(name, rng):
    module = make(name, num_layers=2, bidirectional=True, batch_first=True, dtype=dt.float32)
    out, state = module(dt.randn(6, 7, 3))  # (N, L, I)
    h_n = state[0] if name == "LSTM" else state
    assert out.shape == (6, 7, 8) and h_n.shape == (4, 6, 4) and out.dtype == np.float32
    x = rng.standard_normal((7, 3))
    out, state = module(dt.tensor(x, dtype=dt.float32))  # unbatched (L, I)
    h_n = state[0] if name == "LSTM" else state
    assert out.shape == (7, 8) and h_n.shape == (4, 4)
    batched, _ = module(dt.tensor(x[None], dtype=dt.float32))
    np.testing.assert_allclose(npy(out), npy(batched)[0], rtol=1e-6)
    # No initial state is the same as zeros.
    plain = make(name)
    zero = dt.zeros(1, 2, 4, dtype=dt.float64)
    x = dt.tensor(rng.standard_normal((3, 2, 3)))
    given = plain(x, (zero, zero) if name == "LSTM" else zero)[0]
    np.testing.assert_array_equal(npy(plain(x)[0]), npy(given))


def test_one_lstm_cell_step_by_hand():
    cell = LSTMCell(1, 1, dtype=dt.float64)
    state = {
        "weight_ih": dt.tensor([[0.5], [-1.0], [2.0], [1.0]]),  # rows i, f, g, o
        "weight_hh": dt.tensor([[0.125], [0.25], [0.375], [0.5]]),
        "bias_ih": dt.tensor([0.0, 1.0, 0.0, 0.0]),
        "bias_hh": dt.tensor([0.0, 0.0, -1.0, 0.5]),
    }
    f64 = {"dtype": dt.float64}
    cell.load_state_dict({k: v.to(dt.float64) for k, v in state.items()})
    h, c = cell(dt.tensor([[2.0]], **f64), (dt.tensor([[1.0]], **f64), dt.tensor([[3.0]], **f64)))
    i = sigmoid(0.5 * 2 + 0.125 * 1)
    f = sigmoid(-1.0 * 2 + 1.0 + 0.25 * 1)
    g = math.tanh(2.0 * 2 + 0.375 * 1 - 1.0)
    o = sigmoid(1.0 * 2 + 0.5 * 1 + 0.5)
    c_new = f * 3.0 + i * g
    np.testing.assert_allclose(npy(c), [[c_new]], rtol=1e-14)
    np.testing.assert_allclose(npy(h), [[o * math.tanh(c_new)]], rtol=1e-14)


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_cells_match_numpy_step_and_take_unbatched_input(cls, rng):
    dt.manual_seed(0)
    cell = cls(3, 4, dtype=dt.float64)
    names = {RNNCell: "RNN_TANH", LSTMCell: "LSTM", GRUCell: "GRU"}
    assert tuple(cell.weight_ih.shape) == ({RNNCell: 1, LSTMCell: 4, GRUCell: 3}[cls] * 4, 3)
    p = {n: npy(t) for n, t in cell.named_parameters()}
    x, h, c = (rng.standard_normal(s) for s in ((2, 3), (2, 4), (2, 4)))
    ref_h, ref_c = np_step(names[cls], x, h, c, p, "")
    hx = (dt.tensor(h), dt.tensor(c)) if cls is LSTMCell else dt.tensor(h)
    out = cell(dt.tensor(x), hx)
    got_h = out[0] if cls is LSTMCell else out
    np.testing.assert_allclose(npy(got_h), ref_h, rtol=1e-12)
    if cls is LSTMCell:
        np.testing.assert_allclose(npy(out[1]), ref_c, rtol=1e-12)
    single = cell(dt.tensor(x[0]))  # unbatched, zero state
    single_h = single[0] if cls is LSTMCell else single
    ref_single, _ = np_step(names[cls], x[:1], np.zeros((1, 4)), np.zeros((1, 4)), p, "")
    assert single_h.shape == (4,)
    np.testing.assert_allclose(npy(single_h), ref_single[0], rtol=1e-12)
    relu_cell = RNNCell(3, 4, nonlinearity="relu", dtype=dt.float64)
    p = {n: npy(t) for n, t in relu_cell.named_parameters()}
    np.testing.assert_allclose(
        npy(relu_cell(dt.tensor(x), dt.tensor(h))), np_step("RNN_RELU", x, h, c, p, "")[0]
    )


@pytest.mark.parametrize("name", list(CLASSES))
def test_gradients_match_finite_differences(name, rng):
    module = make(name, num_layers=2, bidirectional=True)
    x = leaf(rng.standard_normal((3, 2, 3)))
    h0 = leaf(rng.standard_normal((4, 2, 4)))
    c0 = leaf(rng.standard_normal((4, 2, 4)))
    params = list(module.parameters())
    if name == "LSTM":
        assert gradcheck(lambda x, h, c, *ps: module(x, (h, c))[0], [x, h0, c0, *params])
        assert gradcheck(lambda x, h, c, *ps: module(x, (h, c))[1][1], [x, h0, c0, *params])
    else:
        assert gradcheck(lambda x, h, *ps: module(x, h)[0], [x, h0, *params])
        assert gradcheck(lambda x, h, *ps: module(x, h)[1], [x, h0, *params])


def test_cell_gradients_match_finite_differences(rng):
    for cls in (RNNCell, LSTMCell, GRUCell):
        dt.manual_seed(0)
        cell = cls(3, 2, dtype=dt.float64)
        x, h = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 2)))
        if cls is LSTMCell:
            c = leaf(rng.standard_normal((2, 2)))

            def both(x, h, c, *ps, cell=cell):
                return dt.cat(cell(x, (h, c)), -1)

            assert gradcheck(both, [x, h, c, *cell.parameters()])
        else:
            assert gradcheck(lambda x, h, *ps, cell=cell: cell(x, h), [x, h, *cell.parameters()])


def test_dropout_between_layers_only_in_training(rng):
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        LSTM(3, 4, dropout=0.5)
    module = make("GRU", num_layers=2, dropout=0.5)
    x = dt.tensor(rng.standard_normal((4, 2, 3)))
    reference = make("GRU", num_layers=2)
    module.eval()
    np.testing.assert_array_equal(npy(module(x)[0]), npy(reference(x)[0]))
    module.train()
    dt.manual_seed(1)
    assert not np.allclose(npy(module(x)[0]), npy(reference(x)[0]))
    # Dropout all of layer 0's output: layer 1 then sees zeros.
    dropped = make("GRU", num_layers=2, dropout=1.0).train()
    p = {n: npy(t) for n, t in dropped.named_parameters()}
    zeros = np.zeros((4, 2, 4))
    # Layer 1 alone on zeros: its parameters renamed as layer 0's for the reference.
    p1 = {k.replace("_l1", "_l0"): v for k, v in p.items() if "_l1" in k}
    ref_out, _, _ = np_rnn("GRU", p1, zeros, np.zeros((1, 2, 4)), None, 1, False)
    np.testing.assert_allclose(npy(dropped(x)[0]), ref_out, rtol=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        GRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size 4 has to be smaller than hidden_size 4"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size must be an int >= 1"):
        LSTM(3, 0)
    with pytest.raises(TypeError, match="batch_first should be of type bool"):
        LSTM(3, 4, batch_first=1)
    lstm = LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match="Expected 3, got 5"):
        lstm(dt.randn(2, 1, 5))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        lstm(dt.randn(2, 1, 1, 3))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 1, 4\), got \[1, 1, 4\]"):
        lstm(dt.randn(2, 1, 3), (dt.zeros(1, 1, 4), dt.zeros(2, 1, 4)))
    with pytest.raises(RuntimeError, match="hx should also be 2-D"):
        lstm(dt.randn(2, 3), (dt.zeros(2, 1, 4), dt.zeros(2, 1, 4)))
    with pytest.raises(TypeError, match=r"tuple \(h0, c0\)"):
        lstm(dt.randn(2, 1, 3), dt.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D"):
        GRUCell(3, 4)(dt.randn(1, 2, 3))
    with pytest.raises(RuntimeError, match="hidden state has shape"):
        GRUCell(3, 4)(dt.randn(2, 3), dt.zeros(3, 4))


def test_repr_and_flatten_parameters():
    module = LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.2, bidirectional=True)
    module.flatten_parameters()  # a no-op, as on the CPU in PyTorch
    assert repr(module) == (
        "LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.2, bidirectional=True)"
    )
    assert repr(RNN(3, 4, bias=False)) == "RNN(3, 4, bias=False)"
    assert repr(RNNCell(3, 4, nonlinearity="relu")) == "RNNCell(3, 4, nonlinearity=relu)"
    assert repr(GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"


def test_lstm_learns_to_sum_a_sequence():
    dt.manual_seed(0)
    rng = np.random.default_rng(0)
    lstm, head = LSTM(1, 8, batch_first=True), dt.nn.Linear(8, 1)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = dt.optim.Adam(params, lr=0.03)
    x = rng.uniform(-1, 1, (32, 5, 1)).astype(np.float32)
    y = dt.tensor(x.sum(1))
    losses = []
    for _ in range(60):
        _, (h_n, _) = lstm(dt.tensor(x))
        loss = ((head(h_n[-1]) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# ---- nn.utils.rnn ----------------------------------------------------------------------------
def test_pad_sequence_values_sides_and_gradients(rng):
    arrays = [rng.standard_normal((n, 2)) for n in (3, 1, 2)]
    seqs = [leaf(a) for a in arrays]
    out = pad_sequence(seqs, padding_value=-1.0)
    assert out.shape == (3, 3, 2)
    expected = np.full((3, 3, 2), -1.0)
    for b, a in enumerate(arrays):
        expected[: len(a), b] = a
    np.testing.assert_array_equal(npy(out), expected)
    left = pad_sequence(seqs, batch_first=True, padding_side="left")
    expected_left = np.zeros((3, 3, 2))
    for b, a in enumerate(arrays):
        expected_left[b, 3 - len(a) :] = a
    np.testing.assert_array_equal(npy(left), expected_left)
    weights = rng.standard_normal((3, 3, 2))
    (left * dt.tensor(weights)).sum().backward()
    for b, (seq, a) in enumerate(zip(seqs, arrays)):
        np.testing.assert_array_equal(npy(seq.grad), weights[b, 3 - len(a) :])
    back = unpad_sequence(pad_sequence(seqs), dt.tensor([3, 1, 2]))
    for got, a in zip(back, arrays):
        np.testing.assert_array_equal(npy(got), a)
    with pytest.raises(ValueError, match="padding_side"):
        pad_sequence(seqs, padding_side="middle")
    with pytest.raises(ValueError, match="empty list"):
        pad_sequence([])


# ---- against PyTorch -------------------------------------------------------------------------
def _copy(ours, theirs):
    ours.load_state_dict(
        {k: dt.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    )


def _compare_with_torch(torch, name, options, rng, unbatched=False):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(3, 4, **options).double().eval()
    ours = CLASSES[name](3, 4, dtype=dt.float64, **options).eval()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    _copy(ours, theirs)
    directions = 2 if options.get("bidirectional") else 1
    states = options.get("num_layers", 1) * directions
    h_size = options.get("proj_size", 0) or 4
    batch_first = options.get("batch_first", False)
    x = rng.standard_normal((5, 3) if unbatched else (2, 5, 3) if batch_first else (5, 2, 3))
    h = rng.standard_normal((states, h_size) if unbatched else (states, 2, h_size))
    c = rng.standard_normal((states, 4) if unbatched else (states, 2, 4))
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    dx, dh, dc = (leaf(a) for a in (x, h, c))
    if name == "LSTM":
        t_out, (t_h, t_c) = theirs(tx, (th, tc))
        d_out, (d_h, d_c) = ours(dx, (dh, dc))
        pairs = [(d_out, t_out), (d_h, t_h), (d_c, t_c)]
    else:
        t_out, t_h = theirs(tx, th)
        d_out, d_h = ours(dx, dh)
        pairs = [(d_out, t_out), (d_h, t_h)]
    weights = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    for d, t in pairs:
        assert d.shape == tuple(t.shape)
        np.testing.assert_allclose(npy(d), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    sum(((t * torch.tensor(w)).sum() for (_, t), w in zip(pairs, weights))).backward()
    sum(((d * dt.tensor(w)).sum() for (d, _), w in zip(pairs, weights))).backward()
    grads = [(dx, tx), (dh, th)] + ([(dc, tc)] if name == "LSTM" else [])
    grads += [(p, dict(theirs.named_parameters())[n]) for n, p in ours.named_parameters()]
    for d, t in grads:
        np.testing.assert_allclose(npy(d.grad), t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_torch(torch, name, options, rng):
    _compare_with_torch(torch, name, options, rng)


@pytest.mark.parametrize(
    "name, options",
    [
        ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
        ("LSTM", {"proj_size": 2, "num_layers": 2, "bidirectional": True}),
        ("LSTM", {"dropout": 0.3, "num_layers": 2}),  # eval mode: no dropout
        ("GRU", {"bidirectional": True}),
    ],
    ids=str,
)
def test_matches_torch_more_options(torch, name, options, rng):
    _compare_with_torch(torch, name, options, rng)


@pytest.mark.parametrize("name", list(CLASSES))
def test_matches_torch_unbatched(torch, name, rng):
    _compare_with_torch(torch, name, {"num_layers": 2, "bidirectional": True}, rng, True)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(torch, name, rng):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(3, 4).double()
    ours = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}[name](
        3, 4, dtype=dt.float64
    )
    _copy(ours, theirs)
    assert repr(ours) == repr(theirs)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    dx, dh, dc = (leaf(a) for a in (x, h, c))
    if name == "LSTMCell":
        t_out = torch.cat(theirs(tx, (th, tc)), -1)
        d_out = dt.cat(ours(dx, (dh, dc)), -1)
    else:
        t_out, d_out = theirs(tx, th), ours(dx, dh)
    np.testing.assert_allclose(npy(d_out), t_out.detach().numpy(), rtol=1e-12)
    w = rng.standard_normal(tuple(t_out.shape))
    (t_out * torch.tensor(w)).sum().backward()
    (d_out * dt.tensor(w)).sum().backward()
    pairs = [(dx, tx), (dh, th)] + ([(dc, tc)] if name == "LSTMCell" else [])
    pairs += [(p, dict(theirs.named_parameters())[n]) for n, p in ours.named_parameters()]
    for d, t in pairs:
        np.testing.assert_allclose(npy(d.grad), t.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_pad_sequence_matches_torch(torch, rng):
    from torch.nn.utils.rnn import pad_sequence as torch_pad

    arrays = [rng.standard_normal((n, 2, 2)) for n in (2, 4, 1)]
    for batch_first, side in itertools.product((False, True), ("right", "left")):
        ours = pad_sequence([dt.tensor(a) for a in arrays], batch_first, 7.0, side)
        theirs = torch_pad([torch.tensor(a) for a in arrays], batch_first, 7.0, side)
        np.testing.assert_array_equal(npy(ours), theirs.numpy())


def test_default_init_is_torch_range_float32():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = GRU(2, 100)
    values = np.concatenate([npy(p).ravel() for p in module.parameters()])
    assert values.dtype == np.float32 and np.abs(values).max() <= 0.1


@pytest.mark.parametrize("name", list(CLASSES))
def test_same_numbers_on_the_test_device(name, test_device, rng):
    """With ``--device=cuda`` (or emulated-cuda) every op takes its CUDA branch."""
    cpu = make(name, num_layers=2, bidirectional=True, dtype=dt.float32)
    moved = make(name, num_layers=2, bidirectional=True, dtype=dt.float32).to(test_device)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    results = []
    for module, device in ((cpu, "cpu"), (moved, test_device)):
        inp = dt.tensor(x, device=device, requires_grad=True)
        out, _ = module(inp)
        out.sum().backward()
        grads = [inp.grad] + [p.grad for p in module.parameters()]
        results.append([out.detach().cpu().numpy()] + [g.cpu().numpy() for g in grads])
    padded = pad_sequence([dt.ones(2, 3, device=test_device), dt.ones(1, 3, device=test_device)])
    assert str(padded.device).startswith(test_device)
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


# ---- empty batches, state dtypes, autocast, contiguous outputs ----------------------------------
CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}


def _own_bytes(t: dt.Tensor) -> int:
    """The bytes of the array that ``t``'s memory belongs to (its own when not a view)."""
    array = t._array
    while array.base is not None:
        array = array.base
    return array.nbytes


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch_gives_empty_outputs_and_gradients(name, batch_first):
    module = make(name, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = leaf(np.zeros((0, 5, 3) if batch_first else (5, 0, 3)))
    h0 = leaf(np.zeros((4, 0, 4)))
    out, state = module(x, (h0, h0) if name == "LSTM" else h0)
    assert out.shape == ((0, 5, 8) if batch_first else (5, 0, 8))
    for s in state if name == "LSTM" else (state,):
        assert s.shape == (4, 0, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and h0.grad.shape == (4, 0, 4)
    assert all(p.grad is not None and not npy(p.grad).any() for p in module.parameters())


@pytest.mark.parametrize("name", list(CELLS))
def test_cells_take_an_empty_batch(name):
    cell = CELLS[name](3, 4, dtype=dt.float64)
    x = leaf(np.zeros((0, 3)))
    out = cell(x)
    for o in out if name == "LSTMCell" else (out,):
        assert o.shape == (0, 4)
    (out[0] if name == "LSTMCell" else out).sum().backward()
    assert x.grad.shape == (0, 3)


@pytest.mark.parametrize("name", list(CLASSES))
def test_empty_batch_shapes_match_torch(torch, name):
    theirs = getattr(torch.nn, name)(3, 4, num_layers=2, bidirectional=True)
    t_out, t_state = theirs(torch.zeros(5, 0, 3))
    d_out, d_state = make(name, dt.float32, num_layers=2, bidirectional=True)(dt.zeros(5, 0, 3))
    assert d_out.shape == tuple(t_out.shape)
    pairs = zip(d_state, t_state) if name == "LSTM" else [(d_state, t_state)]
    assert all(d.shape == tuple(t.shape) for d, t in pairs)
    cell = getattr(torch.nn, name + "Cell")(3, 4)(torch.zeros(0, 3))
    ours = CELLS[name + "Cell"](3, 4)(dt.zeros(0, 3))
    assert (ours[0] if name == "LSTM" else ours).shape == tuple(
        (cell[0] if name == "LSTM" else cell).shape
    )


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_state_of_another_dtype_is_refused(name):
    module = make(name, dtype=dt.float32)
    x = dt.zeros(5, 2, 3)
    for wrong in (dt.float64, dt.float16):
        bad, good = dt.zeros(1, 2, 4, dtype=wrong), dt.zeros(1, 2, 4)
        states = [(bad, good), (good, bad)] if name == "LSTM" else [bad]
        for hx in states:
            with pytest.raises(RuntimeError, match=f"hidden state dtype {wrong}"):
                module(x, hx)
    cell = CELLS[name + "Cell"](3, 4)
    bad, good = dt.zeros(2, 4, dtype=dt.float64), dt.zeros(2, 4)
    with pytest.raises(RuntimeError, match=r"does not match input dtype float32.*hx\.to"):
        cell(dt.zeros(2, 3), (good, bad) if name == "LSTM" else bad)
    # The step ops refuse it too (after autocast's casts), for callers other than the modules.
    step = {"RNN": rnn_step, "GRU": gru_step, "LSTM": lstm_step}[name]
    rows = {"RNN": 4, "GRU": 12, "LSTM": 16}[name]
    state = dt.zeros(2, 8 if name == "LSTM" else 4, dtype=dt.float64)
    extra = () if name == "LSTM" else (None,)
    with pytest.raises(RuntimeError, match="does not match the weight dtype float32"):
        step(dt.zeros(2, rows), state, dt.zeros(rows, 4), *extra)


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dtype_mismatch_raises_in_torch_too(torch, name):
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(3, 4)(torch.zeros(5, 2, 3), (h, h) if name == "LSTM" else h)
    with pytest.raises(RuntimeError):
        h = torch.zeros(2, 4, dtype=torch.float64)
        getattr(torch.nn, name + "Cell")(3, 4)(torch.ones(2, 3), (h, h) if name == "LSTM" else h)


@pytest.mark.parametrize("name", list(CLASSES))
def test_autocast_casts_the_projection_once(name, monkeypatch, rng):
    """Under autocast each layer casts its operands once, not the whole sequence's
    projection at every step: only the input's cast grows with the length."""
    import dtrain._tensor.amp.cast as cast

    cast_elements = []
    original = cast._autocast_copy

    def counting(arg, target):
        cast_elements.append(arg._array.size)
        return original(arg, target)

    monkeypatch.setattr(cast, "_autocast_copy", counting)
    module = make(name, dtype=dt.float32)
    counts = {}
    for length in (4, 16):
        cast_elements.clear()
        x = dt.tensor(rng.standard_normal((length, 2, 3)).astype(np.float32))
        with dt.autocast("cpu", dtype=dt.float16):
            out, _ = module(x.requires_grad_())
        assert out.dtype == dt.float16
        out.float().sum().backward()
        counts[length] = (len(cast_elements), sum(cast_elements))
        reference, _ = module(x)
        np.testing.assert_allclose(npy(out.float()), npy(reference), atol=1e-2)
    assert counts[16][0] == counts[4][0]
    assert counts[16][1] - counts[4][1] == 12 * 2 * 3  # the input's 12 more steps


def test_lstm_and_cell_outputs_are_contiguous_and_own_their_memory(rng):
    x = dt.tensor(rng.standard_normal((5, 2, 3)))
    lstm = make("LSTM", bidirectional=True)
    out, (h_n, c_n) = lstm(leaf(npy(x)))
    assert out.is_contiguous() and h_n.is_contiguous() and c_n.is_contiguous()
    with dt.no_grad():
        for module in (make("LSTM"), lstm):
            out, _ = module(x)
            # Not a view of every step's [h | c]: the c half is not kept alive.
            assert out.is_contiguous() and _own_bytes(out) == out._array.nbytes
        one_step, _ = make("LSTM")(x[:1])
        assert one_step.is_contiguous() and _own_bytes(one_step) == one_step._array.nbytes
    h, c = LSTMCell(3, 4, dtype=dt.float64)(x[0])
    assert h.is_contiguous() and c.is_contiguous()


def test_lstm_contiguity_matches_torch(torch, rng):
    x = rng.standard_normal((5, 2, 3))
    t_out, _ = torch.nn.LSTM(3, 4)(torch.tensor(x, dtype=torch.float32))
    d_out, _ = make("LSTM", dtype=dt.float32)(dt.tensor(x.astype(np.float32)))
    assert d_out.is_contiguous() == t_out.is_contiguous()
    t_h, t_c = torch.nn.LSTMCell(3, 4)(torch.zeros(2, 3))
    d_h, d_c = LSTMCell(3, 4)(dt.zeros(2, 3))
    assert (d_h.is_contiguous(), d_c.is_contiguous()) == (t_h.is_contiguous(), t_c.is_contiguous())
