"""PyTorch's ``out=`` keyword: ``dt.add(a, b, out=c)`` computes the result and writes it
into ``c``, which it returns.

As PyTorch: ``out`` of another shape is resized (with a UserWarning when it held
elements); the result's dtype must cast to ``out``'s within its kind (bool → int → float,
never back), while indices (``argmax``, ``max(x, dim)``'s second tensor ...) need ``out``
of exactly their dtype; ``out`` must be on the result's device; and with grad mode on, no
input and not ``out`` may require grad (autograd records no op that writes into ``out``).
Functions with several results (``max(x, dim)``, ``sort`` ...) take a tuple of tensors.
dtrain computes the result first and then copies it, where PyTorch writes in place.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.ops.inplace import copy_
from dtrain._tensor.tensor import Tensor

# The dtype kinds a result may be cast to in ``out`` (PyTorch's canCast: no float into an
# integer tensor, no number into a bool one).
_CASTS = {"b": "biuf", "i": "iuf", "u": "iuf", "f": "f", "c": "c"}
_KINDS = {
    "b": "any dtype",
    "i": "an integer or float dtype",
    "u": "an integer or float dtype",
    "f": "a float dtype",
    "c": "a complex dtype",
}


def accepts_out(fn: Callable, *, exact: tuple = (), creation: bool = False) -> Callable[..., Any]:
    """``fn`` with PyTorch's keyword ``out=`` added; without it, ``fn`` as it is.

    Args:
        fn: the function; it returns a tensor or a tuple of tensors.
        exact: the positions of the results (0 for a single one) that ``out`` must match
            in dtype exactly: indices, as PyTorch's ``argmax`` and ``max(x, dim)``.
        creation: a creation function (``zeros``, ``arange`` ...): without ``dtype`` or
            ``device`` it makes its values in ``out``'s, as PyTorch does.

    Returns:
        The wrapped function (its name, docstring and signature are ``fn``'s).
    """
    name = fn.__name__

    @functools.wraps(fn)
    def with_out(*args: Any, out: Any = None, **kwargs: Any) -> Any:
        if out is None:
            return fn(*args, **kwargs)
        if creation and isinstance(out, Tensor):
            kwargs.setdefault("dtype", out.dtype)
            kwargs.setdefault("device", out.device)
        return write_out(name, fn(*args, **kwargs), out, exact)

    return with_out


def write_out(name: str, result: Any, out: Any, exact: tuple = ()) -> Any:
    """Copy ``result`` (a tensor or a tuple of them) into ``out`` and return ``out`` (a
    tuple of the same type as ``result`` for several results).

    Raises:
        TypeError: ``out`` is not a tensor (or tuple of as many tensors as results).
        RuntimeError: autograd would need to record; a dtype that cannot be cast, a
            device mismatch, or a view that would need resizing.
    """
    several = isinstance(result, tuple)
    results = result if several else (result,)
    outs = tuple(out) if several and isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(results) or not all(isinstance(o, Tensor) for o in outs):
        wanted = f"a tuple of {len(results)} tensors" if several else "a tensor"
        raise TypeError(f"{name}(): out must be {wanted}, got {_describe(out)}")
    if _grad_state.enabled and any(
        isinstance(r, Tensor) and r.requires_grad for r in results + outs
    ):
        raise RuntimeError(
            f"{name}(): functions with out=... arguments don't support automatic "
            "differentiation, but one of the arguments requires grad; call it under "
            "dt.no_grad(), or drop out= and use the returned tensor"
        )
    for position, (r, o) in enumerate(zip(results, outs, strict=True)):
        _check(name, r, o, position in exact)
    with no_grad():
        for r, o in zip(results, outs, strict=True):
            _write(name, r, o)
    if not several:
        return out
    return type(result)(*outs) if hasattr(result, "_fields") else outs


def _describe(out: Any) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {', '.join(type(o).__name__ for o in out)}"
    return type(out).__name__


def _check(name: str, result: Tensor, out: Tensor, exact: bool) -> None:
    have, want = np.dtype(result.dtype), np.dtype(out.dtype)
    if exact and have != want:
        raise RuntimeError(
            f"{name}(): expected out tensor to have dtype {have}, but got {want} instead; "
            f"pass an out of dtype {have}"
        )
    if want.kind not in _CASTS.get(have.kind, have.kind):
        raise RuntimeError(
            f"{name}(): result type {have} can't be cast to the desired output type {want}; "
            f"pass an out of dtype {have} (a {have.kind!r}-kind result casts to "
            f"{_KINDS[have.kind]})"
        )
    if result.device != out.device:
        raise RuntimeError(
            f"{name}(): the result is on {result.device} but out is on {out.device}; pass an "
            f"out on {result.device}"
        )


def _write(name: str, result: Tensor, out: Tensor) -> None:
    if out.shape == result.shape:
        copy_(out, result)
        return
    if out._base is not None:
        raise RuntimeError(
            f"{name}(): out has shape {tuple(out.shape)} and the result "
            f"{tuple(result.shape)}, and out is a view of another tensor, which dtrain "
            "cannot resize; pass an out of the result's shape or a fresh tensor"
        )
    if out.numel() != 0:
        warnings.warn(
            f"{name}(): an output with one or more elements was resized since it had shape "
            f"{list(out.shape)}, which does not match the required output shape "
            f"{list(result.shape)}; pass an out of the result's shape (or an empty one) to "
            "avoid the resize",
            UserWarning,
            stacklevel=4,
        )
    out._array = result._array.astype(out.dtype, copy=True)
    out._version[0] += 1


__all__ = ["accepts_out", "write_out"]
