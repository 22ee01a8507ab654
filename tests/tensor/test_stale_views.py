"""Views taken before their base changed in place (``tensor/autograd/stale_view.py``): every
place that reads a view's history sees the base's newest one, as in PyTorch."""

import numpy as np
import pytest

import dtrain as dt


def _x():
    return dt.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)


@pytest.mark.parametrize("retained_before_the_change", [False, True])
def test_a_retained_gradient_is_that_of_the_views_newest_value(retained_before_the_change):
    x = _x()
    y = x * 1
    view = y[1:4]
    if retained_before_the_change:
        view.retain_grad()
    y.mul_(2)
    if not retained_before_the_change:
        view.retain_grad()
    (view * 2).sum().backward()
    np.testing.assert_array_equal(view.grad.numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 4.0, 4.0, 4.0, 0.0, 0.0])


def test_a_hook_on_a_stale_view_sees_its_gradient():
    x = _x()
    y = x * 1
    view = y[1:4]
    y.mul_(2)
    view.register_hook(lambda grad: grad * 10)
    view.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 20.0, 20.0, 20.0, 0.0, 0.0])


def test_a_view_of_a_plain_buffer_the_graph_wrote_into_requires_grad():
    w = _x()
    y = dt.zeros(6)
    low = y[0:6]
    y.add_(w)
    assert low.requires_grad
    dt.clamp(dt.tensor([0.0, 0.0, 0.0, 9.0, 9.0, 9.0]), min=low).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_a_view_taken_under_no_grad_stays_outside_the_graph():
    x = _x()
    y = x * 2
    with dt.no_grad():
        target = y[0:3]
    y.mul_(x)
    assert not target.requires_grad
    ((y[3:6] - target) ** 2).sum().backward()  # target is a constant (its new values)
    expected = 2 * (4 * np.arange(4.0, 7.0) ** 2 - 4 * np.arange(1.0, 4.0) ** 2)
    np.testing.assert_allclose(x.grad.numpy()[3:], expected * 2 * np.arange(4.0, 7.0))


def test_a_view_whose_base_has_new_memory_is_refused():
    x = _x()
    y = x * 2
    view = y[1:3]
    y.data = dt.zeros(6)  # the view keeps the old memory: it is not a window of y's
    y.mul_(x)
    with pytest.raises(RuntimeError, match="cannot place"):
        view.sum()


def test_views_with_inserted_dims_are_rebased():
    x = dt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * 1
    view = y[:, None]  # numpy gives the new dim a stride of 0
    y.mul_(2)
    (view * view).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 8 * x.detach().numpy())


def test_detach_in_place_keeps_the_views_history():
    # detach_ gives the base a new node but not new values: its views keep their history
    x = _x()
    y = x * 2
    view = y[0:3]
    y.detach_()
    view.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0, 0.0, 0.0, 0.0])


def test_backward_inputs_of_a_zero_dim_leaf_keep_an_array():
    x = dt.tensor(3.0, requires_grad=True)
    (x * x).backward(inputs=[x])
    x.grad.add_(1)
    assert x.grad.item() == 7.0


def test_a_function_applied_to_a_stale_view_sees_its_newest_history():
    class Identity(dt.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, grad):
            return grad

    x = _x()
    y = x * 1
    view = y[1:4]
    y.mul_(3)
    Identity.apply(view).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 3.0, 3.0, 3.0, 0.0, 0.0])
