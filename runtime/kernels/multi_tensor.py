"""Passing a list of tensors to one kernel launch (as apex's ``multi_tensor_apply``).

A launch receives, **by value** as a kernel argument, a ``TensorList`` struct: up to
``MAX_TENSORS`` device pointers in each of ``ROWS`` rows (``ptr[row][t]``: row 0 the
parameters, then gradients, optimizer state...; 0 for a row the kernel does not use) and
each tensor's size. By value, not through a table in device memory, so a launch copies
nothing from the host and a CUDA graph captured with it replays with the pointers it was
captured with. Longer lists take one launch per ``MAX_TENSORS`` tensors. Blocks share out
the tensors' chunks of ``CHUNK`` elements round-robin.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from itertools import repeat
from operator import add, attrgetter, floordiv
from typing import Any, NamedTuple

import numpy as np

from dtrain.runtime.backend import device_id, is_cuda_array
from dtrain.runtime.kernels.build import done_counter, type_name

CHUNK = 16384  # elements a block updates before it moves to its next chunk
BLOCK = 256
ROWS = 6
MAX_TENSORS = 48  # 7 * 48 * 8 = 2688 bytes: within the 4 KiB of kernel parameters
_MAX_GRID = 4096

#: numpy's image of the CUDA struct below (same field order, sizes and alignment).
LIST_DTYPE = np.dtype([("ptr", np.int64, (ROWS, MAX_TENSORS)), ("size", np.int64, (MAX_TENSORS,))])

#: CUDA C shared by the multi-tensor kernels: the struct and the chunk arithmetic. A kernel
#: walks its tensors in order, counting chunks over all of them (``base``); chunk ``g`` is
#: updated by block ``g % gridDim.x``.
MULTI_TENSOR = (
    f"""
#define MAX_TENSORS {MAX_TENSORS}
#define CHUNK {CHUNK}LL
struct TensorList {{
    long long ptr[{ROWS}][MAX_TENSORS];
    long long size[MAX_TENSORS];
}};
static_assert(sizeof(TensorList) == {LIST_DTYPE.itemsize}, "TensorList must match LIST_DTYPE");
"""
    + r"""
template <typename P>
__device__ __forceinline__ P* list_ptr(const TensorList& list, int row, int t) {
    return reinterpret_cast<P*>(list.ptr[row][t]);
}

__device__ __forceinline__ long long chunk_count(long long size) {
    return (size + CHUNK - 1) / CHUNK;
}

// The first chunk g >= base that this block owns (g % gridDim.x == blockIdx.x).
__device__ __forceinline__ long long first_owned(long long base) {
    const long long grid = gridDim.x;
    return base + (((long long)blockIdx.x - base % grid) + grid) % grid;
}

