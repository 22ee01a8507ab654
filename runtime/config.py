"""The one place dtrain reads its environment: torchrun's names and ``DTRAIN_*``.

RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK   where this process stands
MASTER_ADDR, MASTER_PORT                                    the rendezvous store
DTRAIN_SECRET        shared by the job; every connection proves it knows it (HMAC)
DTRAIN_DEBUG=1       check collective signatures on every backend (tcp always does), and
                     check values of CUDA inputs on the host (runtime/value_checks.py)
DTRAIN_BACKEND       tcp | mpi | nccl when init_process_group gets backend=None
DTRAIN_TIMEOUT       default collective timeout in seconds (1800, as gloo; finite, above 0)
DTRAIN_SHM=0         tcp backend: keep to sockets even when every rank is on this host
DTRAIN_DEVICE        the device this rank trains on (parallel.local_device(); dtrain launch
                     sets cuda:LOCAL_RANK on a node it gave GPUs)
DTRAIN_CUBLASLT=0    CUDA: run a Linear layer's bias as its own launch instead of in the
                     matrix product's cuBLASLt epilogue (runtime/cublaslt.py)

Under ``mpiexec`` the first four fall back to what the MPI launcher set: MPICH's Hydra
(PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS) or Open MPI's
(OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE). torchrun's names win when both are set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Process placement and job settings, as read from the environment."""

    rank: int | None
    world_size: int | None
    local_rank: int | None
    local_world_size: int | None
    node_rank: int | None
    master_addr: str | None
    master_port: int | None
    secret: str | None
    debug: bool
    timeout: float
    backend: str | None = None
    shm: bool = True
    device: str | None = None
    cublaslt: bool = True


# torchrun's name, then the MPI launchers' names for the same thing (Hydra, Open MPI).
_RANK = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")
_WORLD_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LOCAL_RANK = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")
_LOCAL_WORLD_SIZE = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
#: Every variable an MPI launcher sets that dtrain reads: launchers clear them for child ranks.
MPI_VARIABLES = (
    *_RANK[1:],
    *_WORLD_SIZE[1:],
    *_LOCAL_RANK[1:],
    *_LOCAL_WORLD_SIZE[1:],
    "PMIX_RANK",
)


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _int(env, name)
        if value is not None:
            return value
    return None


def mpi_world_size(env: Mapping[str, str] | None = None) -> int | None:
    """How many ranks the MPI launcher says it started (PMI_SIZE or OMPI_COMM_WORLD_SIZE),
    or None when no MPI launcher started this process."""
    return _first_int(os.environ if env is None else env, _WORLD_SIZE[1:])


def debug_checks(env: Mapping[str, str] | None = None) -> bool:
    """``DTRAIN_DEBUG``: check the values of CUDA inputs on the host. Read alone, without the
    rest of the config, because ops ask it on every call."""
    value = (os.environ if env is None else env).get("DTRAIN_DEBUG", "0")
    return value not in ("", "0", "false", "False")


def _timeout(text: str) -> float:
    """``DTRAIN_TIMEOUT`` in seconds: finite and above 0 (0 would fail every collective at
    once, nan or a negative value would never let one wait)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"environment variable DTRAIN_TIMEOUT={text!r} must be a finite number of seconds "
            "above 0 (how long a collective waits for its peers); set it to e.g. 300, or unset "
            "it for the default"
        )
    return seconds


def read_config(env: Mapping[str, str] | None = None) -> Config:
    """Read the environment (``os.environ`` unless given) into a ``Config``."""
    env = os.environ if env is None else env
    timeout_s = _timeout(env.get("DTRAIN_TIMEOUT") or "1800")
    return Config(
        rank=_first_int(env, _RANK),
        world_size=_first_int(env, _WORLD_SIZE),
        local_rank=_first_int(env, _LOCAL_RANK),
        local_world_size=_first_int(env, _LOCAL_WORLD_SIZE),
        node_rank=_int(env, "NODE_RANK"),
        master_addr=env.get("MASTER_ADDR") or None,
        master_port=_int(env, "MASTER_PORT"),
        secret=env.get("DTRAIN_SECRET") or None,
        debug=debug_checks(env),
        backend=(env.get("DTRAIN_BACKEND") or "").lower() or None,
        timeout=timeout_s,
        shm=env.get("DTRAIN_SHM", "1") not in ("0", "false", "False"),
        device=env.get("DTRAIN_DEVICE") or None,
        cublaslt=env.get("DTRAIN_CUBLASLT", "1") not in ("0", "false", "False"),
    )


def under_mpiexec(env: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process (MPICH/Hydra, Open MPI, PMIx, Slurm)."""
    env = os.environ if env is None else env
    return any(name in env for name in MPI_VARIABLES)
