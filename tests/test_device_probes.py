"""The device probes and helpers current PyTorch scripts call before choosing a device:
``torch.xpu``/``torch.mps``, ``torch.hub.tqdm``, ``accelerator.device_index`` and
``dist.get_default_backend_for_device``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dtrain as dt
import dtrain.distributed as dist

sys.path.insert(0, str(Path(__file__).parent / "runtime"))


def test_other_accelerators_answer_that_they_are_absent():
    assert dt.xpu.is_available() is False and dt.xpu.device_count() == 0
    assert dt.mps.is_available() is False and dt.mps.device_count() == 0


def test_hub_tqdm_wraps_an_iterable_and_hub_loading_says_what_to_do():
    assert list(dt.hub.tqdm(range(3), desc="x")) == [0, 1, 2]
    with pytest.raises(NotImplementedError, match="never unpickles"):
        dt.hub.load_state_dict_from_url("https://example.com/w.pth")


def test_hub_tqdm_without_tqdm_installed(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    fallback = importlib.reload(dt.hub)
    try:
        with fallback.tqdm(total=4) as bar:
            bar.update(3)
            bar.set_description("step")
            assert bar.n == 3 and len(bar) == 4
        assert list(fallback.tqdm([5, 6])) == [5, 6]
    finally:
        monkeypatch.undo()
        importlib.reload(dt.hub)


def test_default_backend_for_device():
    assert dist.get_default_backend_for_device("cpu") == "gloo"
    assert dist.get_default_backend_for_device(dt.device("cuda:1")) == "nccl"
    with pytest.raises(ValueError, match="mps"):
        dist.get_default_backend_for_device("mps")


def test_device_index_acts_only_when_entered(monkeypatch):
    from cuda_emulator import install

    dt.accelerator.device_index(1)  # a bare call, as pytorch/examples make: does nothing
    with dt.accelerator.device_index(None):
        pass
    install(monkeypatch, devices=2)
    dt.accelerator.device_index(1)
    assert dt.cuda.current_device() == 0
    with dt.accelerator.device_index(1):
        assert dt.cuda.current_device() == 1


def test_device_index_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(dt.cuda, "is_available", lambda: False)
    block = dt.accelerator.device_index(0)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        block.__enter__()
