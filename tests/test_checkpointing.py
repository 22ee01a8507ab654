"""Activation checkpointing: the same values and gradients as running the segment plainly,
no activations kept, dropout masks reproduced, tuple outputs, checkpoint_sequential."""

from __future__ import annotations

import collections
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.utils.checkpoint import checkpoint, checkpoint_sequential


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _mlp(seed: int = 0) -> nn.Module:
    dt.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)
    ).double()


def _grads(model, x):
    return [p.grad.numpy().copy() for p in model.parameters()], x.grad.numpy().copy()


def test_values_and_gradients_match_the_plain_run():
    x_np = np.random.default_rng(0).standard_normal((5, 6))
    plain, ckpt = _mlp(), _mlp()
    x1 = dt.tensor(x_np, requires_grad=True)
    x2 = dt.tensor(x_np, requires_grad=True)
    dt.manual_seed(7)
    y1 = plain(x1)
    (y1**2).sum().backward()
    dt.manual_seed(7)
    y2 = checkpoint(ckpt, x2, use_reentrant=False)
    after_forward = dt.rand(3).numpy()  # the caller's stream as the plain run left it
    (y2**2).sum().backward()
    dt.manual_seed(7)
    plain(x1.detach())
    assert np.array_equal(dt.rand(3).numpy(), after_forward)
    np.testing.assert_array_equal(y1.detach().numpy(), y2.detach().numpy())
    (pg1, xg1), (pg2, xg2) = _grads(plain, x1), _grads(ckpt, x2)
    np.testing.assert_allclose(xg2, xg1, rtol=1e-12, atol=1e-14)
    for a, b in zip(pg1, pg2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_without_preserved_rng_dropout_masks_differ():
    x = dt.tensor(np.ones((50, 6)), requires_grad=True)
    plain, ckpt = _mlp(), _mlp()
    dt.manual_seed(3)
    plain(x).sum().backward()
    dt.manual_seed(3)
    checkpoint(ckpt, x, preserve_rng_state=False).sum().backward()
    assert not np.allclose(plain[0].weight.grad.numpy(), ckpt[0].weight.grad.numpy())


def test_parameters_get_gradients_when_no_input_requires_grad():
    lin = nn.Linear(3, 2).double()
    x = dt.tensor(np.ones((4, 3)))
    checkpoint(lin, x).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.full((2, 3), 4.0))
    np.testing.assert_allclose(lin.bias.grad.numpy(), np.full(2, 4.0))


def test_activations_are_not_kept():
    calls, inner = [], []

    def segment(x, scale=1.0):
        calls.append(dt.is_grad_enabled())
        h = x.exp() * scale
        inner.append(weakref.ref(h._array))  # the sin node saves it in a plain run
        return h.sin()

    x = dt.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    kept = segment(x, scale=2.0)
    assert inner[-1]() is not None  # the plain run's graph holds the intermediate
    del kept
    y = checkpoint(segment, x, scale=2.0)
    assert inner[-1]() is None  # the checkpointed one's graph was dropped after forward
    assert y.grad_fn is not None and len(calls) == 2
    y.sum().backward()
    assert calls == [True, True, True]  # recomputed once, with grad on
    expected = np.cos(np.exp(x.detach().numpy()) * 2) * 2 * np.exp(x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_tuple_outputs_and_non_tensors():
    def segment(a, b):
        return a * b, (a + b).exp(), "label"

    a = dt.tensor(np.array([0.5, -1.0]), requires_grad=True)
    b = dt.tensor(np.array([2.0, 0.25]), requires_grad=True)
    p, q, label = checkpoint(segment, a, b)
    assert label == "label"
    (p.sum() * 3 + q.sum()).backward()
    e = np.exp(a.detach().numpy() + b.detach().numpy())
    np.testing.assert_allclose(a.grad.numpy(), 3 * b.detach().numpy() + e, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), 3 * a.detach().numpy() + e, rtol=1e-12)


