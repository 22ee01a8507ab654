"""``dt.set_default_device``: factories given no device put tensors on the default one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor import default_device

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))


@pytest.fixture
def restore_default():
    yield
    default_device.set_default_device(None)


def test_the_default_is_the_cpu(restore_default):
    assert dt.get_default_device() == dt.device("cpu")
    dt.set_default_device("cpu")
    assert dt.zeros(2).device == dt.device("cpu")


def test_factories_and_modules_follow_the_default_device(monkeypatch, restore_default):
    from cuda_emulator import install

    install(monkeypatch)
    dt.set_default_device("cuda")
    assert dt.get_default_device() == dt.device("cuda")
    made = {
        "tensor": dt.tensor([1.0, 2.0]),
        "as_tensor": dt.as_tensor(np.ones(2)),
        "zeros": dt.zeros(2, 3),
        "ones": dt.ones(2),
        "empty": dt.empty(2),
        "full": dt.full((2,), 3.0),
        "eye": dt.eye(2),
        "arange": dt.arange(3),
        "linspace": dt.linspace(0, 1, 5),
        "rand": dt.rand(2),
        "randn": dt.randn(2),
        "randint": dt.randint(0, 5, (2,)),
        "randperm": dt.randperm(4),
        "Linear weight": dt.nn.Linear(3, 2).weight,
    }
    for name, t in made.items():
        assert t.device.type == "cuda", name
    # An explicit device wins, by keyword or by position; _like follows its input.
    assert dt.zeros(2, device="cpu").device.type == "cpu"
    assert dt.tensor([1.0], None, "cpu").device.type == "cpu"
    assert dt.zeros_like(dt.zeros(2, device="cpu")).device.type == "cpu"
    # A tutorial's polynomial fit runs on the default device unchanged.
    x = dt.linspace(-np.pi, np.pi, 200)
    a = dt.randn((), requires_grad=True)
    loss = ((a * x - dt.sin(x)) ** 2).sum()
    loss.backward()
    assert a.grad.device.type == "cuda"
    dt.set_default_device(None)
    assert dt.zeros(1).device.type == "cpu"


def test_an_unknown_device_is_refused(restore_default):
    with pytest.raises(ValueError, match="mps"):
        dt.set_default_device("mps")
    assert dt.get_default_device() == dt.device("cpu")
