"""Length-prefixed binary frames and the HMAC handshake every connection starts with.

Nothing received is ever unpickled: frames are bytes whose layout the reader knows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

from dtrain.parallel.errors import RendezvousError

MAX_FRAME = 1 << 20  # control frames (store requests, handshakes) are small
_LENGTH = struct.Struct("!I")
NONCE_BYTES = 32


def recv_exact(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes; ConnectionError when the peer closes first."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    got = 0
    while got < count:
        n = sock.recv_into(view[got:], count - got)
        if n == 0:
            raise ConnectionError(f"connection closed after {got} of {count} bytes")
        got += n
    return bytes(buffer)


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the socket; ConnectionError when the peer closes first."""
    got, count = 0, len(view)
    while got < count:
        n = sock.recv_into(view[got:], count - got)
        if n == 0:
            raise ConnectionError(f"connection closed after {got} of {count} bytes")
        got += n


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one length-prefixed frame."""
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def recv_frame(sock: socket.socket, limit: int = MAX_FRAME) -> bytes:
    """Receive one frame; ValueError for a length over ``limit`` (garbage on the wire)."""
    (length,) = _LENGTH.unpack(recv_exact(sock, _LENGTH.size))
    if length > limit:
        raise ValueError(f"frame of {length} bytes exceeds the limit of {limit}")
    return recv_exact(sock, length)


def _digest(secret: bytes, nonce: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose + nonce, hashlib.sha256).digest()


def prove(sock: socket.socket, secret: bytes, purpose: bytes) -> None:
    """Client side: answer the server's challenge with HMAC(secret, nonce)."""
    nonce = recv_exact(sock, NONCE_BYTES)
    sock.sendall(_digest(secret, nonce, purpose))
    if recv_exact(sock, 1) != b"\x01":
        raise RendezvousError(
            "the peer refused our credentials: DTRAIN_SECRET differs between the processes "
            "of this job (every rank must be started with the same secret)"
        )


def challenge(sock: socket.socket, secret: bytes, purpose: bytes) -> bool:
    """Server side: send a fresh nonce and check the answer; True when it proves the secret."""
    nonce = os.urandom(NONCE_BYTES)
    sock.sendall(nonce)
    answer = recv_exact(sock, hashlib.sha256().digest_size)
    ok = hmac.compare_digest(answer, _digest(secret, nonce, purpose))
    sock.sendall(b"\x01" if ok else b"\x00")
    return ok
