"""The engine: accumulation, hooks, freed graphs, version counters, deep graphs, Function."""

import numpy as np
import pytest

import dtrain as dt


def test_gradient_accumulates_across_backward_calls():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])


def test_shared_input_sums_gradients_from_every_use():
    x = dt.tensor(3.0, requires_grad=True)
    y = x * x + x * 2 + x
    y.backward()
    assert x.grad.item() == pytest.approx(2 * 3 + 2 + 1)


def test_two_leaves_fed_the_same_array_do_not_alias():
    a = dt.tensor([1.0, 2.0], requires_grad=True)
    b = dt.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_user_gradient_is_not_aliased_by_leaf_grad():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    seed = dt.tensor([5.0, 6.0])
    x.backward(seed)
    x.grad.zero_()
    np.testing.assert_array_equal(seed.numpy(), [5.0, 6.0])


def _recording_clone(monkeypatch) -> list:
    """Clone's backward (a pass-through: it returns its incoming gradient) made to record
    the arrays it hands on."""
    from dtrain._tensor.ops.copy import Clone

    handed = []

    def backward(self, grad):
        handed.append(grad)
        return (grad,)

    monkeypatch.setattr(Clone, "backward", backward)
    return handed


def test_a_passed_on_gradient_the_engine_owns_is_kept_without_a_copy(monkeypatch):
    # A cast to the dtype a gradient already has passes it on as it is; the engine made it
    # (Mul's backward), so the leaf keeps that array as its .grad.
    handed = _recording_clone(monkeypatch)
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    (w.clone() * 3).sum().backward()
    assert w.grad._array is handed[0]
    (w.clone() * 3).sum().backward()  # accumulates in place into the array it owns
    np.testing.assert_array_equal(w.grad.numpy(), [6.0, 6.0])


def test_a_passed_on_gradient_someone_else_holds_is_copied(monkeypatch):
    handed = _recording_clone(monkeypatch)
    # the user's seed passed straight through
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    seed = dt.tensor([5.0, 6.0])
    w.clone().backward(seed)
    assert w.grad._array is not handed[-1]
    w.grad.zero_()
    np.testing.assert_array_equal(seed.numpy(), [5.0, 6.0])
    # a hook saw (and kept) the gradient on its way; the second backward accumulates
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    for _ in range(2):
        h = w.clone()
        h.register_hook(lambda grad: seen.append(grad))
        (h * 2).sum().backward()
    np.testing.assert_array_equal(seen[0].numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(w.grad.numpy(), [4.0, 4.0])
    # autograd.grad returns it to the caller, while the lookup into m, which adds m's other
    # gradients into its own in place when the engine owns them, runs after the clone
    from dtrain.nn import functional as F

    w = dt.ones(3, 2, requires_grad=True)
    m = w * 3
    h = m.clone()
    (grad_h,) = dt.autograd.grad(F.embedding(dt.tensor([0, 2, 2]), m).sum() + (h * 2).sum(), [h])
    np.testing.assert_array_equal(grad_h.numpy(), np.full((3, 2), 2.0))


def test_a_gradient_a_function_keeps_and_passes_on_is_never_written_into():
    class Record(dt.autograd.Function):
        seen = []  # noqa: RUF012 - the test's record

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            Record.seen.append(grad)
            return grad

    w = dt.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(2):  # the second backward adds into w.grad in place
        (Record.apply(w) * 3).sum().backward()
    np.testing.assert_array_equal(Record.seen[0].numpy(), [3.0, 3.0])


def test_one_gradient_passed_on_to_two_inputs_is_not_shared_by_their_grads(monkeypatch):
    from dtrain._tensor.ops.copy import Clone

    # a pass-through that hands its one incoming array to both its inputs
    class Pair(Clone):
        def forward(self, a, b):
            return a + b

        def backward(self, grad):
            return grad, grad

    a = dt.tensor([1.0, 2.0], requires_grad=True)
    b = dt.tensor([3.0, 4.0], requires_grad=True)
    (Pair.apply(a, b) * 3).sum().backward()
    a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [3.0, 3.0])


def _packing_op():
    """An op over three (2, 3) pieces whose backward writes their gradients into one new
    (2, 9) array and returns views of it, as attention does for a split qkv projection."""
    from dtrain._tensor.autograd.op import Op

    class Pack(Op):
        packed = []  # noqa: RUF012 - the test's record

        def forward(self, a, b, c):
            return a + b + c

        def backward(self, grad):
            packed = np.empty((2, 9), grad.dtype)
            for i in range(3):
                packed[:, 3 * i : 3 * i + 3] = grad * (i + 1)
            Pack.packed.append(packed)
            return tuple(packed[:, 3 * i : 3 * i + 3] for i in range(3))

    return Pack


