"""What ``dtrain launch`` puts in each rank's environment: torchrun's names, and on a node
it gave GPUs, all of them (CUDA_VISIBLE_DEVICES, shared as torchrun and Ray Train do) and
DTRAIN_DEVICE naming the rank's own, so that ``local_device()``, ``init_process_group()``
(nccl) and a torchrun script's ``cuda:LOCAL_RANK`` agree on the GPU."""

from __future__ import annotations

import pytest

from dtrain.launch.worker import rank_environment

SPEC = {
    "rank": 5, "local_rank": 1, "world_size": 8, "local_world_size": 4, "node_rank": 1,
    "master_addr": "10.0.0.1", "master_port": 29500, "secret": "s", "restart": 0,
}  # fmt: skip


def test_a_gpu_rank_sees_the_nodes_gpus_and_trains_on_cuda_local_rank():
    env = rank_environment({"PATH": "/bin", "PMI_RANK": "3"}, SPEC, ["4", "5", "6", "7"])
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7" and env["DTRAIN_DEVICE"] == "cuda:1"
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("5", "1", "8")
    assert "PMI_RANK" not in env and env["PATH"] == "/bin"


def test_a_cpu_rank_gets_no_device_setting():
    env = rank_environment({}, SPEC, [])
    assert "DTRAIN_DEVICE" not in env and "CUDA_VISIBLE_DEVICES" not in env


def test_torchrun_names_beyond_rank_and_world_size():
    spec = {**SPEC, "restart": 2, "nodes": 2, "run_id": "abc", "max_restarts": 3}
    env = rank_environment({}, spec, [])
    assert (env["GROUP_RANK"], env["GROUP_WORLD_SIZE"]) == ("1", "2")  # the node, of N
    assert (env["ROLE_NAME"], env["ROLE_RANK"], env["ROLE_WORLD_SIZE"]) == ("default", "5", "8")
    assert env["TORCHELASTIC_RUN_ID"] == "abc"
    assert env["TORCHELASTIC_RESTART_COUNT"] == env["DTRAIN_RESTART_COUNT"] == "2"
    assert env["TORCHELASTIC_MAX_RESTARTS"] == "3"
    # without the optional keys: N from the sizes, torchrun's defaults
    env = rank_environment({}, SPEC, [])
    assert env["GROUP_WORLD_SIZE"] == "2" and env["TORCHELASTIC_RUN_ID"] == "none"
    assert env["TORCHELASTIC_MAX_RESTARTS"] == "0"


def test_an_outer_torchrun_agent_store_is_not_inherited():
    base = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RUN_ID": "outer"}
    env = rank_environment(base, {**SPEC, "run_id": "job"}, [])
    assert "TORCHELASTIC_USE_AGENT_STORE" not in env and env["TORCHELASTIC_RUN_ID"] == "job"


def test_ranks_with_several_gpus_each_train_on_the_first_of_their_share():
    spec = {**SPEC, "local_rank": 1, "local_world_size": 2}  # 4 GPUs, 2 ranks: 2 each
    env = rank_environment({}, spec, ["4", "5", "6", "7"])
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7" and env["DTRAIN_DEVICE"] == "cuda:2"


def test_fewer_gpus_than_ranks_on_a_node_is_refused():
    with pytest.raises(ValueError, match="4 ranks on a node with 2 GPU"):
        rank_environment({}, SPEC, ["0", "1"])
