"""The ordered executor: blocking calls run on the caller's thread only when that keeps the
order in which calls were issued, and errors reach whoever waits."""

from __future__ import annotations

import threading

import pytest

from dtrain.parallel import CollectiveError
from dtrain.parallel.work import Chained, OrderedExecutor, Work


@pytest.fixture
def executor():
    pool = OrderedExecutor("test-executor")
    yield pool
    pool.shutdown()


def _recording(log: list, name: str, gate: threading.Event | None = None):
    def job() -> None:
        if gate is not None:
            assert gate.wait(10)
        log.append((name, threading.get_ident()))

    return job


def test_a_blocking_call_on_an_idle_executor_runs_on_the_callers_thread(executor):
    log: list = []
    work = executor.run_inline(_recording(log, "inline"), Work("inline"))
    assert work.is_completed() and work.wait()
    assert log == [("inline", threading.get_ident())]


def test_a_blocking_call_behind_an_async_one_waits_its_turn_on_the_executor(executor):
    log: list = []
    gate = threading.Event()
    first = executor.submit(_recording(log, "async", gate), Work("async"))
    second = executor.run_inline(_recording(log, "blocking"), Work("blocking"))
    assert not second.is_completed()  # queued behind the async call, not run here
    gate.set()
    second.wait(10)
    assert first.is_completed()
    assert [name for name, _ in log] == ["async", "blocking"]
    assert log[1][1] != threading.get_ident()


def test_a_call_submitted_while_an_inline_one_runs_starts_after_it(executor):
    log: list = []
    inside, release = threading.Event(), threading.Event()

    def blocking() -> None:
        inside.set()
        assert release.wait(10)
        log.append("inline")

    runner = threading.Thread(target=executor.run_inline, args=(blocking, Work("inline")))
    runner.start()
    assert inside.wait(10)
    later = executor.submit(lambda: log.append("async"), Work("async"))
    assert not later._done.wait(0.2)  # the executor must not start it yet
    release.set()
    runner.join(10)
    later.wait(10)
    assert log == ["inline", "async"]


def test_errors_of_inline_calls_reach_the_waiter_and_the_executor_goes_on(executor):
    def fail() -> None:
        raise CollectiveError("all_reduce #3: rank 1 closed its connection", op="all_reduce")

    work = executor.run_inline(fail, Work("failing"))
    with pytest.raises(CollectiveError, match="rank 1 closed"):
        work.wait()
    log: list = []
    executor.submit(lambda: log.append("next"), Work("next")).wait(10)
    assert log == ["next"]
    assert executor.run_inline(lambda: log.append("inline"), Work("inline")).wait()
    assert log == ["next", "inline"]


def test_a_chained_step_runs_before_the_work_reports_done(executor):
    """Async all_gather (list form) and reduce copy into the caller's buffers in a chained
    step: once is_completed() says True, the copy must have happened, without wait()."""
    gate = threading.Event()
    out: list = []
    inner = executor.submit(lambda: gate.wait(10), Work("all_gather #1"))
    chained = Chained(inner, lambda: out.append("copied"))
    assert not chained.is_completed() and out == []
    gate.set()
    while not chained.is_completed():
        threading.Event().wait(0.001)
    assert out == ["copied"] and chained.is_success()


def test_a_step_chained_after_completion_runs_at_once(executor):
    out: list = []
    inner = executor.run_inline(lambda: None, Work("reduce #1"))
    Chained(inner, lambda: out.append("copied"))
    assert out == ["copied"]


def test_a_failing_step_fails_the_work_and_a_failed_collective_skips_it(executor):
    def step() -> None:
        raise ValueError("output is read-only")

    work = Chained(executor.submit(lambda: None, Work("ok")), step)
    with pytest.raises(ValueError, match="read-only"):
        work.wait(10)
    assert work.is_completed() and not work.is_success()

    def fail() -> None:
        raise CollectiveError("all_reduce #2: rank 1 closed its connection", op="all_reduce")

    ran: list = []
    failed = Chained(executor.submit(fail, Work("failing")), lambda: ran.append(1))
    with pytest.raises(CollectiveError):
        failed.wait(10)
    assert ran == []


def test_a_step_that_waits_on_a_later_collective_is_refused_not_hung(executor):
    # The step runs while the group's later collectives wait for it: waiting on one of them
    # there would never end (and no collective timeout would start).
    gate = threading.Event()
    first = executor.submit(lambda: gate.wait(10), Work("all_reduce #1"))
    later = executor.submit(lambda: None, Work("all_reduce #2"))
    done_before = Work("barrier #0")
    done_before._complete()
    seen: list = []
    first.then(lambda: seen.append(done_before.wait(1)))  # finished: waiting is fine
    chained = Chained(first, lambda: later.wait(1))
    gate.set()
    with pytest.raises(RuntimeError, match="all_reduce #2: waited on from a step"):
        chained.wait(10)
    assert seen == [True] and later.wait(10)


def test_the_first_completion_wins_and_steps_run_once():
    ran: list = []
    work = Work("recv from rank 1")
    work.then(lambda: ran.append("copied"))
    work._complete()
    work._complete(CollectiveError("recv from rank 1: rank 1 closed its connection", op="recv"))
    assert ran == ["copied"] and work.is_success() and work.wait(1)

    failed = Work("send to rank 2")
    failed.then(lambda: ran.append("never"))
    failed._complete(CollectiveError("send to rank 2: timed out", op="send"))
    failed._complete()
    assert not failed.is_success() and ran == ["copied"]
    with pytest.raises(CollectiveError, match="timed out"):
        failed.wait(1)
