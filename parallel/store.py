"""The rendezvous store: a small key-value server that rank 0 runs at MASTER_ADDR:MASTER_PORT.

Ranks use it to swap addresses (tcp), the NCCL unique id, and to count arrivals. Every
connection first proves it knows the job's secret (an HMAC challenge); requests are
length-prefixed binary frames; a malformed or unauthenticated connection is logged and
dropped while the store goes on serving the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time

from dtrain.parallel import wire
from dtrain.parallel.errors import RendezvousError

log = logging.getLogger(__name__)

_SET, _GET, _ADD, _WAIT, _CHECK, _DELETE = range(1, 7)
_OK, _TIMEOUT, _MISSING = 0, 1, 2
_PURPOSE = b"dtrain-store"
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_LONGEST_WAIT_S = 7 * 24 * 3600.0  # longer waits would overflow the platform's time_t


def _pack_key(key: str) -> bytes:
    raw = key.encode()
    return _U32.pack(len(raw)) + raw


def _wait_seconds(payload: bytes, offset: int) -> float:
    """A request's timeout in milliseconds, as seconds the server can wait for."""
    (timeout_ms,) = _I64.unpack_from(payload, offset)
    return min(max(timeout_ms / 1000, 0.0), _LONGEST_WAIT_S)


def _unpack_key(payload: bytes, offset: int) -> tuple[str, int]:
    (length,) = _U32.unpack_from(payload, offset)
    start = offset + _U32.size
    if start + length > len(payload):
        raise ValueError("key runs past the end of the frame")
    return payload[start : start + length].decode(), start + length


