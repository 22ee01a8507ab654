"""``backend.on_device_of`` and ``device_id``: the array's GPU made current only where it is
not already (no switch at all where the process sees one GPU), and read from the memory
pointer; checked on the emulator with one and with two GPUs."""

from __future__ import annotations

import sys
import types

import numpy as np
from cuda_emulator import install

import dtrain as dt
from dtrain.runtime import backend


def _current() -> int:
    return sys.modules["cupy"].cuda.runtime.getDevice()


def test_an_array_on_another_gpu_is_made_current_for_the_block(monkeypatch):
    emulator = install(monkeypatch, devices=2)
    on_one = dt.ones(3, device="cuda:1")._array
    on_zero = dt.ones(3, device="cuda:0")._array
    assert backend.device_id(on_one) == 1 and backend.device_id(on_zero) == 0
    sys.modules["cupy"].cuda.Device(0).use()
    with emulator.counting():
        with backend.on_device_of(on_one):
            assert _current() == 1
        assert _current() == 0  # restored
        with backend.on_device_of(on_zero):  # current already: nothing to switch
            assert _current() == 0
    assert emulator.host_calls["device switch"] == 1


def test_one_gpu_never_switches_and_a_step_makes_no_device_objects(monkeypatch):
    emulator = install(monkeypatch)
    model = dt.nn.Sequential(dt.nn.Linear(4, 8), dt.nn.ReLU(), dt.nn.Linear(8, 2)).to("cuda")
    optimizer = dt.optim.AdamW(model.parameters(), lr=1e-2)
    x = dt.tensor(np.ones((3, 4), np.float32), device="cuda")
    for _ in range(2):  # the second step: the optimizer's arguments are packed already
        with emulator.counting():
            optimizer.zero_grad()
            model(x).sum().backward()
            dt.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    assert emulator.host_calls["device switch"] == 0
    assert emulator.host_calls["Device object"] == 0


def test_a_cupy_array_from_outside_before_dtrain_loaded_cupy_uses_its_own_device(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    device = object()
    array = types.SimpleNamespace(device=device)
    assert backend.on_device_of(array) is device
