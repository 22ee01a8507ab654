"""The tcp backend's mesh: one authenticated stream socket between every two ranks.

Every rank listens on a TCP port and, on Linux, on an abstract Unix-domain socket, and
publishes both in the store next to an id of its host (boot id and network namespace).
Each rank connects to the ranks below it: over the Unix socket when the peer has the same
host id (loopback TCP moves bytes about 2.5x slower between two processes here, see
docs/parallel.md), over TCP otherwise or when the Unix connect fails; ``unix=False`` keeps to
TCP, so the cross-host path can be measured and tested on one machine.

Whoever connects must answer an HMAC challenge with the job's secret and then name its rank.
Anything else — garbage, a wrong secret, a rank that is not expected, a connection that says
nothing — is refused and logged, and the mesh goes on waiting for the real peers. Each
handshake runs on its own thread, so a silent connection holds up nobody.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time

from dtrain.parallel import wire
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.store import StoreClient

log = logging.getLogger(__name__)

PURPOSE = b"dtrain-tcp-mesh"
RANK = struct.Struct("!i")
_HANDSHAKE_S = 10.0  # at most this long for a connection to prove itself
_BUFFER = 1 << 20  # SO_SNDBUF/SO_RCVBUF: measured best for 2 MiB frames (docs/parallel.md)


def host_id() -> str:
    """Who can reach our abstract Unix socket: this boot of this kernel, this network
    namespace (abstract names are per namespace); ``""`` when that cannot be told."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        return ""


def connect(
    rank: int,
    size: int,
    names: list[int],
    timeout: float,
    store: StoreClient,
    prefix: str,
    secret: bytes,
    unix: bool = True,
) -> dict[int, socket.socket]:
    """Connect ``rank`` to every other rank; ``{peer: socket}`` (blocking, tuned).

    Raises:
        CollectiveError: naming the ranks not connected within ``timeout``.
    """
    me = host_id() if unix and hasattr(socket, "AF_UNIX") else ""
    listeners = [socket.create_server((store.local_address(), 0), backlog=size)]
    if me:
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        local.bind("")  # Linux autobind: a fresh abstract name, nothing left on disk
        local.listen(size)
        listeners.append(local)
    host, port = listeners[0].getsockname()[:2]
    address = f"{host}:{port} {me or '-'} {listeners[-1].getsockname().hex() if me else '-'}"
    store.set(f"{prefix}/addr/{rank}", address.encode())
    deadline = time.monotonic() + timeout
    admitted = _Admission(rank, size, secret)
    acceptor = threading.Thread(target=admitted.serve, args=(listeners, deadline), daemon=True)
    acceptor.start()
    sockets: dict[int, socket.socket] = {}
    error = ""
    try:
        for peer in range(rank):  # we connect to the ranks below ours
            left = max(0.0, deadline - time.monotonic())
            address = store.get(f"{prefix}/addr/{peer}", timeout=left).decode()
            sockets[peer] = _dial(address, me, max(left, 0.001))
            wire.prove(sockets[peer], secret, PURPOSE)
            sockets[peer].sendall(RANK.pack(rank))
        admitted.wait(deadline)
    except (OSError, RuntimeError, ValueError) as exc:
        # A refused or silent peer, the store's timeout (RendezvousError), a malformed
        # address: every socket opened so far is closed below and the missing ranks named.
        error = str(exc) or type(exc).__name__
    finally:
        admitted.stop()
        acceptor.join()
    sockets.update(admitted.sockets)
    if error or len(sockets) != size - 1:
        for conn in sockets.values():
            conn.close()
        missing = sorted(set(range(size)) - set(sockets) - {rank})
        raise CollectiveError(
            f"tcp: rank {names[rank]} could not connect to ranks {[names[m] for m in missing]} "
            f"within {timeout:.0f} s ({error or 'no connection'})"
        )
    for conn in sockets.values():
        _tune(conn)
    return sockets


def _dial(address: str, me: str, timeout: float) -> socket.socket:
    """Connect to a peer's published ``address``: its Unix socket when on our host."""
    tcp, host, unix_name = address.split(" ")
    if me and host == me and unix_name != "-":
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect(bytes.fromhex(unix_name))
            return conn
        except OSError as exc:  # e.g. another network namespace after all: use TCP
            log.info("tcp: Unix-domain connect failed (%s); using TCP", exc)
            conn.close()
    peer_host, port = tcp.rsplit(":", 1)
    return socket.create_connection((peer_host, int(port)), timeout=timeout)


def _tune(conn: socket.socket) -> None:
    conn.settimeout(None)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        conn.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
    if conn.family != socket.AF_UNIX:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Admission:
    """Accepts the ranks above ``rank``; each connection proves itself on its own thread."""

    def __init__(self, rank: int, size: int, secret: bytes) -> None:
        self.rank, self.size, self.secret = rank, size, secret
        self.sockets: dict[int, socket.socket] = {}
        self.done = threading.Condition()
        self.stopped = False

    def serve(self, listeners: list[socket.socket], deadline: float) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in listeners:
                listener.setblocking(False)
                selector.register(listener, selectors.EVENT_READ)
            try:
                while not self._finished() and time.monotonic() < deadline:
                    for key, _ in selector.select(min(0.1, max(0.0, deadline - time.monotonic()))):
                        try:
                            conn, origin = key.fileobj.accept()
                        except BlockingIOError:
                            continue
                        threading.Thread(
                            target=self._admit,
                            args=(conn, origin or "a local process"),
                            daemon=True,
                        ).start()
            finally:
                for listener in listeners:
                    listener.close()

    def _admit(self, conn: socket.socket, origin: object) -> None:
        conn.setblocking(True)
        conn.settimeout(_HANDSHAKE_S)
        try:
            if not wire.challenge(conn, self.secret, PURPOSE):
                raise ValueError("it does not know the job secret (DTRAIN_SECRET)")
            (peer,) = RANK.unpack(wire.recv_exact(conn, RANK.size))
            with self.done:
                if self.stopped or not self.rank < peer < self.size or peer in self.sockets:
                    raise ValueError(f"it claims rank {peer}, which is not expected here")
                self.sockets[peer] = conn
                self.done.notify_all()
        except (OSError, ValueError) as exc:
            log.warning("tcp: refused a mesh connection from %s: %s", origin, exc or repr(exc))
            conn.close()

    def _finished(self) -> bool:
        with self.done:
            return self.stopped or len(self.sockets) == self.size - 1 - self.rank

    def wait(self, deadline: float) -> None:
        with self.done:
            self.done.wait_for(
                lambda: len(self.sockets) == self.size - 1 - self.rank,
                max(0.0, deadline - time.monotonic()),
            )

    def stop(self) -> None:
        with self.done:
            self.stopped = True
