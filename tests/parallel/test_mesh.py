"""The tcp backend's mesh: which socket family same-host peers get, and garbage at the port.

A rank's mesh port is open while the group forms. Garbage, a wrong secret, a connection that
says nothing, or an authenticated one that claims a rank it should not, must be refused and
logged while the real peers still connect and the collectives give the right numbers (the
store port has the same tests in test_store.py). The ranks here are threads of this process,
each with its own store connection: the mesh is exercised, not the launcher.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtrain.parallel import CollectiveError, wire
from dtrain.parallel.backends import mesh
from dtrain.parallel.backends.tcp import TcpGroup
from dtrain.parallel.store import StoreClient, StoreServer

SECRET = b"mesh-test-secret"
_prefixes = itertools.count()


class _Records(logging.Handler):
    """The mesh's log records (hypothesis reruns a test body, so caplog would not do)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def server():
    store = StoreServer("127.0.0.1", 0, SECRET)
    yield store
    store.close()


@pytest.fixture
def records():
    handler = _Records()
    logger = logging.getLogger("dtrain.parallel.backends.mesh")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)


def _client(server: StoreServer) -> StoreClient:
    return StoreClient("127.0.0.1", server.port, SECRET, timeout=20)


def _groups(server, size: int, unix: bool = True, before=None) -> list[TcpGroup]:
    """``size`` TcpGroups (sockets only) formed by threads; ``before(store, prefix)`` runs
    once rank 0 listens, before the other ranks connect."""
    prefix = f"mesh{next(_prefixes)}"
    clients = [_client(server) for _ in range(size)]

    def make(rank: int) -> TcpGroup:
        return TcpGroup(
            rank, size, 20.0, list(range(size)), clients[rank], prefix, SECRET, False, unix
        )

    with ThreadPoolExecutor(size) as pool:
        first = pool.submit(make, 0)
        if before is not None:
            outsider = _client(server)
            outsider.wait([f"{prefix}/addr/0"], timeout=20)
            before(outsider, prefix)
            outsider.close()
        rest = [pool.submit(make, r) for r in range(1, size)]
        return [first.result(), *(f.result() for f in rest)]


def _all_reduce(groups: list[TcpGroup], count: int) -> list[np.ndarray]:
    arrays = [np.full(count, r + 1, np.float32) for r in range(len(groups))]
    with ThreadPoolExecutor(len(groups)) as pool:
        works = list(
            pool.map(lambda ga: ga[0].all_reduce(ga[1], async_op=False), zip(groups, arrays))
        )
    for work in works:
        work.wait()
    return arrays


def _destroy(groups: list[TcpGroup]) -> None:
    with ThreadPoolExecutor(len(groups)) as pool:
        list(pool.map(lambda g: g.destroy(), groups))


def _address(store: StoreClient, prefix: str, family: str):
    """Rank 0's published TCP (host, port) or abstract Unix name."""
    tcp, _, unix_name = store.get(f"{prefix}/addr/0").decode().split(" ")
    if family == "tcp":
        host, port = tcp.rsplit(":", 1)
        return socket.AF_INET, (host, int(port))
    return socket.AF_UNIX, bytes.fromhex(unix_name)


def _families(groups: list[TcpGroup]) -> set:
    return {peer.sock.family for g in groups for peer in g.peers.values()}


# ---- which sockets -------------------------------------------------------------------------
@pytest.mark.parametrize("unix", [True, False], ids=["same-host-unix", "forced-tcp"])
@pytest.mark.parametrize("size", [2, 3])
def test_same_host_peers_use_unix_sockets_unless_forced_onto_tcp(server, unix, size):
    groups = _groups(server, size, unix=unix)
    try:
        expected = socket.AF_UNIX if unix and mesh.host_id() else socket.AF_INET
        assert _families(groups) == {expected}
        # 1 MiB: the pipelined ring, in several frames; 1000: the direct exchange
        for count in (1 << 18, 1000):
            total = size * (size + 1) / 2
            for result in _all_reduce(groups, count):
                np.testing.assert_array_equal(result, np.full(count, total, np.float32))
    finally:
        _destroy(groups)


def test_a_peer_with_another_host_id_is_reached_over_tcp(server, monkeypatch):
    """Ranks that share no host (here: a host id that differs) connect over TCP."""
    ids = iter(["host-a", "host-b"])
    lock = threading.Lock()

    def host_id() -> str:
        with lock:
            return next(ids)

    monkeypatch.setattr(mesh, "host_id", host_id)
    groups = _groups(server, 2)
    try:
        assert _families(groups) == {socket.AF_INET}
        np.testing.assert_array_equal(_all_reduce(groups, 10)[1], np.full(10, 3, np.float32))
    finally:
        _destroy(groups)


# ---- garbage at the mesh port -----------------------------------------------------------
def _families_to_fuzz() -> list[str]:
    return ["tcp", "unix"] if mesh.host_id() else ["tcp"]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=80),
    family=st.sampled_from(_families_to_fuzz()),
    hang_up=st.booleans(),
)
def test_fuzzed_bytes_at_the_mesh_port_are_refused_and_the_group_forms(
    server, records, body, family, hang_up
):
    intruders: list[socket.socket] = []

    def intrude(store: StoreClient, prefix: str) -> None:
        kind, address = _address(store, prefix, family)
        sock = socket.socket(kind, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(address)
        assert len(wire.recv_exact(sock, wire.NONCE_BYTES)) == wire.NONCE_BYTES
        if body:
            sock.sendall(body)
        if hang_up:
            sock.shutdown(socket.SHUT_WR)
        if hang_up or len(body) >= hashlib.sha256().digest_size:
            # the server has an answer it can judge: a wrong HMAC, or a short one
            reply = sock.recv(1)
            assert reply in (b"", b"\x00"), reply
        intruders.append(sock)  # kept open (silent, or waiting) while the group forms

    records.messages.clear()
    groups = _groups(server, 2, before=intrude)
    try:
        np.testing.assert_array_equal(_all_reduce(groups, 7)[0], np.full(7, 3, np.float32))
        if hang_up or len(body) >= hashlib.sha256().digest_size:
            assert any("refused a mesh connection" in m for m in records.messages), records
    finally:
        for sock in intruders:
            sock.close()
        _destroy(groups)


@pytest.mark.parametrize("claimed", [0, 3, 7, -1], ids=["itself", "size", "too-high", "negative"])
def test_an_authenticated_connection_claiming_a_wrong_rank_is_refused(server, records, claimed):
    """Rank 0 of 3 expects ranks 1 and 2 to connect: any other claim is refused and logged."""
    intruders: list[socket.socket] = []

    def intrude(store: StoreClient, prefix: str) -> None:
        _, address = _address(store, prefix, "tcp")
        sock = socket.create_connection(address, timeout=5)
        wire.prove(sock, SECRET, mesh.PURPOSE)
        sock.sendall(mesh.RANK.pack(claimed))
        assert sock.recv(1) == b""  # refused: closed
        intruders.append(sock)

    records.messages.clear()
    groups = _groups(server, 3, before=intrude)
    try:
        np.testing.assert_array_equal(_all_reduce(groups, 5)[2], np.full(5, 6, np.float32))
        assert any(f"claims rank {claimed}" in m for m in records.messages), records.messages
    finally:
        for sock in intruders:
            sock.close()
        _destroy(groups)


def test_a_missing_peer_is_named_within_the_timeout(server):
    prefix = f"mesh{next(_prefixes)}"
    with pytest.raises(CollectiveError, match=r"could not connect to ranks \[1\]"):
        TcpGroup(0, 2, 0.5, [0, 1], _client(server), prefix, SECRET, False)
