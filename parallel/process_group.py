"""``ProcessGroup``: the ranks of a job (or a subset) and how they communicate.

The base class does everything above the transport — argument checks, flat contiguous
buffers, sequence numbers, ordering on a background thread, AVG scaling, the broken-group
rule — and a backend (tcp, mpi, nccl) implements the transfers on flat 1-D arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dtrain.parallel.backends.frames import DTYPE_CODES
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.reduce_op import ReduceOp, check_op
from dtrain.parallel.work import OrderedExecutor, Work, on_process_device
from dtrain.runtime.backend import get_array_module

SUPPORTED_KINDS = "fiub"


class CallableInt(int):
    """An int that also answers a call with itself: a group's ``rank`` and ``size`` are
    ints in dtrain's code and ``group.size()`` / ``group.rank()`` in PyTorch's (its stock
    DDP comm hooks call ``process_group.size()``)."""

    def __call__(self) -> int:
        return int(self)


class ProcessGroup:
    """Rank ``rank`` of ``size`` ranks; ``ranks`` are their global ranks. ``rank`` and
    ``size`` read as ints or, as PyTorch's methods, ``group.rank()`` and ``group.size()``."""

    backend = "base"

    def __init__(self, rank: int, size: int, timeout: float, ranks: list[int]) -> None:
        self.rank, self.size = CallableInt(rank), CallableInt(size)
        self.timeout, self.ranks = timeout, list(ranks)
        self.seq = 0
        self.broken: str | None = None
        self.executor = OrderedExecutor(f"dtrain-{self.backend}-rank{rank}")

    # ---- what backends implement (on flat contiguous arrays, on the executor thread) --
    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        raise NotImplementedError

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        raise NotImplementedError

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        """``out`` is (size * n,): rank i's ``flat`` lands in ``out[i*n:(i+1)*n]``."""
        raise NotImplementedError

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        """``flat`` is (size * n,); rank i gets the reduction of every rank's i-th block."""
        raise NotImplementedError

    def _send(self, flat: Any, dst: int, tag: int, deadline: float) -> None:
        raise NotImplementedError

    def _recv(self, flat: Any, src: int | None, tag: int, deadline: float) -> int:
        raise NotImplementedError

    def _abort(self, message: str) -> None:
        """Tell the peers this group is broken (best effort) and stop waiting for them."""

    def _close(self) -> None:
        """Release sockets, communicators, shared memory."""

    # ---- the common path ----------------------------------------------------------------
    def _refuse_if_broken(self, name: str, label: str) -> None:
        """Raise ``CollectiveError`` for ``label`` when an earlier failure broke the group."""
        if self.broken is not None:
            raise CollectiveError(
                f"{label}: this process group is broken ({self.broken}); destroy it and "
                "initialise a new one",
                op=name,
            )

    def _submit(
        self,
        name: str,
        job: Callable[[float, int], None],
        timeout: float | None,
        collective: bool = True,
        label: str | None = None,
        async_op: bool = True,
    ) -> Work:
        """Run ``job(deadline, seq)`` on the executor (on this thread, when the call is
        blocking and the executor idle). Collectives get the next sequence number;
        point-to-point calls (``collective=False``) are labelled ``label``."""
        self._refuse_if_broken(name, label or name)
        seq = 0
        if collective:
            self.seq += 1
            seq = self.seq
        label = label or f"{name} #{seq}"
        limit = self.timeout if timeout is None else timeout
        work = Work(f"{label} on rank {self.ranks[self.rank]} ({self.backend})")

        def run() -> None:
            if self.broken is not None:
                raise CollectiveError(
                    f"{label}: the group broke before it ran ({self.broken})", op=name, seq=seq
                )
            try:
                job(time.monotonic() + limit, seq)
            except CollectiveError as exc:
                if exc.op not in (None, name):
                    # The transport names its primitive (a barrier runs as an all_reduce, a
                    # recv waits for a send); the user should read the call they made.
                    exc = CollectiveError(f"{label}: {exc}", op=name, seq=seq, rank=exc.rank)
                exc.op = name  # fill in what the transport left out
                if exc.seq is None and collective:
                    exc.seq = seq
                self._break(str(exc))
                raise exc from None
            except BaseException as exc:
                # A local failure once the call may have reached the transport (a buffer it
                # cannot write, out of memory, Ctrl-C): the peers are mid-call with this rank,
                # so the group is out of step. Break it and tell them, naming this rank.
                me = self.ranks[self.rank]
                self._break(f"{label}: rank {me} failed locally ({type(exc).__name__}: {exc})")
                raise

        run = on_process_device(run)
        if async_op:
            return self.executor.submit(run, work)
        return self.executor.run_inline(run, work)

    def _break(self, reason: str) -> None:
        """Mark the group broken (the first reason sticks) and tell the peers."""
        if self.broken is None:
            self.broken = reason
            self._abort(reason)

    def all_reduce(
        self,
        array: Any,
        op: Any = ReduceOp.SUM,
        timeout: float | None = None,
        name: str = "all_reduce",
        async_op: bool = True,
    ) -> Work:
        """Collective: every rank in the group must call this. Reduce in place. ``name`` is
        what errors call it (``reduce`` and ``barrier`` run as an all_reduce). The caller of
        ``async_op=False`` waits on the Work at once: it may run on the caller's thread."""
        _check_array(name, array, output="tensor")
        op = check_op(op, array.dtype)

        def job(deadline: float, seq: int) -> None:
            with _flat(array) as flat:
                if self.size > 1:
                    self._all_reduce(flat, op, deadline, seq)
                    if op is ReduceOp.AVG:  # over one rank the average is the input
                        flat /= self.size

        return self._submit(name, job, timeout, async_op=async_op)

    def broadcast(
        self,
        array: Any,
        src: int,
        timeout: float | None = None,
        async_op: bool = True,
        name: str = "broadcast",
    ) -> Work:
        """Collective: every rank in the group must call this. ``src`` is a group rank;
        ``name`` is what errors call it (``scatter`` runs as a broadcast)."""
        self._check_rank(name, src, "src")
        _check_array(name, array, output="tensor" if self.rank != src else None)

        def job(deadline: float, seq: int) -> None:
            with _flat(array, keep=self.rank == src) as flat:
                if self.size > 1:
                    self._broadcast(flat, src, deadline, seq)

        return self._submit(name, job, timeout, async_op=async_op)

    def all_gather(
        self,
        out: Any,
        array: Any,
        timeout: float | None = None,
        async_op: bool = True,
        name: str = "all_gather",
    ) -> Work:
        """Collective: every rank in the group must call this. ``out`` holds size x input;
        ``name`` is what errors call it (``gather`` and ``all_to_all`` run as all_gather)."""
        _check_array(name, array)
        _check_array(name, out, output="output")
        if out.size != array.size * self.size or out.dtype != array.dtype:
            raise ValueError(
                f"{name}: the output must hold {self.size} x {array.size} elements of "
                f"{array.dtype}, got {out.size} of {out.dtype}"
            )

        def job(deadline: float, seq: int) -> None:
            with _flat(array) as flat, _flat(out, keep=False) as gathered:
                if self.size == 1:
                    gathered[...] = flat
                else:
                    self._all_gather(gathered, flat, deadline, seq)

        return self._submit(name, job, timeout, async_op=async_op)

    def reduce_scatter(
        self,
        out: Any,
        array: Any,
        op: Any = ReduceOp.SUM,
        timeout: float | None = None,
        async_op: bool = True,
    ) -> Work:
        """Collective: every rank in the group must call this. ``array`` holds size x out."""
        _check_array("reduce_scatter", array)
        _check_array("reduce_scatter", out, output="output")
        op = check_op(op, array.dtype)
        if array.size != out.size * self.size or out.dtype != array.dtype:
            raise ValueError(
                f"reduce_scatter: the input must hold {self.size} x {out.size} elements of "
                f"{out.dtype}, got {array.size} of {array.dtype}"
            )

        def job(deadline: float, seq: int) -> None:
            with _flat(array) as flat, _flat(out, keep=False) as result:
                if self.size == 1:
                    result[...] = flat
                else:
                    self._reduce_scatter(result, flat, op, deadline, seq)
                if op is ReduceOp.AVG:
                    result /= self.size

        return self._submit("reduce_scatter", job, timeout, async_op=async_op)

    def barrier(self, timeout: float | None = None, async_op: bool = True) -> Work:
        """Collective: every rank in the group must call this. Returns when all arrived."""
        xp = get_array_module()
        token = xp.zeros(1, dtype=xp.int32)
        return self.all_reduce(token, ReduceOp.SUM, timeout, name="barrier", async_op=async_op)

    def send(self, array: Any, dst: int, tag: int = 0, timeout: float | None = None) -> Work:
        """Send ``array`` to group rank ``dst`` (which must call recv)."""
        _check_array("send", array)
        self._check_rank("send", dst, "dst")
        if dst == self.rank:
            raise ValueError(f"send: dst {dst} is this rank; send to another rank")
        return self._post_send(array, dst, tag, timeout)

    def _post_send(self, array: Any, dst: int, tag: int, timeout: float | None) -> Work:
        """Queue the send behind this rank's earlier calls (tcp: they share the sockets)."""

        def job(deadline: float, seq: int) -> None:
            with _flat(array) as flat:
                self._send(flat, dst, tag, deadline)

        label = f"send to rank {self.ranks[dst]}"
        return self._submit("send", job, timeout, collective=False, label=label)

    def recv(
        self, array: Any, src: int | None = None, tag: int = 0, timeout: float | None = None
    ) -> Work:
        """Receive into ``array`` from group rank ``src`` (any rank when None); the Work's
        ``source`` attribute says who sent it."""
        _check_array("recv", array, output="tensor")
        if src is not None:
            self._check_rank("recv", src, "src")
            if src == self.rank:
                raise ValueError(f"recv: src {src} is this rank; receive from another rank")
        return self._post_recv(array, src, tag, timeout)

    def _post_recv(self, array: Any, src: int | None, tag: int, timeout: float | None) -> Work:
        """Queue the recv behind this rank's earlier calls (tcp: they share the sockets)."""
        holder: dict = {}

        def job(deadline: float, seq: int) -> None:
            with _flat(array, keep=False) as flat:
                holder["source"] = self._recv(flat, src, tag, deadline)

        label = f"recv from rank {self.ranks[src] if src is not None else 'any'}"
        work = self._submit("recv", job, timeout, collective=False, label=label)
        work.source = holder  # filled when done
        return work

    def _check_rank(self, name: str, rank: int, what: str) -> None:
        if not isinstance(rank, int) or not 0 <= rank < self.size:
            raise ValueError(
                f"{name}: {what}={rank!r} is not a rank of this group (0..{self.size - 1})"
            )

    def destroy(self) -> None:
        """Release the transport; the group cannot be used afterwards."""
        if self.broken is None:
            self.broken = "destroyed"
        self.executor.shutdown()
        self._close()


