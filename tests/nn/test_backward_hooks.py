"""A module's full backward hooks (``register_full_backward_hook`` / ``_pre_hook``)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn


def arrays(grads: tuple) -> list:
    return [None if g is None else g.numpy().copy() for g in grads]


def linear(rng: np.random.Generator) -> nn.Linear:
    layer = nn.Linear(3, 2)
    with dt.no_grad():
        layer.weight.copy_(dt.tensor(rng.standard_normal((2, 3)).astype(np.float32)))
    return layer


def test_a_linear_layer_hook_sees_its_input_and_output_gradients(rng):
    layer = linear(rng)
    seen = []
    layer.register_full_backward_hook(lambda m, gi, go: seen.append((m, arrays(gi), arrays(go))))
    x = dt.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    (layer(x) * 3).sum().backward()
    ((module, grad_input, grad_output),) = seen
    assert module is layer
    np.testing.assert_allclose(grad_output[0], np.full((4, 2), 3.0))
    np.testing.assert_allclose(grad_input[0], np.full((4, 2), 3.0) @ layer.weight.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), grad_input[0])


def test_the_hook_can_replace_the_input_gradient(rng):
    layer = linear(rng)
    layer.register_full_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    x = dt.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    layer(x).sum().backward()
    np.testing.assert_allclose(
        x.grad.numpy(), 10 * np.ones((4, 2)) @ layer.weight.detach().numpy(), 1e-6
    )
    # the layer's own parameters are not the inputs: their gradients are untouched
    np.testing.assert_allclose(layer.bias.grad.numpy(), [4.0, 4.0])


def test_a_pre_hook_replaces_the_output_gradient_before_it_flows_in(rng):
    layer = linear(rng)
    order = []
    layer.register_full_backward_pre_hook(lambda m, go: (order.append("pre"), (go[0] * 2,))[1])
    layer.register_full_backward_hook(lambda m, gi, go: order.append(("hook", arrays(go))))
    x = dt.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    layer(x).sum().backward()
    assert order[0] == "pre"
    assert order[1][0] == "hook"
    np.testing.assert_allclose(order[1][1][0], np.full((4, 2), 2.0))  # the replaced one
    np.testing.assert_allclose(layer.bias.grad.numpy(), [8.0, 8.0])
    np.testing.assert_allclose(
        x.grad.numpy(), 2 * np.ones((4, 2)) @ layer.weight.detach().numpy(), 1e-6
    )


class TwoWay(nn.Module):
    """Several inputs (a tensor without grad, a number), several outputs (one unused)."""

    def forward(self, a: Any, b: Any, scale: float, c: Any) -> tuple:
        return a * b * scale, (a + c) * 2, "label"


def test_several_inputs_and_outputs_one_entry_each():
    seen = []
    module = TwoWay()
    module.register_full_backward_hook(lambda m, gi, go: seen.append((arrays(gi), arrays(go))))
    a = dt.tensor([1.0, 2.0], requires_grad=True)
    b = dt.tensor([3.0, 4.0], requires_grad=True)
    c = dt.tensor([5.0, 6.0])  # no grad
    product, _total, label = module(a, b, 0.5, c)
    assert label == "label"
    product.sum().backward()  # the second output plays no part
    ((grad_input, grad_output),) = seen
    assert len(grad_input) == 4 and len(grad_output) == 3
    np.testing.assert_allclose(grad_input[0], [1.5, 2.0])  # b * scale
    np.testing.assert_allclose(grad_input[1], [0.5, 1.0])  # a * scale
    assert grad_input[2] is None  # not a tensor
    np.testing.assert_array_equal(grad_input[3], [0.0, 0.0])  # a tensor: zeros, as PyTorch
    np.testing.assert_allclose(grad_output[0], [1.0, 1.0])
    assert grad_output[1] is None and grad_output[2] is None


def test_with_no_input_requiring_grad_the_hook_runs_when_the_outputs_are_known(rng):
    layer = linear(rng)
    seen = []
    layer.register_full_backward_hook(lambda m, gi, go: seen.append((gi, arrays(go))))
    layer(dt.ones(4, 3)).sum().backward()
    ((grad_input, grad_output),) = seen
    assert grad_input == (None,)
    np.testing.assert_allclose(grad_output[0], np.ones((4, 2)))
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.full((2, 3), 4.0))


def test_the_hook_runs_once_per_backward_and_stops_when_removed(rng):
    layer = linear(rng)
    calls = []
    handle = layer.register_full_backward_hook(lambda m, gi, go: calls.append(1))
    x = dt.ones(2, 3, requires_grad=True)
    y = layer(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert len(calls) == 2
    handle.remove()
    layer(x).sum().backward()
    assert len(calls) == 2
    with dt.no_grad():
        layer(x)  # nothing recorded, nothing to hook


def test_the_hooks_follow_autograd_grad(rng):
    layer = linear(rng)
    layer.register_full_backward_hook(lambda m, gi, go: (gi[0] * 0 + 1,))
    x = dt.ones(2, 3, requires_grad=True)
    (gx,) = dt.autograd.grad(layer(x).sum(), [x])
    np.testing.assert_allclose(gx.numpy(), np.ones((2, 3)))
    assert layer.weight.grad is None


def test_a_namedtuple_output_keeps_its_type():
    Pair = namedtuple("Pair", "left right")

    class Split(nn.Module):
        def forward(self, x: Any) -> Pair:
            return Pair(x * 2, x * 3)

    module = Split()
    seen = []
    module.register_full_backward_pre_hook(lambda m, go: seen.append(arrays(go)))
    x = dt.ones(2, requires_grad=True)
    out = module(x)
    assert isinstance(out, Pair)
    (out.left + out.right).sum().backward()
    np.testing.assert_allclose(seen[0][0], [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_sequential_keeps_a_hooked_linear_apart_from_its_relu(rng):
    layer = linear(rng)
    with dt.no_grad():
        layer.bias.copy_(dt.tensor([-100.0, 100.0]))  # the first unit never fires
    seen = []
    layer.register_full_backward_hook(lambda m, gi, go: seen.append(arrays(go)))
    model = nn.Sequential(layer, nn.ReLU())
    model(dt.ones(1, 3, requires_grad=True)).sum().backward()
    np.testing.assert_allclose(seen[0][0], [[0.0, 1.0]])  # the ReLU's gradient, after it


def test_a_hook_returning_the_wrong_gradients_is_named(rng):
    layer = linear(rng)
    handle = layer.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    x = dt.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"returned 2 gradient\(s\) for 1 inputs"):
        layer(x).sum().backward()
    handle.remove()
    layer.register_full_backward_pre_hook(lambda m, go: (dt.ones(5),))
    with pytest.raises(RuntimeError, match=r"shape \(5,\) for output 0 of shape \(2, 2\)"):
        layer(x).sum().backward()


def test_a_hooked_module_must_return_tensors():
    class Named(nn.Module):
        def forward(self, x: Any) -> dict:
            return {"y": x * 2}

    module = Named()
    module.register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(TypeError, match="returned dict"):
        module(dt.ones(2, requires_grad=True))


def test_hooks_on_a_model_match_torch(torch, copy_from_torch):
    def build(library: Any) -> Any:
        n = library.nn
        return n.Sequential(n.Linear(5, 7), n.Tanh(), n.Linear(7, 7), n.ReLU(), n.Linear(7, 3))

    theirs, ours = build(torch), build(dt)
    copy_from_torch(ours, theirs)
    logs = []
    for model in (ours, theirs):
        log: list = []
        logs.append(log)
        for index in (0, 2, 3, 4):
            model[index].register_full_backward_pre_hook(
                lambda m, go, i=index, log=log: log.append((i, "pre", arrays(go)))
            )
            model[index].register_full_backward_hook(
                lambda m, gi, go, i=index, log=log: (
                    log.append((i, "hook", arrays(gi), arrays(go))),
                    None if i != 3 else (gi[0] * 0.5,),
                )[1]
            )
    data = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
    target = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    for library, model in ((dt, ours), (torch, theirs)):
        x = library.tensor(data, requires_grad=True)
        ((model(x) - library.tensor(target)) ** 2).mean().backward()
    mine, reference = logs
    assert [entry[:2] for entry in mine] == [entry[:2] for entry in reference]
    for left, right in zip(mine, reference):
        for ours_grads, their_grads in zip(left[2:], right[2:]):
            for a, b in zip(ours_grads, their_grads):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_changing_a_hooked_input_in_place_is_refused():
    # The caller keeps x: an in-place change inside forward would leave x's history stale
    # and its later gradients wrong. PyTorch refuses it too.
    class Triples(nn.Module):
        def forward(self, x: Any) -> Any:
            x.mul_(3)
            return x * 2

    module = Triples()
    module.register_full_backward_hook(lambda m, gi, go: None)
    x = dt.ones(3, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="mul_: changing a view"):
        module(x)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0, 1.0])


def test_an_input_the_output_ignores_gets_zeros_as_in_torch():
    class FirstOnly(nn.Module):
        def forward(self, x: Any, y: Any) -> Any:
            return x * 2

    module = FirstOnly()
    seen = []
    module.register_full_backward_hook(lambda m, gi, go: seen.append(arrays(gi)))
    x, y = dt.ones(2, requires_grad=True), dt.ones(2, requires_grad=True)
    module(x, y).sum().backward()
    np.testing.assert_array_equal(seen[0][1], [0.0, 0.0])
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.0])  # PyTorch's y.grad too
