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

The positions past the output read other channels' (or the next image's) inputs: forward
drops them, the weight gradient reduces over the output positions only, and the input
gradient's products there are zeros (masked weights, or zeroed), so that an inf or NaN stays
in its own channel's gradients. float16 multiplies and sums in float32 (rounded once).

Every buffer belongs to a chunk of the batch (``CHUNK``), reused from chunk to chunk, and
the chunks are shared among ``dt.get_num_threads()`` threads (``OMP_NUM_THREADS`` unless
``set_num_threads``): a chunk's planes, sums and scratch stay in cache across the taps
(freshly mapped memory costs a page fault per 4 KiB). The threads' pool is shut down before
every ``fork`` (and made again on the next call), so a forked child inherits no threads.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
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


#: Plane sizes (elements), and batches below ``REPEAT_BATCH``, for which a tap multiplies
#: each run by its channel's weight (a broadcast) instead of by the weight repeated along
#: the run (a ``kernel · C · plane`` array, built per call): the repeat is 10-20 % faster on
#: planes of 100-700 at batch 16-64, the broadcast up to 5x faster from 1024 or at batch 1-4
#: (docs/benchmarks.md).
BROADCAST_PLANE = 1 << 10
REPEAT_BATCH = 16

#: Without backward, one image of fewer elements per channel than this takes the GEMM route:
#: 2-5x faster there (one chunk runs on one thread); the taps are faster from 64x64.
GEMM_IMAGE = 1 << 12

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # held to make the pool or submit to it, and across a fork


def threads() -> int:
    """Threads the taps run on: ``dt.get_num_threads()`` (``set_num_threads``' count, else
    ``OMP_NUM_THREADS``, else the BLAS pool's, else the CPUs)."""
    return settings.get_num_threads()


def _before_fork() -> None:
    """Shut the pool down (its running parts finish first) so that the child inherits no
    threads (a fork with threads can deadlock the child; Python 3.12 warns)."""
    global _pool
    _pool_lock.acquire()
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_pool_lock.release,
        after_in_child=_pool_lock.release,
    )


