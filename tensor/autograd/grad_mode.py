"""Whether operations record the graph: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

The flag is per thread, as in PyTorch, so a communication thread can never switch autograd
off for the training loop.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


class _GradState(threading.local):
    enabled = True


state = _GradState()


def is_grad_enabled() -> bool:
    """True when new operations record the graph for backward."""
    return state.enabled


class set_grad_enabled:  # noqa: N801 - PyTorch's name for a context manager
    """Turn graph recording on or off, as a context manager or for the current thread."""

    def __init__(self, mode: bool) -> None:
        self.previous = state.enabled
        state.enabled = bool(mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        state.enabled = self.previous


class _GradModeContext:
    mode = True

    def __enter__(self) -> None:
        self.previous = state.enabled
        state.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        state.enabled = self.previous

    def __call__(self, function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return function(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Context manager and decorator: operations inside record no graph."""

    mode = False


class enable_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Context manager and decorator: operations inside record the graph again."""

    mode = True
