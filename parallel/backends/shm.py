"""The tcp backend's same-host fast path: collectives through one shared-memory segment.

When every rank of a group runs on this host, ``TcpGroup`` runs its collectives through a
segment in /dev/shm that all of them map. An all-reduce goes in pieces of ``PIECE`` bytes:
each rank copies its piece into its slot, a barrier, each rank reduces its own share of the
piece across the slots in rank order (so each element is computed once, by one rank), a
barrier, each rank copies the others' shares out. Every rank therefore ends with the same
bits. A buffer of at most ``SMALL`` bytes takes a single barrier: every rank reduces all of
it, in rank order, from a double-buffered small area. Broadcast, all-gather and
reduce-scatter follow the same pattern.

A barrier is a counter per rank in the segment that the others poll: a short spin (only when
there are cores for every rank), then yielding the CPU, then short sleeps. Polling never goes
past the collective's deadline, and the sockets, which stay connected, report a rank that
died or aborted. Every collective first publishes its signature (call number, op, dtype,
size, reduce op or root) next to its counter, and a rank that called something else is named.

The segment is a file in /dev/shm, opened by path. We do not use
``multiprocessing.shared_memory``: before Python 3.13, every process that attaches to a
segment starts a resource tracker, which unlinks the segment when that process exits. Rank 0
creates the segment under a random, job-unique name and unlinks it as soon as every rank has
mapped it, so nothing is left behind even when a rank is killed later. Until then an atexit
hook unlinks it. The segment's space is reserved up front with ``posix_fallocate``: a full
/dev/shm (Docker's default is 64 MB) makes the group use sockets, instead of a SIGBUS later.

The barriers rely on x86-64's ordering of stores (a rank's data is visible before its
counter). Other machines keep to sockets until the barrier has explicit fences.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import mmap
import os
import platform
import secrets
import socket
import time
from typing import Any

import numpy as np

from dtrain.parallel.backends import waiting
from dtrain.parallel.backends.frames import DATA, DTYPE_CODES, OP_CODES, Header
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.reduce_op import ReduceOp

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
PIECE = 4 << 20  # bytes per rank and step of a large collective (less for many ranks)
SEGMENT_LARGE = 32 << 20  # at most this much /dev/shm for the large area

SMALL = 64 << 10  # at most this many bytes: one barrier, every rank reduces all of it
_CHECK_S = 1e-3  # how often a waiting rank checks the deadline and the sockets
_LINE = 64  # bytes: one rank's counter, or one signature, per cache line
_UFUNCS = {
    ReduceOp.SUM: np.add,  # on bools: or
    ReduceOp.AVG: np.add,  # the group divides afterwards
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
    ReduceOp.PRODUCT: np.multiply,  # on bools: and
}
_created: set[str] = set()  # segments this process created and has not unlinked yet


@atexit.register
def _unlink_leftovers() -> None:
    for path in list(_created):
        _unlink(path)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    _created.discard(path)


def enabled() -> bool:
    """Whether the configuration allows the fast path (``DTRAIN_SHM=0`` turns it off)."""
    from dtrain.runtime.config import read_config

    return read_config().shm


def supported() -> bool:
    """Whether this machine can run the fast path: Linux with /dev/shm, on x86-64."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and os.path.isdir(SHM_DIR)
        and os.access(SHM_DIR, os.W_OK)
    )


def host_id() -> str:
    """This host as the other ranks can compare it: host name and boot id."""
    boot = ""
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    return f"{socket.gethostname()}/{boot}"


