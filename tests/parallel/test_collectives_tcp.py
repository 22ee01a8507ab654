"""Every collective on the tcp backend, in real processes, against numpy references.

One launch per world size runs the whole sweep (``workers.collectives``): every op, dtype,
reduce op and size class (0, 1, odd, 1 Mi + 3 elements, one 64 MiB all_reduce and broadcast),
sync and async, Tensors and arrays, non-contiguous layouts, objects, point-to-point, argument
errors and new_group subgroups. Same-host groups use shared memory unless DTRAIN_SHM=0, so
the socket path runs as well.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
from launcher import run_tcp

import dtrain.parallel as dist


def _check_sweep(launch, backend: str) -> None:
    values = launch.values()
    for rank, value in enumerate(values):
        assert value["failures"] == [], f"rank {rank}: {value['failures']}"
        assert value["backend"] == backend
        assert value["digests_agree"], "ranks hold different results for the same collective"
        assert value["checks"] > 1000, value


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_every_collective_matches_numpy(world_size):
    _check_sweep(run_tcp(world_size, "workers:collectives", guard=150), "tcp")


@pytest.mark.parametrize("world_size", [2, 5])
def test_every_collective_over_sockets(world_size):
    launch = run_tcp(world_size, "workers:collectives", env={"DTRAIN_SHM": "0"}, guard=150)
    _check_sweep(launch, "tcp")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_new_group_takes_backend_names_as_init_does(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("gloo")  # PyTorch's CPU backend name: tcp here
    try:
        group = dist.new_group(backend="GLOO", pg_options={"unix": False})
        assert dist.get_backend(group) == "gloo"  # the name asked for; it runs on tcp
        with pytest.raises(ValueError, match="cannot make mpi groups"):
            dist.new_group(backend="mpi")
        with pytest.raises(ValueError, match="unknown backend"):
            dist.new_group(backend="carrier-pigeon")
        with pytest.raises(TypeError, match="True or False"):
            dist.new_group(pg_options={"unix": "false"})
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("port", [None, "0", ""])
def test_single_process_without_master_port_picks_a_free_port(monkeypatch, port):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    if port is not None:
        monkeypatch.setenv("MASTER_PORT", port)
    dist.init_process_group("tcp")
    try:
        assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "tcp")
        x = np.arange(4.0)
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
        dist.broadcast(x, 0)
        dist.barrier()
        objects: list = [None]
        dist.all_gather_object(objects, {"a": 1})
        assert objects == [{"a": 1}]
        np.testing.assert_array_equal(x, np.arange(4.0))
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_several_ranks_need_master_port(monkeypatch):
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("DTRAIN_SECRET", "s")
    with pytest.raises(ValueError, match="MASTER_PORT"):
        dist.init_process_group("tcp", rank=0, world_size=2)
    assert not dist.is_initialized()


def test_init_twice_and_use_before_init(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.all_reduce(np.ones(2))
    dist.init_process_group("tcp", init_method=f"tcp://127.0.0.1:{_free_port()}")
    try:
        with pytest.raises(RuntimeError, match="already called"):
            dist.init_process_group("tcp")
    finally:
        dist.destroy_process_group()


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="tcp"):
        dist.init_process_group("carrier-pigeon", rank=0, world_size=1)
