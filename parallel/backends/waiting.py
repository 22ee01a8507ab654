"""How a rank waits for its peers when there is no blocking call it could wait in (MPI's
requests, tested against a deadline; shared-memory counters): spin, then yield, then sleep.

A short busy spin answers fastest, but only pays when every rank has a core of its own: on
a machine with fewer cores than ranks the spinning rank takes the core from the very peer it
waits for. Yielding (``sched_yield``) lets a rank that shares this core run and otherwise
returns at once. A rank far behind is waited for with sleeps that oversleep at most 1/20 of
the wait so far, so a long wait costs little CPU and adds little latency. MPI is the
exception: its requests progress only while someone calls into MPI, so a sleeping rank would
stall the transfer itself; the mpi backend yields until its deadline instead, and a waiting
rank keeps a core busy, as MPI's own blocking calls do.
"""

from __future__ import annotations

import os
import time

SPIN_S = 50e-6  # busy-wait this long before yielding the CPU
YIELD_S = 20e-3  # then yield the CPU for this long before sleeping
MAX_SLEEP_S = 1e-3  # the longest sleep between two looks


def can_spin(ranks: int) -> bool:
    """Whether ``ranks`` processes each get a core of this machine to spin on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return cores >= ranks


def pause(waited: float, spin: bool, yield_s: float = YIELD_S) -> None:
    """Wait a little, ``waited`` seconds into a wait (``spin``: from ``can_spin``; yield the
    CPU until ``yield_s`` into it, then sleep)."""
    if spin and waited < SPIN_S:
        return
    if waited < yield_s:
        os.sched_yield()
    else:
        time.sleep(min(waited / 20, MAX_SLEEP_S))
