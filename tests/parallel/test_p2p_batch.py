"""``P2POp`` and ``batch_isend_irecv``: ring exchanges in one batch, in any order of sends
and receives, messages matching in list order (real processes, tcp and mpi)."""

from __future__ import annotations

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi, run_tcp


def _check(values: list, size: int) -> None:
    world = len(values)
    for rank, value in enumerate(values):
        left = (rank - 1) % world
        assert value["works"] == 2
        assert value["ring"] == [1000.0 * left + i for i in range(size)]
        assert value["ordered"] == [[left + 0.5] * 3, [left + 0.25] * 3]
        assert value["probe"] == [float(world)]
        assert value["bad"]["op"] is not None and "isend" in value["bad"]["op"]
        assert all(message is not None for message in value["bad"].values()), value["bad"]
        assert value["numpy_peer"] == (rank + 1) % world
    members = list(range(1, world)) if world > 2 else []
    for me, rank in enumerate(members):
        value = values[rank]
        assert value["subgroup"] == [members[(me - 1) % len(members)]] * 2
        assert "same group" in value["errors"]["mixed_groups"]
        assert value["errors"]["outside_peer"] is not None
    assert "subgroup" not in values[0]


@pytest.mark.parametrize("recv_first", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_ring_exchange_on_tcp(world, recv_first):
    args = {"recv_first": recv_first}
    _check(run_tcp(world, "p2p_batch_workers:ring", args).values(), 5)


def test_a_large_ring_with_receives_first():
    """Megabytes a rank: a receive posted before its send must not deadlock the batch."""
    size = 1 << 21
    values = run_tcp(3, "p2p_batch_workers:ring", {"size": size, "recv_first": True}).values()
    for rank, value in enumerate(values):
        ring = value.pop("ring")
        left = (rank - 1) % 3
        assert ring[0] == 1000.0 * left and ring[-1] == 1000.0 * left + size - 1
        assert len(ring) == size


def test_tcp_matches_tags_in_send_order():
    """The documented difference from gloo: a receive whose tag is not the next message's
    raises, naming both tags, instead of waiting for the message with its tag."""
    values = run_tcp(2, "p2p_batch_workers:tags_in_send_order").values()
    assert "error" not in values[0]
    assert "tag 1" in values[1]["error"] and "tag 2" in values[1]["error"], values[1]


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
def test_ring_exchange_under_mpiexec():
    _check(run_mpi(3, "p2p_batch_workers:ring", {"recv_first": True}).values(), 5)
