"""The background save of this process, if one runs (``checkpoint_async``), and waiting for
it: ``save`` and ``load`` wait first, so a later synchronous save is never replaced by an
older snapshot and a load never reads the checkpoint a save is about to replace; and
``destroy_process_group`` waits, then lets go of the checkpoint group (``on_destroy``).
A module of its own so that all of them can import it without importing each other."""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Pending:
    running: threading.Thread | None = None  # the latest background save
    on_destroy: list[Callable[[], None]] = []  # noqa: RUF012 - one list per process


_pending = _Pending()


def set_running(thread: threading.Thread) -> None:
    _pending.running = thread


def wait_for_pending() -> None:
    """Block until this process's running ``async_save`` (if any) has finished."""
    thread = _pending.running
    if thread is not None and thread is not threading.current_thread():
        thread.join()
        _pending.running = None


def on_destroy(callback: Callable[[], None]) -> None:
    """Call ``callback`` from ``destroy_process_group()`` of the default group (once)."""
    if callback not in _pending.on_destroy:
        _pending.on_destroy.append(callback)


def before_destroy() -> None:
    """What ``destroy_process_group()`` runs first: wait for a running save, then the
    registered callbacks (the checkpoint group goes with its world)."""
    wait_for_pending()
    for callback in list(_pending.on_destroy):
        callback()


__all__ = ["before_destroy", "on_destroy", "set_running", "wait_for_pending"]
