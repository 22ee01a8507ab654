"""Start worker processes as ``torch.multiprocessing.spawn`` does (public as
``dtrain.multiprocessing``).

``spawn(fn, args, nprocs)`` runs ``fn(i, *args)`` in ``nprocs`` fresh processes. When one
raises, the others are terminated and the parent raises :class:`ProcessRaisedException`
with the child's traceback. The traceback travels as UTF-8 text in a temporary file:
nothing a child writes is unpickled by the parent (as torch does; multiprocessing itself
pickles only what the parent sends to the child).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "ProcessContext",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "spawn",
    "start_processes",
]

_PR_SET_PDEATHSIG = 1


class ProcessException(Exception):  # noqa: N818 (torch's name)
    """A process started by :func:`spawn` failed; ``error_index`` is its index."""

    def __init__(self, msg: str, error_index: int, error_pid: int) -> None:
        super().__init__(msg)
        self.msg = msg
        self.error_index = error_index
        self.error_pid = error_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.msg, self.error_index, self.error_pid)


class ProcessRaisedException(ProcessException):
    """A process failed because its function raised; the message holds its traceback."""


class ProcessExitedException(ProcessException):
    """A process exited with a non-zero code or was killed by a signal."""

    def __init__(
        self,
        msg: str,
        error_index: int,
        error_pid: int,
        exit_code: int,
        signal_name: str | None = None,
    ) -> None:
        super().__init__(msg, error_index, error_pid)
        self.exit_code = exit_code
        self.signal_name = signal_name

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.msg, self.error_index, self.error_pid, self.exit_code, self.signal_name)
        return type(self), args


def _set_parent_death_signal(sig: int) -> None:
    # Linux only: a child whose parent dies gets `sig` instead of running on as an orphan.
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _wrap(fn: Callable[..., Any], i: int, args: Sequence[Any], error_file: str) -> None:
    _set_parent_death_signal(signal.SIGINT)
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass  # SIGINT from the parent: it is shutting us down
    except Exception:
        # Text only: the parent reads it back without unpickling anything.
        with open(error_file, "w", encoding="utf-8") as fh:
            fh.write(traceback.format_exc())
        sys.exit(1)


class ProcessContext:
    """The processes started by :func:`start_processes`; ``join()`` waits for them."""

    def __init__(self, processes: list[Any], error_files: list[str]) -> None:
        self.error_files = error_files
        self.processes = processes
        self.sentinels = {process.sentinel: i for i, process in enumerate(processes)}

    def pids(self) -> list[int]:
        """The process ids, in index order."""
        return [int(process.pid) for process in self.processes]

    def _join_all(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, end - time.monotonic()))

    def join(self, timeout: float | None = None, grace_period: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until one exits) for the processes.

        If one exited with a non-zero code, the others get ``grace_period`` seconds to
        finish, then SIGTERM, then (after another grace period, 30 s by default) SIGKILL,
        and the failure is raised.

        Returns:
            True once every process has exited cleanly, False while some still run.

        Raises:
            ProcessRaisedException: a process's function raised (its traceback is in the
                message).
            ProcessExitedException: a process exited with a non-zero code or a signal.
        """
        if not self.sentinels:
            return True
        ready = multiprocessing.connection.wait(list(self.sentinels), timeout=timeout)
        error_index = None
        for sentinel in ready:
            index = self.sentinels.pop(sentinel)
            process = self.processes[index]
            process.join()
            if process.exitcode != 0:
                error_index = index
                break
        if error_index is None:
            return not self.sentinels
        self._shut_down(grace_period)
        self._cleanup_files(keep=error_index)
        raise self._failure(error_index)

    def _shut_down(self, grace_period: float | None) -> None:
        if grace_period is not None:
            self._join_all(grace_period)
        for process in self.processes:
            if process.is_alive():
                log.warning("Terminating process %s via signal SIGTERM", process.pid)
                process.terminate()
        self._join_all(30.0 if grace_period is None else grace_period)
        for process in self.processes:
            if process.is_alive():
                log.warning("Process %s ignored SIGTERM; killing it (SIGKILL)", process.pid)
                process.kill()
            process.join()
        self.sentinels.clear()

    def _cleanup_files(self, keep: int | None = None) -> None:
        for i, name in enumerate(self.error_files):
            if i != keep and os.path.exists(name):
                os.unlink(name)

    def _failure(self, index: int) -> ProcessException:
        process = self.processes[index]
        path = self.error_files[index]
        if not os.path.exists(path):
            code = process.exitcode
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"<Unknown signal {-code}>"
                msg = f"process {index:d} terminated with signal {name}"
                return ProcessExitedException(msg, index, process.pid, code, name)
            msg = f"process {index:d} terminated with exit code {code:d}"
            return ProcessExitedException(msg, index, process.pid, code)
        with open(path, encoding="utf-8", errors="replace") as fh:
            trace = fh.read()
        os.unlink(path)
        msg = f"\n\n-- Process {index:d} terminated with the following error:\n{trace}"
        return ProcessRaisedException(msg, index, process.pid)


def start_processes(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str = "spawn",
) -> ProcessContext | None:
    """Run ``fn(i, *args)`` for ``i`` in ``range(nprocs)``, each in a process started with
    ``start_method`` (``"spawn"``, ``"fork"`` or ``"forkserver"``).

    Returns:
        None once every process has exited cleanly (``join=True``), or the
        :class:`ProcessContext` at once (``join=False``).

    Raises:
        ProcessRaisedException: a process's function raised (``join=True``).
        ProcessExitedException: a process exited with a non-zero code or a signal.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"start_processes: nprocs={nprocs!r}; pass a positive int")
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"start_processes: args must be a tuple (fn gets fn(i, *args)), got "
            f"{type(args).__name__}; for one argument pass args=(value,)"
        )
    ctx = multiprocessing.get_context(start_method)
    processes: list[Any] = []
    error_files: list[str] = []
    for i in range(nprocs):
        # A fresh name per process; the child creates the file only when fn raises.
        fd, name = tempfile.mkstemp(prefix="dtrain-errorfile-", suffix=".txt")
        os.close(fd)
        os.unlink(name)
        process = ctx.Process(target=_wrap, args=(fn, i, tuple(args), name), daemon=daemon)
        process.start()
        processes.append(process)
        error_files.append(name)
    context = ProcessContext(processes, error_files)
    if not join:
        return context
    while not context.join():
        pass
    return None


def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str = "spawn",
) -> ProcessContext | None:
    """Run ``fn(i, *args)`` in ``nprocs`` new processes (start method ``"spawn"``).

    ``fn`` must be importable by the children (defined at a module's top level), as
    multiprocessing requires. When a process raises, the others are terminated and this
    raises :class:`ProcessRaisedException` with its index and traceback; a process that
    exits with a non-zero code or a signal gives :class:`ProcessExitedException`.

    Args:
        fn: Called as ``fn(i, *args)``, ``i`` the process index.
        args: Arguments passed after the index.
        nprocs: Number of processes.
        join: Wait for every process (True) or return a :class:`ProcessContext`.
        daemon: The processes' daemon flag.
        start_method: Deprecated in torch; anything but ``"spawn"`` warns and is ignored
            (use :func:`start_processes` for another method).

    Returns:
        None when ``join`` is True, else the :class:`ProcessContext`.
    """
    if start_method != "spawn":
        warnings.warn(
            f"spawn: only start_method='spawn' is supported (got {start_method!r}); "
            "use dtrain.multiprocessing.start_processes(..., start_method=...) for another",
            FutureWarning,
            stacklevel=2,
        )
    return start_processes(fn, args, nprocs, join, daemon, start_method="spawn")
