"""Grouped convolutions with few channels per group (depthwise above all) as a sum over the
kernel taps, with no im2col columns.

For each kernel position (tap) the input's windows at that position are one shifted view of
the zero padded input; the output is the sum over taps (and the few input channels of a
group) of such a view times that tap's per-channel weights, each a multiply and an add over
the output. Backward runs the same taps: the input gradient adds each tap's ``grad · weight``
back onto its view of a zero padded buffer, and the weight gradient is one ``einsum``
reduction of ``view · grad`` per tap. A depthwise 3x3 convolution is then 9 multiply-adds
where the GEMM route copies 9 columns per pixel and runs one tiny GEMM per channel.

Each view is one contiguous run (numpy runs several times faster on long runs than on rows
of a few elements): the padded images, ``(N, C/G, G, *padded)`` (the channels of a group
apart, so that each product runs over all groups at once), are flattened, and an output
position ``p`` sits at ``p``'s flat index; the positions past each row's output width are
computed and dropped. At a stride ``s`` above 1 the padded input is first split into its
``s``-strided phase planes (every ``s``-th position from each of the first ``s``): a tap
reads one plane, at stride 1, so the same runs serve.

The route costs ``2 · kernel size · C/G · O/G`` array passes over the output: ``use_taps``
takes it on numpy for depthwise convolutions (``TAPS_MAX``, measured); cupy keeps the GEMM
route, a few launches where the taps would take two (small) launches per tap.

Every buffer belongs to a chunk of the batch (``CHUNK``), reused from chunk to chunk, and
the chunks are shared among the CPU threads: a chunk's planes, sums and scratch stay in
cache across the taps, and no large temporary is made (freshly mapped memory costs a page
fault per 4 KiB).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from dtrain._tensor import settings
from dtrain._tensor.autograd.op import Op
from dtrain.runtime.backend import get_array_module

#: The tap route's limit on ``(C/G) · (O/G)``: depthwise convolutions only. Measured at 64
#: channels on 16x16, batch 32 (docs/benchmarks.md, "Depthwise convolutions as taps"), the
#: taps are 3x faster than the GEMM route at 1, slightly slower at 2 (a channel multiplier
#: of 2) and 1.5x slower at 4.
TAPS_MAX = 1

#: Elements per buffer of a chunk of the batch (one image at least): measured fastest at 2^18
#: for 64 channels of 18x18; twice that is 3-5x slower (buffers out of cache, page faults).
CHUNK = 1 << 18


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the pool)
_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def threads() -> int:
    """Threads the taps run on: ``set_num_threads``'s count, else the CPUs this process may
    use (not threadpoolctl's BLAS count: asking it costs milliseconds)."""
    return settings._state["threads"] or _cpus or 1


def use_taps(array: Any, weight_shape: tuple, groups: int) -> bool:
    """Whether a convolution of weight ``(O, C/G, *kernel)`` in ``groups`` groups over
    ``array`` takes the tap route: numpy arrays and ``(C/G)·(O/G) <= TAPS_MAX``."""
    if get_array_module(array) is not np:
        return False  # cupy: a few GEMM launches, not 2 per tap
    return weight_shape[1] * (weight_shape[0] // groups) <= TAPS_MAX


class Taps(NamedTuple):
    """Where a convolution's taps lie in the phase planes of its padded input."""

    shape: tuple  # (N, C, *size), unpadded
    pads: tuple  # (before, after) per spatial dim
    stride: tuple
    groups: int
    out: tuple  # output size per spatial dim
    padded: tuple  # padded size per spatial dim
    plane: tuple  # a phase plane's size per spatial dim: padded / stride, rounded up
    phases: tuple  # per phase plane, its first padded index per spatial dim
    taps: tuple  # per tap, (its phase plane, its offset in the flattened plane)
    tail: int  # the largest offset: zeros past each flattened plane
    parts: tuple  # per phase plane, (where in it, where in the unpadded input) or None


def taps(
    shape: tuple, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple, groups: int
) -> Taps:
    """The ``Taps`` of a convolution over an ``(N, C, *size)`` input."""
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(shape[2:], pads))
    out = tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation)
    )
    plane = tuple(-(-p // s) for p, s in zip(padded, stride))
    phases = tuple(np.ndindex(*stride))
    steps = [math.prod(plane[a + 1 :]) for a in range(len(plane))]
    found = []
    for tap in np.ndindex(*kernel):
        at = [p * d for p, d in zip(tap, dilation)]  # in the padded input, from an output
        phase = tuple(a % s for a, s in zip(at, stride))
        offset = sum((a // s) * step for a, s, step in zip(at, stride, steps))
        found.append((phases.index(phase), offset))
    tail = max(offset for _, offset in found)
    parts = []
    for phase in phases:  # the input's elements in each plane: plane j is padded r + s·j
        first = [max(0, -(-(lo - r) // s)) for r, s, (lo, _) in zip(phase, stride, pads)]
        start = [r + s * j - lo for r, s, j, (lo, _) in zip(phase, stride, first, pads)]
        count = [max(0, -(-(n - a) // s)) for n, a, s in zip(shape[2:], start, stride)]
        parts.append(
            None
            if 0 in count
            else (
                tuple(slice(j, j + k) for j, k in zip(first, count)),
                tuple(slice(a, a + s * (k - 1) + 1, s) for a, s, k in zip(start, stride, count)),
            )
        )
    return Taps(
        shape, pads, stride, groups, out, padded, plane, phases, tuple(found), tail, tuple(parts)
    )


def _swap(a: Any) -> Any:
    """``(M, A, B, ...)`` → ``(M, B, A, ...)``, a view."""
    return a.swapaxes(1, 2)


def _corner(t: Taps) -> tuple:  # the output positions of an (M, ·, G, *plane) array
    return (slice(None),) * 3 + tuple(slice(0, s) for s in t.out)


class _Planes:
    """Zero padded images ``(M, per_group, G, *padded)`` of a chunk of the batch as phase
    planes: per phase, every ``stride``-th position from its first, ``(M, per_group, G,
    *plane)``, each flattened and followed by ``tail`` zeros (at stride 1 the one plane is the
    padded image)."""

    def __init__(self, xp: Any, t: Taps, rows: int, per_group: int, dtype: Any) -> None:
        self.t, self.per_group = t, per_group
        size = rows * per_group * t.groups * math.prod(t.plane)
        self.flat = xp.zeros((len(t.phases), size + t.tail), dtype=dtype)

    def _size(self, m: int) -> int:
        return m * self.per_group * self.t.groups * math.prod(self.t.plane)

    def plane(self, index: int, m: int) -> Any:
        """Phase plane ``index`` of the chunk's first ``m`` images, ``(m, pg, G, *plane)``."""
        shape = (m, self.per_group, self.t.groups) + self.t.plane
        return self.flat[index, : self._size(m)].reshape(shape)

    def put(self, images: Any) -> None:
        """``images`` ``(m, pg, G, *size)`` into the planes (their padding stays zero)."""
        whole = (slice(None),) * 3
        for index, part in enumerate(self.t.parts):
            if part is not None:
                self.plane(index, images.shape[0])[whole + part[0]] = images[whole + part[1]]

    def take(self, into: Any) -> None:
        """``into`` ``(m, pg, G, *size)`` from the planes: the unpadded positions."""
        whole = (slice(None),) * 3
        for index, part in enumerate(self.t.parts):
            if part is not None:
                into[whole + part[1]] = self.plane(index, into.shape[0])[whole + part[0]]

    def clear(self, m: int) -> None:
        self.flat[:, : self._size(m) + self.t.tail] = 0

    def views(self, m: int) -> list:
        """Per tap, the windows at it of the first ``m`` images: ``(m, pg, G · P)`` runs of
        the tap's flattened phase plane from its offset (every position of the plane; those
        not at an output read past it, into the next rows, group, image or the zero tail)."""
        size = self._size(m)
        return [
            self.flat[index, offset : offset + size].reshape(m, self.per_group, -1)
            for index, offset in self.t.taps
        ]


def _chunks(t: Taps, channels: int) -> tuple[int, list[tuple[int, int]]]:
    """Images per chunk and the chunks of the batch: about ``CHUNK`` elements per buffer (one
    image at least), so that a chunk's buffers stay in cache across the taps and stay small (a
    new array costs a page fault per 4 KiB when first written), and, for more than one
    chunk's work, at least one chunk per thread."""
    n, image = t.shape[0], channels * math.prod(t.padded)
    rows = max(1, CHUNK // max(1, image))
    if n * image > CHUNK:  # more than one chunk's work: at least one chunk per thread
        rows = max(1, min(rows, -(-n // threads())))
    return rows, [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def _weights(w: Any, t: Taps) -> Any:
    """``(O, C/G, *kernel)`` → per tap, input and output channel of a group, the weights to
    multiply a view's channel by, ``(T, C/G, O/G, G · P)``: each weight repeated along its
    run, so that the product runs over contiguous arrays (numpy's broadcast of one value per
    run is 3x slower)."""
    xp = get_array_module(w)
    o, cg = w.shape[:2]
    per_tap = w.reshape(t.groups, o // t.groups, cg, -1).transpose(3, 2, 1, 0)
    runs = xp.broadcast_to(per_tap[..., None], per_tap.shape + (math.prod(t.plane),))
    return xp.ascontiguousarray(runs).reshape(per_tap.shape[:3] + (-1,))


def _in_parts(run: Callable[[list], Any], chunks: list) -> list:
    """``run`` over the chunks split among ``threads()`` threads (numpy's loops release the
    GIL), each part a strided share of the chunks; the results in part order."""
    workers = min(threads(), len(chunks))
    if workers <= 1:
        return [run(chunks)]
    global _pool
    # A new pool for more threads, or in a forked child (whose copy of the pool has no threads).
    if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers < workers:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dtrain-conv")
        _pool = (os.getpid(), pool)
    return list(_pool[1].map(run, [chunks[i::workers] for i in range(workers)]))


def forward(x: Any, w: Any, b: Any, t: Taps) -> Any:
    """The convolution ``(N, O, *out)`` of ``x`` by ``w`` (+ ``b``) along the taps."""
    xp = get_array_module(x)
    (n, c), o = x.shape[:2], w.shape[0]
    cg, og = c // t.groups, o // t.groups
    result = xp.empty((n, o) + t.out, dtype=x.dtype)
    rows, chunks = _chunks(t, max(c, o))
    weights = _weights(w, t)
    bias = None if b is None else b.reshape((1, t.groups, og) + (1,) * len(t.out))

    def run(part: list) -> None:
        planes = _Planes(xp, t, rows, cg, x.dtype)
        sums = xp.empty((rows, og, t.groups) + t.plane, dtype=x.dtype)
        scratch = xp.empty_like(sums[:, 0])
        for lo, hi in part:
            m = hi - lo
            planes.put(_swap(x[lo:hi].reshape((m, t.groups, cg) + t.shape[2:])))
            acc, spare = sums[:m].reshape(m, og, -1), scratch[:m].reshape(m, -1)
            for tap, view in enumerate(planes.views(m)):
                for ci in range(cg):
                    for oi in range(og):
                        into = acc[:, oi] if tap == ci == 0 else spare
                        xp.multiply(view[:, ci], weights[tap, ci, oi], out=into)
                        if into is spare:
                            acc[:, oi] += spare
            image_out = _swap(sums[:m][_corner(t)])
            into = result[lo:hi].reshape((m, t.groups, og) + t.out)
            if bias is None:
                into[...] = image_out
            else:
                xp.add(image_out, bias, out=into)

    _in_parts(run, chunks)
    return result


def backward(grad: Any, x: Any, w: Any, t: Taps, need_x: bool, need_w: bool) -> tuple[Any, Any]:
    """The input gradient ``(N, C, *size)`` (each tap's ``grad · weight`` added back onto its
    view of zero phase planes) and the weight gradient (per tap, one reduction of
    ``view · grad``), each None where not needed."""
    xp = get_array_module(grad)
    (c, o), cg = (t.shape[1], w.shape[0]), w.shape[1]
    og = o // t.groups
    grad_x = xp.empty(t.shape, dtype=grad.dtype) if need_x else None
    rows, chunks = _chunks(t, max(c, o))
    weights = _weights(w, t)

    def run(part: list) -> Any:
        inputs = _Planes(xp, t, rows, cg, grad.dtype) if need_w else None
        added = _Planes(xp, t, rows, cg, grad.dtype) if need_x else None  # the input gradient
        spread = xp.zeros((rows, og, t.groups) + t.plane, dtype=grad.dtype)
        scratch = xp.empty_like(spread[:, 0])
        sums = xp.zeros((len(t.taps), t.groups, og, cg), dtype=grad.dtype) if need_w else None
        for lo, hi in part:
            m = hi - lo
            # grad in the output corner of zero planes: (m, O/G, G·P)
            spread[:m][_corner(t)] = _swap(grad[lo:hi].reshape((m, t.groups, og) + t.out))
            positions = spread[:m].reshape(m, og, -1)
            if need_w:
                inputs.put(_swap(x[lo:hi].reshape((m, t.groups, cg) + t.shape[2:])))
                split = positions.reshape(m, og, t.groups, -1)  # to sum per group
                for tap, view in enumerate(inputs.views(m)):
                    view = view.reshape(m, cg, t.groups, -1)
                    sums[tap] += xp.einsum("nogl,ncgl->goc", split, view)
            if need_x:
                added.clear(m)
                spare = scratch[:m].reshape(m, -1)
                for tap, view in enumerate(added.views(m)):
                    for ci in range(cg):
                        for oi in range(og):
                            xp.multiply(positions[:, oi], weights[tap, ci, oi], out=spare)
                            view[:, ci] += spare
                added.take(_swap(grad_x[lo:hi].reshape((m, t.groups, cg) + t.shape[2:])))
        return sums

    parts = _in_parts(run, chunks)
    if not need_w:
        return grad_x, None
    total = parts[0]
    for more in parts[1:]:
        total += more
    return grad_x, xp.ascontiguousarray(total.transpose(1, 2, 3, 0)).reshape(w.shape)


class ConvTaps(Op):
    """An N-d convolution of few channels per group along its kernel taps (module doc)."""

    reads_inputs = True

    def forward(
        self, x: Any, w: Any, b: Any, stride: tuple, pads: tuple, dilation: tuple, groups: int
    ) -> Any:
        t = taps(x.shape, tuple(w.shape[2:]), stride, pads, dilation, groups)
        self.x, self.w, self.taps = x, w, t  # no columns: backward re-slices the input
        return forward(x, w, b, t)

    def backward(self, grad: Any) -> tuple:
        need_x, need_w, need_b = self.needs_input_grad
        t = self.taps
        grad_x, grad_w = backward(grad, self.x, self.w, t, need_x, need_w)
        grad_b = grad.sum(axis=(0,) + tuple(range(2, grad.ndim))) if need_b else None
        return grad_x, grad_w, grad_b
