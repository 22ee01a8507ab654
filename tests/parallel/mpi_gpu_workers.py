"""Workers for test_mpi_gpu_staging.py: GPU arrays (the CUDA emulator) through the mpi
backend, whose communicator checks that MPI is only ever handed host memory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
from cuda_emulator import install

import dtrain as dt
import dtrain.parallel as dist
from dtrain.parallel import api


class _HostOnly:
    """The group's MPI communicator, refusing any buffer that is a (emulated) GPU array."""

    def __init__(self, comm: Any, seen: list) -> None:
        self._comm, self._seen = comm, seen

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._comm, name)
        if not name.startswith("I"):
            return method

        def checked(*args: Any, **kwargs: Any) -> Any:
            for value in (*args, *kwargs.values()):
                if type(value).__module__.startswith("cupy"):
                    raise AssertionError(f"{name} was handed GPU memory")
            self._seen.append(name)
            return method(*args, **kwargs)

        return checked


def collectives_on_gpu_arrays() -> dict:
    patch = pytest.MonkeyPatch()
    install(patch)
    dist.init_process_group("mpi", timeout=30)
    seen: list = []
    group = api._group(None)
    group.comm = _HostOnly(group.comm, seen)
    rank, size = dist.get_rank(), dist.get_world_size()
    x = dt.full((4,), float(rank + 1), device="cuda")
    dist.all_reduce(x, dist.ReduceOp.AVG)
    b = dt.full((3,), float(rank), device="cuda")
    dist.broadcast(b, src=1)
    gathered = [dt.zeros(2, device="cuda") for _ in range(size)]
    dist.all_gather(gathered, dt.full((2,), float(rank), device="cuda"))
    out = dt.zeros(2, device="cuda")
    dist.reduce_scatter(out, [dt.full((2,), float(rank), device="cuda") for _ in range(size)])
    received = dt.zeros(3, device="cuda")
    if rank == 0:
        dist.send(dt.arange(3.0, device="cuda"), dst=1)
    elif rank == 1:
        dist.recv(received, src=0)
    group.comm = group.comm._comm  # the real one again: destroy knows COMM_WORLD by identity
    dist.destroy_process_group()
    patch.undo()
    return {
        "avg": x.cpu().numpy().tolist(),
        "broadcast": b.cpu().numpy().tolist(),
        "gathered": [g.cpu().numpy().tolist() for g in gathered],
        "reduce_scatter": out.cpu().numpy().tolist(),
        "received": received.cpu().numpy().tolist(),
        "on_gpu": [t.device.type for t in (x, b, out, received, *gathered)],
        "mpi_calls": sorted(set(seen)),
        "expected_avg": float(np.mean(np.arange(1, size + 1))),
    }
