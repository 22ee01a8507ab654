"""Start worker processes as ``torch.multiprocessing.spawn`` does (public as
``dtrain.multiprocessing``).

``spawn(fn, args, nprocs)`` runs ``fn(i, *args)`` in ``nprocs`` fresh processes. When one
raises, the others are terminated and the parent raises :class:`ProcessRaisedException`
with the child's traceback. The traceback travels as UTF-8 text (lone surrogates, e.g.
from undecodable file names, kept as ``surrogatepass`` bytes) in a file in a private
temporary directory, removed once the processes are done; nothing a child writes is
unpickled by the parent (torch pickles the traceback; multiprocessing itself pickles only
what the parent sends to the child).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
import weakref
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
        # Text only: the parent reads it back without unpickling anything. Written under
        # another name and renamed, so the parent never reads a half-written traceback.
        partial = f"{error_file}.partial"
        with open(partial, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(traceback.format_exc())
        os.replace(partial, error_file)
        sys.exit(1)


def _read_trace(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:  # not written by _wrap
        return data.decode("utf-8", errors="replace")


def _remove_directory(directory: str, owner: int) -> None:
    # Only the process that made it removes it (not a fork of it exiting through atexit).
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


class ProcessContext:
    """The processes started by :func:`start_processes`; ``join()`` waits for them.

    ``error_directory``, when given, holds the error files; it is removed once every
    process has exited (or when the context is garbage-collected).
    """

    def __init__(
        self,
        processes: list[Any],
        error_files: list[str],
        error_directory: str | None = None,
    ) -> None:
        self.error_files = error_files
        self.processes = processes
        self.sentinels = {process.sentinel: i for i, process in enumerate(processes)}
        self._traces: dict[int, str] = {}
        self._remove_files = (
            weakref.finalize(self, _remove_directory, error_directory, os.getpid())
            if error_directory is not None
            else None
        )

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
        and the failure is raised. As in torch, each later call raises for the next process
        that did not exit cleanly (a terminated one gives SIGTERM), then returns True.

        Returns:
            True once every process has exited cleanly, False while some still run.

        Raises:
            ProcessRaisedException: a process's function raised (its traceback is in the
                message).
            ProcessExitedException: a process exited with a non-zero code or a signal.
        """
        if not self.sentinels:
            self._collect_traces()
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
            if self.sentinels:
                return False
            self._collect_traces()
            return True
        self._shut_down(grace_period)
        self._collect_traces()
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

    def _collect_traces(self) -> None:
        # Every process has exited: keep each traceback for this and later join() calls,
        # then remove the files (and their directory).
        for i, path in enumerate(self.error_files):
            if i not in self._traces and os.path.exists(path):
                self._traces[i] = _read_trace(path)
                os.unlink(path)
        if self._remove_files is not None:
            self._remove_files()

    def _failure(self, index: int) -> ProcessException:
        process = self.processes[index]
        trace = self._traces.pop(index, None)
        if trace is None:
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
    # A private directory (mode 0700) rather than names in the shared temp directory; the
    # child creates its file only when fn raises.
    directory = tempfile.mkdtemp(prefix="dtrain-spawn-")
    processes: list[Any] = []
    error_files = [os.path.join(directory, f"error-{i}.txt") for i in range(nprocs)]
    try:
        for i in range(nprocs):
            process = ctx.Process(
                target=_wrap, args=(fn, i, tuple(args), error_files[i]), daemon=daemon
            )
            process.start()
            processes.append(process)
    except BaseException:
        for process in processes:
            process.terminate()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    context = ProcessContext(processes, error_files, directory)
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