def _check_array(name: str, array: Any, output: str | None = None) -> None:
    """Raise for what the transport cannot move; ``output`` names the argument when the call
    writes into ``array``: it must be writeable, checked here because a failure halfway
    through the transfer would leave the peers out of step."""
    dtype = getattr(array, "dtype", None)
    if dtype is None or not hasattr(array, "shape"):
        raise TypeError(f"{name}: expected a tensor or array, got {type(array).__name__}")
    if dtype.kind not in SUPPORTED_KINDS or dtype not in DTYPE_CODES:
        raise TypeError(
            f"{name}: unsupported dtype {dtype}; use float16/32/64, (u)int8/16/32/64 or bool"
        )
    check_writeable(name, array, output)


def check_writeable(name: str, array: Any, what: str | None) -> None:
    """Raise ValueError when ``array`` (the argument ``what``; None: not written) is
    read-only."""
    if what is not None and not getattr(getattr(array, "flags", None), "writeable", True):
        raise ValueError(
            f"{name}: {what} is read-only (flags.writeable is False) but the call writes its "
            "result into it; pass a writeable copy (array.copy())"
        )


class _flat:  # noqa: N801 - used as a context manager: with _flat(a) as flat
    """A flat contiguous view of ``array``, or a contiguous copy written back at exit."""

    def __init__(self, array: Any, keep: bool = True) -> None:
        self.array = array
        if array.flags.c_contiguous:
            self.flat = array.reshape(-1)
            self.copy = False
        else:
            xp = get_array_module(array)
            self.flat = (
                xp.ascontiguousarray(array).reshape(-1)
                if keep
                else xp.empty(array.size, dtype=array.dtype)
            )
            self.copy = True

    def __enter__(self) -> Any:
        return self.flat

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self.copy and kind is None:
            self.array[...] = self.flat.reshape(self.array.shape)
