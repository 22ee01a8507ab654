"""Failure scenarios the parallel tests run in real worker processes (started by
``launcher.py``): dead, stalled and disagreeing ranks, timeouts, early exits. Each function
returns what the calls raised (type, message, op, seq, rank, elapsed seconds) as JSON.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np

import dtrain.parallel as dist
from dtrain.parallel import ReduceOp


def _error(exc: BaseException, since: float) -> dict:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "op": getattr(exc, "op", None),
        "seq": getattr(exc, "seq", None),
        "rank": getattr(exc, "rank", None),
        "elapsed": time.monotonic() - since,
    }


def _attempt(call: Any) -> dict | None:
    """Run ``call``; None when it returned, else a description of what it raised."""
    since = time.monotonic()
    try:
        call()
    except Exception as exc:
        return _error(exc, since)
    return None


def dead_peer(
    victim: int, size: int, joins: bool, timeout: float = 30, linger: float = 1.0
) -> dict | None:  # tcp only: mpiexec ends the whole job when a rank is killed
    """Two good all_reduces, then ``victim`` SIGKILLs itself 0.3 s later. When it ``joins``,
    every rank runs all_reduces back to back until one fails, so the kill lands inside one
    (whichever); otherwise the others wait in the third while it dies. The survivors report
    what their failing call (and the next) raised, after ``linger`` seconds: a survivor that
    exits at once can be blamed by the others for closing its connections."""
    dist.init_process_group("tcp", timeout=timeout)
    for _ in range(2):
        dist.all_reduce(np.ones(size, np.float32))
    x = np.ones(size, np.float32)
    if dist.get_rank() == victim:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
        while joins:
            dist.all_reduce(x)
        time.sleep(60)  # the timer kills us first
    failed = None
    for _ in range(100_000):
        failed = _attempt(lambda: dist.all_reduce(x))
        if failed is not None or not joins:
            break
    again = _attempt(lambda: dist.all_reduce(x))
    time.sleep(linger)
    return {"failed": failed, "again": again}


def stalled_peer(laggard: int, size: int, per_call: float, sleep: float, backend: str = "tcp"):
    """``laggard`` sleeps before the collective; the others call it with a short per-call
    timeout. Returns what each rank's call (and its next one) raised."""
    dist.init_process_group(backend, timeout=60)
    dist.all_reduce(np.ones(3))
    if dist.get_rank() == laggard:
        time.sleep(sleep)
    x = np.ones(size, np.float32)
    failed = _attempt(lambda: dist.all_reduce(x, timeout=per_call))
    return {"failed": failed, "again": _attempt(lambda: dist.all_reduce(x, timeout=per_call))}


