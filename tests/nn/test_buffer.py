"""``nn.Buffer``: assigned to a module attribute it is registered as a buffer, with its
``persistent`` flag; PyTorch's registration rules around it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn


def test_buffer_shares_memory_and_keeps_requires_grad() -> None:
    data = dt.ones(3)
    buffer = nn.Buffer(data)
    assert isinstance(buffer, dt.Tensor) and buffer.persistent
    data.add_(1.0)
    np.testing.assert_array_equal(buffer.numpy(), [2.0, 2.0, 2.0])
    assert not buffer.requires_grad
    assert nn.Buffer(dt.ones(2, requires_grad=True)).requires_grad
    assert nn.Buffer().shape == (0,)


@pytest.mark.parametrize("persistent", [True, False])
def test_assigning_a_buffer_registers_it(persistent: bool) -> None:
    module = nn.Module()
    module.stat = nn.Buffer(dt.arange(3.0), persistent=persistent)
    assert list(dict(module.named_buffers())) == ["stat"]
    assert list(module.parameters()) == []
    assert ("stat" in module.state_dict()) is persistent
    np.testing.assert_array_equal(module.stat.numpy(), [0.0, 1.0, 2.0])


def test_buffer_persistence_follows_the_latest_assignment() -> None:
    module = nn.Module()
    module.stat = nn.Buffer(dt.ones(1), persistent=False)
    module.stat = dt.zeros(2)  # a plain tensor keeps the buffer's persistence
    assert "stat" not in module.state_dict()
    module.stat = nn.Buffer(dt.ones(2))  # a Buffer brings its own
    assert "stat" in module.state_dict()


def test_register_buffer_takes_its_persistent_argument_over_the_buffers() -> None:
    module = nn.Module()
    module.register_buffer("stat", nn.Buffer(dt.ones(1), persistent=False))
    assert "stat" in module.state_dict()


def test_plain_tensor_attribute_is_not_a_buffer() -> None:
    module = nn.Module()
    module.plain = dt.ones(1)
    assert list(module.buffers()) == []


def test_buffer_cannot_take_a_parameter_or_module_or_attribute_slot() -> None:
    module = nn.Module()
    module.weight = nn.Parameter(dt.ones(1))
    module.child = nn.Linear(1, 1)
    module.plain = 1
    with pytest.raises(TypeError, match="parameter 'weight'"):
        module.weight = nn.Buffer(dt.ones(1))
    with pytest.raises(TypeError, match="sub-module 'child'"):
        module.child = nn.Buffer(dt.ones(1))
    with pytest.raises(KeyError, match="plain"):
        module.plain = nn.Buffer(dt.ones(1))


def test_buffer_follows_module_to() -> None:
    module = nn.Module()
    module.stat = nn.Buffer(dt.ones(2))
    module.double()
    assert module.stat.dtype == dt.float64


def test_buffer_registration_matches_torch(torch: Any) -> None:
    def build(lib: Any, tensor: Any) -> Any:
        module = lib.nn.Module()
        module.a = lib.nn.Buffer(tensor([1.0]), persistent=False)
        module.b = lib.nn.Buffer(tensor([2.0]))
        module.a = tensor([3.0, 4.0])
        module.c = lib.nn.Buffer(tensor([5.0]), persistent=False)
        module.c = lib.nn.Buffer(tensor([6.0]), persistent=True)
        return module

    ours, theirs = build(dt, dt.tensor), build(torch, torch.tensor)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(dict(ours.named_buffers())) == list(dict(theirs.named_buffers()))
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key].numpy(), value.numpy())


def test_a_buffer_before_module_init_is_refused() -> None:
    class Early(nn.Module):
        def __init__(self) -> None:
            self.running = nn.Buffer(dt.zeros(2))  # before super().__init__()
            super().__init__()

    with pytest.raises(AttributeError, match=r"before Module\.__init__"):
        Early()