def test_split_pieces_whose_gradients_lie_in_one_array_are_given_that_array():
    # x.split's pieces go through views (reshape, transpose) into an op that writes their
    # gradients into one array in the split's layout: that array is x's gradient as it is.
    pack = _packing_op()
    x = dt.tensor(np.arange(18.0).reshape(2, 9), requires_grad=True)
    pieces = [p.reshape(2, 1, 3).transpose(0, 2).transpose(0, 2).reshape(2, 3)
              for p in x.split(3, dim=1)]  # fmt: skip
    (pack.apply(*pieces) * 1.0).sum().backward()
    assert x.grad._array is pack.packed[-1]
    np.testing.assert_array_equal(x.grad.numpy(), np.repeat([[1.0, 2.0, 3.0]], 2, 0).repeat(3, 1))
    # the pieces out of order: one new array, as before
    x.grad = None
    a, b, c = x.split(3, dim=1)
    (pack.apply(b, a, c) * 1.0).sum().backward()
    assert x.grad._array is not pack.packed[-1]
    np.testing.assert_array_equal(x.grad.numpy()[0], [2, 2, 2, 1, 1, 1, 3, 3, 3])


def test_views_of_a_gradient_someone_else_holds_are_never_an_inputs_own():
    # cat's backward hands each input a slice of the incoming gradient: here the user's
    # seed, so x's gradient must be an array of its own
    x = dt.tensor(np.arange(6.0), requires_grad=True)
    seed = dt.tensor(np.arange(6.0) * 10)
    a, b = x.split(3)
    dt.cat([a.reshape(3, 1), b.reshape(3, 1)]).reshape(6).backward(seed)
    x.grad.zero_()
    np.testing.assert_array_equal(seed.numpy(), np.arange(6.0) * 10)


def test_a_broadcast_view_of_a_gradient_is_never_written_into():
    # sum's backward broadcasts its (owned) gradient: its elements overlap, so the op that
    # runs after it is not offered it to add into in place
    twice = _adding_op()
    w = dt.ones(3, 2, requires_grad=True)
    m = w * 3
    (twice.apply(m).sum() + m.sum() * 2).backward()
    (offer,) = twice.offers
    assert offer is not None and offer[1] is False
    np.testing.assert_array_equal(w.grad.numpy(), np.full((3, 2), 3 * (2 + 2.0)))
    # nor kept as a leaf's .grad, which the next backward adds into in place
    x = dt.ones(3, requires_grad=True)
    for _ in range(2):
        (x.sum() * 2).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_read_only_broadcasts_reaching_a_leaf_are_copied():
    # numpy's broadcast views are read-only, 0-d ones too (no zero stride to tell them by):
    # a leaf keeping one as its .grad could not add the next backward's gradient into it.
    w = dt.tensor([1.5], requires_grad=True)
    for _ in range(2):
        (w.clone().squeeze().mean() * 0.5).backward()
        ((w - 1.0).reshape(()).sum() * 0.5).backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0])
    scalar = dt.tensor(1.5, requires_grad=True)
    for _ in range(2):
        ((scalar - 1.0).mean() * 0.5).backward()
    assert scalar.grad.item() == 1.0
    dt.optim.SGD([w, scalar], lr=0.1).zero_grad(set_to_none=False)
    assert w.grad.item() == scalar.grad.item() == 0.0


def test_a_leaf_keeps_only_a_contiguous_gradient():
    # a transposed view passed on by a pass-through (x + 1) is copied for the leaf
    w = dt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    ((w + 1).T * dt.ones(3, 2)).sum().backward()
    assert w.grad._array.flags.c_contiguous
    np.testing.assert_array_equal(w.grad.numpy(), np.ones((2, 3)))


def test_handing_views_to_many_inputs_is_checked_in_linear_time(monkeypatch):
    # cat's backward gives each of its n inputs a view of one gradient: whether each input
    # alone holds its view stops at the second holder, not after all n
    from dtrain._tensor.autograd import engine

    calls = []
    checked = engine._shares_memory
    monkeypatch.setattr(engine, "_shares_memory", lambda a, b: calls.append(1) or checked(a, b))
    n = 300
    x = dt.ones(n, 4, requires_grad=True)
    (dt.cat([x[i : i + 1] * 1.0 for i in range(n)]) * 2).sum().backward()
    assert len(calls) < 10 * n
    np.testing.assert_array_equal(x.grad.numpy(), np.full((n, 4), 2.0))


