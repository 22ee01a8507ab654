"""The mpi backend: mpi4py's buffer (upper-case) methods, never its pickling ones.

Collectives are MPI's non-blocking ones, polled against the deadline, so a stalled rank
becomes a CollectiveError instead of a hang (MPI itself cannot name the missing rank). With
``DTRAIN_DEBUG=1`` every collective first compares its signature across the ranks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dtrain.parallel.backends.frames import OP_CODES
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.group import ProcessGroup
from dtrain.parallel.reduce_op import ReduceOp


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


class MpiGroup(ProcessGroup):
    """A process group over an MPI communicator (CPU arrays)."""

    backend = "mpi"

    def __init__(
        self, comm: Any, timeout: float, debug: bool = False, ranks: list[int] | None = None
    ) -> None:
        self.comm, self.debug = comm, debug
        size = comm.Get_size()
        super().__init__(comm.Get_rank(), size, timeout, ranks or list(range(size)))

    def _op(self, op: ReduceOp, dtype: Any) -> Any:
        mpi = _mpi()
        if dtype.kind == "b":  # bools: SUM/MAX are "or", MIN/PRODUCT are "and"
            return mpi.LOR if op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX) else mpi.LAND
        return {
            ReduceOp.SUM: mpi.SUM,
            ReduceOp.AVG: mpi.SUM,
            ReduceOp.MAX: mpi.MAX,
            ReduceOp.MIN: mpi.MIN,
            ReduceOp.PRODUCT: mpi.PROD,
        }[op]

    def _wait(self, request: Any, name: str, seq: int, deadline: float) -> Any:
        mpi = _mpi()
        status = mpi.Status()
        spins = 0
        while not request.Test(status):
            if time.monotonic() > deadline:
                raise CollectiveError(
                    f"{name} #{seq}: timed out on rank {self.ranks[self.rank]}; some rank has not "
                    "joined it (MPI does not say which: the tcp backend names it)",
                    op=name,
                    seq=seq,
                )
            spins += 1
            if spins > 1000:  # after a short busy spin, let other threads run
                time.sleep(0.0002)
        return status

    def _check_signature(self, name: str, seq: int, flat: Any, extra: int) -> None:
        if not self.debug:
            return
        code = OP_CODES.get(name, 0)  # a stable number: str hashes differ between processes
        mine = np.array([seq, code, flat.size, flat.dtype.num, extra], np.int64)
        everyone = np.empty((self.size, mine.size), np.int64)
        request = self.comm.Iallgather(mine, everyone)
        self._wait(request, name + " (signature check)", seq, time.monotonic() + self.timeout)
        for rank, theirs in enumerate(everyone):
            if not np.array_equal(theirs, mine):
                raise CollectiveError(
                    f"{name} #{seq}: rank {self.ranks[rank]} called a different collective "
                    f"(seq {theirs[0]}, {theirs[2]} elements, dtype #{theirs[3]}, op {theirs[4]}) "
                    f"than rank {self.ranks[self.rank]} ({flat.size} elements of {flat.dtype}, "
                    f"op {extra}); every rank must make the same calls in the same order",
                    op=name,
                    seq=seq,
                    rank=self.ranks[rank],
                )

    @staticmethod
    def _wide(flat: Any) -> Any:
        """MPI has no float16: reduce such buffers as float32."""
        return flat.astype(np.float32) if flat.dtype == np.float16 else flat

    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        self._check_signature("all_reduce", seq, flat, int(op))
        buffer = self._wide(flat)
        request = self.comm.Iallreduce(_mpi().IN_PLACE, buffer, op=self._op(op, flat.dtype))
        self._wait(request, "all_reduce", seq, deadline)
        if buffer is not flat:
            flat[...] = buffer

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        self._check_signature("broadcast", seq, flat, root)
        self._wait(self.comm.Ibcast(flat, root=root), "broadcast", seq, deadline)

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        self._check_signature("all_gather", seq, flat, 0)
        self._wait(self.comm.Iallgather(flat, out), "all_gather", seq, deadline)

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        self._check_signature("reduce_scatter", seq, flat, int(op))
        send, recv = self._wide(flat), self._wide(out)
        request = self.comm.Ireduce_scatter_block(send, recv, op=self._op(op, flat.dtype))
        self._wait(request, "reduce_scatter", seq, deadline)
        if recv is not out:
            out[...] = recv

    def _send(self, flat: Any, dst: int, tag: int, deadline: float) -> None:
        self._wait(self.comm.Isend(flat, dest=dst, tag=tag), f"send to rank {dst}", 0, deadline)

    def _recv(self, flat: Any, src: int | None, tag: int, deadline: float) -> int:
        source = _mpi().ANY_SOURCE if src is None else src
        request = self.comm.Irecv(flat, source=source, tag=tag)
        status = self._wait(request, f"recv from rank {src}", 0, deadline)
        return status.Get_source()

    def _close(self) -> None:
        if self.comm is not _mpi().COMM_WORLD:
            self.comm.Free()
