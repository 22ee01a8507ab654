"""Packed sequences (``nn.utils.rnn``) and the recurrent layers on them: packing against a
numpy reference, round trips, errors, gradients against finite differences; every
sequence of a packed batch against the same layer run on that sequence alone (outputs and
final states, both directions); the one-op steps of ``ops/rnn_cell`` on slices of the
projection; and (when PyTorch is installed) packing and the layers against PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.nn.modules.rnn import GRU, LSTM, RNN
from dtrain._tensor.ops.rnn_cell import gru_step, lstm_step, rnn_step
from dtrain.autograd import gradcheck
from dtrain.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    unpack_sequence,
)

CLASSES = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
LENGTHS = [3, 5, 2, 4]  # unsorted on purpose
LAYER_OPTIONS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"bidirectional": True, "batch_first": True},
]


def npy(t: dt.Tensor) -> np.ndarray:
    return t.detach().numpy()


def leaf(array: np.ndarray) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def np_pack(x: np.ndarray, lengths: list, batch_first: bool) -> tuple:
    """(data, batch_sizes, order) by the definition: sort by decreasing length (stable),
    then take each time step's rows of the sequences still running."""
    if batch_first:
        x = x.transpose(1, 0, *range(2, x.ndim))
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows, sizes = [], []
    for t in range(max(lengths)):
        live = [i for i in order if lengths[i] > t]
        sizes.append(len(live))
        rows += [x[t, i] for i in live]
    return np.stack(rows), sizes, order


# ---- packing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_pack_matches_numpy_reference_and_round_trips(batch_first, rng):
    x = rng.standard_normal((4, 5, 2) if batch_first else (5, 4, 2))
    packed = pack_padded_sequence(dt.tensor(x), LENGTHS, batch_first, enforce_sorted=False)
    data, sizes, order = np_pack(x, LENGTHS, batch_first)
    np.testing.assert_array_equal(npy(packed.data), data)
    assert packed.batch_sizes.tolist() == sizes and packed.batch_sizes.dtype == dt.int64
    assert packed.sorted_indices.tolist() == order
    assert packed.unsorted_indices.tolist() == list(np.argsort(order))
    padded, lengths = pad_packed_sequence(packed, batch_first, padding_value=-7.0, total_length=6)
    assert lengths.tolist() == LENGTHS and str(lengths.device) == "cpu"
    expected = np.full((6, 4, 2), -7.0)
    for i, n in enumerate(LENGTHS):
        expected[:n, i] = (x[i] if batch_first else x[:, i])[:n]
    np.testing.assert_array_equal(
        npy(padded), expected.transpose(1, 0, 2) if batch_first else expected
    )


def test_sorted_pack_has_no_indices_and_pack_sequence_round_trips(rng):
    seqs = [dt.tensor(rng.standard_normal((n, 3))) for n in (4, 4, 2)]
    packed = pack_sequence(seqs)
    assert packed.sorted_indices is None and packed.unsorted_indices is None
    assert packed.batch_sizes.tolist() == [3, 3, 2, 2]
    seqs = [dt.tensor(rng.standard_normal((n, 3))) for n in LENGTHS]
    back = unpack_sequence(pack_sequence(seqs, enforce_sorted=False))
    for ours, original in zip(back, seqs):
        np.testing.assert_array_equal(npy(ours), npy(original))


def test_packed_sequence_is_a_namedtuple_and_moves(rng):
    packed = pack_sequence([dt.ones(2, 1), dt.ones(3, 1)], enforce_sorted=False)
    data, batch_sizes, sorted_indices, _ = packed
    assert isinstance(packed, tuple) and packed._fields[0] == "data"
    assert packed.to(dt.float32) is packed and not packed.is_cuda
    double = packed.double()
    assert double.data.dtype == dt.float64 and double.sorted_indices.tolist() == [1, 0]
    assert double.batch_sizes is batch_sizes
    again = PackedSequence(data, batch_sizes, sorted_indices)  # unsorted_indices derived
    assert again.unsorted_indices.tolist() == [1, 0]
    pair = PackedSequence((data, [2, 2, 1]))
    assert pair.batch_sizes.tolist() == [2, 2, 1] and pair.sorted_indices is None


@pytest.mark.parametrize("batch_first", [False, True])
def test_gradients_flow_through_pack_and_pad(batch_first, rng):
    x = leaf(rng.standard_normal((4, 5, 2) if batch_first else (5, 4, 2)))

    def round_trip(x):
        packed = pack_padded_sequence(x, LENGTHS, batch_first, enforce_sorted=False)
        return dt.cat(
            [packed.data * 2, pad_packed_sequence(packed, batch_first, 3.0)[0].flatten(0, 1)]
        )

    assert gradcheck(round_trip, [x])
    round_trip(x).sum().backward()
    mask = np.zeros((5, 4, 1))
    for i, n in enumerate(LENGTHS):
        mask[:n, i] = 1
    expected = 3 * mask.transpose(1, 0, 2) if batch_first else 3 * mask
    np.testing.assert_array_equal(npy(x.grad), np.broadcast_to(expected, x.shape))


