"""Process-group lifecycle scenarios the parallel tests run in real worker processes (started
by ``launcher.py``): initialising twice, async outputs, disagreeing world sizes, tags. Each
function returns a JSON value to the test.
"""

from __future__ import annotations

import os
import time

import numpy as np

import dtrain.parallel as dist


def init_twice(timeout: float = 20) -> list:
    """init, all_reduce, destroy — twice in the same process, on the same MASTER_PORT."""
    sums = []
    for _ in range(2):
        dist.init_process_group("tcp", timeout=timeout)
        x = np.ones(2)
        dist.all_reduce(x)
        sums.append(x.tolist())
        dist.barrier()
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            # Rank 0's store may still be serving the first group for a moment: reaching it
            # would hand us its stale addresses. torch's TCPStore has the same race.
            time.sleep(1.0)
    return sums


def rank_zero_leaves_at_once() -> bool:
    """Rank 0 destroys its group (and the store it hosts) as soon as init returns; the
    other ranks' init must have finished with the store by then."""
    dist.init_process_group("tcp", timeout=20)
    if dist.get_rank() != 0:
        time.sleep(0.2)  # rank 0 is gone by now
    dist.destroy_process_group()
    return True


def a_rank_dies_at_the_end_of_init() -> dict | None:
    """Rank 1 exits after building its group, before saying so in the store: rank 0's
    init must fail naming rank 1 and leave nothing initialised."""
    from dtrain.parallel import group_init

    if int(os.environ["RANK"]) == 1:
        group_init._done_with_store = lambda *args: os._exit(0)
    try:
        dist.init_process_group("tcp", timeout=3)
    except dist.RendezvousError as error:
        return {"message": str(error), "initialized": dist.is_initialized()}
    return {"message": None}


def a_rank_dies_while_the_mesh_is_made() -> dict | None:
    """Rank 1 exits before connecting to the others: rank 0's init fails, and leaves no
    group, store or listening port behind."""
    from dtrain.parallel import api, group_init

    if int(os.environ["RANK"]) == 1:
        group_init._make_group = lambda *args: os._exit(0)
    try:
        dist.init_process_group("tcp", timeout=3)
    except (dist.CollectiveError, dist.RendezvousError) as error:
        return {
            "error": type(error).__name__,
            "initialized": dist.is_initialized(),
            "server": api._state.server is not None,
            "store": api._state.store is not None,
        }
    return {"error": None}


def async_outputs(polls: int = 200) -> dict:
    """Async all_gather (list form) and reduce, polled with is_completed() and never waited
    on: what the outputs hold once the Work says it completed."""
    dist.init_process_group("tcp", timeout=30)
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered, reduced = [], []
    for round_ in range(polls):
        outputs = [np.zeros(3, np.float32) for _ in range(world)]
        work = dist.all_gather(outputs, np.full(3, rank + round_, np.float32), async_op=True)
        while not work.is_completed():
            time.sleep(0.0005)
        gathered.append([float(o[0]) - round_ for o in outputs] if work.is_success() else None)
        total = np.full(3, rank + 1.0)
        work = dist.reduce(total, dst=0, async_op=True)
        while not work.is_completed():
            time.sleep(0.0005)
        reduced.append(float(total[0]))
    dist.destroy_process_group()
    return {"gathered": gathered, "reduced": reduced}
