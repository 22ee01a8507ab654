"""``dtrain.multiprocessing``: ``spawn`` and friends, as ``torch.multiprocessing``.

``spawn(fn, args=(), nprocs=1, join=True)`` runs ``fn(i, *args)`` in ``nprocs`` processes
and raises ``ProcessRaisedException`` (with the child's traceback and index) when one
raises; the other names are Python's ``multiprocessing``. Differences from PyTorch: tensors
sent through a ``Queue`` or ``args`` are copied (pickled), not moved to shared memory, and
there are no sharing strategies. For data-parallel training start one process per rank and
use ``dtrain.parallel`` (``DistributedDataParallel``).
"""

from multiprocessing import (
    Array,
    Barrier,
    Event,
    Lock,
    Manager,
    Pipe,
    Pool,
    Process,
    Queue,
    RLock,
    Semaphore,
    SimpleQueue,
    Value,
    active_children,
    current_process,
    get_all_start_methods,
    get_context,
    get_start_method,
    set_start_method,
)
from multiprocessing import cpu_count as cpu_count

from dtrain.parallel.spawn import (
    ProcessContext,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    spawn,
    start_processes,
)

__all__ = [
    "Array",
    "Barrier",
    "Event",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "ProcessContext",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "Queue",
    "RLock",
    "Semaphore",
    "SimpleQueue",
    "Value",
    "active_children",
    "cpu_count",
    "current_process",
    "get_all_start_methods",
    "get_context",
    "get_start_method",
    "set_start_method",
    "spawn",
    "start_processes",
]