def test_a_leaf_keeps_a_plain_copy_of_a_view_of_an_owned_gradient():
    x = dt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    (x.T * 2).sum().backward()  # transpose's backward: a transposed view of a new array
    assert x.grad._array.flags.c_contiguous
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_non_scalar_backward_needs_gradient():
    x = dt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="needs a gradient"):
        (x * 2).backward()


def test_gradient_shape_must_match():
    x = dt.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        (x * 2).backward(dt.ones(2))


def test_backward_without_requires_grad_explains():
    with pytest.raises(RuntimeError, match="requires_grad=True"):
        dt.ones(2).sum().backward()


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    expected = 2 * (np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


def test_no_grad_records_nothing_and_enable_grad_restores():
    x = dt.ones(2, requires_grad=True)
    with dt.no_grad():
        y = x * 2
        with dt.enable_grad():
            z = x * 2
    assert y.grad_fn is None and not y.requires_grad
    assert z.grad_fn is not None
    assert dt.is_grad_enabled()

    @dt.no_grad()
    def f(t):
        return t * 3

    assert f(x).grad_fn is None


def test_leaf_and_grad_fn_attributes():
    x = dt.ones(2, requires_grad=True)
    y = x * 2
    assert x.is_leaf and x.grad_fn is None
    assert not y.is_leaf and y.requires_grad
    assert "MulBackward" in repr(y)
    assert y.detach().grad_fn is None


def test_deep_chain_of_100000_ops_backpropagates():
    x = dt.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0
    del y  # freeing a long chain must not overflow the C stack either


def test_deep_chain_freed_without_backward():
    x = dt.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    del y


def test_in_place_change_of_saved_tensor_raises():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    z = y.exp()  # exp saves its output
    z.add_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        z.sum().backward()


def test_in_place_change_of_saved_input_raises():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    w = dt.tensor([3.0, 4.0], requires_grad=True)
    y = x * 1
    z = y * w  # saves y for w's gradient
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an in-place"):
        z.sum().backward()


def test_in_place_on_unsaved_tensor_is_fine_and_recorded():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.add_(x)  # y = 3x, recorded
    y.mul_(2)  # y = 6x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])
    assert y._version[0] == 2


def test_in_place_on_leaf_requiring_grad_is_refused_outside_no_grad():
    w = dt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.add_(1)
    with dt.no_grad():
        w.sub_(dt.tensor([0.5, 0.25]))
    np.testing.assert_allclose(w.detach().numpy(), [0.5, 0.75])


def test_views_share_the_version_counter():
    x = dt.zeros(2, 3)
    v = x[0]
    v.fill_(1.0)
    assert x._version[0] == 1 and x.numpy()[0].sum() == 3
    r = x.reshape(6)
    r.add_(1)
    assert x._version[0] == 2 and x.numpy().sum() == 3 + 6


def test_register_hook_on_leaf_can_replace_gradient():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    (x * 3).sum().backward()
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])


def test_register_hook_on_non_leaf_and_handle_remove():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    handle = y.register_hook(lambda g: g * 0)
    (y * 5).sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0])
    handle.remove()
    x.grad = None
    z = x * 2
    (z * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [10.0, 10.0])


def test_retain_grad_keeps_non_leaf_gradient():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    y.retain_grad()
    (y * 3).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [3.0, 3.0])


def test_post_accumulate_hook_fires_once_after_all_contributions():
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.numpy().copy()))
    x = dt.tensor([3.0, 4.0])
    loss = (w * x).sum() + (w * w).sum() + w.sum()  # three uses of w
    loss.backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [3 + 2 + 1, 4 + 4 + 1])


def test_post_accumulate_hook_order_follows_backward():
    # The last layer's gradient is complete before the first layer's: DDP relies on it.
    w1 = dt.ones(2, 2, requires_grad=True)
    w2 = dt.ones(2, 2, requires_grad=True)
    order = []
    w1.register_post_accumulate_grad_hook(lambda p: order.append("w1"))
    w2.register_post_accumulate_grad_hook(lambda p: order.append("w2"))
    ((dt.ones(1, 2) @ w1).relu() @ w2).sum().backward()
    assert order == ["w2", "w1"]


