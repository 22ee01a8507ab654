"""DistributedDataParallel equals one process on the global batch (real processes)."""

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi, run_tcp

FLOAT32_SLACK = 2e-5  # float32 round-off: averaging per-rank means vs one global mean


def _values(launch):
    assert not launch.timed_out, launch.describe() if hasattr(launch, "describe") else launch
    values = []
    for rank in launch.ranks:
        assert rank.result is not None and rank.result["ok"], rank.output[-3000:]
        values.append(rank.result["value"])
    return values


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_mlp_matches_single_process_on_tcp(world):
    for value in _values(run_tcp(world, "ddp_workers:equivalence", {"kind": "mlp"})):
        assert value["worst"] < FLOAT32_SLACK
        assert value["grads_are_views"]
        assert value["buckets"] > 1 or world == 1  # one rank: a pass-through, no buckets


@pytest.mark.parametrize("world", [2, 3])
def test_gradient_accumulation_with_no_sync(world):
    launch = run_tcp(world, "ddp_workers:equivalence", {"kind": "mlp", "accumulate": 3})
    for value in _values(launch):
        assert value["worst"] < FLOAT32_SLACK


@pytest.mark.parametrize("world", [2, 3])
def test_cnn_with_sync_batchnorm_matches(world):
    for value in _values(run_tcp(world, "ddp_workers:equivalence", {"kind": "cnn"})):
        assert value["worst"] < FLOAT32_SLACK


def test_char_gpt_matches():
    for value in _values(run_tcp(2, "ddp_workers:equivalence", {"kind": "gpt"})):
        assert value["worst"] < FLOAT32_SLACK


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_mlp_and_cnn_match_under_mpiexec(world):
    for kind in ("mlp", "cnn"):
        for value in _values(
            run_mpi(world, "ddp_workers:equivalence", {"kind": kind, "accumulate": 2})
        ):
            assert value["worst"] < FLOAT32_SLACK, kind


def test_fp16_compression_hook_stays_close():
    for value in _values(run_tcp(2, "ddp_workers:equivalence", {"kind": "mlp", "hook": "fp16"})):
        assert value["worst"] < 5e-3


@pytest.mark.parametrize("find_unused", [True, False])
def test_unused_parameters_keep_grad_none_with_one_warning(find_unused):
    """As PyTorch with ``find_unused_parameters=True``: a parameter no rank gave a gradient
    keeps ``.grad`` None; one that some ranks used gets the average on every rank (zeros
    from the others). Without it, the unused ones get zeros, and the warning says how."""
    values = _values(
        run_tcp(2, "ddp_workers:unused_parameter", {"find_unused_parameters": find_unused})
    )
    for value in values:
        assert len(value["warnings"]) == 1 and "unused.weight" in value["warnings"][0]
        assert ("find_unused_parameters=True" in value["warnings"][0]) is not find_unused
        assert value["unused_grads"] == [find_unused, find_unused]
        assert value["partly_grad_sum"] is not None
    assert values[0]["partly_grad_sum"] == values[1]["partly_grad_sum"]


@pytest.mark.parametrize("world", [2, 3])
def test_adamw_with_an_unused_layer_matches_single_process(world):
    for value in _values(run_tcp(world, "ddp_workers:unused_with_adamw")):
        assert value["worst"] < FLOAT32_SLACK
        assert value["unused_moved"] == 0.0


def test_different_models_are_refused_naming_rank_and_parameter():
    for value in _values(run_tcp(2, "ddp_workers:mismatched_models")):
        assert value["error"] is not None
        assert "rank 1" in value["error"] and "weight" in value["error"]
