"""The rendezvous of a tcp or nccl group under ``mpiexec`` without MASTER_PORT.

``mpiexec -n 4 python train.py`` on a GPU node picks nccl, whose ranks meet through dtrain's
store, but mpiexec sets no MASTER_PORT. So rank 0 serves the store on a free port and MPI
tells the other ranks where, with rank 0's DTRAIN_SECRET or a fresh one (MPI's channel is
the launcher's own). The address is MASTER_ADDR when set, loopback when every rank is on one
host, else the address rank 0's host reaches the others' from. Non-blocking MPI calls polled
against the group's timeout, so a rank that never arrives is an error, not a hang; fixed-size
byte buffers with JSON inside: nothing is pickled.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.parallel.errors import RendezvousError

_NAME_BYTES = 256  # MPI_MAX_PROCESSOR_NAME is 256 in MPICH and Open MPI
_MESSAGE_BYTES = 4096


def store_through_mpi(
    secret: bytes | None,
    master_addr: str | None,
    timeout: float,
    serve: Callable[[str, bytes], Any],
) -> tuple[str, int, bytes, Any]:
    """Collective over MPI's world: returns (host, port, secret, server), ``server`` being
    ``serve(bind_address, secret)``'s store on rank 0 and None elsewhere.

    Raises:
        RuntimeError: mpi4py is not installed (it says what to set instead).
        RendezvousError: a rank did not arrive within ``timeout`` s, or rank 0 found no
            address the other hosts can reach (set MASTER_ADDR).
    """
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(
            "under mpiexec without MASTER_PORT, dtrain shares rank 0's store address "
            "through MPI, which needs mpi4py (pip install 'dtrain[mpi]'); or set "
            "MASTER_ADDR and MASTER_PORT, or use backend='mpi'"
        ) from None
    comm = MPI.COMM_WORLD
    deadline = time.monotonic() + timeout
    names = _processor_names(comm, MPI, deadline)
    message = np.zeros(_MESSAGE_BYTES, np.uint8)
    server = None
    if comm.Get_rank() == 0:
        secret = secret or secrets.token_hex(16).encode()
        host = _advertised_address(master_addr, names)
        encoded = json.dumps({"host": host, "port": 0, "secret": secret.decode()}).encode()
        if len(encoded) + 8 > _MESSAGE_BYTES:  # room for the port's digits
            raise RendezvousError(
                f"DTRAIN_SECRET is too long to send through MPI ({len(secret)} bytes); use "
                "one under 2000 bytes"
            )
        server = serve("127.0.0.1" if host.startswith("127.") else "0.0.0.0", secret)
        encoded = json.dumps({"host": host, "port": server.port, "secret": secret.decode()})
        message[: len(encoded)] = np.frombuffer(encoded.encode(), np.uint8)
    try:
        _wait(comm.Ibcast(message, root=0), deadline, "rank 0's store address")
    except RendezvousError:
        if server is not None:
            server.close()
        raise
    fields = json.loads(message.tobytes().rstrip(b"\0").decode())
    return fields["host"], int(fields["port"]), fields["secret"].encode(), server


def _advertised_address(master_addr: str | None, names: list[bytes]) -> str:
    """Where the other ranks reach rank 0's store: MASTER_ADDR when set; loopback when they
    are all on its host; else the local address of the route to another rank's host (not
    the host name, which Debian resolves to 127.0.1.1 on the host itself)."""
    if master_addr:
        return master_addr
    if len(set(names)) == 1:
        return "127.0.0.1"
    for name in {n for n in names if n != names[0]}:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((socket.gethostbyname(name.decode()), 9))  # sends nothing
                address = probe.getsockname()[0]
        except OSError:
            continue
        if not address.startswith("127."):
            return address
    raise RendezvousError(
        "under mpiexec across hosts, rank 0 found no address the other hosts reach it on "
        f"(their names: {sorted({n.decode() for n in names[1:]})}); set MASTER_ADDR to one, "
        "or MASTER_ADDR and MASTER_PORT"
    )


def _processor_names(comm: Any, mpi: Any, deadline: float) -> list[bytes]:
    """Every rank's host name (MPI's processor name), as fixed-size byte rows."""
    mine = np.zeros(_NAME_BYTES, np.uint8)
    name = mpi.Get_processor_name().encode()[:_NAME_BYTES]
    mine[: len(name)] = np.frombuffer(name, np.uint8)
    everyone = np.zeros((comm.Get_size(), _NAME_BYTES), np.uint8)
    _wait(comm.Iallgather(mine, everyone), deadline, "every rank's host name")
    return [row.tobytes().rstrip(b"\0") for row in everyone]


def _wait(request: Any, deadline: float, what: str) -> None:
    """Poll ``request`` until it completes or the deadline passes (MPI progresses only
    inside Test, so this never sleeps long)."""
    while not request.Test():
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"init_process_group under mpiexec: {what} did not arrive within the timeout; "
                "did a rank fail or exit before init_process_group?"
            )
        time.sleep(0.0005)
