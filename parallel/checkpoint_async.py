"""``async_save``: ``save`` on a background thread, so training goes on while it writes.

As torch's, in two parts:

1. *staging*, on the caller's thread: every Tensor, ``ShardedTensor`` (its local tensor) and
   numpy array is copied into a host numpy array that nothing else references, and the plain
   values are deep-copied, so the caller may change its parameters as soon as this returns;
2. *writing*: ``save``'s three steps run on the staged copy, on a background thread; the
   returned ``concurrent.futures.Future`` gives save's result (or its error, on every rank).

The background save's collectives must not interleave with the training step's on one group
(every rank must issue a group's collectives in the same order, and two threads of one rank
do not). With ``process_group=None`` they run on a group of all ranks made for checkpoints
alone (``new_group()``, once per default group, on the first ``async_save``; tcp, as torch
recommends gloo, or mpi in an mpi world). MPI needs ``MPI_THREAD_MULTIPLE`` for two threads;
without it the save runs before ``async_save`` returns (a warning says so).
"""

from __future__ import annotations

import copy
import os
import threading
import traceback
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.parallel import checkpoint_fs as fs
from dtrain.parallel.checkpoint_agree import Group
from dtrain.parallel.checkpoint_pending import on_destroy, set_running, wait_for_pending
from dtrain.parallel.checkpoint_plan import describe, walk
from dtrain.parallel.checkpoint_save import check_planner, write
from dtrain.parallel.group_create import new_group
from dtrain.parallel.group_state import _group, is_initialized
from dtrain.parallel.sharded_tensor import ShardedTensor
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.device import as_numpy


class _State:
    lock = threading.Lock()  # one async_save call at a time in this process
    world: Any = None  # the default group that ``group`` was made over
    group: Any = None  # the checkpoint group of that world


_state = _State()


def async_save(
    state_dict: dict,
    *,
    checkpoint_id: str | os.PathLike | None = None,
    storage_writer: fs.FileSystemWriter | None = None,
    planner: Any = None,
    process_group: Any = None,
    no_dist: bool = False,
) -> Future:
    """Copy ``state_dict`` to host memory now and ``save`` the copy on a background thread
    (torch's ``torch.distributed.checkpoint.async_save``, its default thread executor).

    The parameters may change as soon as this returns; the checkpoint holds their values at
    the call. A previous ``async_save`` of this process still running is waited for first
    (one at a time), and so is one by ``save``, ``load`` and ``destroy_process_group``
    (which then lets go of the checkpoint group); one still running when the interpreter
    exits is finished first.

    Collective: every rank in the group must call this, in the same order as its other
    ``async_save`` calls. With ``process_group=None`` and an initialized default group, the
    save's collectives run on a group of all ranks kept for checkpoints, made by the first
    call (``new_group()``, collective over the default group); so do they when
    ``process_group`` is the default group (``dist.group.WORLD``), which training uses.
    Another ``process_group`` you pass is used as it is, and nothing else may use it until
    the save finished. Under the mpi
    backend without ``MPI_THREAD_MULTIPLE`` (``MPI.Query_thread()``) the save runs before
    this returns, with a warning, and the Future is already done.

    Args:
        state_dict: as for ``save``: nested dicts and lists of Tensor, ShardedTensor, numpy
            arrays and plain values, with the same structure on every rank.
        checkpoint_id: the checkpoint directory, as for ``save``.
        storage_writer: a ``FileSystemWriter(path)``, another way to give the directory.
        planner: must be None (torch's save planners are not supported).
        process_group: the ranks that save (None: every rank, see above; without an
            initialized group, this process alone).
        no_dist: save from this process alone, even when a group is initialized.

    Returns:
        A ``concurrent.futures.Future``: ``result()`` waits for the save and returns its
        metadata, or raises its error (on every rank when any rank failed, as ``save``).

    Raises:
        ValueError, TypeError: ``checkpoint_id`` / ``storage_writer`` are wrong (at once,
            as ``save``); what the state dict holds is reported by the Future.
        NotImplementedError: ``planner`` is not None.
    """
    path = fs.resolve(checkpoint_id, storage_writer, fs.FileSystemWriter, "async_save")
    check_planner(planner, "async_save")
    with _state.lock:
        wait_for_pending()
        default = is_initialized() and (
            process_group is None or _group(process_group) is _group(None)
        )
        if no_dist:
            group = Group.single("async_save")
        elif default and _threads_ok(_group(None)):
            group = Group(_checkpoint_group(), "async_save")
        else:
            group = Group(process_group, "async_save")
        future: Future = Future()
        future.set_running_or_notify_cancel()  # a save under way cannot be cancelled
        if group.pg is not None and not _threads_ok(group.pg):
            mpi = _mpi()
            warnings.warn(
                "async_save: MPI was initialized without MPI_THREAD_MULTIPLE "
                f"(MPI.Query_thread() is {mpi.Query_thread()}, below {mpi.THREAD_MULTIPLE}), "
                "so the save runs before async_save returns; initialize MPI with thread level "
                "'multiple' (mpi4py.rc.thread_level, mpi4py's default) for a background save",
                RuntimeWarning,
                stacklevel=2,
            )
            _run(future, state_dict, path, group, None)  # nothing runs beside it: no copy
            return future
        staged, failed = None, None
        try:
            staged = stage(state_dict)
        except Exception as exc:  # every rank's Future raises it (step 1 of save)
            failed = exc
        # Not a daemon: the interpreter waits for it at exit, so no save is cut short.
        thread = threading.Thread(
            target=_run,
            args=(future, staged, path, group, failed),
            name="dtrain-async-save",
            daemon=False,
        )
        thread.start()
        set_running(thread)
    return future