def use_taps(array: Any, weight_shape: tuple, groups: int, backward: bool = True) -> bool:
    """Whether a convolution of weight ``(O, C/G, *kernel)`` in ``groups`` groups over the
    batch ``array`` takes the tap route: numpy arrays and ``(C/G)·(O/G) <= TAPS_MAX``, except
    one small image (``GEMM_IMAGE``) without ``backward``."""
    if get_array_module(array) is not np:
        return False  # cupy: a few GEMM launches, not 2 per tap
    if weight_shape[1] * (weight_shape[0] // groups) > TAPS_MAX:
        return False
    return backward or array.shape[0] > 1 or math.prod(array.shape[2:]) >= GEMM_IMAGE


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
    chunk's work, as many chunks per thread, of sizes within one image of each other."""
    n, image = t.shape[0], channels * math.prod(t.padded)
    rows = max(1, CHUNK // max(1, image))
    if n * image <= CHUNK:
        return rows, [(0, n)] if n else []
    workers = threads()
    count = min(n, workers * math.ceil(math.ceil(n / rows) / workers))  # a multiple of workers
    bounds = [n * i // count for i in range(count + 1)]
    return math.ceil(n / count), list(itertools.pairwise(bounds))


def _parts(chunks: list, workers: int) -> list:
    """The chunks in ``workers`` runs of consecutive chunks, as even as the chunks allow."""
    count = len(chunks)
    return [chunks[count * i // workers : count * (i + 1) // workers] for i in range(workers)]


def _broadcast(t: Taps) -> bool:
    """Whether the taps multiply by one weight per run (large planes, small batches)."""
    return math.prod(t.plane) >= BROADCAST_PLANE or t.shape[0] < REPEAT_BATCH


def _weights(w: Any, t: Taps, dtype: Any) -> Any:
    """``(O, C/G, *kernel)`` → per tap, input and output channel of a group, the weights to
    multiply a view's channel ``(m, G · P)`` by, ``(T, C/G, O/G, G · P)`` in ``dtype``: each
    weight repeated along its run, zero past the output positions, so that the product runs
    over contiguous arrays (numpy's broadcast of one value per short run is 3x slower); for
    large planes and small batches (``_broadcast``) one weight per run of the view's channel
    ``(m, G, P)``, ``(T, C/G, O/G, G, 1)``."""
    xp = get_array_module(w)
    o, cg = w.shape[:2]
    per_tap = w.reshape(t.groups, o // t.groups, cg, -1).transpose(3, 2, 1, 0).astype(dtype)
    if _broadcast(t):
        return per_tap[..., None]
    runs = xp.broadcast_to(per_tap[(...,) + (None,) * len(t.plane)], per_tap.shape + t.plane)
    runs = xp.ascontiguousarray(runs)
    _zero_past_outputs(runs, t)  # no 0 · inf there
    return runs.reshape(per_tap.shape[:3] + (-1,))


def _zero_past_outputs(a: Any, t: Taps) -> None:
    """Zero ``a`` ``(..., *plane)`` past the output positions."""
    lead = (slice(None),) * (a.ndim - len(t.plane))
    for axis, size in enumerate(t.out):
        if size < t.plane[axis]:
            a[lead + (slice(None),) * axis + (slice(size, None),)] = 0


def _in_parts(run: Callable[[list], Any], chunks: list) -> list:
    """``run`` over the chunks split among ``threads()`` threads (numpy's loops release the
    GIL), each part a run of consecutive chunks (``_parts``); the results in part order."""
    workers = min(threads(), len(chunks))
    if workers <= 1:
        return [run(chunks)]
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:  # none yet (or forked), or too few
            if _pool is not None:
                _pool.shutdown(wait=False)  # its threads end once their parts are done
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dtrain-conv")
        futures = [_pool.submit(run, part) for part in _parts(chunks, workers)]
    return [future.result() for future in futures]


def forward(x: Any, w: Any, b: Any, t: Taps) -> Any:
    """The convolution ``(N, O, *out)`` of ``x`` by ``w`` (+ ``b``) along the taps."""
    xp = get_array_module(x)
    (n, c), o = x.shape[:2], w.shape[0]
    cg, og = c // t.groups, o // t.groups
    result = xp.empty((n, o) + t.out, dtype=x.dtype)
    rows, chunks = _chunks(t, max(c, o))
    wide = np.promote_types(x.dtype, np.float32)  # float16 sums in float32, as the GEMMs
    runs = (t.groups, -1) if _broadcast(t) else (-1,)  # a channel's runs, as _weights
    weights = _weights(w, t, wide)
    bias = None if b is None else b.reshape((1, t.groups, og) + (1,) * len(t.out))

    def run(part: list) -> None:
        planes = _Planes(xp, t, rows, cg, x.dtype)
        sums = xp.empty((rows, og, t.groups) + t.plane, dtype=wide)
        scratch = xp.empty_like(sums[:, 0])
        for lo, hi in part:
            m = hi - lo
            planes.put(_swap(x[lo:hi].reshape((m, t.groups, cg) + t.shape[2:])))
            acc, spare = sums[:m].reshape(m, og, *runs), scratch[:m].reshape(m, *runs)
            for tap, view in enumerate(planes.views(m)):
                view = view.reshape(m, cg, *runs)
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
    weights = _weights(w, t, grad.dtype) if need_x else None
    corner = _corner(t)
    axes = "xyz"[: len(t.out)]
    reduce = f"nog{axes},ncg{axes}->goc"  # over the images and output positions

    broadcast = _broadcast(t)
    runs = (t.groups, -1) if broadcast else (-1,)  # a channel's runs, as _weights

    def run(part: list) -> Any:
        inputs = _Planes(xp, t, rows, cg, grad.dtype) if need_w else None
        added = _Planes(xp, t, rows, cg, grad.dtype) if need_x else None  # the input gradient
        spread = xp.zeros((rows, og, t.groups) + t.plane, dtype=grad.dtype)
        scratch = xp.empty_like(spread[:, 0]) if need_x else None
        sums = xp.zeros((len(t.taps), t.groups, og, cg), dtype=grad.dtype) if need_w else None
        for lo, hi in part:
            m = hi - lo
            # grad in the output corner of zero planes: (m, O/G, G, *plane)
            outputs = _swap(grad[lo:hi].reshape((m, t.groups, og) + t.out))
            spread[:m][corner] = outputs
            if need_w:
                inputs.put(_swap(x[lo:hi].reshape((m, t.groups, cg) + t.shape[2:])))
                split = spread[:m].reshape(m, og, t.groups, -1)  # zero past the outputs
                for tap, view in enumerate(inputs.views(m)):
                    view = view.reshape(m, cg, t.groups, -1)
                    product = xp.einsum("nogl,ncgl->goc", split, view)  # whole runs: fast
                    if not xp.isfinite(product).all():
                        # past the outputs lie other channels' inputs: an inf there times the
                        # zeros makes NaN, so sum over the output positions only
                        at_outputs = view.reshape((m, cg, t.groups) + t.plane)[corner]
                        product = xp.einsum(reduce, outputs, at_outputs)
                    sums[tap] += product
            if need_x:
                positions = spread[:m].reshape(m, og, *runs)
                added.clear(m)
                spare = scratch[:m].reshape(m, *runs)
                for tap, view in enumerate(added.views(m)):
                    view = view.reshape(m, cg, *runs)
                    for ci in range(cg):
                        for oi in range(og):
                            xp.multiply(positions[:, oi], weights[tap, ci, oi], out=spare)
                            if broadcast:  # 0 · w past the outputs: NaN for a non-finite w
                                _zero_past_outputs(spare.reshape((m, t.groups) + t.plane), t)
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
