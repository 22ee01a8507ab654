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
    assert x.device == Device("cuda:3")
    assert x.to(2).device == Device("cuda:2")  # to(rank), as the DDP tutorial writes it
    with pytest.raises(TypeError, match=r"Device\(1, 5\): give the index once"):
        Device(1, 5)
    with pytest.raises(ValueError, match=r"cuda\('cpu'\): name a CUDA device"):
        x.cuda("cpu")
    with pytest.raises(ValueError, match=r"cuda\('cpu'\): name a CUDA device"):
        dt.nn.Linear(2, 2).cuda("cpu")
    assert x.cpu().cuda(1).device == Device("cuda:1")


def test_before_a_selection_cuda_means_the_ranks_own_gpu(four_gpus, monkeypatch):
    # dtrain launch --gpus-per-node 4, rank 3: plain "cuda" (the examples' --device cuda,
    # model.cuda()) is its GPU, not GPU 0, and placing there selects it
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("DTRAIN_DEVICE", "cuda:3")
    model = dt.nn.Linear(2, 2).cuda()
    assert model.weight.device == Device("cuda:3") and dt.cuda.current_device() == 3


def test_a_gpu_the_process_does_not_see_is_named_with_what_it_sees(four_gpus):
    with pytest.raises(RuntimeError, match=r"'cuda:7' does not exist: this process sees 4"):
        dt.cuda.set_device(7)
    dt.cuda.set_device(-1)  # as PyTorch: nothing
    assert dt.cuda.current_device() == 0
    assert dt.cuda.memory_allocated(2) == 0 and dt.cuda.current_device() == 0  # asks only


def test_the_seed_waits_for_the_selected_gpu(four_gpus, monkeypatch):
    import sys

    cupy = sys.modules["cupy"]
    seeded = []
    monkeypatch.setattr(cupy.random, "seed", lambda s: seeded.append((dt.cuda.current_device(), s)))
    dt.manual_seed(5)
    assert seeded == []  # no GPU chosen yet: seeding now would seed (and fill) GPU 0
    dt.cuda.set_device(2)
    assert seeded == [(2, 5)]
    dt.cuda.manual_seed(7)  # once selected, at once
    assert seeded == [(2, 5), (2, 7)]


def test_the_selected_gpu_is_made_current_on_another_thread_that_places(four_gpus):
    import threading

    dt.cuda.set_device(2)
    seen = []

    def worker():
        seen.append(Device("cuda").index)  # "cuda" is the process's GPU on every thread
        x = dt.ones(3, device="cuda")
        seen.append((x + 1).device)  # the op runs on its thread's current device: 2

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [2, Device("cuda:2")]


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


def test_the_communicator_is_made_on_the_selected_gpu_from_any_thread(stand_in_nccl):
    import threading

    thread = threading.Thread(target=lambda: dt.zeros(1, device="cuda:2"))
    thread.start()  # the first placement, and so the selection, happen on a worker thread
    thread.join()
    assert _nccl_group().device == 2 and stand_in_nccl.created_on == [2]
    assert dt.cuda.current_device() == 2


def test_a_collective_averages_on_the_ranks_gpu_not_the_executors(stand_in_nccl, monkeypatch):
    # The executor thread starts on device 0; the AVG division (DDP's default hook) and
    # staging run there, so they must run on the caller's GPU (the emulator raises, as
    # cupy does without peer access, when a kernel's array is on another device).
    dt.cuda.set_device(2)
    group = _nccl_group()
    group.size = 2  # as if a second rank: the job divides by it
    seen = []
    monkeypatch.setattr(
        nccl.NcclGroup,
        "_all_reduce",
        lambda self, flat, *rest: seen.append(dt.cuda.current_device()),
    )
    x = dt.ones(4, device="cuda")
    work = group.all_reduce(x._array, dist.ReduceOp.AVG, async_op=True)
    work.wait()
    assert seen == [2]
    assert x.tolist() == [0.5] * 4
    group.executor.shutdown()


def test_a_first_placement_on_another_gpu_than_the_ranks_is_refused_by_nccl(
    stand_in_nccl, monkeypatch
):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    dt.zeros(1, device="cuda:0")  # a stray cuda:0 before the group: NCCL would see two on 0
    with pytest.raises(RuntimeError, match=r"first tensor on a GPU went to cuda:0, but its dev"):
        _nccl_group()
    dt.cuda.set_device(0)  # the script's own choice is respected
    assert _nccl_group().device == 0


def test_init_process_group_device_id_selects_that_gpu(four_gpus):
    from dtrain.parallel.api import _bind_device

    _bind_device(Device("cuda", 1))
    assert dt.cuda.current_device() == 1
    with pytest.raises(ValueError, match="device_id='cpu' must name a CUDA device"):
        _bind_device("cpu")


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


def test_cuda_before_cupy_is_loaded_is_the_ranks_gpu(four_gpus, monkeypatch):
    # a real script: nothing has loaded cupy before its first .cuda() / dt.device("cuda")
    from dtrain.runtime import backend

    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", None)  # not tried yet either
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert Device("cuda").index == 3
    assert dt.nn.Linear(2, 2).cuda().weight.device == Device("cuda:3")


def test_dtrain_device_cuda_without_an_index_is_the_local_ranks_gpu(four_gpus, monkeypatch):
    monkeypatch.setenv("DTRAIN_DEVICE", "cuda")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert str(dist.local_device()) == "cuda:1" and Device("cuda").index == 1


def test_dataloader_workers_index_gpu_tensors_on_the_processs_gpu(four_gpus):
    dt.cuda.set_device(2)
    data = dt.utils.data.TensorDataset(dt.arange(12.0, device="cuda").reshape(6, 2))
    loader = dt.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = [batch for (batch,) in loader]  # a worker on device 0 would fail to index
    assert [b.device for b in batches] == [Device("cuda:2")] * 3
    assert batches[2].tolist() == [[8.0, 9.0], [10.0, 11.0]]


def test_a_collective_from_another_thread_averages_on_the_processs_gpu(stand_in_nccl, monkeypatch):
    import threading

    dt.cuda.set_device(2)
    group = _nccl_group()
    group.size = 2
    monkeypatch.setattr(nccl.NcclGroup, "_all_reduce", lambda self, flat, *rest: None)
    x = dt.ones(4, device="cuda")
    errors = []

    def reduce():
        try:
            group.all_reduce(x._array, dist.ReduceOp.AVG, async_op=True).wait()
        except Exception as error:
            errors.append(error)

    thread = threading.Thread(target=reduce)  # a thread of its own: current device 0
    thread.start()
    thread.join()
    assert errors == [] and x.tolist() == [0.5] * 4
    group.executor.shutdown()


def test_nccl_refuses_a_tensor_on_another_gpu_naming_both(stand_in_nccl):
    dt.cuda.set_device(2)
    group = _nccl_group()
    group.size = 2
    stray = dt.ones(2, device="cuda:1")
    with pytest.raises(ValueError, match=r"on cuda:1, but this rank's communicator is on cuda:2"):
        group.all_reduce(stray._array, dist.ReduceOp.SUM, async_op=False).wait()
    group.executor.shutdown()
