"""``local_device()``: which device a rank trains on, from DTRAIN_DEVICE, the GPUs it sees
and its place on the node; and ``init_process_group()`` choosing nccl only for a GPU rank."""

from __future__ import annotations

import types

import pytest

import dtrain.parallel as dist
from dtrain.parallel import api
from dtrain.runtime import backend

RANK_VARIABLES = ("DTRAIN_DEVICE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "DTRAIN_BACKEND")


@pytest.fixture
def gpus(monkeypatch):
    """Make ``n`` GPUs visible to dtrain (a stand-in for cupy that only counts them)."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def visible(n: int) -> None:
        runtime = types.SimpleNamespace(getDeviceCount=lambda: n)
        fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
        monkeypatch.setattr(backend, "_cupy", fake if n else None)
        monkeypatch.setattr(backend, "_cupy_error", None if n else "no GPU here")

    return visible


def test_no_gpu_means_the_cpu(gpus):
    gpus(0)
    assert str(dist.local_device()) == "cpu"


def test_each_rank_takes_the_gpu_of_its_local_rank(gpus, monkeypatch):
    gpus(4)
    assert str(dist.local_device()) == "cuda:0"  # a single process
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert str(dist.local_device()) == "cuda:2"


def test_more_ranks_than_gpus_train_on_the_cpu_with_a_warning(gpus, monkeypatch):
    gpus(1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.warns(UserWarning, match="4 ranks on this node but 1 GPU"):
        assert str(dist.local_device()) == "cpu"
    with pytest.warns(UserWarning):
        assert api._choose_backend() == "tcp"  # not nccl: these ranks hold CPU tensors


def test_dtrain_device_wins(gpus, monkeypatch):
    gpus(1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # more ranks than GPUs: DTRAIN_DEVICE still wins
    monkeypatch.setenv("DTRAIN_DEVICE", "cuda:0")
    assert str(dist.local_device()) == "cuda:0"
    monkeypatch.setenv("DTRAIN_DEVICE", "cpu")
    assert str(dist.local_device()) == "cpu"
    assert api._choose_backend() == "tcp"
    monkeypatch.setenv("DTRAIN_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="DTRAIN_DEVICE='gpu0'"):
        dist.local_device()