// Calls chunk(t, first, last) for every chunk [first, last) of tensor t that this block
// owns, tensors in order: the loop every multi-tensor kernel shares.
template <typename Chunk>
__device__ __forceinline__ void for_each_owned_chunk(const TensorList& list, int n,
                                                     Chunk chunk) {
    long long base = 0;
    for (int t = 0; t < n; ++t) {
        const long long size = list.size[t];
        for (long long c = first_owned(base); c < base + chunk_count(size); c += gridDim.x) {
            const long long first = (c - base) * CHUNK;
            chunk(t, first, first + CHUNK < size ? first + CHUNK : size);
        }
        base += chunk_count(size);
    }
}
"""
)


def fusable(*arrays: Any) -> bool:
    """Whether arrays can share one multi-tensor launch: C-contiguous cupy arrays of one
    supported dtype, size and device (None entries are skipped)."""
    first = None
    for a in arrays:  # one plain loop: the optimizers ask this per parameter, every step
        if a is None:
            continue
        if not is_cuda_array(a) or not a.flags.c_contiguous:
            return False
        if first is None:
            if type_name(a.dtype) is None:
                return False
            first, dtype, size, device = a, a.dtype, a.size, device_id(a)
        elif a.dtype != dtype or a.size != size or device_id(a) != device:
            return False
    return first is not None


class PersistentChecks:
    """``fusable`` for one optimizer's parameters, remembering what persists: a parameter's
    array and its optimizer state stay the same arrays from step to step, so they are
    checked once (and again only when one is replaced); a step then checks its fresh
    gradients alone. Kept per parameter (the key, e.g. the parameter tensor). It holds the
    arrays it last checked, so ``sweep()`` after each step lets go of those of parameters
    that step did not see, and ``clear()`` of all (the optimizer's state replaced).

    It also keeps a plan per parameter group (``plan``/``keep_plan``: what an optimizer
    built from a step's persistent arrays, e.g. its ``CachedLists``), let go of in the same
    way: by ``sweep()`` when a step did not use it, and by ``clear()``.
    """

    def __init__(self) -> None:
        self._known: dict[Any, tuple] = {}
        self._seen: set = set()
        self._plans: dict[int, tuple[Any, Any]] = {}  # id(group) -> (group, plan)
        self._used: set[int] = set()

    def sweep(self) -> None:
        """Forget the parameters not asked about since the last sweep, and the plans not
        used."""
        if not self._seen.issuperset(self._known):
            for key in [key for key in self._known if key not in self._seen]:
                del self._known[key]
        self._seen = set()
        for key in [key for key in self._plans if key not in self._used]:
            del self._plans[key]
        self._used = set()

    def clear(self) -> None:
        self._known.clear()
        self._seen = set()
        self._plans.clear()
        self._used = set()

    def plan(self, group: Any) -> Any:
        """The plan kept for ``group`` (a param-group dict), or None; it counts as used."""
        entry = self._plans.get(id(group))
        if entry is None or entry[0] is not group:
            return None
        self._used.add(id(group))
        return entry[1]

    def keep_plan(self, group: Any, plan: Any) -> None:
        """Keep ``plan`` for ``group`` (None: drop the one kept)."""
        if plan is None:
            self._plans.pop(id(group), None)
            return
        self._plans[id(group)] = (group, plan)
        self._used.add(id(group))

    def saw(self, keys: Any) -> None:
        """Count ``keys`` as asked about this step (their plan checked them)."""
        self._seen.update(keys)

    def fusable(self, key: Any, persistent: tuple, grad: Any) -> bool:
        """``fusable(*persistent, grad)``, ``persistent`` remembered under ``key``."""
        entry = self._entry(key, persistent)
        if entry is None:
            return False
        _, dtype, size, device = entry
        return (
            is_cuda_array(grad)
            and grad.dtype == dtype
            and grad.size == size
            and c_contiguous(type(grad))(grad)
            and device_id(grad) == device
        )

    def persistent(self, key: Any, persistent: tuple) -> bool:
        """``fusable(*persistent)``, remembered under ``key``."""
        return self._entry(key, persistent) is not None

    def _entry(self, key: Any, persistent: tuple) -> tuple | None:
        self._seen.add(key)
        entry = self._known.get(key)
        if entry is not None and len(entry[0]) == len(persistent):
            for known, given in zip(entry[0], persistent):
                if known is not given:
                    entry = None
                    break
        else:
            entry = None
        if entry is None:
            self._known.pop(key, None)
            if not fusable(*persistent):
                return None
            first = persistent[0]
            entry = self._known[key] = (persistent, first.dtype, first.size, device_id(first))
        return entry


def check_lists(name: str, lists: list[list[Any] | None], checked: bool = False) -> str:
    """Raise unless ``lists`` (None for an unused row) line up; return the C type name.

    ``checked``: the caller already picked the arrays with ``fusable`` and grouped them by
    dtype and device (the optimizers, clipping and the scaler do), so only the lengths are
    checked here: asking each array again cost host time on every step.
    """
    n = len(lists[0])
    if any(row is not None and len(row) != n for row in lists):
        lengths = [None if row is None else len(row) for row in lists]
        raise ValueError(
            f"{name}: got lists of lengths {lengths}; pass one entry per parameter in every list"
        )
    if checked:
        return type_name(lists[0][0].dtype)
    for t in range(n):
        if not fusable(*(row[t] for row in lists if row is not None)):
            raise ValueError(
                f"{name}: tensor {t} cannot join a multi-tensor launch; every array must be a "
                "C-contiguous cupy array of the parameter's size, dtype (float16/32/64) and device"
            )
    dtypes = {lists[0][t].dtype for t in range(n)}
    if len(dtypes) > 1:
        raise ValueError(
            f"{name}: got dtypes {sorted(map(str, dtypes))}; one launch takes one dtype, so "
            "call it once per dtype"
        )
    return type_name(lists[0][0].dtype)


def tensor_lists(rows: list[list[Any] | None]) -> list[tuple[np.ndarray, int, int]]:
    """The ``TensorList`` kernel arguments for ``rows`` (row 0 the parameters), one per
    ``MAX_TENSORS`` tensors: ``(struct, tensors, grid)`` each; grid 0 when all are empty.
    """
    pointers = [
        None if row is None else [0 if a is None else a.data.ptr for a in row] for row in rows
    ]
    return _pack(pointers, [int(a.size) for a in rows[0]])


def _pack(pointers: list[list[int] | None], sizes: list[int]) -> list[tuple[np.ndarray, int, int]]:
    """``tensor_lists`` from the rows' pointers (None for a row left 0) and the sizes.

    Filled a row at a time from Python lists: element by element, numpy's structured
    indexing cost ~0.1 ms per 40-parameter Adam step on the host.
    """
    n = len(sizes)
    out = []
    for start in range(0, n, MAX_TENSORS):
        stop = min(n, start + MAX_TENSORS)
        count = stop - start
        struct = np.zeros(1, dtype=LIST_DTYPE)
        struct["size"][0, :count] = sizes[start:stop]
        rows = struct["ptr"][0]
        for r, row in enumerate(pointers):
            if row is not None:
                rows[r, :count] = row[start:stop]
        chunks = sum(map(floordiv, map(add, sizes[start:stop], repeat(CHUNK - 1)), repeat(CHUNK)))
        out.append((struct, count, min(chunks, _MAX_GRID)))
    return out


def checked_lists(arrays: list[Any]) -> list[tuple[np.ndarray, int, int]] | None:
    """``tensor_lists([arrays])``, or None unless every array is a C-contiguous cupy array of
    the first one's type, dtype (float16/32/64) and device: the check and the packing in one
    walk over the arrays (clipping does this every step with fresh gradients)."""
    first = arrays[0]
    if not is_cuda_array(first) or type_name(first.dtype) is None:
        return None
    kind, dtype = type(first), first.dtype
    contiguous = c_contiguous(kind)
    device = first.data.device_id
    # One walk: every check, and the pointers (a .data is one pointer object per array:
    # its device and address). An array that fails is left out, so the lengths differ.
    pointers = [
        d.ptr
        for a in arrays
        if type(a) is kind
        and a.dtype == dtype
        and contiguous(a)
        and (d := a.data).device_id == device
    ]
    if len(pointers) != len(arrays):
        return None
    return _pack([pointers], list(map(_size_of, arrays)))


_size_of = attrgetter("size")
_C_CONTIGUOUS = attrgetter("_c_contiguous")
_FLAGS_C_CONTIGUOUS = attrgetter("flags.c_contiguous")
_contiguity: dict[type, Callable[[Any], bool]] = {}


def c_contiguous(kind: type) -> Callable[[Any], bool]:
    """How to ask an array of type ``kind`` whether it is C-contiguous, asked per type once:
    cupy's own ``_c_contiguous`` flag where the type has one (``flags`` makes an object on
    each read, and the optimizers and clipping ask per gradient, every step), else
    ``flags.c_contiguous``."""
    found = _contiguity.get(kind)
    if found is None:
        has_flag = hasattr(kind, "_c_contiguous")
        found = _contiguity[kind] = _C_CONTIGUOUS if has_flag else _FLAGS_C_CONTIGUOUS
    return found


class CachedLists:
    """The ``tensor_lists`` of a list of tensors whose arrays persist from step to step
    (parameters, optimizer state) beside one row that is fresh each step (the gradients).

    The persistent rows are packed once, here; ``fill`` writes the fresh row into the same
    structs. A launch copies its struct's bytes (and a CUDA graph keeps the copy), so a
    struct may be rewritten once it has been launched. It holds the persistent arrays (their
    pointers stay valid); the owner must build a new one when one of them is replaced.
    """

    def __init__(self, rows: list[list[Any] | None], fresh: int) -> None:
        """``rows`` as for ``tensor_lists``, already picked with ``fusable``; the row at
        index ``fresh`` (None here) is written by ``fill``."""
        first = rows[0][0]
        self.first = first  # on whose device to launch
        self.kind, self.dtype, self.device = type(first), first.dtype, device_id(first)
        self.name = type_name(first.dtype)  # the kernels' C type
        self.sizes = [int(a.size) for a in rows[0]]
        self.launches = tensor_lists(rows)
        self._held = rows
        self._fresh = fresh
        self._rows = [struct["ptr"][0] for struct, _, _ in self.launches]  # views: written

    def fill(self, arrays: list[Any]) -> list[tuple[np.ndarray, int, int]] | None:
        """Write ``arrays``' pointers into the fresh row and return the launches; None (and
        nothing written) unless each is a C-contiguous cupy array of its row-0 tensor's
        size, dtype and device, and of its type (a cupy array)."""
        sizes = self.sizes
        if len(arrays) != len(sizes):
            return None
        kind, dtype, device = self.kind, self.dtype, self.device
        contiguous = c_contiguous(kind)
        # One walk: every check, and the pointers (a .data is one pointer object per array:
        # its device and address). An array that fails is left out, so the lengths differ.
        pointers = [
            d.ptr
            for a, size in zip(arrays, sizes)
            if type(a) is kind
            and a.size == size
            and a.dtype == dtype
            and contiguous(a)
            and (d := a.data).device_id == device
        ]
        if len(pointers) != len(sizes):
            return None
        fresh = self._fresh
        for start, rows in zip(range(0, len(pointers), MAX_TENSORS), self._rows):
            rows[fresh, : min(MAX_TENSORS, len(pointers) - start)] = pointers[
                start : start + MAX_TENSORS
            ]
        return self.launches


class LastBlockLaunches(NamedTuple):
    """The launches of a multi-tensor reduction into one device value that each launch's
    last block finishes (``grad_norm.sum_squares_``, ``unscale.unscale_``)."""

    launches: list  # (struct, count, grid) with grid > 0
    scratch: Any  # a value per block of the largest launch
    counter: Any  # the stream's done counter (an empty array when finish is 0)
    finish: np.int32  # 0: no counter (a capture begun without one); blocks write directly
    overwrite: bool  # the first launch overwrites the value instead of combining with it


def last_block_launches(
    cupy: Any,
    grads: list[Any],
    value: Any,
    overwrite: bool,
    scratch_dtype: Any,
    clear: Any,
    lists: list[tuple[np.ndarray, int, int]] | None = None,
) -> LastBlockLaunches:
    """Plan the launches over ``grads`` that reduce into ``value`` (on the current device).
    With ``overwrite`` the value may hold anything before; where the kernels cannot
    overwrite it (no counter, or nothing to launch) it is set to ``clear`` here first.
    ``lists``: ``tensor_lists([grads])`` if the caller has it already."""
    if lists is None:
        lists = tensor_lists([grads]) if grads else []
    launches = [entry for entry in lists if entry[2]]
    counter = done_counter(cupy, device_id(value)) if launches else None
    if overwrite and (counter is None or not launches):
        value.fill(clear)
        overwrite = False
    grid = max((entry[2] for entry in launches), default=0)
    scratch = cupy.empty(grid, scratch_dtype)
    finish = np.int32(counter is not None)
    if counter is None:
        counter = cupy.empty(0, np.int32)  # not read without finish
    return LastBlockLaunches(launches, scratch, counter, finish, overwrite)


def grouped(indices: list[int], arrays: list[Any]) -> dict[tuple, list[int]]:
    """``indices`` grouped by the (dtype, device) of ``arrays[i]``, in order."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault((arrays[i].dtype, device_id(arrays[i])), []).append(i)
    return groups


def once_each(indices: list[int], arrays: list[Any]) -> list[int]:
    """``indices`` less those whose array another entry of ``arrays`` has too (a parameter
    listed twice, or two Parameters over one array): one launch must not update an array
    twice (its blocks would race), and a launch runs before the caller's elementwise path,
    so every occurrence is left to that path, which updates them in list order, as the
    CPU does."""
    counts = collections.Counter(map(id, arrays))
    if len(counts) == len(arrays):
        return indices
    return [i for i in indices if counts[id(arrays[i])] == 1]