def test_no_grad_mode_returns_plain_outputs():
    with dt.no_grad():
        y = checkpoint(lambda x: x * 2, dt.ones(3, requires_grad=True))
    assert y.grad_fn is None


def test_in_place_change_of_an_input_is_refused():
    x = dt.tensor(np.ones(3), requires_grad=True)
    h = x * 1.0
    y = checkpoint(lambda t: t * t, h)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


def test_checkpoint_sequential_matches_the_plain_model():
    x_np = np.random.default_rng(1).standard_normal((4, 6))
    plain, ckpt = _mlp(2).eval(), _mlp(2).eval()
    x1 = dt.tensor(x_np, requires_grad=True)
    x2 = dt.tensor(x_np, requires_grad=True)
    F.mse_loss(plain(x1), dt.zeros(4, 3, dtype=dt.float64)).backward()
    out = checkpoint_sequential(ckpt, 3, x2, use_reentrant=False)
    F.mse_loss(out, dt.zeros(4, 3, dtype=dt.float64)).backward()
    (pg1, xg1), (pg2, xg2) = _grads(plain, x1), _grads(ckpt, x2)
    np.testing.assert_allclose(xg2, xg1, rtol=1e-12)
    for a, b in zip(pg1, pg2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_bad_options():
    with pytest.raises(ValueError, match="context_fn"):
        checkpoint(lambda x: x, dt.ones(2), context_fn=lambda: None)
    with pytest.raises(ValueError, match="determinism_check"):
        checkpoint(lambda x: x, dt.ones(2), determinism_check="strict")
    with pytest.raises(ValueError, match="use_reentrant"):
        checkpoint(lambda x: x, dt.ones(2), use_reentrant="yes")
    x = dt.ones(2, requires_grad=True)
    for options in ({"determinism_check": "none"}, {"debug": True}, {"use_reentrant": True}):
        checkpoint(lambda t: t * 2, x, **options).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])
    with pytest.raises(ValueError, match="unexpected keyword"):
        checkpoint_sequential([lambda x: x], 1, dt.ones(2), foo=1)


def test_gradients_match_torch(torch):
    x_np = np.random.default_rng(2).standard_normal((3, 4))
    w_np = np.random.default_rng(3).standard_normal((4, 4))

    def ours(x, w):
        return (x @ w).tanh() @ w

    x = dt.tensor(x_np, requires_grad=True)
    w = dt.tensor(w_np, requires_grad=True)
    checkpoint(ours, x, w).sum().backward()
    tx = torch.tensor(x_np, requires_grad=True)
    tw = torch.tensor(w_np, requires_grad=True)
    torch.utils.checkpoint.checkpoint(
        lambda a, b: (a @ b).tanh() @ b, tx, tw, use_reentrant=False
    ).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


# ---- review r5: one recomputation for all outputs, hooks once -------------------------------
def _count_accumulations(module) -> dict:
    """A post-accumulate hook per parameter (DDP starts its all-reduce from these)."""
    counts = {}
    for name, p in module.named_parameters():
        counts[name] = 0

        def hook(param, name=name):
            counts[name] += 1

        p.register_post_accumulate_grad_hook(hook)
    return counts


class _TwoHeads(nn.Module):
    """A shared layer used by two checkpointed segments (ALBERT-style) plus tuple outputs."""

    def __init__(self, ck: bool):
        super().__init__()
        dt.manual_seed(4)
        self.lin = nn.Linear(4, 4).double()
        self.out = nn.Linear(4, 2).double()
        self.ck, self.recomputes = ck, 0

    def block(self, h):
        if dt.is_grad_enabled():
            self.recomputes += 1
        a = self.lin(h)
        return a, (a.tanh() * 2, [self.out(a)])

    def forward(self, x):
        run = (lambda f, *a: checkpoint(f, *a)) if self.ck else (lambda f, *a: f(*a))
        a, (b, [c]) = run(self.block, x)
        d, (e, _) = run(self.block, b)  # the same parameters again
        return a.sum() + (b**2).sum() + c.sum() + (d * e).sum()


