"""``Work``: the handle an ``async_op=True`` collective returns, and the ordered executor
that runs a group's collectives one after another on a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from dtrain.parallel.errors import CollectiveError


class Work:
    """A pending collective: ``wait()`` blocks until it finished (raising its error),
    ``is_completed()`` asks without blocking."""

    def __init__(self, description: str, finish: Callable[[], Any] | None = None) -> None:
        self.description = description
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._finish = finish  # runs in wait(), on the caller's thread (copy-back, scaling)

    def _complete(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def is_completed(self) -> bool:
        """True once the collective finished, successfully or not."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the collective finished without an error."""
        return self._done.is_set() and self._error is None

    def exception(self) -> BaseException | None:
        """The error the collective failed with, if it finished with one."""
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done; raise its CollectiveError if it failed. Returns True."""
        if not self._done.wait(timeout):
            raise CollectiveError(
                f"{self.description}: still running after wait(timeout={timeout}); the "
                "collective's own timeout will end it"
            )
        if self._error is not None:
            raise self._error
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return True


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
    """A Work that runs ``then`` once the inner collective finished."""

    def __init__(self, inner: Work, then: Any) -> None:
        super().__init__(inner.description)
        self.inner, self.then = inner, then

    def is_completed(self) -> bool:
        return self.inner.is_completed()

    def is_success(self) -> bool:
        return self.inner.is_success()

    def exception(self) -> BaseException | None:
        return self.inner.exception()

    def wait(self, timeout: float | None = None) -> bool:
        self.inner.wait(timeout)
        if self.then is not None:
            then, self.then = self.then, None
            then()
        return True