class StoreServer:
    """Serves the store on ``host:port`` (port 0 picks a free one) from daemon threads."""

    def __init__(self, host: str, port: int, secret: bytes) -> None:
        self.secret = secret
        self.data: dict[str, bytes] = {}
        self.changed = threading.Condition()
        self.listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        threading.Thread(target=self._accept, name="dtrain-store", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and hang up on every client: their next request fails."""
        self.closed = True
        # close() alone leaves the port bound while the accept thread sits in accept() (on
        # Linux): a second init_process_group on this port would fail. shutdown wakes it.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        authenticated = False
        with self.connections_lock:
            if self.closed:
                conn.close()
                return
            self.connections.add(conn)
        with conn:
            try:
                conn.settimeout(10)
                if not wire.challenge(conn, self.secret, _PURPOSE):
                    log.warning("store: refused %s:%s — it does not know the job secret", *peer[:2])
                    return
                authenticated = True
                conn.settimeout(None)
                while not self.closed:
                    request = wire.recv_frame(conn)
                    wire.send_frame(conn, self._handle(request))
            except ConnectionError as exc:
                if not authenticated:  # a dtrain client never hangs up mid-handshake
                    log.warning(
                        "store: refused %s:%s — it hung up before authenticating (%s)",
                        *peer[:2],
                        exc,
                    )
                return  # an authenticated client went away
            except (ValueError, UnicodeDecodeError, struct.error, TimeoutError) as exc:
                log.warning("store: dropped %s:%s after a malformed request (%s)", *peer[:2], exc)
            except OSError:
                return
            finally:
                with self.connections_lock:
                    self.connections.discard(conn)

    def _handle(self, request: bytes) -> bytes:
        if not request:
            raise ValueError("empty request")
        kind = request[0]
        key, offset = _unpack_key(request, 1) if kind != _WAIT else ("", 1)
        if kind == _SET:
            with self.changed:
                self.data[key] = request[offset:]
                self.changed.notify_all()
            return bytes([_OK])
        if kind == _GET:
            timeout = _wait_seconds(request, offset)
            with self.changed:
                if not self.changed.wait_for(lambda: key in self.data, timeout):
                    return bytes([_TIMEOUT])
                return bytes([_OK]) + self.data[key]
        if kind == _ADD:
            (delta,) = _I64.unpack_from(request, offset)
            with self.changed:
                value = int(self.data.get(key, b"0")) + delta
                self.data[key] = str(value).encode()
                self.changed.notify_all()
            return bytes([_OK]) + _I64.pack(value)
        if kind == _WAIT:
            (count,) = _U32.unpack_from(request, 1)
            offset = 1 + _U32.size
            keys = []
            for _ in range(count):
                key, offset = _unpack_key(request, offset)
                keys.append(key)
            timeout = _wait_seconds(request, offset)
            with self.changed:
                ok = self.changed.wait_for(lambda: all(k in self.data for k in keys), timeout)
            return bytes([_OK if ok else _TIMEOUT])
        if kind == _CHECK:
            with self.changed:
                return bytes([_OK if key in self.data else _MISSING])
        if kind == _DELETE:
            with self.changed:
                found = self.data.pop(key, None) is not None
            return bytes([_OK if found else _MISSING])
        raise ValueError(f"unknown request kind {kind}")


class StoreClient:
    """A connection to the store: ``set, get, add, wait, check, delete`` with timeouts."""

    def __init__(self, host: str, port: int, secret: bytes, timeout: float) -> None:
        self.address, self.timeout = (host, port), timeout
        self.lock = threading.Lock()
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:  # rank 0 may not be listening yet
            try:
                self.sock = socket.create_connection(
                    self.address, timeout=max(0.1, deadline - time.monotonic())
                )
                break
            except OSError as exc:
                if time.monotonic() + delay > deadline:
                    raise RendezvousError(
                        f"could not reach the rendezvous store at {host}:{port} within "
                        f"{timeout:.0f} s ({exc}); check MASTER_ADDR/MASTER_PORT and that rank 0 "
                        "is running"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        try:
            wire.prove(self.sock, secret, _PURPOSE)
        except OSError as exc:  # a timeout, a hang-up: not a dtrain store at that port
            self.sock.close()
            raise RendezvousError(
                f"{host}:{port} did not answer the rendezvous handshake ({exc}); another "
                "program may be using MASTER_PORT, or rank 0 is not a dtrain store: check "
                "MASTER_ADDR/MASTER_PORT"
            ) from None
        except RendezvousError:
            self.sock.close()
            raise

    def local_address(self) -> str:
        """The address this host uses to reach the store: reachable by the other ranks."""
        return self.sock.getsockname()[0]

    def _request(self, payload: bytes, wait: float | None = None) -> bytes:
        with self.lock:
            self.sock.settimeout(None if wait is None else wait + self.timeout)
            try:
                wire.send_frame(self.sock, payload)
                return wire.recv_frame(self.sock, limit=1 << 30)
            except (OSError, ConnectionError) as exc:
                raise RendezvousError(
                    f"lost the rendezvous store at {self.address[0]}:{self.address[1]} ({exc}); "
                    "rank 0, which serves it, may have exited"
                ) from None

    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (overwriting)."""
        self._request(bytes([_SET]) + _pack_key(key) + bytes(value))

    def get(self, key: str, timeout: float | None = None) -> bytes:
        """The value of ``key``, waiting up to ``timeout`` for some rank to set it."""
        timeout = self.timeout if timeout is None else timeout
        reply = self._request(
            bytes([_GET]) + _pack_key(key) + _I64.pack(int(timeout * 1000)), wait=timeout
        )
        if reply[0] == _TIMEOUT:
            raise RendezvousError(f"store key {key!r} was not set within {timeout:.1f} s")
        return reply[1:]

    def add(self, key: str, delta: int) -> int:
        """Add ``delta`` to the integer at ``key`` (0 if unset); returns the new value."""
        reply = self._request(bytes([_ADD]) + _pack_key(key) + _I64.pack(delta))
        return _I64.unpack_from(reply, 1)[0]

    def wait(self, keys: list[str], timeout: float | None = None) -> None:
        """Block until every key is set; RendezvousError after ``timeout``."""
        timeout = self.timeout if timeout is None else timeout
        body = b"".join(_pack_key(k) for k in keys)
        reply = self._request(
            bytes([_WAIT]) + _U32.pack(len(keys)) + body + _I64.pack(int(timeout * 1000)),
            wait=timeout,
        )
        if reply[0] == _TIMEOUT:
            raise RendezvousError(f"store keys {keys} were not all set within {timeout:.1f} s")

    def check(self, key: str) -> bool:
        """True when ``key`` is set."""
        return self._request(bytes([_CHECK]) + _pack_key(key))[0] == _OK

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return self._request(bytes([_DELETE]) + _pack_key(key))[0] == _OK

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self.sock.close()