def timeouts_per_op(per_call: float = 0.5, backend: str = "tcp") -> dict:
    """Rank 1 skips one collective per fresh group; rank 0's call must end with a
    CollectiveError after the per-call timeout (or the group's, for "group timeout")."""
    dist.init_process_group(backend, timeout=60)
    r = dist.get_rank()
    n = dist.get_world_size()
    x = np.ones(10, np.float32)
    calls = {
        "all_reduce": lambda g, t: dist.all_reduce(x, group=g, timeout=t),
        "broadcast": lambda g, t: dist.broadcast(x, 1, group=g, timeout=t),
        "reduce": lambda g, t: dist.reduce(x, 0, group=g, timeout=t),
        "all_gather": lambda g, t: dist.all_gather(
            [x.copy() for _ in range(n)], x, group=g, timeout=t
        ),
        "all_gather_into_tensor": lambda g, t: dist.all_gather_into_tensor(
            np.empty(n * 10, np.float32), x, group=g, timeout=t
        ),
        "reduce_scatter": lambda g, t: dist.reduce_scatter(
            np.empty(10, np.float32), [x] * n, group=g, timeout=t
        ),
        "reduce_scatter_tensor": lambda g, t: dist.reduce_scatter_tensor(
            np.empty(10, np.float32), np.ones(10 * n, np.float32), group=g, timeout=t
        ),
        "barrier": lambda g, t: dist.barrier(group=g, timeout=t),
        "recv": lambda g, t: dist.recv(x, 1, group=g, timeout=t),
        "recv any": lambda g, t: dist.recv(x, group=g, timeout=t),
        "async all_reduce": lambda g, t: dist.all_reduce(
            x, group=g, async_op=True, timeout=t
        ).wait(),
        "group timeout": lambda g, t: dist.all_reduce(x, group=g),
    }
    results = {}
    for name, call in calls.items():
        group = dist.new_group(timeout=per_call if name == "group timeout" else 60)
        if r == 0:
            results[name] = _attempt(lambda call=call, group=group: call(group, per_call))
        dist.barrier()  # rank 1 waits here until rank 0's call gave up
        dist.destroy_process_group(group)
    # Work.wait(timeout) shorter than the collective: "still running", and it goes on.
    if r == 1:
        time.sleep(1.0)
    work = dist.all_reduce(x, async_op=True)
    results["wait(timeout) while running"] = _attempt(lambda: work.wait(timeout=0.05))
    work.wait()
    results["after wait(timeout)"] = x.tolist()
    dist.destroy_process_group()
    return results


def mismatches(per_call: float = 20, backend: str = "tcp") -> dict:
    """On a fresh all-ranks group per scenario, the last rank calls something different.
    Returns what every rank raised, per scenario."""
    dist.init_process_group(backend, timeout=60)
    n, r = dist.get_world_size(), dist.get_rank()
    odd = r == n - 1
    f32 = np.float32
    scenarios = {
        "shape": lambda g: dist.all_reduce(
            np.ones(12 if odd else 10, f32), group=g, timeout=per_call
        ),
        "dtype": lambda g: dist.all_reduce(
            np.ones(10, np.float64 if odd else f32), group=g, timeout=per_call
        ),
        "reduce_op": lambda g: dist.all_reduce(
            np.ones(10, f32), ReduceOp.MAX if odd else ReduceOp.SUM, group=g, timeout=per_call
        ),
        "op": lambda g: (
            dist.broadcast(np.ones(10, f32), 0, group=g, timeout=per_call)
            if odd
            else dist.all_reduce(np.ones(10, f32), group=g, timeout=per_call)
        ),
        "gather_shape": lambda g: dist.all_gather_into_tensor(
            np.empty(n * (5 if odd else 4), f32),
            np.ones(5 if odd else 4, f32),
            group=g,
            timeout=per_call,
        ),
        "root": lambda g: dist.broadcast(
            np.ones(10, f32), 1 if odd else 0, group=g, timeout=per_call
        ),
        "big_shape": lambda g: dist.all_reduce(
            np.ones(300_001 if odd else 300_000, f32), group=g, timeout=per_call
        ),
    }
    results = {}
    for name, call in scenarios.items():
        group = dist.new_group()
        results[name] = _attempt(lambda call=call, group=group: call(group))
        dist.barrier()
        dist.destroy_process_group(group)
    # The default group is untouched by its subgroups' failures.
    x = np.ones(2)
    dist.all_reduce(x)
    results["world_after"] = x.tolist()
    dist.destroy_process_group()
    return results


def local_failure(culprit: int, size: int, timeout: float = 60) -> dict:
    """``culprit``'s transport raises a non-collective error (as running out of memory
    halfway through would) in the second all_reduce; then every rank tries a third call.
    Also: a read-only output is refused before the call joins the group."""
    dist.init_process_group("tcp", timeout=timeout)
    group = dist.api._group(None)
    x = np.ones(size, np.float32)
    read_only = np.ones(size, np.float32)
    read_only.flags.writeable = False
    refused = _attempt(lambda: dist.all_reduce(read_only))  # every rank: a local error
    dist.all_reduce(x)
    if dist.get_rank() == culprit:

        def out_of_memory(*args: Any) -> None:
            raise MemoryError("simulated: no memory for the receive buffer")

        group._all_reduce = out_of_memory
    failed = _attempt(lambda: dist.all_reduce(x))
    again = _attempt(lambda: dist.all_reduce(x))
    dist.destroy_process_group()
    return {"refused": refused, "failed": failed, "again": again}


