"""Whether operations record the graph: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

The flag is per thread, as in PyTorch, so a communication thread can never switch autograd
off for the training loop.
"""

from __future__ import annotations

import functools
import inspect
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

    def __new__(cls, function: Callable | None = None) -> Any:
        if function is None:
            return super().__new__(cls)
        if not callable(function):
            raise TypeError(
                f"{cls.__name__}() takes no arguments, or a function when used as a bare "
                f"decorator (@{cls.__name__}); got {type(function).__name__}"
            )
        return cls()(function)  # @no_grad without parentheses, as PyTorch allows

    def __init__(self, function: Callable | None = None) -> None:
        pass

    def __enter__(self) -> None:
        self.previous = state.enabled
        state.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        state.enabled = self.previous

    def __call__(self, function: Callable) -> Callable:
        return decorated(function, self.__class__)


def decorated(function: Callable, region: Callable[[], Any]) -> Callable:
    """``function`` run inside ``region()`` (a fresh context manager per call). A generator
    function's body runs inside it at every resume, not only at its creation, as PyTorch's
    grad-mode decorators do (the caller's mode holds between yields)."""
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator(*args: Any, **kwargs: Any) -> Any:
            body = function(*args, **kwargs)
            try:
                with region():
                    value = body.send(None)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        with region():
                            body.close()
                        raise
                    except BaseException as error:  # thrown in: the body may handle it
                        with region():
                            value = body.throw(error)
                    else:
                        with region():
                            value = body.send(sent)
            except StopIteration as finished:  # (raised on inside a generator: an error)
                return finished.value

        return generator

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with region():
            return function(*args, **kwargs)

    return wrapper


class no_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Context manager and decorator: operations inside record no graph."""

    mode = False


class enable_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Context manager and decorator: operations inside record the graph again."""

    mode = True


class _InferenceState(threading.local):
    enabled = False


_inference = _InferenceState()


class inference_mode:  # noqa: N801 - PyTorch's name
    """Context manager and decorator: PyTorch's ``inference_mode``. Inside, operations
    record no graph, as under ``no_grad``; inside ``inference_mode(False)`` they record it
    again and inference mode is off (as PyTorch's, even within ``no_grad``). Unlike
    PyTorch's, tensors made inside are ordinary tensors, which later code may use in
    autograd (PyTorch refuses its "inference tensors" there)."""

    def __new__(cls, mode: Any = True) -> Any:
        if callable(mode) and not isinstance(mode, bool):
            return cls()(mode)  # @inference_mode without parentheses
        return super().__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        self.mode = bool(mode)

    def __enter__(self) -> None:
        self.previous = (state.enabled, _inference.enabled)
        state.enabled, _inference.enabled = not self.mode, self.mode

    def __exit__(self, *exc: object) -> None:
        state.enabled, _inference.enabled = self.previous

    def __call__(self, function: Callable) -> Callable:
        mode = self.mode
        return decorated(function, lambda: inference_mode(mode))


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode()``."""
    return _inference.enabled
