"""The rendezvous of a tcp or nccl group under ``mpiexec`` without MASTER_ADDR/MASTER_PORT.

``mpiexec -n 4 python train.py`` on a GPU node picks nccl, whose ranks meet through dtrain's
store, but mpiexec sets no MASTER_PORT. So rank 0 serves the store on a free port and MPI
tells the other ranks where, with a fresh job secret when DTRAIN_SECRET is unset (MPI's
channel is the launcher's own). Fixed-size byte buffers, JSON inside: nothing is pickled.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable
from typing import Any

import numpy as np

_NAME_BYTES = 256  # MPI_MAX_PROCESSOR_NAME is 256 in MPICH and Open MPI
_MESSAGE_BYTES = 1024


def store_through_mpi(
    secret: bytes | None, serve: Callable[[str, bytes], Any]
) -> tuple[str, int, bytes, Any]:
    """Collective over MPI's world: returns (host, port, secret, server), ``server`` being
    ``serve(bind_address, secret)``'s store on rank 0 and None elsewhere.

    Raises:
        RuntimeError: mpi4py is not installed (it says what to set instead).
    """
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(
            "under mpiexec without MASTER_ADDR/MASTER_PORT, dtrain shares rank 0's store "
            "address through MPI, which needs mpi4py (pip install 'dtrain[mpi]'); or set "
            "MASTER_ADDR and MASTER_PORT, or use backend='mpi'"
        ) from None
    comm = MPI.COMM_WORLD
    one_host = len(set(_processor_names(comm, MPI))) == 1
    message = np.zeros(_MESSAGE_BYTES, np.uint8)
    server = None
    if comm.Get_rank() == 0:
        secret = secret or secrets.token_hex(16).encode()
        server = serve("127.0.0.1" if one_host else "0.0.0.0", secret)
        host = "127.0.0.1" if one_host else socket.gethostname()
        text = json.dumps({"host": host, "port": server.port, "secret": secret.decode()})
        encoded = text.encode()
        if len(encoded) > _MESSAGE_BYTES:
            raise RuntimeError(f"the store address {host!r} is too long to send through MPI")
        message[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    comm.Bcast(message, root=0)
    fields = json.loads(message.tobytes().rstrip(b"\0").decode())
    return fields["host"], int(fields["port"]), fields["secret"].encode(), server


def _processor_names(comm: Any, mpi: Any) -> list[bytes]:
    """Every rank's host name (MPI's processor name), as fixed-size byte rows."""
    mine = np.zeros(_NAME_BYTES, np.uint8)
    name = mpi.Get_processor_name().encode()[:_NAME_BYTES]
    mine[: len(name)] = np.frombuffer(name, np.uint8)
    everyone = np.zeros((comm.Get_size(), _NAME_BYTES), np.uint8)
    comm.Allgather(mine, everyone)
    return [row.tobytes().rstrip(b"\0") for row in everyone]