def test_autograd_grad_returns_without_touching_dot_grad():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = dt.tensor([3.0], requires_grad=True)
    out = (x * x).sum() * y
    gx, gy = dt.autograd.grad(out, [x, y])
    np.testing.assert_allclose(gx.numpy(), [6.0, 12.0])
    np.testing.assert_allclose(gy.numpy(), [5.0])
    assert x.grad is None and y.grad is None


def test_autograd_grad_unused_input():
    x = dt.ones(2, requires_grad=True)
    unused = dt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        dt.autograd.grad(x.sum(), [x, unused])
    _, g = dt.autograd.grad(x.sum(), [x, unused], allow_unused=True)
    assert g is None


def test_autograd_grad_of_non_leaf():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    (gh,) = dt.autograd.grad((h * h).sum(), h)
    np.testing.assert_allclose(gh.numpy(), [6.0, 12.0])


def test_create_graph_is_refused_clearly():
    x = dt.ones(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="create_graph"):
        dt.autograd.grad(x.sum(), x, create_graph=True)


def test_backward_inputs_restricts_accumulation():
    a = dt.ones(2, requires_grad=True)
    b = dt.ones(2, requires_grad=True)
    (a * b * 2).sum().backward(inputs=[a])
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 2.0])
    assert b.grad is None


class Cube(dt.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x**3 * scale

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2 * ctx.scale, None


def test_custom_function_forward_and_backward():
    x = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    y = Cube.apply(x, 2.0)
    assert "CubeBackward" in repr(y)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 24.0])
    assert dt.autograd.gradcheck(
        lambda t: Cube.apply(t, 0.5), [dt.randn(3, dtype=dt.float64, requires_grad=True)]
    )


def test_custom_function_saved_tensor_version_check():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    base = x * 1
    y = Cube.apply(base, 1.0)
    base.add_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_custom_function_wrong_gradient_count():
    class Bad(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, grad):
            return grad

    a = dt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="returned 1 gradient"):
        Bad.apply(a, a).sum().backward()


def test_gradcheck_detects_a_wrong_backward():
    class Wrong(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, grad):
            return grad  # should be 2x * grad

    x = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    with pytest.raises(dt.autograd.GradcheckError, match="mismatch"):
        dt.autograd.gradcheck(Wrong.apply, [x])


def test_cpu_cuda_mix_is_a_clear_error(monkeypatch):
    # Without a GPU, stand in a foreign array type for the CUDA side of the check.
    class FakeCuda(np.ndarray):
        pass

    a = dt.ones(2)
    b = dt.Tensor(np.ones(2).view(FakeCuda))
    with pytest.raises(RuntimeError, match="same device"):
        a + b


def test_gradcheck_handles_non_contiguous_inputs():
    array = np.asfortranarray(np.random.default_rng(0).random((3, 2)))
    x = dt.from_numpy(array).requires_grad_()
    assert dt.autograd.gradcheck(lambda t: (t * t).sum(), [x])


def test_pass_through_views_reaching_leaves_are_copied():
    # Add hands the same gradient to both sides; reshape and permute pass views of it on.
    a = dt.ones(2, 3, requires_grad=True)
    b = dt.ones(3, 2, requires_grad=True)
    c = dt.ones(6, requires_grad=True)
    (a + b.T + c.reshape(2, 3)).sum().backward()
    a.grad.mul_(5)
    for g in (b.grad, c.grad):
        np.testing.assert_array_equal(g.numpy(), np.ones(g.shape))
    assert a.grad.numpy().flags.writeable and b.grad.numpy().flags.writeable


def test_slice_gradients_are_gathered_before_they_are_added(monkeypatch):
    # Split pieces, overlapping slices, an int index and a whole-array use of one input:
    # its gradient is the sum of all of them, and the pieces build one array, not one each.
    from dtrain._tensor.autograd import slice_grads

    made = []
    dense = slice_grads.SliceGrads.dense
    monkeypatch.setattr(slice_grads.SliceGrads, "dense", lambda s: made.append(1) or dense(s))
    values = np.arange(24.0).reshape(4, 6)
    x = dt.tensor(values, requires_grad=True)
    a, b, c = x.split(2, dim=1)
    y = (a * 1.0).sum() + (b * 2.0).sum() + (c * 3.0).sum()
    y = y + (x[1:3] * 10.0).sum() + (x[2:4, ::2] * 100.0).sum() + x[0].sum() * 1000.0
    y.backward()
    expected = np.tile(np.repeat([1.0, 2.0, 3.0], 2), (4, 1))
    expected[1:3] += 10.0
    expected[2:4, ::2] += 100.0
    expected[0] += 1000.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    assert made == [1]
    # With a dense use as well (the pieces meet an ordinary gradient) and retain_graph.
    z = x.split(3, dim=0)[1].sum() * 2.0 + (x * 5.0).sum()
    z.backward(retain_graph=True)
    z.backward()
    again = expected + 2 * (np.full((4, 6), 5.0) + np.pad(np.full((1, 6), 2.0), ((3, 0), (0, 0))))
    np.testing.assert_array_equal(x.grad.numpy(), again)