def _run(future: Future, staged: Any, path: str, group: Group, failed: Any) -> None:
    try:
        future.set_result(write(staged, path, group, failed))
    except BaseException as exc:  # the caller's result() raises it
        # The error's frames would keep the staged copy alive as long as the Future is held.
        staged = None
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__.tb_next)
        future.set_exception(exc)


def stage(state_dict: dict) -> dict:
    """A copy of ``state_dict`` that shares no memory with it: each Tensor a CPU Tensor and
    each ShardedTensor one over a host copy of its local tensor, numpy arrays copied, plain
    values deep-copied; the same dicts and lists. An array reached twice is copied once.

    Raises:
        TypeError, ValueError: what ``save`` refuses about the structure (a tuple holding
            tensors, a cycle, a key that is not str or int).
    """
    root: dict = {}
    copies: dict[int, Any] = {}  # id of an original array -> its staged copy
    for path, item in walk(state_dict):
        parent, original = root, state_dict
        for key in path[:-1]:  # the containers above the item, made on first use
            original = original[key]
            if (isinstance(parent, list) and key == len(parent)) or (
                isinstance(parent, dict) and key not in parent
            ):
                _put(parent, key, {} if isinstance(original, Mapping) else [])
            parent = parent[key]
        if id(item) not in copies:
            if not isinstance(item, (Tensor, ShardedTensor, np.ndarray)):
                describe(path, item)  # save's check and message, before any copy is tried
            copies[id(item)] = _copy(item)
        _put(parent, path[-1], copies[id(item)])
    return root


def _put(container: dict | list, key: Any, value: Any) -> None:
    if isinstance(container, list):
        container.append(value)  # walk gives a list's items in order
    else:
        container[key] = value


def _copy(item: Any) -> Any:
    if isinstance(item, ShardedTensor):
        return ShardedTensor(_copy(item.local_tensor()), item.shape, item.offset)
    if isinstance(item, Tensor):
        return Tensor(_host_copy(item._array))
    if isinstance(item, np.ndarray):
        return _host_copy(item)
    return copy.deepcopy(item)


def _host_copy(array: Any) -> np.ndarray:
    """A new host array holding ``array``'s values (a GPU array is copied to the host)."""
    if is_cuda_array(array):
        return as_numpy(array)  # a new host array already
    return np.array(array, copy=True)


def _checkpoint_group() -> Any:
    """The group of all ranks kept for checkpoint collectives, made on first use over the
    current default group (again after a new ``init_process_group``).

    Collective: every rank of the default group must call this."""
    world = _group(None)
    if _state.world is not world:
        _release_group()  # made over a default group that has been destroyed since
        _state.group = new_group(backend="mpi" if world.backend == "mpi" else "tcp")
        _state.world = world
        on_destroy(_release_group)
    return _state.group


def _release_group() -> None:
    """Destroy the checkpoint group (its threads and sockets), if there is one."""
    old, _state.world, _state.group = _state.group, None, None
    if old is not None:
        old.destroy()


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def _threads_ok(pg: Any) -> bool:
    """Whether a save may run on another thread than the collectives of ``pg``'s backend."""
    if getattr(pg, "backend", None) != "mpi":
        return True
    mpi = _mpi()
    return mpi.Query_thread() >= mpi.THREAD_MULTIPLE


__all__ = ["async_save", "stage", "wait_for_pending"]  # (wait_for_pending: re-exported)