def test_tuple_outputs_recompute_once_and_hooks_fire_once_per_parameter():
    x_np = np.random.default_rng(5).standard_normal((3, 4))
    plain, ckpt = _TwoHeads(False), _TwoHeads(True)
    counts_plain, counts = _count_accumulations(plain), _count_accumulations(ckpt)
    plain(dt.tensor(x_np)).backward()  # no input requires grad: parameters only
    ckpt(dt.tensor(x_np)).backward()
    assert (
        counts == counts_plain == {"lin.weight": 1, "lin.bias": 1, "out.weight": 1, "out.bias": 1}
    )
    assert ckpt.recomputes == 2 + 2  # two forwards, one recomputation per segment
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_nested_checkpoints_match_the_plain_run():
    dt.manual_seed(6)
    lin1, lin2 = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    counts = _count_accumulations(nn.ModuleList([lin1, lin2]))

    def inner(h):
        return lin2(h).tanh()

    def outer(h, ck):
        h = lin1(h).sin()
        return (checkpoint(inner, h) if ck else inner(h)) * h

    x_np = np.random.default_rng(7).standard_normal((2, 3))
    grads = []
    for ck in (False, True):
        x = dt.tensor(x_np, requires_grad=True)
        lin1.zero_grad(), lin2.zero_grad()
        y = checkpoint(outer, x, ck) if ck else outer(x, ck)
        (y**2).sum().backward()
        grads.append(
            [x.grad.numpy()] + [p.grad.numpy() for p in (*lin1.parameters(), *lin2.parameters())]
        )
    assert set(counts.values()) == {2}  # once per backward, two backward passes
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_outputs_do_not_require_grad_when_nothing_does():
    y = checkpoint(lambda t: (t * 2, {"k": t + 1}), dt.ones(3))
    assert not y[0].requires_grad and not y[1]["k"].requires_grad
    lin = nn.Linear(3, 1)
    out = checkpoint(lambda t: (lin(t), t.argmax(-1)), dt.ones(2, 3))
    assert out[0].requires_grad and not out[1].requires_grad  # a parameter inside does


# ---- nested, dict and namedtuple outputs -----------------------------------------------------
_Pair = collections.namedtuple("_Pair", "first second")


def _structured(a, w):
    h = (a @ w).tanh()
    return {"pair": _Pair(h * 3, [h.exp(), "tag"]), "n": 2, "d": collections.OrderedDict(z=h * h)}


def _structured_loss(out):
    assert isinstance(out["pair"], _Pair) and isinstance(out["d"], collections.OrderedDict)
    assert out["pair"].second[1] == "tag" and out["n"] == 2
    return out["pair"].first.sum() + (out["pair"].second[0] * 0.5).sum() + out["d"]["z"].sum()


