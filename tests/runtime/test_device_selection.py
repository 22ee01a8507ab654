"""Which GPU a process works on. cupy runs every kernel, cuBLAS call and NCCL communicator on
the *current* device, so a rank that sees all its node's GPUs (torchrun, ``mpiexec``,
``dtrain launch --gpus-per-node``) must make its own current: ``dt.cuda.set_device``, else
its first tensor on a GPU, else the nccl group with ``local_device()``. Emulated with four
GPUs; ``init_process_group`` over nccl with a stand-in NCCL."""

from __future__ import annotations

import types

import pytest
from cuda_emulator import install

import dtrain as dt
import dtrain.parallel as dist
from dtrain.parallel.backends import nccl
from dtrain.runtime.device import Device

RANK_VARIABLES = ("DTRAIN_DEVICE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "DTRAIN_BACKEND")


@pytest.fixture
def four_gpus(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return install(monkeypatch, devices=4)


def test_cuda_without_an_index_is_the_current_device(four_gpus):
    assert Device("cuda") == Device("cuda:0")
    dt.cuda.set_device(2)
    assert dt.cuda.current_device() == 2
    assert Device("cuda").index == 2 and str(Device("cuda")) == "cuda:2"
    dt.cuda.set_device("cuda:3")
    assert Device("cuda").index == 3
    with pytest.raises(ValueError, match=r"set_device\('cpu'\): name a CUDA device"):
        dt.cuda.set_device("cpu")


def test_an_int_is_a_cuda_index_as_in_pytorch(four_gpus):
    assert Device(1) == Device("cuda:1")
    with pytest.raises(ValueError, match="device -1: a CUDA device index must not be negative"):
        Device(-1)
    with pytest.raises(TypeError, match="or a CUDA index, got True"):
        Device(True)
    x = dt.ones(2, device=3)
    assert dt.cuda.current_device() == 3  # the first placement selected it
    assert x.to(2).device.type == "cuda"  # to(rank), as the DDP tutorial writes it


def test_the_first_placement_on_a_gpu_selects_it_and_later_ones_do_not(four_gpus):
    dt.zeros(2, device="cuda:3")
    assert dt.cuda.current_device() == 3
    dt.zeros(2, device="cuda:1")  # allocated there, but the process's device stays
    dt.ones(2).to("cuda:2")
    assert dt.cuda.current_device() == 3


def test_set_device_wins_over_a_later_placement(four_gpus):
    dt.cuda.set_device(1)
    dt.zeros(2, device="cuda:2")
    assert dt.cuda.current_device() == 1


class _StandInNccl:
    """``cupy.cuda.nccl`` for one rank: records the device current at communicator creation."""

    def __init__(self, device_now):
        self.created_on = []
        self._device_now = device_now
        recorder = self

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                recorder.created_on.append(recorder._device_now())

        self.NcclCommunicator = NcclCommunicator

    @staticmethod
    def get_unique_id():
        return bytes(128)


@pytest.fixture
def stand_in_nccl(four_gpus, monkeypatch):
    import sys

    fake = _StandInNccl(lambda: sys.modules["cupy"].cuda.runtime.getDevice())
    monkeypatch.setattr(nccl, "_nccl", lambda: fake)
    return fake


def _nccl_group():
    store = types.SimpleNamespace(values={})
    store.set = store.values.__setitem__
    store.get = store.values.__getitem__
    return nccl.NcclGroup(0, 1, 60.0, [0], store, "test")


def test_the_nccl_group_binds_to_local_device_when_nothing_was_selected(stand_in_nccl, monkeypatch):
    # mpiexec -n 4 on a 4-GPU node: rank 2 sees every GPU, and nothing chose one yet
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    group = _nccl_group()
    assert group.device == 2 and stand_in_nccl.created_on == [2]
    assert dt.cuda.current_device() == 2  # its tensors' kernels run there too
    assert Device("cuda").index == 2


def test_the_nccl_group_binds_to_the_device_the_script_chose(stand_in_nccl, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    dt.cuda.set_device(1)  # the script's own choice wins over local_device()'s
    assert _nccl_group().device == 1 and stand_in_nccl.created_on == [1]


def test_dtrain_launch_names_each_rank_its_gpu_among_the_shared_ones(stand_in_nccl, monkeypatch):
    # dtrain launch --gpus-per-node 4: every rank sees the node's 4, DTRAIN_DEVICE its own
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("DTRAIN_DEVICE", "cuda:3")
    assert str(dist.local_device()) == "cuda:3"
    assert _nccl_group().device == 3


def test_a_cpu_rank_cannot_build_an_nccl_group(stand_in_nccl, monkeypatch):
    monkeypatch.setenv("DTRAIN_DEVICE", "cpu")
    with pytest.raises(RuntimeError, match=r"local_device\(\) is cpu .*backend='tcp'"):
        _nccl_group()