def test_packing_errors_name_the_problem():
    x = dt.zeros(3, 2, 1)
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        pack_padded_sequence(x, [2, 3])
    with pytest.raises(RuntimeError, match="greater than 0"):
        pack_padded_sequence(x, [3, 0])
    with pytest.raises(RuntimeError, match="batch_size=2"):
        pack_padded_sequence(x, [3, 2, 1])
    with pytest.raises(ValueError, match="exceeds the padded input's 3 time steps"):
        pack_padded_sequence(x, [4, 2])
    with pytest.raises(ValueError, match="total_length=2"):
        pad_packed_sequence(pack_padded_sequence(x, [3, 2]), total_length=2)
    with pytest.raises(TypeError, match="expected a PackedSequence"):
        pad_packed_sequence(x)


# ---- the layers on packed input -----------------------------------------------------------------
def _states(name, module, rng, batch):
    directions = 2 if module.bidirectional else 1
    count = module.num_layers * directions
    h0 = leaf(rng.standard_normal((count, batch, module.proj_size or module.hidden_size)))
    c0 = leaf(rng.standard_normal((count, batch, module.hidden_size)))
    return (h0, c0) if name == "LSTM" else h0


@pytest.mark.parametrize(
    "name, options",
    [*itertools.product(CLASSES, LAYER_OPTIONS), ("LSTM", {"proj_size": 2})],
    ids=str,
)
def test_each_packed_sequence_matches_a_run_on_it_alone(name, options, rng):
    dt.manual_seed(0)
    module = CLASSES[name](3, 4, dtype=dt.float64, **options)
    batch_first = options.get("batch_first", False)
    x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3))
    hx = _states(name, module, rng, 4)
    packed = pack_padded_sequence(dt.tensor(x), LENGTHS, batch_first, enforce_sorted=False)
    out, final = module(packed, hx)
    assert isinstance(out, PackedSequence) and out.batch_sizes is packed.batch_sizes
    padded, _ = pad_packed_sequence(out, batch_first)
    finals = final if name == "LSTM" else (final,)
    states = hx if name == "LSTM" else (hx,)
    for i, n in enumerate(LENGTHS):
        seq = (x[i] if batch_first else x[:, i])[:n]
        alone_hx = tuple(s[:, i : i + 1] for s in states)
        alone_out, alone_final = module(
            dt.tensor(seq[None] if batch_first else seq[:, None]),
            alone_hx if name == "LSTM" else alone_hx[0],
        )
        alone_finals = alone_final if name == "LSTM" else (alone_final,)
        ours = npy(padded)[i, :n] if batch_first else npy(padded)[:n, i]
        np.testing.assert_allclose(ours, npy(alone_out).reshape(ours.shape), rtol=1e-12, atol=1e-14)
        ours_pad = npy(padded)[i, n:] if batch_first else npy(padded)[n:, i]
        assert not ours_pad.any()
        for got, want in zip(finals, alone_finals):
            np.testing.assert_allclose(npy(got)[:, i], npy(want)[:, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(CLASSES))
def test_packed_gradients_match_finite_differences(name, rng):
    dt.manual_seed(0)
    module = CLASSES[name](2, 3, num_layers=2, bidirectional=True, dtype=dt.float64)
    lengths = [2, 3, 1]
    x = leaf(rng.standard_normal((3, 3, 2)))
    hx = _states(name, module, rng, 3)
    states = list(hx) if name == "LSTM" else [hx]
    params = list(module.parameters())

    def run(x, *rest):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        given = tuple(rest[: len(states)])
        out, final = module(packed, given if name == "LSTM" else given[0])
        finals = final if name == "LSTM" else (final,)
        return dt.cat([pad_packed_sequence(out)[0].flatten()] + [f.flatten() for f in finals])

    assert gradcheck(run, [x, *states, *params])


@pytest.mark.parametrize("name", list(CLASSES))
def test_packed_layers_on_the_test_device(name, test_device, rng):
    """With ``--device=cuda`` (or emulated-cuda) packing and the steps take their CUDA branch."""
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    results = []
    for device in ("cpu", test_device):
        dt.manual_seed(0)
        module = CLASSES[name](3, 4, bidirectional=True).to(device)
        inp = dt.tensor(x, device=device, requires_grad=True)
        out, _ = module(pack_padded_sequence(inp, LENGTHS, enforce_sorted=False))
        padded, _ = pad_packed_sequence(out, padding_value=1.0)
        assert str(padded.device).startswith(device)
        (padded * padded).sum().backward()
        grads = [inp.grad] + [p.grad for p in module.parameters()]
        results.append([padded.detach().cpu().numpy()] + [g.cpu().numpy() for g in grads])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


# ---- the one-op steps ------------------------------------------------------------------------
def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_steps_on_a_slice_of_the_projection(kind, rng):
    hidden, rows = 3, 2
    gates = {"lstm": 4, "gru": 3}.get(kind, 1) * hidden
    projected = leaf(rng.standard_normal((5, gates)))
    w = leaf(rng.standard_normal((gates, hidden)) / 2)
    b = leaf(rng.standard_normal(gates))
    width = 2 * hidden if kind == "lstm" else hidden
    state = leaf(rng.standard_normal((rows, width)))
    p, s, wn, bn = npy(projected)[1:3], npy(state), npy(w), npy(b)

    def step(projected, state, w, b):
        if kind == "lstm":
            return lstm_step(projected, state, w, 1, 3)
        if kind == "gru":
            return gru_step(projected, state, w, b, 1, 3)
        return rnn_step(projected, state, w, b, kind == "rnn_relu", 1, 3)

    if kind == "lstm":
        i, f, g, o = np.split(p + s[:, :hidden] @ wn.T, 4, -1)
        c = _np_sigmoid(f) * s[:, hidden:] + _np_sigmoid(i) * np.tanh(g)
        expected = np.concatenate([_np_sigmoid(o) * np.tanh(c), c], -1)
    elif kind == "gru":
        gh = s @ wn.T + bn
        r = _np_sigmoid(p[:, :hidden] + gh[:, :hidden])
        z = _np_sigmoid(p[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
        n = np.tanh(p[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
        expected = (1 - z) * n + z * s
    else:
        total = p + s @ wn.T + bn
        expected = np.maximum(total, 0) if kind == "rnn_relu" else np.tanh(total)
    np.testing.assert_allclose(npy(step(projected, state, w, b)), expected, rtol=1e-12)
    inputs = [projected, state, w] + ([] if kind == "lstm" else [b])
    assert gradcheck(lambda *a: step(*a, *([b] if kind == "lstm" else [])), inputs)
    # rows outside 1:3 get no gradient
    step(projected, state, w, b).sum().backward()
    assert not npy(projected.grad)[[0, 3, 4]].any() and npy(projected.grad)[1:3].any()


def test_step_refuses_rows_that_do_not_match_the_state():
    with pytest.raises(ValueError, match="stop - start == state rows"):
        gru_step(dt.zeros(5, 6), dt.zeros(3, 2), dt.zeros(6, 2), None, 1, 3)


# ---- against PyTorch -------------------------------------------------------------------------
def test_packing_matches_torch(torch, rng):
    from torch.nn.utils import rnn as trnn

    for batch_first, enforce in itertools.product((False, True), (False, True)):
        lengths = [5, 4, 3, 2] if enforce else LENGTHS
        x = rng.standard_normal((4, 5, 2) if batch_first else (5, 4, 2))
        ours = pack_padded_sequence(dt.tensor(x), lengths, batch_first, enforce)
        theirs = trnn.pack_padded_sequence(torch.tensor(x), lengths, batch_first, enforce)
        np.testing.assert_array_equal(npy(ours.data), theirs.data.numpy())
        for a, b in zip(ours[1:], theirs[1:]):
            assert (a is None and b is None) or a.tolist() == b.tolist()
        ours_padded = pad_packed_sequence(ours, batch_first, 2.0, 7)
        theirs_padded = trnn.pad_packed_sequence(theirs, batch_first, 2.0, 7)
        for a, b in zip(ours_padded, theirs_padded):
            np.testing.assert_array_equal(npy(a), b.numpy())


@pytest.mark.parametrize(
    "name, options",
    [
        *itertools.product(CLASSES, LAYER_OPTIONS),
        ("LSTM", {"proj_size": 2, "num_layers": 2, "bidirectional": True}),
    ],
    ids=str,
)
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_layers_match_torch(torch, name, options, enforce_sorted, rng):
    from torch.nn.utils import rnn as trnn

    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(3, 4, **options).double()
    ours = CLASSES[name](3, 4, dtype=dt.float64, **options)
    ours.load_state_dict(
        {k: dt.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    )
    lengths = [5, 4, 2, 2] if enforce_sorted else LENGTHS
    batch_first = options.get("batch_first", False)
    x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3))
    hx = _states(name, ours, rng, 4)
    hx_list = list(hx) if name == "LSTM" else [hx]
    tx = torch.tensor(x, requires_grad=True)
    t_hx = [torch.tensor(npy(h), requires_grad=True) for h in hx_list]
    dx = leaf(x)
    t_out, t_final = theirs(
        trnn.pack_padded_sequence(tx, lengths, batch_first, enforce_sorted),
        tuple(t_hx) if name == "LSTM" else t_hx[0],
    )
    d_out, d_final = ours(
        pack_padded_sequence(dx, lengths, batch_first, enforce_sorted),
        tuple(hx_list) if name == "LSTM" else hx_list[0],
    )
    pairs = [(d_out.data, t_out.data)]
    pairs += list(zip(d_final, t_final)) if name == "LSTM" else [(d_final, t_final)]
    weights = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    for d, t in pairs:
        np.testing.assert_allclose(npy(d), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    sum((t * torch.tensor(w)).sum() for (_, t), w in zip(pairs, weights)).backward()
    sum((d * dt.tensor(w)).sum() for (d, _), w in zip(pairs, weights)).backward()
    grads = [(dx, tx)] + list(zip(hx_list, t_hx))
    grads += [(p, dict(theirs.named_parameters())[n]) for n, p in ours.named_parameters()]
    for d, t in grads:
        np.testing.assert_allclose(npy(d.grad), t.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---- empty input, lengths' shape, no reads back from a GPU ----------------------------------
def test_empty_input_and_lengths_not_1d_are_refused():
    for shape, lengths in (((3, 0, 2), []), ((0, 2, 3), [1, 1]), ((3, 2, 0), [1, 1])):
        with pytest.raises(RuntimeError, match="Cannot pack empty tensors"):
            pack_padded_sequence(dt.zeros(*shape), lengths, enforce_sorted=False)
    x = dt.zeros(3, 1, 2)
    for lengths, ndim in ((dt.tensor(3), 0), (3, 0), (dt.tensor([[3]]), 2), ([[3]], 2)):
        with pytest.raises(RuntimeError, match=f"should be a 1D CPU int64 tensor, but got {ndim}D"):
            pack_padded_sequence(x, lengths)
    empty = PackedSequence(dt.zeros(0, 3), [])
    with pytest.raises(ValueError, match="PackedSequence is empty"):
        LSTM(3, 4)(empty)


def test_empty_input_and_lengths_not_1d_match_torch(torch):
    from torch.nn.utils import rnn as trnn

    with pytest.raises(RuntimeError, match="Cannot pack empty tensors"):
        trnn.pack_padded_sequence(torch.zeros(3, 0, 2), [])
    for lengths in (torch.tensor(3), torch.tensor([[3]])):
        with pytest.raises(RuntimeError) as theirs:
            trnn.pack_padded_sequence(torch.zeros(3, 1, 2), lengths)
        with pytest.raises(RuntimeError) as ours:
            pack_padded_sequence(dt.zeros(3, 1, 2), dt.tensor(lengths.numpy()))
        # torch's wording, up to the dtype name it adds ("... 0D cpu Long tensor")
        assert str(ours.value).startswith(str(theirs.value).split(" cpu")[0])


@pytest.fixture
def emulated_cuda(monkeypatch):
    """CUDA on the CPU (``tests/runtime/cuda_emulator``): ``device="cuda"`` works here."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    return install(monkeypatch)


def test_pack_and_pad_read_nothing_back_but_the_order(emulated_cuda, rng):
    x = dt.tensor(rng.standard_normal((5, 4, 2)), device="cuda")
    with emulated_cuda.counting() as counts:
        packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    assert not any(name.startswith("host read") for name in counts)
    assert packed.unsorted_indices.tolist() == np.argsort(np.argsort(LENGTHS)[::-1]).tolist()
    with emulated_cuda.counting() as counts:
        derived = PackedSequence(packed.data, packed.batch_sizes, packed.sorted_indices)
    assert not any(name.startswith("host read") for name in counts)
    assert derived.unsorted_indices.tolist() == packed.unsorted_indices.tolist()
    with emulated_cuda.counting() as counts:
        padded, _ = pad_packed_sequence(packed)
    # The lengths (a CPU tensor) in the batch's order need the order on the host once.
    assert sum(n for name, n in counts.items() if name.startswith("host read")) == 1
    np.testing.assert_array_equal(padded.cpu().numpy(), npy(pad_packed_sequence(packed.cpu())[0]))


def test_cuda_copies_the_data_once(emulated_cuda, rng):
    packed = pack_padded_sequence(dt.tensor(rng.standard_normal((5, 4, 2))), LENGTHS, False, False)
    with emulated_cuda.counting() as counts:
        moved = packed.cuda()
    assert counts["asarray"] == 3  # data, sorted_indices, unsorted_indices
    assert moved.is_cuda and str(moved.unsorted_indices.device) == "cuda:0"
    assert moved.batch_sizes.device.type == "cpu" and moved.cuda() is moved
    np.testing.assert_array_equal(moved.data.cpu().numpy(), npy(packed.data))
