"""What ``dtrain launch`` puts in each rank's environment: torchrun's names, and for a rank it
gave a GPU, that GPU alone (CUDA_VISIBLE_DEVICES) and DTRAIN_DEVICE=cuda:0, so that
``local_device()`` and ``init_process_group()`` agree on the GPU (nccl)."""

from __future__ import annotations

from dtrain.launch.worker import rank_environment

SPEC = {
    "rank": 5, "local_rank": 1, "world_size": 8, "local_world_size": 4, "node_rank": 1,
    "master_addr": "10.0.0.1", "master_port": 29500, "secret": "s", "restart": 0,
}  # fmt: skip


def test_a_gpu_rank_sees_its_own_gpu_as_cuda_0():
    env = rank_environment({"PATH": "/bin", "PMI_RANK": "3"}, SPEC, ["4", "5", "6", "7"])
    assert env["CUDA_VISIBLE_DEVICES"] == "5" and env["DTRAIN_DEVICE"] == "cuda:0"
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("5", "1", "8")
    assert "PMI_RANK" not in env and env["PATH"] == "/bin"


def test_a_cpu_rank_gets_no_device_setting():
    env = rank_environment({}, SPEC, [])
    assert "DTRAIN_DEVICE" not in env and "CUDA_VISIBLE_DEVICES" not in env