def leave_early(leaver: int, destroy_after: bool = True) -> dict | None:
    """Every rank runs one all_reduce; ``leaver`` then returns without destroy_process_group
    (its process exits). The others run another all_reduce, which must fail promptly."""
    dist.init_process_group("tcp", timeout=30)
    x = np.ones(1000, np.float32)
    dist.all_reduce(x)
    if dist.get_rank() == leaver:
        return None
    failed = _attempt(lambda: dist.all_reduce(x))
    since = time.monotonic()
    if destroy_after:
        dist.destroy_process_group()
    return {"failed": failed, "destroy_s": time.monotonic() - since}


def all_leave_without_destroy() -> float:
    """Every rank finishes its collectives and exits without destroy_process_group."""
    dist.init_process_group("tcp", timeout=30)
    x = np.ones(100_000, np.float32)
    for _ in range(3):
        dist.all_reduce(x)
    return float(x[0])


def init_only(timeout: float = 5, backend: str | None = "tcp") -> dict:
    """init_process_group, one all_reduce and broadcast; what world size and backend it got."""
    dist.init_process_group(backend, timeout=timeout)
    x = np.arange(3.0)
    dist.all_reduce(x)
    dist.broadcast(x, 0)
    dist.barrier()
    result = {
        "world_size": dist.get_world_size(),
        "rank": dist.get_rank(),
        "backend": dist.get_backend(),
        "x": x.tolist(),
    }
    dist.destroy_process_group()
    return result


def placement() -> dict:
    """Where the environment says this rank stands (``read_config``), and what MPI says."""
    from mpi4py import MPI

    from dtrain.runtime.config import read_config, under_mpiexec

    config, world = read_config(), MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mpi = [world.Get_rank(), world.Get_size(), local.Get_rank(), local.Get_size()]
    finally:
        local.Free()
    return {
        "config": [config.rank, config.world_size, config.local_rank, config.local_world_size],
        "mpi": mpi,
        "under_mpiexec": under_mpiexec(),
    }


def rendezvous_without_rank_1(timeout: float = 3) -> dict:
    """Rank 1 never calls init_process_group; rank 0's MPI rendezvous (no MASTER_PORT) must
    give up after ``timeout`` s instead of waiting forever."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        return {"rank": 1, "skipped": True}
    since = time.monotonic()
    try:
        dist.init_process_group("tcp", timeout=timeout)
    except Exception as exc:
        return {**_error(exc, since), "rank": 0}
    return {"rank": 0, "error": None}


def dropped_isend() -> dict:
    """Rank 0 drops the Work of a large isend before it completes; rank 1 must still get
    the values (MPI must not read the freed buffer)."""
    import gc

    dist.init_process_group("mpi", timeout=30)
    n = 1 << 21  # past eager sizes: the send completes only when rank 1 takes it
    if dist.get_rank() == 0:
        dist.isend(np.arange(n, dtype=np.float64).reshape(2, -1)[:, ::2].copy(), dst=1)
        gc.collect()
        scratch = [np.full(n, -1.0) for _ in range(4)]  # reuse the freed memory
        dist.barrier()
        del scratch
        result = {"rank": 0}
    else:
        time.sleep(0.5)  # let rank 0 drop it first
        got = np.empty((2, n // 4))
        dist.recv(got, src=0)
        dist.barrier()
        want = np.arange(n, dtype=np.float64).reshape(2, -1)[:, ::2]
        result = {"rank": 1, "equal": bool(np.array_equal(got, want))}
    dist.destroy_process_group()
    return result
