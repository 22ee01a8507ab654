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


@pytest.mark.parametrize("shm", ["1", "0"])
def test_tcp_matches_tags_as_gloo(shm):
    """Rank 1 sends tag 1 then tag 2, rank 0 receives tag 2 first (plain and in a batch):
    each receive gets the message with its tag (with shm off, the collectives share the
    sockets with the messages)."""
    values = run_tcp(2, "p2p_batch_workers:tags_out_of_order", env={"DTRAIN_SHM": shm})
    value = values.values()[0]
    assert value["by_tag"] == [[1.0] * 4, [2.0] * 4], value
    assert value["sources"] == [1, 1]
    assert value["batch_by_tag"] == [[5.0] * 3, [6.0] * 3], value


@pytest.mark.parametrize("shm", ["1", "0"])
def test_tcp_point_to_point_does_not_hold_collectives(shm):
    values = run_tcp(2, "p2p_batch_workers:p2p_apart_from_collectives", env={"DTRAIN_SHM": shm})
    first, second = values.values()
    assert first["irecv_first"] == [7.0] * 3
    assert second["isend_behind"] == [9.0] * 3
    assert first["reduced"] == second["reduced"] == [6.0, 6.0]  # (1 + 2) * 2: two sums


def test_tcp_point_to_point_errors_name_the_peer_and_tags():
    value = run_tcp(2, "p2p_batch_workers:p2p_errors").values()[0]
    timeout = value["timeout"]
    assert timeout is not None and timeout["op"] == "recv" and timeout["rank"] == 1, value
    message = timeout["message"]
    assert "rank 1" in message and "tag 4" in message and "[5]" in message, message
    size = value["size"]
    assert size is not None and size["op"] == "recv", value
    assert "float32, 4 elements" in size["message"] and "5 elements" in size["message"], size
    assert "broken" in value["broken"], value


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
def test_ring_exchange_under_mpiexec():
    _check(run_mpi(3, "p2p_batch_workers:ring", {"recv_first": True}).values(), 5)


@pytest.mark.parametrize("shm", ["1", "0"])
def test_tcp_receive_from_any_rank_fails_once_every_sender_left(shm):
    values = run_tcp(2, "p2p_batch_workers:any_source_after_senders_left", env={"DTRAIN_SHM": shm})
    error = values.values()[0]["error"]
    assert error is not None and error["op"] == "recv", error
    message = error["message"]
    assert message.startswith("recv from any rank (tag 3): no rank is left"), message
    assert "rank 1 left the group" in message, message
