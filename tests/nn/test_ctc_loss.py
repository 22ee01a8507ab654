"""ctc_loss / CTCLoss: a brute-force reference summing every alignment, finite differences
through log_softmax, PyTorch (values and the gradient w.r.t. log_probs) where installed, and
the test device."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def brute_force_nll(log_probs: np.ndarray, target: list, blank: int = 0) -> float:
    """-log Σ over every path of T classes that collapses (merge repeats, drop blanks) to
    ``target``."""
    steps, classes = log_probs.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=steps):
        merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
        if [c for c in merged if c != blank] == list(target):
            total += np.exp(sum(log_probs[t, c] for t, c in enumerate(path)))
    return -np.log(total) if total else np.inf


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    log_probs = log_softmax(rng.standard_normal((5, 3, 4)))  # T=5, N=3, C=4
    targets = np.array([[1, 1, 2], [3, 2, 0], [2, 0, 0]])  # a repeat, and padding
    input_lengths, target_lengths = np.array([5, 4, 3]), np.array([3, 2, 0])
    return log_probs, targets, input_lengths, target_lengths


def test_ctc_loss_sums_every_alignment(batch):
    log_probs, targets, input_lengths, target_lengths = batch
    expected = [
        brute_force_nll(log_probs[: input_lengths[b], b], targets[b, : target_lengths[b]])
        for b in range(3)
    ]
    args = (dt.tensor(targets), dt.tensor(input_lengths), dt.tensor(target_lengths))
    none = F.ctc_loss(dt.tensor(log_probs), *args, reduction="none")
    np.testing.assert_allclose(none.numpy(), expected, rtol=1e-12)
    total = F.ctc_loss(dt.tensor(log_probs), *args, reduction="sum")
    np.testing.assert_allclose(total.numpy(), sum(expected), rtol=1e-12)
    mean = F.ctc_loss(dt.tensor(log_probs), *args)  # each divided by its length (at least 1)
    np.testing.assert_allclose(mean.numpy(), np.mean(np.array(expected) / [3, 2, 1]), rtol=1e-12)
    # concatenated 1-D targets and plain lists of lengths give the same
    flat = np.concatenate([targets[b, : target_lengths[b]] for b in range(3)])
    again = F.ctc_loss(
        dt.tensor(log_probs), dt.tensor(flat), input_lengths.tolist(), target_lengths.tolist(),
        reduction="none",
    )  # fmt: skip
    np.testing.assert_allclose(again.numpy(), expected, rtol=1e-12)
    # unbatched (T, C) input
    single = F.ctc_loss(dt.tensor(log_probs[:, 0]), dt.tensor(targets[0]), 5, 3, reduction="none")
    assert single.shape == ()
    np.testing.assert_allclose(single.numpy(), expected[0], rtol=1e-12)


def test_ctc_loss_blank_and_impossible_alignments():
    log_probs = log_softmax(np.random.default_rng(1).standard_normal((4, 2, 3)))
    targets = np.array([[0, 1], [1, 1]])  # blank=2; the second needs 3 steps: 1 b 1
    lengths = (dt.tensor(np.array([4, 2])), dt.tensor(np.array([2, 2])))
    out = F.ctc_loss(dt.tensor(log_probs), dt.tensor(targets), *lengths, blank=2, reduction="none")
    np.testing.assert_allclose(
        out.numpy()[0], brute_force_nll(log_probs[:, 0], [0, 1], blank=2), rtol=1e-12
    )
    assert np.isinf(out.numpy()[1])
    x = leaf(log_probs)
    zeroed = F.ctc_loss(
        x, dt.tensor(targets), *lengths, blank=2, reduction="sum", zero_infinity=True
    )
    np.testing.assert_allclose(zeroed.detach().numpy(), out.numpy()[0], rtol=1e-12)
    zeroed.backward()
    assert np.isfinite(x.grad.numpy()).all() and (x.grad.numpy()[:, 1] == 0).all()


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ctc_loss_gradient_through_log_softmax(batch, reduction):
    # PyTorch's gradient assumes normalised log_probs, so finite differences go through
    # log_softmax (the extra exp(log_probs) term cancels there).
    _, targets, input_lengths, target_lengths = batch
    logits = leaf(np.random.default_rng(2).standard_normal((5, 3, 4)))

    def loss(z):
        return F.ctc_loss(
            z.log_softmax(2), dt.tensor(targets), dt.tensor(input_lengths),
            dt.tensor(target_lengths), reduction=reduction,
        )  # fmt: skip

    assert gradcheck(loss, [logits])


def test_ctc_loss_module_and_errors(batch):
    log_probs, targets, input_lengths, target_lengths = batch
    module = nn.CTCLoss(blank=0, reduction="sum")
    out = module(dt.tensor(log_probs), dt.tensor(targets), input_lengths, target_lengths)
    expected = F.ctc_loss(
        dt.tensor(log_probs), dt.tensor(targets), input_lengths, target_lengths, reduction="sum"
    )
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    with pytest.raises(ValueError, match="reduction"):
        nn.CTCLoss(reduction="avg")
    with pytest.raises(ValueError, match="input_lengths"):
        F.ctc_loss(dt.tensor(log_probs), dt.tensor(targets), [6, 4, 3], target_lengths)
    with pytest.raises(ValueError, match="one per sequence"):
        F.ctc_loss(dt.tensor(log_probs), dt.tensor(targets), [5, 4], target_lengths)
    with pytest.raises(ValueError, match="sum to"):
        F.ctc_loss(dt.tensor(log_probs), dt.tensor(np.array([1, 2])), input_lengths, [1, 1, 1])
    with pytest.raises(ValueError, match="blank"):
        F.ctc_loss(dt.tensor(log_probs), dt.tensor(targets), input_lengths, target_lengths, 4)


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_ctc_loss_matches_torch(torch, same, reduction, layout, zero_infinity):
    rng = np.random.default_rng(3)
    steps, batch_size, classes, longest = 12, 4, 5, 5
    log_probs = log_softmax(rng.standard_normal((steps, batch_size, classes)))
    targets = rng.integers(1, classes, (batch_size, longest))
    targets[0, :3] = [2, 2, 3]
    input_lengths = np.array([12, 2 if zero_infinity else 10, 7, 12])  # 2: impossible
    target_lengths = np.array([5, 3, 0, 4])
    if layout == "concatenated":
        targets = np.concatenate([targets[b, : target_lengths[b]] for b in range(batch_size)])
    ours_x, theirs_x = leaf(log_probs), torch.tensor(log_probs, requires_grad=True)
    kwargs = dict(reduction=reduction, zero_infinity=zero_infinity)
    out = F.ctc_loss(
        ours_x, dt.tensor(targets), dt.tensor(input_lengths), dt.tensor(target_lengths), **kwargs
    )
    tout = torch.nn.functional.ctc_loss(
        theirs_x, torch.tensor(targets), torch.tensor(input_lengths), torch.tensor(target_lengths),
        **kwargs,
    )  # fmt: skip
    same(out, tout, atol=1e-12)
    direction = rng.standard_normal(out.shape)
    (out * dt.tensor(direction)).sum().backward()
    (tout * torch.tensor(direction)).sum().backward()
    same(ours_x.grad, theirs_x.grad, atol=1e-12)  # the gradient w.r.t. log_probs, as PyTorch's


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ctc_loss_on_the_test_device(test_device, batch, reduction):
    log_probs, targets, input_lengths, target_lengths = batch
    results = []
    for device in ("cpu", test_device):
        x = dt.tensor(log_probs, requires_grad=True, device=device)
        out = F.ctc_loss(
            x, dt.tensor(targets, device=device), input_lengths, target_lengths,
            reduction=reduction,
        )  # fmt: skip
        assert out.device.type == device
        (out * out).sum().backward()
        results.append((out.detach().cpu().numpy(), x.grad.cpu().numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-12)


def test_ctc_loss_when_every_target_is_empty():
    # one extended position (the blank): the loss is -Σ_t log p_blank(t)
    log_probs = log_softmax(np.random.default_rng(4).standard_normal((5, 3, 4)))
    input_lengths, empty = np.array([5, 3, 4]), np.zeros(3, dtype=np.int64)
    expected = [-log_probs[: input_lengths[b], b, 0].sum() for b in range(3)]
    for targets in (np.zeros((3, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)):
        out = F.ctc_loss(
            dt.tensor(log_probs), dt.tensor(targets), input_lengths, empty, reduction="none"
        )
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)

    def loss(z):
        return F.ctc_loss(
            z.log_softmax(2), dt.tensor(np.zeros((3, 0), dtype=np.int64)), input_lengths, empty
        )

    assert gradcheck(loss, [leaf(np.random.default_rng(5).standard_normal((5, 3, 4)))])


def test_ctc_loss_input_length_zero():
    # nothing to emit: an empty target costs 0, any other is impossible (inf), as PyTorch
    log_probs = log_softmax(np.random.default_rng(6).standard_normal((5, 3, 4)))
    targets, input_lengths = np.array([[1, 2], [1, 0], [2, 2]]), np.array([0, 0, 5])
    target_lengths = np.array([2, 0, 1])
    out = F.ctc_loss(
        dt.tensor(log_probs), dt.tensor(targets), input_lengths, target_lengths, reduction="none"
    )
    expected = [np.inf, 0.0, brute_force_nll(log_probs[:, 2], [2])]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    x = leaf(log_probs)
    zeroed = F.ctc_loss(
        x, dt.tensor(targets), input_lengths, target_lengths, reduction="sum", zero_infinity=True
    )
    np.testing.assert_allclose(zeroed.detach().numpy(), expected[2], rtol=1e-12)
    zeroed.backward()
    grad = x.grad.numpy()
    assert np.isfinite(grad).all() and (grad[:, :2] == 0).all() and (grad[:, 2] != 0).any()


def test_ctc_loss_refuses_float16_as_torch(batch):
    log_probs, targets, input_lengths, target_lengths = batch
    with pytest.raises(TypeError, match="float16"):
        F.ctc_loss(
            dt.tensor(log_probs.astype(np.float16)), dt.tensor(targets), input_lengths,
            target_lengths,
        )  # fmt: skip


@pytest.mark.parametrize("case", ["empty_targets", "no_input"])
def test_ctc_loss_edge_lengths_match_torch(torch, same, case):
    log_probs = log_softmax(np.random.default_rng(7).standard_normal((6, 3, 4)))
    if case == "empty_targets":
        targets, input_lengths, target_lengths = np.zeros((3, 0)), [6, 4, 1], [0, 0, 0]
    else:
        targets, input_lengths, target_lengths = (
            np.array([[1, 2], [1, 0], [3, 3]]),
            [0, 0, 6],
            [2, 0, 2],
        )
    for reduction in ("none", "mean"):
        kwargs = dict(reduction=reduction, zero_infinity=True)
        ours_x, theirs_x = leaf(log_probs), torch.tensor(log_probs, requires_grad=True)
        out = F.ctc_loss(
            ours_x, dt.tensor(targets.astype(np.int64)), input_lengths, target_lengths, **kwargs
        )
        tout = torch.nn.functional.ctc_loss(
            theirs_x, torch.tensor(targets, dtype=torch.long), torch.tensor(input_lengths),
            torch.tensor(target_lengths), **kwargs,
        )  # fmt: skip
        same(out, tout, atol=1e-12)
        out.sum().backward()
        tout.sum().backward()
        same(ours_x.grad, theirs_x.grad, atol=1e-12)
        plain = F.ctc_loss(
            dt.tensor(log_probs), dt.tensor(targets.astype(np.int64)), input_lengths,
            target_lengths, reduction=reduction,
        )  # fmt: skip
        tplain = torch.nn.functional.ctc_loss(
            torch.tensor(log_probs), torch.tensor(targets, dtype=torch.long),
            torch.tensor(input_lengths), torch.tensor(target_lengths), reduction=reduction,
        )  # fmt: skip
        same(plain, tplain, atol=1e-12)