def test_structured_outputs_match_the_plain_run():
    rng = np.random.default_rng(8)
    x_np, w_np = rng.standard_normal((2, 3)), rng.standard_normal((3, 3))
    results = []
    for ck in (False, True):
        x, w = dt.tensor(x_np, requires_grad=True), dt.tensor(w_np, requires_grad=True)
        out = checkpoint(_structured, x, w) if ck else _structured(x, w)
        (_structured_loss(out) + x.sum()).backward()  # mixed with the outer graph
        results.append((x.grad.numpy(), w.grad.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_structured_outputs_match_torch(torch):
    rng = np.random.default_rng(9)
    x_np, w_np = rng.standard_normal((2, 3)), rng.standard_normal((3, 3))
    x, w = dt.tensor(x_np, requires_grad=True), dt.tensor(w_np, requires_grad=True)
    _structured_loss(checkpoint(_structured, x, w)).backward()
    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    _structured_loss(
        torch.utils.checkpoint.checkpoint(_structured, tx, tw, use_reentrant=False)
    ).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


# ---- arguments anywhere; closures -----------------------------------------------------------
def _scaled(a, pair, scale):
    return a * scale + pair[0] * pair[1]


def test_tensors_in_kwargs_and_nested_args_also_used_outside():
    x_np = np.array([0.5, -1.0, 2.0])
    results = []
    for ck in (False, True):
        w = dt.tensor(x_np, requires_grad=True)
        x = dt.tensor(x_np, requires_grad=True)
        y, z = w * 2, w.exp()
        args = (x, [z, y])
        out = checkpoint(_scaled, *args, scale=y) if ck else _scaled(*args, scale=y)
        (out.sum() + y.sum() + (z * 3).sum()).backward()
        results.append((x.grad.numpy(), w.grad.numpy()))
    np.testing.assert_allclose(results[0][0], [1.0, -2.0, 4.0])  # = y
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_kwargs_tensor_used_outside_matches_torch(torch):
    x_np = np.array([0.5, -1.0, 2.0])
    w, x = dt.tensor(x_np, requires_grad=True), dt.tensor(x_np, requires_grad=True)
    y = w * 2
    (checkpoint(lambda a, scale: a * scale, x, scale=y).sum() + y.sum()).backward()
    tw, tx = torch.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    ty = tw * 2
    out = torch.utils.checkpoint.checkpoint(
        lambda a, scale: a * scale, tx, scale=ty, use_reentrant=False
    )
    (out.sum() + ty.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())


def test_a_tensor_passed_twice_and_a_leaf_argument_also_in_the_closure():
    x = dt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    checkpoint(lambda a, b: a * b * x, x, x).sum().backward()  # x**3
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.array([1.0, 4.0]))


def test_a_captured_non_leaf_is_refused_with_a_clear_error():
    w = dt.tensor(np.array([0.5, -1.0]), requires_grad=True)
    y = w * 2
    x = dt.tensor(np.array([1.0, 3.0]), requires_grad=True)
    out = checkpoint(lambda a: a * y, x)  # y captured, not passed
    with pytest.raises(RuntimeError, match="Pass it as an argument"):
        (out.sum() + y.sum()).backward()
    assert w.grad is None  # nothing was backpropagated twice
    y = w * 2
    out = checkpoint(lambda a, scale: a * scale, x, scale=y)  # the fix the error names
    (out.sum() + y.sum()).backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * x.detach().numpy() + 2)


def test_a_recomputation_that_changes_structure_is_refused():
    state = {"calls": 0}

    def flaky(a):
        state["calls"] += 1
        return (a * 2, a * 3) if state["calls"] == 1 else (a * 2,)

    out = checkpoint(flaky, dt.ones(2, requires_grad=True))
    with pytest.raises(RuntimeError, match="differs from its first run"):
        out[0].sum().backward()