def piece_bytes(size: int) -> int:
    """Bytes per rank and step: PIECE, less when that many ranks would need too much memory."""
    least = -(-16 * size // 4096) * 4096  # a reduce-scatter step holds an item of each block
    return max(least, min(PIECE, SEGMENT_LARGE // (2 * size) // 4096 * 4096))


def _layout(size: int) -> tuple[int, int, int]:
    """Byte offsets of the small area and the large area, and the segment's size."""
    control = _LINE * (1 + 3 * size)  # header, counters, two sets of signatures
    small = -(-control // 4096) * 4096
    large = small + 2 * size * SMALL
    return small, large, large + 2 * size * piece_bytes(size)


def _create(path: str, nbytes: int) -> mmap.mmap:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    _created.add(path)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        return mmap.mmap(fd, nbytes)
    except OSError:
        _unlink(path)
        raise
    finally:
        os.close(fd)


def _attach(path: str, nbytes: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size != nbytes:
            raise OSError(f"{path} has {os.fstat(fd).st_size} bytes, expected {nbytes}")
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


class ShmLink:
    """The shared segment of one group, as its ranks use it; see the module docstring."""

    def __init__(self, group: Any, segment: mmap.mmap) -> None:
        self.group, self.segment = group, segment
        self.rank, self.size = group.rank, group.size
        n = self.size
        small, large, end = _layout(n)
        data = np.frombuffer(segment, dtype=np.uint8)
        words = np.frombuffer(segment, dtype=np.int64, count=_LINE * (1 + 3 * n) // 8)
        lines = words.reshape(1 + 3 * n, _LINE // 8)
        self.counters = lines[1 : 1 + n, 0]  # barriers each rank has reached
        self.signatures = lines[1 + n :].reshape(2, n, _LINE // 8)
        self.small = data[small:large].reshape(2, n, SMALL)
        self.piece = piece_bytes(n)
        self.large = data[large:end].reshape(n, 2, self.piece)
        self.barriers = 0  # barriers this rank has reached
        self.calls = 0  # collectives run through the segment
        self.spin = waiting.can_spin(n)

    # ---- setup ----------------------------------------------------------------------------
    @classmethod
    def open(cls, group: Any, store: Any, prefix: str, wanted: bool) -> ShmLink | None:
        """Collective over ``group``: map a segment that every rank shares, or None on every
        rank when one of them is on another host, cannot map it, or did not want it."""
        rank, n = group.rank, group.size
        key = f"{prefix}/shm"
        mine = host_id() if wanted and supported() else ""
        store.set(f"{key}/host/{rank}", mine.encode())
        hosts = {store.get(f"{key}/host/{r}").decode() for r in range(n)}
        if len(hosts) != 1 or not mine:
            return None
        nbytes = _layout(n)[2]
        segment = None
        if rank == 0:
            token = secrets.token_hex(8)
            path = os.path.join(SHM_DIR, f"dtrain-{os.getpid()}-{token}")
            try:
                segment = _create(path, nbytes)
                segment[:16] = token.encode()
            except OSError as exc:
                log.info("tcp: no shared memory (%s); the ranks use sockets", exc)
                path = ""
            store.set(f"{key}/path", path.encode())
        else:
            path = store.get(f"{key}/path").decode()
            if path:
                try:
                    segment = _attach(path, nbytes)
                    if segment[:16] != path.rsplit("-", 1)[1].encode():
                        raise OSError(f"{path} is not this job's segment")
                except OSError as exc:
                    log.info("tcp: cannot map rank 0's shared memory (%s); using sockets", exc)
                    segment = None
        store.set(f"{key}/ok/{rank}", b"1" if segment is not None else b"0")
        everyone = all(store.get(f"{key}/ok/{r}") == b"1" for r in range(n))
        if rank == 0 and path:
            _unlink(path)  # every rank has mapped it (or given up): nothing can leak now
        if not everyone:
            if segment is not None:
                segment.close()
            return None
        return cls(group, segment)

    def close(self) -> None:
        """Unmap the segment (left to the garbage collector while a collective still runs)."""
        self.counters = self.signatures = self.small = self.large = None
        with contextlib.suppress(BufferError):
            self.segment.close()

    # ---- synchronisation ------------------------------------------------------------------
    def _barrier(self, name: str, seq: int, deadline: float) -> None:
        """Wait until every rank reached this barrier; raises on abort, loss or timeout."""
        self.barriers += 1
        target, counters = self.barriers, self.counters
        counters[self.rank] = target
        if counters.min() >= target:
            return
        start = checked = time.perf_counter()
        while counters.min() < target:
            now = time.perf_counter()
            if now - checked >= _CHECK_S:
                checked = now
                late = [r for r in range(self.size) if counters[r] < target]
                self.group.check_alive(name, seq, deadline, late)
            waiting.pause(now - start, self.spin)

    def _begin(
        self, name: str, flat: Any, extra: int, seq: int, deadline: float, data: Any = None
    ) -> int:
        """Publish this call's signature (and ``data``, small calls), wait for every rank,
        and check that they all made the same call. Returns the parity of the small area."""
        self.group.check_alive(name, seq, deadline, [])  # a rank that gave up said so
        parity = self.calls % 2
        self.calls += 1
        mine = self.signatures[parity, self.rank]
        mine[:5] = (seq, OP_CODES[name], DTYPE_CODES[flat.dtype], extra, flat.size)
        if data is not None:
            raw = data.view(np.uint8)
            self.small[parity, self.rank, : raw.size] = raw
        self._barrier(name, seq, deadline)
        differs = (self.signatures[parity, :, :5] != mine[:5]).any(axis=1)
        if differs.any():
            r = int(np.flatnonzero(differs)[0])
            theirs = self.signatures[parity, r]
            raise CollectiveError(
                f"{name} #{seq}: rank {self.group.ranks[r]} called {_signature(theirs)} "
                f"(call #{theirs[0]}) but rank {self.group.ranks[self.rank]} called "
                f"{_signature(mine)} (call #{seq}); every rank must make the same "
                "collective calls, with the same shapes and dtypes, in the same order",
                op=name,
                seq=seq,
                rank=self.group.ranks[r],
            )
        return parity

    def _small(self, parity: int, rank: int, nbytes: int, dtype: Any) -> Any:
        return self.small[parity, rank, :nbytes].view(dtype)

    def _slot(self, rank: int, step: int, count: int, dtype: Any) -> Any:
        """Rank ``rank``'s half of the large area for piece ``step`` (halves alternate)."""
        return self.large[rank, step % 2, : count * dtype.itemsize].view(dtype)

    # ---- collectives ----------------------------------------------------------------------
    # Broadcast, all-gather and reduce-scatter send large buffers in pieces through
    # alternating halves of the large area, one barrier per piece: what a rank writes at
    # piece k+2 (after barrier k+1) was last read at piece k, which every rank finished
    # before it reached barrier k+1. A call's first barrier (in _begin) keeps it from writing
    # what the previous call still reads.
    def all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        """``flat`` becomes the reduction over the ranks, the same bits on every rank."""
        n, me, ufunc = self.size, self.rank, _UFUNCS[op]
        if flat.nbytes <= SMALL:
            parity = self._begin("all_reduce", flat, int(op), seq, deadline, flat)
            parts = [self._small(parity, r, flat.nbytes, flat.dtype) for r in range(n)]
            _reduce_in_rank_order(ufunc, flat, parts)
            return
        self._begin("all_reduce", flat, int(op), seq, deadline)
        # Two barriers a piece, one buffer: each piece stays in cache from copy-in to
        # copy-out, which beats overlapping pieces (measured: 8 against 12 ms for 64 MiB).
        per = self.piece // flat.itemsize
        # Shares are split on the first piece; a shorter last piece keeps them, clipped, so a
        # rank's copy-in never writes where its share of the piece before is still read.
        shares = _split(min(per, flat.size), n)
        lo, hi = shares[me]
        for start in range(0, flat.size, per):
            piece = flat[start : start + per]
            m = piece.size
            slots = [self._slot(r, 0, m, flat.dtype) for r in range(n)]
            mine = slots[me]
            mine[:lo] = piece[:lo]
            mine[hi:] = piece[hi:]
            self._barrier("all_reduce", seq, deadline)
            a, b = min(lo, m), min(hi, m)
            parts = [piece[a:b] if r == me else slots[r][a:b] for r in range(n)]
            _reduce_in_rank_order(ufunc, mine[a:b], parts)  # this rank's share, in rank order
            piece[a:b] = mine[a:b]
            self._barrier("all_reduce", seq, deadline)
            for r, (c, d) in enumerate(shares):
                if r != me and c < m:
                    piece[c : min(d, m)] = slots[r][c : min(d, m)]

    def reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        """``out`` becomes the reduction over the ranks of their block ``rank`` of ``flat``."""
        n, me, ufunc, m = self.size, self.rank, _UFUNCS[op], out.size
        if flat.nbytes <= SMALL:
            parity = self._begin("reduce_scatter", flat, int(op), seq, deadline, flat)
            blocks = [self._small(parity, r, flat.nbytes, flat.dtype) for r in range(n)]
            _reduce_in_rank_order(ufunc, out, [b[me * m : (me + 1) * m] for b in blocks])
            return
        self._begin("reduce_scatter", flat, int(op), seq, deadline)
        blocks = flat.reshape(n, m)
        width = max(1, self.piece // (n * flat.itemsize))  # elements of each block per piece
        for k, start in enumerate(range(0, m, width)):
            stop = min(m, start + width)
            shared = [self._slot(r, k, n * width, flat.dtype).reshape(n, width) for r in range(n)]
            for block in range(n):
                if block != me:
                    shared[me][block, : stop - start] = blocks[block, start:stop]
            self._barrier("reduce_scatter", seq, deadline)
            parts = [
                blocks[me, start:stop] if r == me else shared[r][me, : stop - start]
                for r in range(n)
            ]
            _reduce_in_rank_order(ufunc, out[start:stop], parts)

    def all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        """``out[r * m:(r + 1) * m]`` becomes rank r's ``flat``."""
        n, me, m = self.size, self.rank, flat.size
        gathered = out.reshape(n, m)
        if flat.nbytes <= SMALL:
            parity = self._begin("all_gather", flat, 0, seq, deadline, flat)
            for r in range(n):
                gathered[r] = self._small(parity, r, flat.nbytes, flat.dtype)
            return
        self._begin("all_gather", flat, 0, seq, deadline)
        per = self.piece // flat.itemsize
        gathered[me] = flat
        for k, start in enumerate(range(0, m, per)):
            piece = flat[start : start + per]
            self._slot(me, k, piece.size, flat.dtype)[...] = piece
            self._barrier("all_gather", seq, deadline)
            for r in range(n):
                if r != me:
                    gathered[r, start : start + piece.size] = self._slot(
                        r, k, piece.size, flat.dtype
                    )

    def broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        """``flat`` becomes rank ``root``'s."""
        me = self.rank
        if flat.nbytes <= SMALL:
            data = flat if me == root else None
            parity = self._begin("broadcast", flat, root, seq, deadline, data)
            if me != root:
                flat[...] = self._small(parity, root, flat.nbytes, flat.dtype)
            return
        self._begin("broadcast", flat, root, seq, deadline)
        halves = self.large.reshape(2, -1)  # the root writes across every rank's slots
        per = halves.shape[1] // flat.itemsize
        for k, start in enumerate(range(0, flat.size, per)):
            piece = flat[start : start + per]
            shared = halves[k % 2, : piece.nbytes].view(flat.dtype)
            if me == root:
                shared[...] = piece
            self._barrier("broadcast", seq, deadline)
            if me != root:
                piece[...] = shared


def _split(count: int, parts: int) -> list[tuple[int, int]]:
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _reduce_in_rank_order(ufunc: Any, out: Any, parts: list) -> None:
    """``out = parts[0] op parts[1] op ...``, in this order on every rank."""
    ufunc(parts[0], parts[1], out=out)
    for part in parts[2:]:
        ufunc(out, part, out=out)


def _signature(words: Any) -> str:
    seq, op, dtype, extra, count = (int(w) for w in words[:5])
    return Header(DATA, op, dtype, extra, 0, seq, count, 0, 0, 0).signature()