def test_split_pieces_fill_the_gradient_and_gaps_stay_zero():
    from dtrain._tensor.autograd.slice_grads import SliceGrads

    values = np.arange(30.0).reshape(5, 6)
    for sections, dim in (([1, 3, 2], 1), ([2, 3], 0), (4, 1)):
        x = dt.tensor(values, requires_grad=True)
        pieces = x.split(sections, dim=dim)
        sum(((p * (i + 1)).sum() for i, p in enumerate(pieces)), dt.tensor(0.0)).backward()
        expected = np.concatenate(
            [np.full(p.shape, i + 1.0) for i, p in enumerate(pieces)], axis=dim
        )
        np.testing.assert_array_equal(x.grad.numpy(), expected)
    x = dt.tensor(values, requires_grad=True)
    (x[0:2].sum() + x[3:5].sum() * 2).backward()  # row 2 is in no piece: its gradient is 0
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [1, 1, 0, 2, 2])
    assert SliceGrads((5, 6), (slice(0, 2),), None)._tiles() is False
    covering = SliceGrads((5, 6), (slice(None), slice(0, 4)), None)
    covering.parts.append(((slice(None), slice(4, None)), None))
    assert covering._tiles() is True


def _adding_op():
    """An op ``y = 2 x`` that adds the gradient already sent to ``x`` itself, and records
    what the engine offered it."""
    from dtrain._tensor.autograd.op import Op

    offers = []

    class Twice(Op):
        adds_pending = True

        def forward(self, x):
            return 2 * x

        def backward(self, grad):
            return (2 * grad,)

        def backward_adding(self, grad, pending):
            offers.append(pending[0])
            if pending[0] is None:
                return self.backward(grad), (False,)
            sent, owned = pending[0]
            if owned:
                sent += 2 * grad  # ours to write: in place
                return (sent,), (True,)
            return (sent + 2 * grad,), (True,)

    Twice.offers = offers
    return Twice


def test_an_op_adds_the_gradient_already_sent_to_its_input():
    twice = _adding_op()
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3  # h's gradient: 1 from the residual, then 2 from twice (the last to run)
    (h + twice.apply(h)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [9.0, 9.0])
    (offer,) = twice.offers
    # the residual passed its incoming gradient on: not the engine's to write into
    assert offer is not None and offer[1] is False
    np.testing.assert_array_equal(offer[0], [1.0, 1.0])


def test_an_owned_pending_gradient_is_added_in_place_and_nothing_else_changes():
    twice = _adding_op()
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    # Mul runs first (the walk takes the last input first) and makes a new array: owned
    (twice.apply(h) + h * h).sum().backward()
    (offer,) = twice.offers
    assert offer[1] is True
    np.testing.assert_array_equal(x.grad.numpy(), 3 * (2 * 3 * np.array([1.0, 2.0]) + 2))


def test_nothing_is_offered_without_a_pending_gradient():
    twice = _adding_op()
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    twice.apply(x * 3).sum().backward()
    assert all(offer is None for offer in twice.offers)
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0])


def test_layer_norm_on_a_residual_stream_adds_the_stream_gradient():
    from dtrain.nn import functional as F

    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    w = dt.tensor(rng.standard_normal(5), requires_grad=True)

    def block(x, w):
        h = x * 1.5
        return h + F.layer_norm(h, (5,), w) * 2

    assert dt.autograd.gradcheck(block, [x, w])


