"""Helpers the op modules share: broadcasting gradients back, normalising dims."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from dtrain._tensor.settings import deterministic_requested
from dtrain.runtime.backend import get_array_module


def quiet(xp: Any) -> Any:
    """numpy's warnings off where PyTorch gives inf/nan silently (x/0, log(0), log(-1), a sum
    that overflows)."""
    if xp is not np:
        return contextlib.nullcontext()
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def unbroadcast(grad: Any, shape: tuple) -> Any:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    if grad.ndim < len(shape):
        # numpy also broadcasts "down" (x[0] = v with v of shape (1, n) drops v's leading 1s).
        grad = grad.reshape((1,) * (len(shape) - grad.ndim) + grad.shape)
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1
    )
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def normalize_dim(dim: int, ndim: int, what: str = "dim") -> int:
    """A non-negative axis, or an IndexError that names the valid range."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{what} must be an int, got {dim!r}")
    extent = max(ndim, 1)
    if not -extent <= dim < extent:
        raise IndexError(
            f"{what}={dim} is out of range for a tensor with {ndim} dimension(s); "
            f"use a value in [{-extent}, {extent - 1}]"
        )
    return dim % extent


def normalize_dims(dim: Any, ndim: int) -> tuple | None:
    """``None`` (every axis), an int or a sequence of ints → a sorted tuple of axes."""
    if dim is None:
        return None
    if ndim == 0:
        for d in dim if isinstance(dim, (list, tuple)) else (dim,):
            normalize_dim(d, 0)  # a 0-d tensor takes dim 0 or -1, as in PyTorch …
        return ()  # … and numpy reduces it over no axes
    if isinstance(dim, (list, tuple)):
        axes = tuple(sorted(normalize_dim(d, ndim) for d in dim))
        if len(set(axes)) != len(axes):
            raise ValueError(f"dim {dim!r} names an axis twice; list each axis once")
        return axes
    return (normalize_dim(dim, ndim),)


def check_broadcast(what: str, *shapes: tuple) -> None:
    """Raise a ValueError that names every shape when ``shapes`` do not broadcast together."""
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        listed = " and ".join(str(tuple(shape)) for shape in shapes)
        raise ValueError(
            f"{what}: shapes {listed} do not broadcast; aligned from the right, each pair of "
            "sizes must be equal or one of them 1"
        ) from None


def expand_reduced(grad: Any, axes: tuple | None, keepdim: bool, shape: tuple, xp: Any) -> Any:
    """Re-insert the reduced axes of ``grad`` (when not kept) and broadcast it to ``shape``."""
    if not keepdim and axes is not None and shape:
        grad = xp.expand_dims(grad, axes)
    return xp.broadcast_to(grad, shape)


def add_at(target: Any, key: Any, values: Any, what: str) -> None:
    """``target[key] += values`` with repeated indices summed (``ufunc.at``). On CUDA,
    cupy adds floats with atomics, in no fixed order; under
    ``use_deterministic_algorithms(True)`` the sum takes ``sorted_add_at``'s fixed order
    instead (as PyTorch's deterministic index_put/scatter_add do). ``what`` names the op."""
    xp = get_array_module(target)
    if xp is not np:
        if target.dtype.kind in "fc" and deterministic_requested():
            sorted_add_at(target, key, values, xp)
            return
        if target.dtype.name not in _CUPY_ADD_AT:
            _exact_add_at(target, key, values, xp, what)
            return
    xp.add.at(target, key, values)


# The dtypes cupy's add.at has a kernel for (cupy/_core/_routines_indexing.pyx).
_CUPY_ADD_AT = frozenset(("int32", "uint32", "uint64", "float16", "float32", "float64"))


def _exact_add_at(target: Any, key: Any, values: Any, xp: Any, what: str) -> None:
    """``add.at`` for the dtypes cupy's has no kernel for, exactly, through one it has:
    int64 as uint64 (two's complement: adding the same bits gives the same bits), and
    int8/int16/uint8/uint16/bool in a 32-bit copy cast back (wrapping sums agree modulo
    2**bits; a bool is True where any True was added, as numpy's add.at)."""
    values = xp.asarray(values)
    if not np.can_cast(values.dtype, target.dtype, "same_kind"):
        raise TypeError(
            f"{what}: cannot add {values.dtype} values into a {target.dtype} tensor; cast "
            f"them to {target.dtype} first"
        )
    values = values.astype(target.dtype, copy=False)
    if target.dtype.itemsize == 8:
        xp.add.at(target.view(xp.uint64), key, values.view(xp.uint64))
        return
    wide = np.dtype(np.int32 if target.dtype.kind == "i" else np.uint32)
    sums = target.astype(wide)
    xp.add.at(sums, key, values.astype(wide))
    target[...] = sums.astype(target.dtype)


def sorted_add_at(target: Any, key: Any, values: Any, xp: Any) -> None:
    """``xp.add.at(target, key, values)`` in a fixed order, with no atomics: sort the target
    positions, sum each run of equal positions with a segmented scan (log2(n) passes of
    elementwise ops, a tree of sums), and add each run's total once. The same inputs give
    the same bits on every run; it costs a sort and a few more launches than the atomics."""
    positions = xp.arange(target.size).reshape(target.shape)[key]
    if positions.size == 0:
        return
    values = xp.broadcast_to(xp.asarray(values, dtype=target.dtype), positions.shape)
    positions, values = positions.reshape(-1), values.reshape(-1)
    order = xp.argsort(positions)
    positions, sums = positions[order], values[order]
    n = positions.size
    head = xp.concatenate([xp.ones(1, bool), positions[1:] != positions[:-1]])
    run_starts = xp.flatnonzero(head)
    starts = run_starts[xp.cumsum(head) - 1]  # the index where each element's run begins
    run_lengths = xp.diff(xp.concatenate([run_starts, xp.asarray([n])]))
    longest = int(run_lengths.max())  # one host sync: the passes stop at the longest run
    index = xp.arange(n)
    step = 1
    while step < longest:  # Hillis-Steele: each element gathers its run's sum up to itself
        shifted = xp.concatenate([xp.zeros(step, sums.dtype), sums[:-step]])
        sums = sums + xp.where(index - step >= starts, shifted, 0)
        step *= 2
    last = xp.concatenate([head[1:], xp.ones(1, bool)])  # a run's last element holds its total
    where = xp.unravel_index(positions[last], target.shape)
    target[where] = target[where] + sums[last]  # unique positions: no two writes collide
