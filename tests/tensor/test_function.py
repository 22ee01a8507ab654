"""``autograd.Function``: argument binding, gradient counts, non-differentiable outputs,
``setup_context``; each case by hand and, where PyTorch is installed, against it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def scaled(lib: Any) -> type:
    """``x * scale`` with a tensor ``scale`` that may come by keyword or by default."""

    class Scaled(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale=None, offset=0.0):
            ctx.save_for_backward(x, scale)
            return x * scale + offset

        @staticmethod
        def backward(ctx, grad):
            x, scale = ctx.saved_tensors
            return grad * scale, grad * x, None

    return Scaled


def quantize(lib: Any) -> type:
    """A float output marked non-differentiable: used downstream, it is a constant."""

    class Quantize(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = (x * 4).detach() * 0 + 3.0
            ctx.mark_non_differentiable(out)
            return out

        @staticmethod
        def backward(ctx, grad):
            raise AssertionError("never called for a non-differentiable output")

    return Quantize


def test_a_tensor_passed_by_keyword_gets_its_gradient():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    s = dt.tensor([3.0, 4.0], requires_grad=True)
    out = scaled(dt).apply(x, scale=s)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(s.grad.numpy(), [1.0, 2.0])
    # only the keyword tensor requires grad: the output still does
    assert scaled(dt).apply(dt.tensor([1.0]), scale=dt.ones(1, requires_grad=True)).requires_grad


def test_keyword_and_default_binding_matches_torch(torch):
    def run(lib: Any) -> tuple:
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        s = lib.tensor([3.0, 4.0], requires_grad=True)
        scaled(lib).apply(x, offset=1.0, scale=s).sum().backward()
        return x.grad.tolist(), s.grad.tolist()

    assert run(dt) == _with_keywords(run, torch)


def test_needs_input_grad_covers_keyword_and_defaulted_arguments():
    seen = []

    class Record(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x, y=None, k=2.0):
            seen.append(ctx.needs_input_grad)
            return x * k

        @staticmethod
        def backward(ctx, grad):
            return grad * 2.0, None, None

    x = dt.ones(2, requires_grad=True)
    Record.apply(x, y=dt.ones(2))
    Record.apply(x)
    assert seen == [(True, False), (True,)]  # as PyTorch: a default left out is no input


def times(lib: Any, extra: tuple) -> type:
    """``x * alpha``, ``alpha`` defaulted; backward returns ``x``'s gradient, then ``extra``."""

    class Times(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha=2.0):
            ctx.alpha = alpha
            return x * alpha

        @staticmethod
        def backward(ctx, grad):
            return (grad * ctx.alpha, *extra)

    return Times


def test_a_defaulted_argument_left_out_is_no_input(torch):
    for extra in ((), (None,)):  # one gradient, or that and a trailing None
        grads = []
        for lib in (dt, torch):
            x = lib.tensor([1.0, 2.0], requires_grad=True)
            times(lib, extra).apply(x).sum().backward()
            grads.append(x.grad.tolist())
        assert grads[0] == grads[1] == [2.0, 2.0]


def test_a_defaulted_argument_may_get_a_trailing_none():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    times(dt, (None,)).apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_extra_trailing_nones_are_accepted_other_extras_are_not():
    def double(extra: tuple) -> type:
        class Double(dt.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return (grad * 2, *extra)

        return Double

    x = dt.tensor([1.0], requires_grad=True)
    double((None, None)).apply(x).sum().backward()
    assert x.grad.tolist() == [2.0]
    with pytest.raises(RuntimeError, match=r"returned 2 gradient\(s\) but forward took 1"):
        double((dt.ones(1),)).apply(x).sum().backward()


def test_too_few_gradients_name_both_counts():
    class Product(dt.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad

    a = dt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"returned 1 gradient\(s\) but forward took 2"):
        Product.apply(a, a).sum().backward()


def test_a_python_float_gradient_names_the_input():
    class Floaty(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, grad):
            return 1.0

    x = dt.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match=r"returned float as the gradient of input 0"):
        Floaty.apply(x).sum().backward()


def test_a_gradient_for_a_non_tensor_input_is_an_error(torch):
    def run(lib: Any) -> None:
        class Mul(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a, k):
                return a * k

            @staticmethod
            def backward(ctx, grad):
                return grad * 2, grad

        Mul.apply(lib.ones(2, requires_grad=True), 2.0).sum().backward()

    with pytest.raises(RuntimeError, match="not a Variable"):
        run(torch)
    with pytest.raises(RuntimeError, match=r"gradient for input 1, which is not a tensor"):
        run(dt)


