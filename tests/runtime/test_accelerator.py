"""``dt.accelerator`` (PyTorch's device-generic API, CUDA here) and the ``dt.onnx`` name."""

from __future__ import annotations

import pytest
from cuda_emulator import install

import dtrain as dt
from dtrain.runtime import backend


def test_without_cuda_there_is_no_accelerator(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", "no GPU here")
    assert not dt.accelerator.is_available()
    assert dt.accelerator.current_accelerator() is None
    assert dt.accelerator.device_count() == 0
    device = dt.accelerator.current_accelerator() if dt.accelerator.is_available() else "cpu"
    assert dt.ones(2).to(device).device == dt.device("cpu")  # pytorch/examples' idiom


def test_with_cuda_the_accelerator_is_the_processs_gpu(monkeypatch):
    for name in ("DTRAIN_DEVICE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    install(monkeypatch, devices=2)
    assert dt.accelerator.is_available() and dt.accelerator.device_count() == 2
    assert dt.accelerator.current_accelerator() == dt.device("cuda:0")
    dt.accelerator.set_device_index(1)
    assert dt.accelerator.current_device_index() == dt.accelerator.current_device_idx() == 1
    assert dt.accelerator.current_accelerator() == dt.device("cuda:1")
    dt.accelerator.synchronize()


def test_onnx_imports_and_export_says_what_to_do_instead():
    import dtrain.onnx

    assert not dtrain.onnx.is_in_onnx_export()
    with pytest.raises(NotImplementedError, match=r"torch\.onnx\.export there"):
        dt.onnx.export(dt.nn.Linear(2, 2), dt.ones(1, 2), "model.onnx")
