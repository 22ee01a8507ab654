"""The rendezvous store: its API, authentication, and garbage at its port.

A malformed or unauthenticated connection must be refused and logged while the store goes
on serving everyone else; a client must get a RendezvousError, never a hang or a raw socket
error, whatever answers at MASTER_PORT.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dtrain.parallel as dist
from dtrain.parallel import RendezvousError, wire
from dtrain.parallel.store import _PURPOSE, StoreClient, StoreServer

SECRET = b"store-test-secret"
_U32, _I64 = struct.Struct("!I"), struct.Struct("!q")


@pytest.fixture
def server():
    store = StoreServer("127.0.0.1", 0, SECRET)
    yield store
    store.close()


@pytest.fixture
def client(server):
    connection = StoreClient("127.0.0.1", server.port, SECRET, timeout=5)
    yield connection
    connection.close()


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _authenticated(port: int) -> socket.socket:
    sock = _raw(port)
    wire.prove(sock, SECRET, _PURPOSE)
    return sock


def _key(key: bytes) -> bytes:
    return _U32.pack(len(key)) + key


def _wait_for_log(caplog, text: str, timeout: float = 5.0) -> bool:
    """The server logs from its own threads: poll for the record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in record.getMessage() for record in caplog.records):
            return True
        time.sleep(0.01)
    return False


# ---- the API ------------------------------------------------------------------------------------
def test_set_get_add_wait_check_delete(client, server):
    client.set("a", b"\x00\x01binary")
    assert client.get("a") == b"\x00\x01binary"
    assert client.check("a") and not client.check("b")
    assert client.add("counter", 2) == 2 and client.add("counter", -5) == -3
    client.wait(["a", "counter"], timeout=1)
    assert client.delete("a") and not client.delete("a")
    other = StoreClient("127.0.0.1", server.port, SECRET, timeout=5)
    try:
        timer = threading.Timer(0.2, other.set, ("late", b"here"))
        timer.start()
        assert client.get("late", timeout=5) == b"here"  # get waits for another client's set
        timer.join()
    finally:
        other.close()


def test_get_and_wait_time_out_with_a_rendezvous_error(client):
    with pytest.raises(RendezvousError, match="'missing' was not set"):
        client.get("missing", timeout=0.2)
    with pytest.raises(RendezvousError, match="not all set"):
        client.wait(["missing"], timeout=0.2)
    client.set("still", b"works")  # the connection survives a timeout
    assert client.get("still") == b"works"


def test_wrong_secret_is_refused_and_logged(server, caplog):
    caplog.set_level(logging.WARNING, logger="dtrain.parallel.store")
    with pytest.raises(RendezvousError, match="DTRAIN_SECRET"):
        StoreClient("127.0.0.1", server.port, b"wrong", timeout=5)
    assert _wait_for_log(caplog, "does not know the job secret")


