"""Inputs, numpy references and result checks for the collective sweeps (``workers.py``).

Inputs are a deterministic function of (case, rank), so every rank computes the reference of
a collective from everyone's inputs locally, without communicating. Values are chosen so that
sums and products are exact in every dtype (float16 included): ranks may combine in any
order and still agree with numpy; only AVG's division rounds, and is compared with a
tolerance.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

import dtrain as dt
from dtrain.parallel import ReduceOp

DTYPES = ("float16", "float32", "float64", "int32", "int64")
EXTRA_DTYPES = ("bool", "uint8", "int16")  # a lighter pass: a few sizes only
BIG = (1 << 20) + 3  # a size class of its own: the ring path, several chunks, uneven segments
SIZES = (0, 1, 7, 1001, 20001, BIG)
HUGE = 16 << 20  # float32 elements: one 64 MiB all_reduce and broadcast
TOLERANCE = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-12}  # for AVG's division


def reduce_ops(dtype: str) -> list[ReduceOp]:
    """The reduce ops defined for ``dtype`` (AVG needs floats)."""
    ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT]
    return ops + [ReduceOp.AVG] if np.dtype(dtype).kind == "f" else ops


def shape_of(size: int) -> tuple:
    """A shape with ``size`` elements: 1-D, 2-D and 0-d shapes all occur."""
    return {1: (), 1001: (7, 143), 20001: (3, 6667)}.get(size, (size,))


_PATTERNS: dict = {}


def _pattern(family: str, dtype: str, size: int) -> np.ndarray:
    """``size + 64`` values of one family; inputs are windows into it (cheap at any size)."""
    cache_key = (family, dtype, size)
    if cache_key not in _PATTERNS:
        i = np.arange(size + 64, dtype=np.int64)
        if family == "bool":
            values = i % 3 == 0
        elif family == "product":  # |product| <= 2**5 for five ranks
            values = np.array([-2, -1, 1, 2])[i % 4]
        elif family == "int64":  # beyond float64's 53 bits: a float path loses the low digits
            values = (i % 17 - 8) * (1 << 56) + i % 1000
        elif family == "int32":
            values = (i % 17 - 8) * (1 << 24) + i % 1000
        elif family == "int16":
            values = (i % 17 - 8) * 500 + i % 7
        elif family == "uint":
            values = i % 17
        else:  # multiples of 1/8 in [-8, 8]: sums of five are exact even in float16
            values = (i % 17 - 8) + (i % 8) / 8
        _PATTERNS[cache_key] = np.asarray(values).astype(dtype)
    return _PATTERNS[cache_key]


def make(key: str, dtype: str, shape: tuple, rank: int, op: ReduceOp | None = None) -> np.ndarray:
    """Rank ``rank``'s input for case ``key`` (a fresh array): a window into a pattern, at an
    offset that differs between ranks and cases."""
    size = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        family = "bool"
    elif op is ReduceOp.PRODUCT:
        family = "product"
    elif dtype in ("int64", "int32", "int16"):
        family = dtype
    else:
        family = "uint" if kind == "u" else "float"
    offset = (zlib.crc32(key.encode()) * 7 + 13 * rank) % 61
    return _pattern(family, dtype, size)[offset : offset + size].reshape(shape).copy()


def reference(op: ReduceOp, arrays: list[np.ndarray], dtype: str) -> np.ndarray:
    """numpy's reduction of ``arrays``, as every rank should compute it. Exact in ``dtype``
    (the inputs make it so) except AVG, which is computed in float64."""
    if op is ReduceOp.AVG:
        return np.mean(np.stack(arrays), axis=0, dtype=np.float64)
    if arrays[0].dtype == np.bool_:
        ufunc = np.logical_or if op in (ReduceOp.SUM, ReduceOp.MAX) else np.logical_and
    else:
        ufunc = {
            ReduceOp.SUM: np.add,
            ReduceOp.MAX: np.maximum,
            ReduceOp.MIN: np.minimum,
            ReduceOp.PRODUCT: np.multiply,
        }[op]
    result = arrays[0].copy()
    for other in arrays[1:]:
        ufunc(result, other, out=result)
    return result


class Checker:
    """Counts checks, keeps the first failures, and hashes every result that all ranks of
    the group must hold bitwise identically."""

    def __init__(self) -> None:
        self.checks = 0
        self.failures: list[str] = []
        self.digest = 0

    def same(self, label: str, got: Any, want: np.ndarray, dtype: str, shared: bool = True) -> None:
        """``got`` equals ``want``: exactly, unless ``want`` is float64 for a narrower float
        dtype (AVG), then within that dtype's rounding."""
        self.checks += 1
        got = np.asarray(got.numpy() if isinstance(got, dt.Tensor) else got)
        problem = None
        if got.shape != want.shape:
            problem = f"shape {got.shape}, expected {want.shape}"
        elif got.dtype != np.dtype(dtype):
            problem = f"dtype {got.dtype}, expected {dtype}"
        else:
            if want.dtype == got.dtype:
                bad = got != want
            else:
                tol = TOLERANCE[dtype]
                bad = ~np.isclose(got.astype(np.float64), want, rtol=tol, atol=tol)
            if bad.any():
                first = np.flatnonzero(bad)[0]
                problem = (
                    f"{int(bad.sum())} values differ, first at {first}: "
                    f"{got.flat[first]} vs {want.flat[first]}"
                )
        if problem is not None and len(self.failures) < 40:
            self.failures.append(f"{label}: {problem}")
        if shared:
            self.digest = zlib.crc32(
                np.ascontiguousarray(got).reshape(-1).view(np.uint8), self.digest
            )

    def report(self) -> dict:
        return {"checks": self.checks, "failures": self.failures}


class Pending:
    """Async results to check once their Work finished (sync calls check at once)."""

    def __init__(self, checker: Checker) -> None:
        self.checker, self.items = checker, []

    def add(self, work: Any, label: str, got: Any, want: Any, dtype: str, shared: bool = True):
        if work is None:
            self.checker.same(label, got, want, dtype, shared)
        else:
            self.items.append((work, label, got, want, dtype, shared))

    def flush(self) -> None:
        for work, label, got, want, dtype, shared in self.items:
            try:
                assert work.wait() is True
                assert work.is_completed() and work.is_success() and work.exception() is None
            except Exception as exc:
                self.checker.failures.append(f"{label}: Work failed: {exc!r}")
                continue
            self.checker.same(label, got, want, dtype, shared)
        self.items.clear()
