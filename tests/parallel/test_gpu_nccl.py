"""The nccl backend with one rank (the one GPU this project is lent): the collectives through
the API, and the backend's NCCL calls directly (a one-rank group skips them otherwise),
against numpy, in a real worker process."""

from __future__ import annotations

import pytest
from launcher import run_tcp

import dtrain as dt

# The test launcher pins its ranks to the CPU (DTRAIN_DEVICE=cpu); these ranks train on the GPU.
ON_GPU = {"DTRAIN_DEVICE": "cuda"}

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy"),
]


def test_nccl_one_rank_matches_numpy():
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(1, "workers:nccl_single", env=ON_GPU, guard=180)
    (value,) = launch.values()
    assert value["backend"] == "nccl"
    assert value["failures"] == [], value["failures"]
    assert value["checks"] > 50


def test_ddp_over_nccl_one_rank_equals_plain_training():
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(1, "gpu_workers:ddp_nccl_matches_plain", env=ON_GPU, guard=180)
    (value,) = launch.values()
    assert value["grads_on_gpu"]
    # Several buckets, each through the nccl group's all-reduce job (a one-rank group skips
    # the NCCL transfer itself; test_nccl_one_rank_matches_numpy calls it directly).
    assert value["buckets"] > 1
    assert value["worst"] < 1e-6, value


def test_ddp_over_nccl_with_fp16_compression_stays_close():
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(
        1, "gpu_workers:ddp_nccl_matches_plain", {"hook": "fp16"}, env=ON_GPU, guard=180
    )
    (value,) = launch.values()
    assert value["grads_on_gpu"]
    assert value["worst"] < 2e-3, value  # float16 rounding of the gradients, four steps


def test_nccl_batch_sends_to_this_rank_and_receives():
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(1, "gpu_workers:nccl_batch_to_self", env=ON_GPU, guard=180)
    (value,) = launch.values()
    assert value["works"] == 4 and value["into_on_gpu"]
    assert value["into"] == [3.0 * i for i in range(1000)]
    assert value["host_into"] == list(range(-3, 4))


def test_fsdp_over_nccl_one_rank_equals_plain_training():
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(1, "gpu_workers:fsdp_matches_plain", env=ON_GPU, guard=180)
    (value,) = launch.values()
    assert value["on_device"] and value["shards"] == 2
    assert value["worst"] < 1e-5, value


def test_fsdp_distributed_checkpoint_resumes_on_the_gpu(tmp_path):
    pytest.importorskip("cupy.cuda.nccl", reason="cupy without NCCL")
    launch = run_tcp(
        1,
        "gpu_workers:fsdp_checkpoint_resumes",
        {"folder": str(tmp_path / "ckpt")},
        env=ON_GPU,
        guard=180,
    )
    (value,) = launch.values()
    assert value["on_device"] and value["worst"] < 1e-6, value  # cuBLAS may pick other kernels
