"""Tables that let one kernel launch update a whole list of tensors (as apex's
``multi_tensor_apply``).

A launch gets, in device memory: ``ptrs`` (rows of device pointers, ``ptrs[row * n + t]``
for tensor ``t`` of list ``row``, 0 for a list the kernel does not use), ``sizes`` (n,), and
one entry per block: ``chunk_tensor``/``chunk_start``, the tensor and first element of the
chunk of ``CHUNK`` elements that block updates. The tables are cached by the pointers and
sizes they hold, so repeated steps over the same arrays copy nothing to the device, and a
CUDA graph captured after one eager step replays with tables that stay put.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array, require_cupy
from dtrain.runtime.kernels.build import type_name

CHUNK = 16384  # elements per block
BLOCK = 256
_CACHE_SIZE = 32

#: CUDA C shared by the multi-tensor kernels: find this block's chunk.
CHUNK_LOOP = r"""
// The [first, last) element range of tensor `t` that this block updates.
struct Chunk { long long t, first, last; };

__device__ __forceinline__ Chunk block_chunk(const long long* sizes, const long long* chunk_tensor,
                                             const long long* chunk_start, long long chunk_size) {
    Chunk c;
    c.t = chunk_tensor[blockIdx.x];
    c.first = chunk_start[blockIdx.x];
    const long long end = c.first + chunk_size;
    c.last = end < sizes[c.t] ? end : sizes[c.t];
    return c;
}

template <typename P> __device__ __forceinline__ P* table_ptr(const long long* ptrs, long long n,
                                                              int row, long long t) {
    return reinterpret_cast<P*>(ptrs[row * n + t]);
}
"""


@dataclass(frozen=True)
class Table:
    """Device tables for one list of tensors (see the module docstring)."""

    ptrs: Any
    sizes: Any
    chunk_tensor: Any
    chunk_start: Any
    n: int
    chunks: int


_TABLES: OrderedDict[tuple, Table] = OrderedDict()


def _pointer(array: Any) -> int:
    return 0 if array is None else int(array.data.ptr)


def table(lists: list[list[Any]], chunk: int = CHUNK) -> Table:
    """The (cached) table of ``lists``: equal-length lists of cupy arrays, or lists of None
    for rows the kernel ignores; ``lists[0]`` gives the sizes."""
    cupy = require_cupy("a multi-tensor kernel")
    first = lists[0]
    sizes = [int(a.size) for a in first]
    rows = [[_pointer(a) for a in row] for row in lists]
    key = (cupy.cuda.Device().id, chunk, tuple(sizes), tuple(tuple(r) for r in rows))
    cached = _TABLES.get(key)
    if cached is not None:
        _TABLES.move_to_end(key)
        return cached
    chunk_tensor, chunk_start = [], []
    for t, size in enumerate(sizes):
        for start in range(0, size, chunk):
            chunk_tensor.append(t)
            chunk_start.append(start)
    made = Table(
        ptrs=cupy.asarray(np.array(rows, dtype=np.int64).reshape(-1)),
        sizes=cupy.asarray(np.array(sizes, dtype=np.int64)),
        chunk_tensor=cupy.asarray(np.array(chunk_tensor, dtype=np.int64)),
        chunk_start=cupy.asarray(np.array(chunk_start, dtype=np.int64)),
        n=len(sizes),
        chunks=len(chunk_tensor),
    )
    _TABLES[key] = made
    if len(_TABLES) > _CACHE_SIZE:
        _TABLES.popitem(last=False)
    return made


def fusable(*arrays: Any) -> bool:
    """Whether arrays can share one multi-tensor launch: C-contiguous cupy arrays of one
    supported dtype on one device (None entries are skipped)."""
    present = [a for a in arrays if a is not None]
    if not present or not all(is_cuda_array(a) for a in present):
        return False
    first = present[0]
    if type_name(first.dtype) is None:
        return False
    return all(
        a.dtype == first.dtype
        and a.flags.c_contiguous
        and a.device.id == first.device.id
        and a.size == first.size
        for a in present
    )


def check_lists(name: str, lists: list[list[Any]]) -> str:
    """Raise unless ``lists`` (None rows allowed) line up for ``name``; return the type name."""
    n = len(lists[0])
    for row in lists:
        if row is not None and len(row) != n:
            raise ValueError(
                f"{name}: got lists of lengths {[len(r) for r in lists]}; "
                "pass one entry per parameter in every list"
            )
    for t in range(n):
        if not fusable(*(row[t] for row in lists if row is not None)):
            raise ValueError(
                f"{name}: tensor {t} cannot join a multi-tensor launch; every array must be a "
                "C-contiguous cupy array of the parameter's size, dtype (float16/32/64) and device"
            )
    dtypes = {lists[0][t].dtype for t in range(n)}
    if len(dtypes) > 1:
        raise ValueError(
            f"{name}: got dtypes {sorted(map(str, dtypes))}; one launch takes one "
            "dtype, so call it once per dtype"
        )
    return type_name(lists[0][0].dtype)


def grouped(indices: list[int], arrays: list[Any]) -> dict[tuple, list[int]]:
    """``indices`` grouped by the (dtype, device) of ``arrays[i]``, in order."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault((arrays[i].dtype, arrays[i].device.id), []).append(i)
    return groups
