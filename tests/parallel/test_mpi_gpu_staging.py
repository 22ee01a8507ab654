"""The mpi backend with GPU tensors: MPI is not assumed CUDA-aware, so every collective and
point-to-point message goes through host copies and lands back on the GPU (the CUDA
emulator stands in for the GPU; the communicator refuses device memory)."""

from __future__ import annotations

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi

pytestmark = pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)


def test_gpu_tensors_cross_mpi_through_host_copies():
    values = run_mpi(2, "mpi_gpu_workers:collectives_on_gpu_arrays", guard=120).values()
    for value in values:
        assert value["avg"] == [value["expected_avg"]] * 4, value
        assert value["broadcast"] == [1.0] * 3
        assert value["gathered"] == [[0.0, 0.0], [1.0, 1.0]]
        assert value["reduce_scatter"] == [1.0, 1.0]  # 0 + 1 for each rank's chunk
        assert value["on_gpu"] == ["cuda"] * 6
        assert {"Iallreduce", "Ibcast", "Iallgather", "Ireduce_scatter_block"} <= set(
            value["mpi_calls"]
        )
    assert values[1]["received"] == [0.0, 1.0, 2.0]
    assert "Isend" in values[0]["mpi_calls"] and "Irecv" in values[1]["mpi_calls"]
