"""``Work``: the handle an ``async_op=True`` collective returns, and the ordered executor
that runs a group's collectives one after another on a background thread."""

from __future__ import annotations

import datetime
import queue
import threading
from collections.abc import Callable
from typing import Any

from dtrain.parallel.errors import CollectiveError
from dtrain.runtime.backend import loaded_cupy
from dtrain.runtime.device_selection import process_cuda_device


class Work:
    """A pending collective: ``wait()`` blocks until it finished (raising its error),
    ``is_completed()`` asks without blocking."""

    def __init__(self, description: str, finish: Callable[[], Any] | None = None) -> None:
        self.description = description
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._completing = False
        # Steps that write the outputs (copy-back, scaling): they run where the collective
        # completes, before it reports done, so a completed Work has its outputs written.
        self._steps: list[Callable[[], Any]] = [] if finish is None else [finish]
        self._result: list = []  # the output tensors: result() and get_future().value()

    def then(self, step: Callable[[], Any]) -> None:
        """Run ``step`` once the collective succeeded, before the Work reports done (at once,
        on this thread, when it already has). An error in ``step`` becomes the Work's.

        A step runs where the collective completed, usually the group's executor thread,
        while the group's later collectives wait for it: it may issue collectives
        (``async_op=True``) but must not wait for one that has not finished (that would
        wait on itself; ``wait`` refuses it)."""
        with self._lock:
            if not self._done.is_set():
                self._steps.append(step)
                return
        if self._error is None:
            try:
                step()
            except BaseException as exc:  # handed to whoever waits, as the job's would be
                self._error = exc

    def _complete(self, error: BaseException | None = None) -> None:
        # The first completion wins: a second one (a transport reporting an error after the
        # result arrived) must not rerun steps or overwrite the outcome.
        with self._lock:
            if self._completing:
                return
            self._completing = True
        while True:
            with self._lock:
                steps, self._steps = self._steps, []
                if not steps:
                    self._error = error
                    self._done.set()
                    return
            for step in steps:
                if error is None:
                    _in_step.active = True
                    try:
                        step()
                    except BaseException as exc:
                        error = exc
                    finally:
                        _in_step.active = False

    def is_completed(self) -> bool:
        """True once the collective finished, successfully or not."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the collective finished without an error."""
        return self._done.is_set() and self._error is None

    def exception(self) -> BaseException | None:
        """The error the collective failed with, if it finished with one."""
        return self._error

    def result(self) -> list:
        """The collective's output tensors (torch's ``Work.result()``), once it is done."""
        self.wait()
        return list(self._result)

    def get_future(self) -> Future:
        """A ``Future`` whose value is ``result()``: ``wait()``, ``value()``, ``done()``, and
        ``then(fn)`` for a DDP comm hook written for torch."""
        return Future._of(self)

    def wait(self, timeout: float | datetime.timedelta | None = None) -> bool:
        """Block until done (``timeout``: seconds or a timedelta, then raise
        CollectiveError); raise its error if it failed. Returns True."""
        if isinstance(timeout, datetime.timedelta):
            timeout = timeout.total_seconds()
        if _in_step.active and not self._done.is_set():
            raise RuntimeError(
                f"{self.description}: waited on from a step a Work runs as it completes "
                "(Work.then, a comm hook's copy-back), which its group's collectives wait "
                "for: it would never finish. Wait on the Work the step belongs to first, "
                "then issue and wait on this one"
            )
        if not self._done.wait(timeout):
            raise CollectiveError(
                f"{self.description}: still running after wait(timeout={timeout}); the "
                "collective's own timeout will end it"
            )
        if self._error is not None:
            raise self._error
        return True


class Future:
    """What ``Work.get_future()`` returns (torch's ``torch.futures.Future``, the part comm
    hooks use). ``then(fn)`` runs ``fn(future)`` as the collective completes (on the thread
    that completes it, before its Work reports done, as ``Work.then`` steps do: ``fn`` may
    issue async collectives but must not wait on one) and returns a Future of its result."""

    def __init__(self, work: Work) -> None:
        self._work = work
        self._set = False
        self._value: Any = None

    @classmethod
    def _of(cls, work: Work) -> Future:
        future = cls(work)
        work.then(lambda: future._set_value(list(work._result)))
        return future

    def _set_value(self, value: Any) -> None:
        self._value, self._set = value, True

    def done(self) -> bool:
        """True once the collective (and the callbacks before this one) finished."""
        return self._set or self._work.is_completed()

    def wait(self) -> Any:
        """Block until done, raise its error if it failed, and return the value."""
        return self.value()

    def value(self) -> Any:
        """The value (a list of the output tensors, or a ``then`` callback's result),
        waiting for it if need be."""
        if not self._set:
            self._work.wait()
        return self._value

    def then(self, callback: Callable[[Future], Any]) -> Future:
        """A Future of ``callback(self)``, which runs once this one has its value."""
        chained = Future(self._work)
        self._work.then(_on_current_device(lambda: chained._set_value(callback(self))))
        return chained


