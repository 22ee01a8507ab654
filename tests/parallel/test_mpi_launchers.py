"""Rank, world size and local rank under either MPI's ``mpiexec``: ``read_config`` falls back
to Hydra's (MPICH) and Open MPI's variables, agrees with MPI itself, and a world smaller than
the one ``mpiexec`` started (mpi4py built against another MPI) is refused."""

from types import SimpleNamespace

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi

from dtrain.parallel.backends import mpi as mpi_backend
from dtrain.runtime.config import mpi_world_size, read_config, under_mpiexec

HYDRA = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}
OPEN_MPI = {
    "OMPI_COMM_WORLD_RANK": "2",
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_LOCAL_RANK": "0",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    "PMIX_RANK": "2",
}


def _placement(config) -> tuple:
    return config.rank, config.world_size, config.local_rank, config.local_world_size


@pytest.mark.parametrize("env", [HYDRA, OPEN_MPI], ids=["hydra", "open-mpi"])
def test_an_mpi_launchers_variables_give_the_placement(env):
    assert _placement(read_config(env)) == (2, 4, 0, 2)
    assert under_mpiexec(env) and mpi_world_size(env) == 4


def test_torchrun_names_win_over_mpi_ones():
    env = {**OPEN_MPI, "RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}
    assert _placement(read_config(env)) == (1, 3, 1, 2)
    assert mpi_world_size({"WORLD_SIZE": "3"}) is None
    assert not under_mpiexec({"RANK": "0", "WORLD_SIZE": "3"})


def test_a_world_smaller_than_mpiexec_started_is_refused(monkeypatch):
    library = SimpleNamespace(Get_library_version=lambda: "Open MPI v4.1.4, package: Debian\x00")
    one_rank = SimpleNamespace(Get_size=lambda: 1)
    monkeypatch.setattr(mpi_backend, "_mpi", lambda: library)
    monkeypatch.delenv("PMI_SIZE", raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    match = r"started 2 ranks but MPI sees a world of 1: .* 'Open MPI v4.1.4, package: Debian'"
    with pytest.raises(RuntimeError, match=match + r".*--no-binary mpi4py"):
        mpi_backend._check_launcher(one_rank)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    mpi_backend._check_launcher(one_rank)  # they agree


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
@pytest.mark.parametrize("world", [1, 3])
def test_the_environment_agrees_with_mpi(world):
    for rank, value in enumerate(run_mpi(world, "failure_workers:placement").values()):
        assert value["config"] == value["mpi"] == [rank, world, rank, world]
        assert value["under_mpiexec"]