def test_retain_graph_recomputes_again():
    x = dt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = checkpoint(lambda a: a**2, x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.array([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="a second time"):
        y.backward()


# ---- autograd.grad -------------------------------------------------------------------------
def test_autograd_grad_leaves_parameters_grad_alone():
    dt.manual_seed(10)
    lin = nn.Linear(3, 1).double()
    x = dt.tensor(np.array([[1.0, 2.0, -1.0]]), requires_grad=True)
    (gx,) = dt.autograd.grad(checkpoint(lin, x).sum(), [x])
    np.testing.assert_allclose(gx.numpy(), lin.weight.detach().numpy())
    (gw,) = dt.autograd.grad(checkpoint(lin, x).sum(), [lin.weight])  # a parameter inside
    np.testing.assert_allclose(gw.numpy(), x.detach().numpy())
    assert lin.weight.grad is None and lin.bias.grad is None and x.grad is None
    checkpoint(lin, x).sum().backward(inputs=[x])  # backward(inputs=): only x
    assert lin.weight.grad is None and x.grad is not None


def test_autograd_grad_matches_torch(torch):
    dt.manual_seed(11)
    lin = nn.Linear(3, 2).double()
    tl = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(lin.weight.detach().numpy()))
        tl.bias.copy_(torch.tensor(lin.bias.detach().numpy()))
    x_np = np.array([[1.0, 2.0, -1.0]])
    x, tx = dt.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    ours = dt.autograd.grad((checkpoint(lin, x).tanh()).sum(), [x, lin.weight])
    theirs = torch.autograd.grad(
        torch.utils.checkpoint.checkpoint(tl, tx, use_reentrant=False).tanh().sum(), [tx, tl.weight]
    )
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    assert lin.weight.grad is None and tl.weight.grad is None


# ---- autocast and random state ----------------------------------------------------------------
def test_recomputation_runs_under_the_forward_autocast_state():
    dt.manual_seed(12)
    lin = nn.Linear(8, 8)
    x_np = np.random.default_rng(13).standard_normal((4, 8)).astype(np.float32)
    seen, grads = [], []

    def segment(h):
        y = lin(h)
        seen.append(str(y.dtype))
        return y.tanh()

    for ck in (False, True):
        lin.zero_grad()
        x = dt.tensor(x_np, requires_grad=True)
        with dt.amp.autocast("cpu", dtype=dt.float16):
            y = checkpoint(segment, x) if ck else segment(x)
        y.float().sum().backward()  # outside the region, as PyTorch advises
        grads.append((x.grad.numpy(), lin.weight.grad.numpy()))
    assert seen == ["float16"] * 3  # plain, first run, recomputation
    for a, b in zip(*grads):
        np.testing.assert_array_equal(b, a)
    with dt.amp.autocast("cpu", dtype=dt.float16):  # backward inside: the same
        y = checkpoint(segment, dt.tensor(x_np, requires_grad=True))
        with dt.amp.autocast("cpu", enabled=False):
            y.float().sum().backward()
    assert seen[-1] == "float16"


def test_dropout_masks_are_reproducible_with_manual_seed():
    x_np = np.ones((20, 6))
    grads = []
    for _ in range(2):
        model = _mlp(14)
        x = dt.tensor(x_np, requires_grad=True)
        dt.manual_seed(15)
        checkpoint(model, x).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.fixture
def emulated_cuda_rng(monkeypatch):
    """CUDA on the CPU (``tests/runtime/cuda_emulator``) with a cupy random module that has
    cupy's stream API: a current RandomState that ``seed`` replaces and the draws advance."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "runtime"))
    import cuda_emulator

    cuda_emulator.install(monkeypatch)
    import cupy

    class RandomState:
        def __init__(self, seed=None):
            self.rng = np.random.default_rng(seed)

    current = [RandomState(0)]

    def draw(method):
        def call(a, b, shape, dtype=None):
            return cuda_emulator._wrap(getattr(current[0].rng, method)(a, b, shape).astype(dtype))

        return call

    monkeypatch.setattr(
        cupy,
        "random",
        types.SimpleNamespace(
            RandomState=RandomState,
            get_random_state=lambda: current[0],
            set_random_state=lambda state: current.__setitem__(0, state),
            seed=lambda seed: current.__setitem__(0, RandomState(seed)),
            uniform=draw("uniform"),
            normal=draw("normal"),
        ),
    )
    return current


def test_cuda_dropout_masks_replay_and_are_reproducible(emulated_cuda_rng):
    def segment(a):
        return F.dropout(a, 0.5, training=True) * 3

    results = []
    for seed in (0, 0, 1):
        dt.manual_seed(seed)
        x = dt.ones(64, device="cuda", dtype=dt.float64, requires_grad=True)
        y = checkpoint(segment, x)
        y.sum().backward()
        mask = y.detach().cpu().numpy()
        # the recomputation drew the forward's mask: the gradient is the output itself
        np.testing.assert_array_equal(x.grad.cpu().numpy(), mask)
        assert 0 < np.count_nonzero(mask) < 64
        results.append(mask)
    np.testing.assert_array_equal(results[0], results[1])  # dt.manual_seed decides it
    assert not np.array_equal(results[0], results[2])