def test_mark_non_differentiable_takes_the_output_out_of_the_graph():
    x = dt.tensor([1.3, 2.6], requires_grad=True)
    out = quantize(dt).apply(x)
    assert not out.requires_grad and out.grad_fn is None
    (out * x).sum().backward()  # out is a constant: d/dx = out
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_mark_non_differentiable_matches_torch(torch):
    def run(lib: Any) -> tuple:
        class ArgMax(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                index = a.argmax(dim=-1)
                ctx.mark_non_differentiable(index)
                return index

            @staticmethod
            def backward(ctx, grad):
                return None

        x = lib.tensor([1.3, 2.6], requires_grad=True)
        out = quantize(lib).apply(x)
        (out * x).sum().backward()
        index = ArgMax.apply(lib.ones(3, 4, requires_grad=True))
        return out.requires_grad, x.grad.tolist(), index.requires_grad

    assert run(dt) == _with_keywords(run, torch)


def test_setup_context_style_matches_torch(torch):
    def run(lib: Any) -> list:
        class Cube(lib.autograd.Function):
            @staticmethod
            def forward(x, scale=1.0):
                return x**3 * scale

            @staticmethod
            def setup_context(ctx, inputs, output):
                x, scale = inputs
                ctx.save_for_backward(x)
                ctx.scale = scale

            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return grad * 3 * x**2 * ctx.scale, None

        x = lib.tensor([1.0, 2.0], requires_grad=True)
        Cube.apply(x, scale=2.0).sum().backward()
        return x.grad.tolist()

    assert run(dt) == _with_keywords(run, torch) == [6.0, 24.0]


def test_setup_context_style_by_hand():
    class Twice(dt.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.k = 2

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.k

    x = dt.ones(2, requires_grad=True)
    Twice.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_wrong_arguments_name_the_function():
    with pytest.raises(TypeError, match=r"Scaled.apply: .*unexpected keyword argument 'bogus'"):
        scaled(dt).apply(dt.ones(1), bogus=1)


def test_backward_twice_names_the_function():
    x = dt.ones(2, requires_grad=True)
    out = scaled(dt).apply(x, dt.ones(2))
    out.sum().backward()
    with pytest.raises(RuntimeError, match="ScaledBackward a second time"):
        out.sum().backward()


def test_once_differentiable_leaves_backward_as_it_is():
    class Exp(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp()

        @staticmethod
        @dt.autograd.once_differentiable
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x.exp()

    x = dt.tensor([0.0, 1.0], requires_grad=True)
    Exp.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.0, 1.0]), rtol=1e-6)


def doubled_in_place(lib: Any) -> type:
    """``x *= 2`` in place, marked dirty, as PyTorch's custom in-place Functions are."""

    class DoubleInPlace(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    return DoubleInPlace


def test_mark_dirty_returns_the_input_with_the_new_history():
    leaf = dt.tensor([1.0, 2.0], requires_grad=True)
    x = leaf * 3
    out = doubled_in_place(dt).apply(x)
    assert out is x
    assert out.grad_fn is not None and "DoubleInPlace" in out.grad_fn.name()
    np.testing.assert_allclose(x.detach().numpy(), [6.0, 12.0])
    (x * x).sum().backward()  # d/dleaf of (6 leaf)^2 = 72 leaf
    np.testing.assert_allclose(leaf.grad.numpy(), [72.0, 144.0])


def test_mark_dirty_outside_the_graph_changes_the_tensor_alone():
    x = dt.tensor([1.0, 2.0])
    assert doubled_in_place(dt).apply(x) is x
    np.testing.assert_allclose(x.numpy(), [2.0, 4.0])
    assert x.grad_fn is None and not x.requires_grad


def test_mark_dirty_refuses_a_leaf_that_requires_grad_and_a_foreign_tensor():
    leaf = dt.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        doubled_in_place(dt).apply(leaf)

    class MarksAnother(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(dt.ones(1))
            return x * 1

        @staticmethod
        def backward(ctx, grad):
            return grad

    with pytest.raises(RuntimeError, match="not an input of forward"):
        MarksAnother.apply(leaf * 1)


def test_mark_dirty_makes_earlier_users_of_the_old_value_refuse(torch):
    for lib in (dt, torch):
        leaf = lib.tensor([1.0, 2.0], requires_grad=True)
        x = leaf * 1
        y = x * x  # saves x
        doubled_in_place(lib).apply(x)
        with pytest.raises(RuntimeError, match=r"modified by an inplace operation|in-place"):
            y.sum().backward()


def test_mark_dirty_matches_torch(torch):
    grads = []
    for lib in (dt, torch):
        leaf = lib.tensor([1.0, -2.0, 3.0], requires_grad=True)
        x = leaf * leaf
        x.retain_grad()
        out = doubled_in_place(lib).apply(x)
        (out * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        grads.append((leaf.grad.numpy().copy(), x.grad.numpy().copy()))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_a_tensor_saved_before_forward_changes_it_in_place_is_accepted():
    # PyTorch takes saved tensors' versions when forward returns, so saving x and then
    # doubling it in place (marked dirty) is fine; backward sees the new values.
    try:
        import torch
    except ImportError:
        torch = None
    for lib in (dt, torch) if torch is not None else (dt,):

        class SaveThenDouble(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                x.mul_(2)
                ctx.mark_dirty(x)
                return x

            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return grad * x  # the doubled values

        leaf = lib.tensor([1.0, 3.0], requires_grad=True)
        x = leaf * 1
        SaveThenDouble.apply(x).sum().backward()
        np.testing.assert_allclose(leaf.grad.numpy(), [2.0, 6.0])


def _with_keywords(run: Any, torch: Any) -> Any:
    """``run(torch)``, skipped where this torch's ``Function.apply`` takes no keyword
    arguments (2.11 refuses them; 2.13 binds them as dtrain does)."""
    try:
        return run(torch)
    except TypeError as exc:
        if "takes no keyword arguments" not in str(exc):
            raise
        pytest.skip(f"torch {torch.__version__}: Function.apply takes no keyword arguments")