def test_unreachable_store_fails_within_the_timeout():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(RendezvousError, match="could not reach the rendezvous store"):
        StoreClient("127.0.0.1", port, SECRET, timeout=0.5)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "reply", [b"", b"x" * 10, b"n" * 32 + b"\x07"], ids=["silent", "short", "junk"]
)
def test_something_else_at_the_port_is_a_rendezvous_error(reply):
    """Another program on MASTER_PORT: a silent one, one that hangs up, one that answers junk."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            if reply:
                conn.sendall(reply)
                if len(reply) < 32:
                    return  # hang up
            time.sleep(2)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(RendezvousError):
            StoreClient("127.0.0.1", port, SECRET, timeout=0.5)
    finally:
        listener.close()


def test_requests_after_the_server_closed_fail_clearly(server):
    connection = StoreClient("127.0.0.1", server.port, SECRET, timeout=2)
    server.close()
    with pytest.raises(RendezvousError, match="lost the rendezvous store"):
        connection.get("anything", timeout=0.1)


# ---- garbage at the port ------------------------------------------------------------------------
def test_random_bytes_before_authentication_are_refused(server, client, caplog):
    caplog.set_level(logging.WARNING, logger="dtrain.parallel.store")
    rng = np.random.default_rng(0)
    for length in [0, 1, 31, 32, 33, 100, 4096, *rng.integers(0, 300, 20)]:
        sock = _raw(server.port)
        with sock:
            assert len(wire.recv_exact(sock, wire.NONCE_BYTES)) == wire.NONCE_BYTES
            if length:
                sock.sendall(rng.bytes(int(length)))
            if length == 32:  # a wrong HMAC: the server answers "no" and hangs up
                assert sock.recv(1) == b"\x00"
    assert _wait_for_log(caplog, "does not know the job secret")
    assert _wait_for_log(caplog, "hung up before authenticating")
    client.set("after", b"garbage")
    assert client.get("after") == b"garbage"


@pytest.mark.parametrize(
    ("frame", "logged"),
    [
        (_U32.pack(1 << 31), "exceeds the limit"),  # an oversized length
        (_U32.pack(0), "empty request"),
        (_U32.pack(5) + b"\x09" + _U32.pack(0), "unknown request kind"),
        (_U32.pack(3) + b"\x02\x00\x00", "unpack"),  # a truncated key length
        (_U32.pack(9) + b"\x01" + _U32.pack(100) + b"abcd", "past the end"),
        (_U32.pack(7) + b"\x01" + _key(b"\xff\xfe"), "decode"),  # not UTF-8
        (_U32.pack(7) + b"\x04" + _U32.pack(0xFFFFFFFF) + b"ab", "unpack"),  # WAIT, 4 G keys
        (_U32.pack(8) + b"\x03" + _key(b"k") + b"\x00\x00", "unpack"),  # ADD, no delta
    ],
    ids=["oversized", "empty", "kind", "key-length", "key-past-end", "utf8", "wait-count", "add"],
)
def test_malformed_frames_are_dropped_and_logged(server, client, caplog, frame, logged):
    caplog.set_level(logging.WARNING, logger="dtrain.parallel.store")
    sock = _authenticated(server.port)
    with sock:
        sock.sendall(frame)
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the server answered a malformed frame"
    assert _wait_for_log(caplog, "malformed request"), caplog.text
    assert logged in caplog.text
    client.set("still", b"serving")
    assert client.get("still") == b"serving"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=64), claimed=st.integers(0, 200))
def test_fuzzed_frames_never_stop_the_store(server, client, body, claimed):
    sock = _authenticated(server.port)
    with sock:
        sock.settimeout(0.2)
        try:
            sock.sendall(_U32.pack(claimed) + body)
            sock.shutdown(socket.SHUT_WR)  # a short frame then ends at once
            sock.recv(64)  # an answer, a hang-up, or (a GET/WAIT now waiting) nothing
        except OSError:  # the server dropped us already, or is waiting (TimeoutError)
            pass
    client.set("fuzz", body)
    assert client.get("fuzz") == body


def test_absurd_wait_times_are_clamped(server, client):
    """A GET for a missing key with a timeout of ~146 million years waits (it used to kill
    the connection's thread with an OverflowError) and returns once the key is set."""
    sock = _authenticated(server.port)
    with sock:
        wire.send_frame(sock, b"\x02" + _key(b"eventually") + _I64.pack(1 << 62))
        timer = threading.Timer(0.2, client.set, ("eventually", b"set"))
        timer.start()
        sock.settimeout(5)
        assert wire.recv_frame(sock) == b"\x00set"
        timer.join()
        wire.send_frame(sock, b"\x02" + _key(b"never") + _I64.pack(-(1 << 62)))
        assert wire.recv_frame(sock) == b"\x01"  # a negative timeout: "timed out" at once


# ---- MASTER_PORT --------------------------------------------------------------------------------
def test_master_port_in_use_is_a_rendezvous_error(monkeypatch):
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "1")
        with pytest.raises(RendezvousError, match=f"{port}.*in use"):
            dist.init_process_group("tcp", timeout=2)
        assert not dist.is_initialized()
        # A rank > 0 pointed at that port finds a program that is not a store.
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("DTRAIN_SECRET", "s")
        start = time.monotonic()
        with pytest.raises(RendezvousError, match="MASTER_PORT"):
            dist.init_process_group("tcp", timeout=1)
        assert time.monotonic() - start < 10
        assert not dist.is_initialized()
    finally:
        busy.close()


def test_a_closed_store_frees_its_port_for_the_next_one():
    """close() must release the port even though the accept thread is blocked in accept():
    a second init_process_group in the same process serves the store on the same port."""
    first = StoreServer("127.0.0.1", 0, SECRET)
    port = first.port
    client = StoreClient("127.0.0.1", port, SECRET, timeout=5)
    client.set("k", b"v")
    client.close()
    first.close()
    second = StoreServer("127.0.0.1", port, SECRET)
    try:
        again = StoreClient("127.0.0.1", port, SECRET, timeout=5)
        assert not again.check("k")  # the new store, not the old one
        again.close()
    finally:
        second.close()