def test_a_tied_embedding_table_gets_both_gradients():
    from dtrain.nn import functional as F

    rng = np.random.default_rng(1)
    table = rng.standard_normal((6, 4))
    idx = dt.tensor([[0, 3, 3], [5, 1, 0]])
    grads = {}
    for tied in (True, False):
        for padding_idx in (None, 3):
            emb = dt.tensor(table, requires_grad=True)
            head = emb if tied else dt.tensor(table, requires_grad=True)
            logits = F.linear(F.embedding(idx, emb, padding_idx=padding_idx), head)
            (logits * logits).sum().backward()
            total = emb.grad.numpy() + (0 if tied else head.grad.numpy())
            grads[tied, padding_idx] = total
    for padding_idx in (None, 3):
        np.testing.assert_allclose(grads[True, padding_idx], grads[False, padding_idx])
    assert not np.allclose(grads[True, None], grads[True, 3])


def test_gradients_a_function_hands_back_are_never_written_into():
    # A user's backward may return an array it keeps, or one array for two inputs: the
    # engine must neither add into it in place (the lookup's scatter, a later backward's
    # accumulation) nor leave two leaves' .grad sharing it.
    from dtrain.nn import functional as F

    kept = dt.ones(4, 3)

    class Inject(dt.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            return w * 1.0

        @staticmethod
        def backward(ctx, grad):
            return kept

    class Both(dt.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            same = grad * 1.0
            return same, same

    w = dt.zeros(4, 3, requires_grad=True)
    idx = dt.tensor([0, 1, 1])
    for _ in range(2):  # the second backward accumulates into w.grad
        (Inject.apply(w).sum() + F.embedding(idx, w).sum()).backward()
    np.testing.assert_array_equal(kept.numpy(), np.ones((4, 3)))
    assert w.grad._array is not kept._array
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [4, 6, 2, 2])

    a = dt.zeros(4, 3, requires_grad=True)
    b = dt.zeros(4, 3, requires_grad=True)
    (F.embedding(idx, a).sum() + Both.apply(a, b).sum()).backward()
    np.testing.assert_array_equal(b.grad.numpy(), np.ones((4, 3)))
    assert a.grad._array is not b.grad._array


def test_a_view_taken_before_its_base_changed_in_place_gets_the_new_history():
    # v's values are 3x after y.mul_(3); so is its gradient (PyTorch rebases the view too)
    x = dt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = x * 2
    v = y[0:2]
    y.mul_(3)
    v.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 0.0, 0.0])
    # a reshape view, then a write over one of its elements: that one no longer depends on x
    x = dt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = x * 2
    v = y.reshape(2, 2)
    y[0] = 7.0
    (v * v).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 16.0, 24.0, 32.0])
    # a transposed view, backward() on the stale view itself
    x = dt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * 2
    v = y.t()
    y.clamp_(min=5.0)
    v.backward(dt.tensor([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0], [4.0, 8.0]])


def test_a_view_of_a_plain_buffer_filled_from_the_graph_takes_its_gradient():
    w = dt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    buffer = dt.zeros(2, 4)
    row = buffer[0]
    detached = buffer.detach()
    buffer[0] = w * 2
    (row * row).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [8.0, 16.0, 24.0, 32.0])
    assert not detached.requires_grad and not (detached * 2).requires_grad


def test_a_stale_expanded_view_is_refused_by_name():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    wide = y.expand(3, 2)
    y.mul_(3)
    with pytest.raises(RuntimeError, match="changed in place"):
        wide.sum()


def test_retain_grad_keeps_the_newest_value_and_counts_once():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    y.retain_grad()
    assert y.retains_grad and not x.retains_grad
    y.mul_(3)
    (y * 5).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [5.0, 5.0])
    np.testing.assert_array_equal(x.grad.numpy(), [30.0, 30.0])


def test_a_zero_dim_leaf_grad_is_an_array_in_place_ops_change():
    x = dt.tensor(2.0, requires_grad=True)
    optimizer = dt.optim.SGD([x], lr=0.0)
    for _ in range(3):
        optimizer.zero_grad(set_to_none=False)
        (x * x).backward()
        assert x.grad.item() == 4.0  # zeroed each time, not accumulated
    x.grad.mul_(2)
    assert x.grad.item() == 8.0
    (g,) = dt.autograd.grad(x.exp(), [x])
    g.add_(1)
    assert g.item() == pytest.approx(np.exp(2.0) + 1)


def test_one_gradient_per_output_or_a_clear_error():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    outputs = [x * 2, x * 3]
    with pytest.raises(ValueError, match=r"1 gradient\(s\) for 2 output"):
        dt.autograd.backward(outputs, dt.ones(2))
    dt.autograd.backward(outputs, [dt.ones(2), dt.ones(2)])
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 5.0])
