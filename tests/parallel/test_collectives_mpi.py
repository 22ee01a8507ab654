"""Every collective on the mpi backend: the same sweep as the tcp tests, under ``mpiexec``
(the one next to this Python: the mpich wheel's, or Open MPI's)."""

from __future__ import annotations

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi

import dtrain as dt

pytestmark = pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_collective_matches_numpy(world_size):
    # World size 3 runs with DTRAIN_DEBUG=1: a signature exchange before every collective,
    # which matching calls must pass.
    env = {"DTRAIN_DEBUG": "1"} if world_size == 3 else {}
    launch = run_mpi(world_size, "workers:collectives", {"backend": "mpi"}, env=env, guard=150)
    values = launch.values()
    for rank, value in enumerate(values):
        assert value["failures"] == [], f"rank {rank}: {value['failures']}"
        assert value["backend"] == "mpi"
        assert value["digests_agree"], "ranks hold different results for the same collective"
        assert value["checks"] > 1000, value


@pytest.mark.skipif(dt.cuda_is_available(), reason="with CUDA the automatic choice is nccl")
def test_mpiexec_selects_the_mpi_backend_by_itself():
    values = run_mpi(2, "failure_workers:init_only", {"backend": None}).values()
    assert [(v["rank"], v["world_size"], v["backend"]) for v in values] == [
        (0, 2, "mpi"),
        (1, 2, "mpi"),
    ]
    assert values[0]["x"] == [0.0, 2.0, 4.0]


def test_a_tcp_group_under_mpiexec_meets_through_mpi_without_master_port():
    # mpiexec sets no MASTER_ADDR/MASTER_PORT; tcp (and nccl, the GPU default under mpiexec)
    # meet at rank 0's store, whose address and a job secret MPI carries
    env = {"MASTER_ADDR": None, "MASTER_PORT": None, "DTRAIN_SECRET": None}
    values = run_mpi(2, "failure_workers:init_only", {"backend": "tcp"}, env=env).values()
    assert [(v["rank"], v["backend"], v["x"]) for v in values] == [
        (0, "tcp", [0.0, 2.0, 4.0]),
        (1, "tcp", [0.0, 2.0, 4.0]),
    ]


def test_the_mpi_rendezvous_gives_up_when_a_rank_never_arrives():
    env = {"MASTER_ADDR": None, "MASTER_PORT": None}
    launch = run_mpi(2, "failure_workers:rendezvous_without_rank_1", {"timeout": 3}, env=env)
    values = launch.values()
    assert values[1] == {"rank": 1, "skipped": True}
    assert values[0]["type"] == "RendezvousError", values[0]
    assert "did not arrive within the timeout" in values[0]["message"]
    assert values[0]["elapsed"] < 60  # it ended (the exact time is the machine's)


def test_rank_0_advertises_master_addr_loopback_or_its_route_to_the_others():
    from dtrain.parallel.errors import RendezvousError
    from dtrain.parallel.mpi_rendezvous import _advertised_address

    assert _advertised_address("10.0.0.7", [b"a", b"b"]) == "10.0.0.7"
    assert _advertised_address(None, [b"a", b"a", b"a"]) == "127.0.0.1"
    with pytest.raises(RendezvousError, match="set MASTER_ADDR"):
        _advertised_address(None, [b"a", b"no-such-host.invalid"])


def test_a_dropped_isend_still_sends_its_values():
    values = run_mpi(2, "failure_workers:dropped_isend", guard=120).values()
    assert values[1] == {"rank": 1, "equal": True}