class _InStep(threading.local):
    active = False


_in_step = _InStep()  # True on a thread while it runs a Work's steps


class OrderedExecutor:
    """One daemon thread per group runs its collectives in the order they were issued, so
    async collectives never reorder and every rank runs the same sequence.

    A blocking call made while nothing is queued or running runs on the caller's thread
    instead (``run_inline``): handing it to the thread and waiting for it to finish costs two
    thread switches, about 40 µs, which is most of a small collective's time. Whoever runs a
    job holds ``_turn``, so a job submitted meanwhile still starts only after it."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # jobs submitted and not finished (queued, running or inline)
        self._turn = threading.Lock()  # held while a job runs, on whichever thread
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], work: Work) -> Work:
        """Queue ``job``; ``work`` completes when it ran (with its exception, if any)."""
        with self._lock:
            self._pending += 1
        self._jobs.put((job, work))
        return work

    def run_inline(self, job: Callable[[], None], work: Work) -> Work:
        """Run ``job`` on this thread now when the executor is idle, else queue it."""
        with self._lock:
            idle = self._pending == 0
            if idle:
                self._pending += 1
                self._turn.acquire()  # free: nothing is queued or running
        if not idle:
            return self.submit(job, work)
        try:
            _execute(job, work)
        finally:
            self._turn.release()
            with self._lock:
                self._pending -= 1
        return work

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            with self._turn:
                _execute(*item)
            with self._lock:
                self._pending -= 1

    def shutdown(self) -> None:
        self._jobs.put(None)


def _execute(job: Callable[[], None], work: Work) -> None:
    try:
        job()
    except BaseException as exc:  # handed to whoever waits on the Work
        work._complete(exc)
    else:
        work._complete()


class Chained(Work):
    """A Work that runs ``then`` once the inner collective succeeded, as part of it: the
    inner Work reports done only after ``then`` wrote the outputs."""

    def __init__(self, inner: Work, then: Callable[[], Any]) -> None:
        super().__init__(inner.description)
        self.inner = inner
        inner.then(_on_current_device(then))

    def is_completed(self) -> bool:
        return self.inner.is_completed()

    def is_success(self) -> bool:
        return self.inner.is_success()

    def exception(self) -> BaseException | None:
        return self.inner.exception()

    def wait(self, timeout: float | datetime.timedelta | None = None) -> bool:
        return self.inner.wait(timeout)

    def then(self, step: Callable[[], Any]) -> None:
        # The inner Work runs the steps: after the copy-back this Work was made for.
        self.inner.then(step)


def on_process_device(job: Callable[[], Any]) -> Callable[[], Any]:
    """``job`` bound to the process's GPU (not a stream): a collective's job runs on the
    executor thread, whose current device is its own (device 0), while the averaging,
    staging and copies it does belong on the rank's GPU."""
    cupy = loaded_cupy()  # None until CUDA was found usable: no CUDA arrays to work on
    if cupy is None:
        return job
    device = process_cuda_device(cupy)

    def on_device() -> Any:
        with device:
            return job()

    return on_device


def _on_current_device(step: Callable[[], Any]) -> Callable[[], Any]:
    """``step`` bound to the process's GPU and this thread's current stream there: it runs
    on the executor thread, whose current device is its own (device 0), not the rank's,
    and whose stream is its own. On the caller's stream, its kernels come before whatever
    the caller queues after ``wait()`` (reads of the outputs, and reuse of the scratch
    arrays it frees, which cupy's pool hands out per stream)."""
    cupy = loaded_cupy()  # None until CUDA was found usable: no CUDA arrays to write
    if cupy is None:
        return step
    device = process_cuda_device(cupy)
    with device:
        stream = cupy.cuda.get_current_stream()

    def on_device() -> Any:
        with device, stream:
            return step()

    return on_device
