"""The mpi backend: mpi4py's buffer (upper-case) methods, never its pickling ones.

Collectives are MPI's non-blocking ones, polled against the deadline, so a stalled rank
becomes a CollectiveError instead of a hang (MPI itself cannot name the missing rank). With
``DTRAIN_DEBUG=1`` every collective first compares its signature across the ranks.
Point-to-point messages are posted when called, not on the ordered executor: MPI matches
them itself, and an ``isend`` queued there could wait forever for an ``irecv`` queued behind it.
GPU arrays travel through host copies (``_on_host``): MPI is not assumed CUDA-aware, and
the copy also waits for the kernels that wrote them (use nccl for GPUs: it is the default).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from dtrain.parallel.backends import waiting
from dtrain.parallel.backends.frames import DATA, DTYPE_CODES, OP_CODES, Header
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.process_group import ProcessGroup
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Work
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.config import mpi_world_size

_ABORT_GRACE_S = 0.2  # before MPI_Abort: time for Hydra to forward the failing rank's output


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


@contextlib.contextmanager
def _on_host(flat: Any, written: bool = True, read: bool = True) -> Iterator[Any]:
    """``flat`` in host memory: a GPU array is copied to the host when the collective
    ``read``s it (after the kernels that wrote it) and back when it ``written`` it; a host
    array is itself."""
    if not is_cuda_array(flat):
        yield flat
        return
    host = flat.get() if read else np.empty(flat.shape, flat.dtype)
    yield host
    if written:
        with flat.device:
            flat[...] = get_array_module(flat).asarray(host)


def _ranks_on_this_host(comm: Any) -> int:
    """How many ranks of ``comm`` share this machine (they compete for its cores)."""
    mpi = _mpi()
    local = comm.Split_type(mpi.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def _check_launcher(comm: Any) -> None:
    """Refuse a world smaller than the one ``mpiexec`` started. mpi4py built against Open MPI
    and started by MPICH's ``mpiexec`` (the mpich wheel's) makes every rank a world of one,
    computing alone instead of failing; the other way round, MPICH aborts in MPI_Init."""
    started, size = mpi_world_size(), comm.Get_size()
    if started is not None and started != size:
        library = _mpi().Get_library_version().replace("\x00", "").strip().splitlines()[0]
        raise RuntimeError(
            f"mpiexec started {started} ranks but MPI sees a world of {size}: mpi4py is built "
            f"against {library!r}, not the MPI of this mpiexec; run that MPI's mpiexec, or "
            "rebuild mpi4py against this one: env MPICC=$(which mpicc) pip install "
            "--no-binary mpi4py --no-cache-dir mpi4py"
        )


def abort_on_uncaught_exception() -> None:
    """Make an uncaught exception end the whole job: print it (the previous hook does), then
    ``MPI_Abort``. MPICH's Hydra does not stop the other ranks when one exits with an
    error, so they would wait out their whole timeout (``DTRAIN_TIMEOUT``) in the next
    collective. Installed once, by the first world group; ``python -m mpi4py`` does the same."""
    previous = sys.excepthook
    if getattr(previous, "dtrain_mpi_abort", False):
        return

    def abort(kind: type, value: BaseException, trace: Any) -> None:
        try:
            previous(kind, value, trace)
            rank = _mpi().COMM_WORLD.Get_rank()
            print(
                f"dtrain: rank {rank} raised {kind.__name__}: aborting the MPI job", file=sys.stderr
            )
            sys.stderr.flush()
            # Hydra tears the job down on MPI_Abort, and its forwarder may not have read
            # this rank's pipe yet: without a moment's grace the traceback and the line
            # naming the rank were sometimes lost (about 1 run in 20 in CI).
            time.sleep(_ABORT_GRACE_S)
        finally:
            _mpi().COMM_WORLD.Abort(1)

    abort.dtrain_mpi_abort = True  # type: ignore[attr-defined]
    sys.excepthook = abort


class MpiGroup(ProcessGroup):
    """A process group over an MPI communicator (CPU arrays)."""

    backend = "mpi"

    def __init__(
        self, comm: Any, timeout: float, debug: bool = False, ranks: list[int] | None = None
    ) -> None:
        if comm is _mpi().COMM_WORLD:
            _check_launcher(comm)
            abort_on_uncaught_exception()
        self.comm, self.debug = comm, debug
        size = comm.Get_size()
        super().__init__(comm.Get_rank(), size, timeout, ranks or list(range(size)))
        self.spin = waiting.can_spin(_ranks_on_this_host(comm))
        # Posted sends and receives until they complete: a caller may drop the Work of an
        # isend, and MPI must not read (or write) freed memory. Only whoever waits on a
        # Work completes it; a dropped one is held until destroy.
        self.in_flight: set[_PointToPoint] = set()

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
        status = _mpi().Status()
        if not _poll(request, status, deadline, self.spin):
            raise CollectiveError(
                f"{name} #{seq}: timed out on rank {self.ranks[self.rank]}; some rank has not "
                "joined it (MPI does not say which: the tcp backend names it)",
                op=name,
                seq=seq,
            )
        return status

    def _check_signature(self, name: str, seq: int, flat: Any, extra: int, deadline: float) -> None:
        if not self.debug:
            return
        # Stable numbers only: str hashes and dtype.num may differ between processes.
        code, dtype = OP_CODES.get(name, 0), DTYPE_CODES.get(flat.dtype, 255)
        mine = np.array([seq, code, flat.size, dtype, extra], np.int64)
        everyone = np.empty((self.size, mine.size), np.int64)
        request = self.comm.Iallgather(mine, everyone)
        self._wait(request, name + " (signature check)", seq, deadline)
        for rank, theirs in enumerate(everyone):
            if not np.array_equal(theirs, mine):
                raise CollectiveError(
                    f"{name} #{seq}: rank {self.ranks[rank]} called {_signature(theirs)} (call "
                    f"#{theirs[0]}) but rank {self.ranks[self.rank]} called {_signature(mine)} "
                    f"(call #{seq}); every rank must make the same collective calls, with the "
                    "same shapes and dtypes, in the same order",
                    op=name,
                    seq=seq,
                    rank=self.ranks[rank],
                )

    @staticmethod
    def _wide(flat: Any) -> Any:
        """MPI has no float16: reduce such buffers as float32."""
        return flat.astype(np.float32) if flat.dtype == np.float16 else flat

    @staticmethod
    def _bits(flat: Any) -> Any:
        """float16 as its bits (a view) for the ops that only move data: Open MPI has no
        float16 datatype (mpi4py raises KeyError "cannot map 'e'"), MPICH only as an extension."""
        return flat.view(np.uint16) if flat.dtype == np.float16 else flat

    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        with _on_host(flat) as flat:
            self._check_signature("all_reduce", seq, flat, int(op), deadline)
            buffer = self._wide(flat)
            request = self.comm.Iallreduce(_mpi().IN_PLACE, buffer, op=self._op(op, flat.dtype))
            self._wait(request, "all_reduce", seq, deadline)
            if buffer is not flat:
                flat[...] = buffer

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        root_here = self.rank == root
        with _on_host(flat, written=not root_here, read=root_here) as flat:
            self._check_signature("broadcast", seq, flat, root, deadline)
            request = self.comm.Ibcast(self._bits(flat), root=root)
            self._wait(request, "broadcast", seq, deadline)

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        with _on_host(flat, written=False) as flat, _on_host(out, read=False) as out:
            self._check_signature("all_gather", seq, flat, 0, deadline)
            request = self.comm.Iallgather(self._bits(flat), self._bits(out))
            self._wait(request, "all_gather", seq, deadline)

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        with _on_host(flat, written=False) as flat, _on_host(out, read=False) as out:
            self._check_signature("reduce_scatter", seq, flat, int(op), deadline)
            send, recv = self._wide(flat), self._wide(out)
            request = self.comm.Ireduce_scatter_block(send, recv, op=self._op(op, flat.dtype))
            self._wait(request, "reduce_scatter", seq, deadline)
            if recv is not out:
                out[...] = recv

    def _post_send(self, array: Any, dst: int, tag: int, timeout: float | None) -> Work:
        self._raise_if_broken("send")
        if is_cuda_array(array):
            array = array.get()  # to the host (see _on_host)
        flat = np.ascontiguousarray(array).reshape(-1)  # kept alive by the Work until sent
        request = self.comm.Isend(self._bits(flat), dest=dst, tag=tag)
        return _PointToPoint(self, f"send to rank {self.ranks[dst]}", request, timeout, flat)

    def _post_recv(self, array: Any, src: int | None, tag: int, timeout: float | None) -> Work:
        self._raise_if_broken("recv")
        gpu = is_cuda_array(array)  # received on the host, then copied up (see _on_host)
        direct = array.flags.c_contiguous and not gpu
        flat = array.reshape(-1) if direct else np.empty(array.size, array.dtype)
        source = _mpi().ANY_SOURCE if src is None else src
        request = self.comm.Irecv(self._bits(flat), source=source, tag=tag)
        label = f"recv from rank {'any' if src is None else self.ranks[src]}"

        def copy_in() -> None:
            if gpu:
                with array.device:
                    array[...] = get_array_module(array).asarray(flat.reshape(array.shape))
            else:
                array[...] = flat.reshape(array.shape)

        finish = None if direct else copy_in
        return _PointToPoint(self, label, request, timeout, flat, finish, receiving=True)

    def _raise_if_broken(self, name: str) -> None:
        if self.broken is not None:
            raise CollectiveError(
                f"{name}: this process group is broken ({self.broken}); destroy it and "
                "initialise a new one",
                op=name,
            )

    def _close(self) -> None:
        if self.comm is not _mpi().COMM_WORLD:
            self.comm.Free()


def _poll(request: Any, status: Any, deadline: float, spin: bool) -> bool:
    """Test ``request`` until it completes (True) or the deadline passes (False), spinning,
    then yielding in between: never sleeping, as MPI progresses only inside ``Test``."""
    start = time.monotonic()
    while not request.Test(status):
        now = time.monotonic()
        if now > deadline:
            return False
        waiting.pause(now - start, spin, yield_s=math.inf)
    return True


def _signature(row: Any) -> str:
    """``all_reduce(float32, 10 elements, SUM)`` from a signature row, as the tcp backend
    writes it."""
    seq, code, count, dtype, extra = (int(v) for v in row)
    return Header(DATA, code, dtype, extra, 0, seq, count, 0, 0, 0).signature()


class _PointToPoint(Work):
    """A send or recv MPI already has; whoever waits on it (or asks) tests it to completion.
    Its ``source`` says who sent a received message."""

    def __init__(
        self,
        group: MpiGroup,
        label: str,
        request: Any,
        timeout: float | None,
        buffer: Any,
        finish: Any = None,
        receiving: bool = False,
    ) -> None:
        super().__init__(f"{label} on rank {group.ranks[group.rank]} (mpi)", finish)
        self.group, self.label, self.request, self.buffer = group, label, request, buffer
        self.limit = group.timeout if timeout is None else timeout
        self.deadline = time.monotonic() + self.limit
        self.receiving = receiving
        self.status = _mpi().Status()
        self.source: dict = {}
        self.lock = threading.Lock()  # one thread at a time tests the request
        group.in_flight.add(self)  # until it completes (a dropped one: until destroy)

    def _complete(self, error: BaseException | None = None) -> None:
        self.group.in_flight.discard(self)
        super()._complete(error)

    def _poll(self, deadline: float) -> bool:
        with self.lock:
            if self._done.is_set():
                return True
            if _poll(self.request, self.status, min(deadline, self.deadline), self.group.spin):
                if self.receiving:
                    self.source["source"] = self.status.Get_source()
                self._complete()
                return True
            if time.monotonic() <= self.deadline:
                return False
            if self.receiving:  # the buffer is the caller's again: nothing may land in it
                self.request.Cancel()
            peer = self.label.rsplit(" ", 1)[-1]
            missing = "no rank has" if peer == "any" else f"rank {peer} has not"
            error = CollectiveError(
                f"{self.label}: timed out after {self.limit:g} s on rank "
                f"{self.group.ranks[self.group.rank]}; {missing} posted the matching "
                f"{'send' if self.receiving else 'recv'}",
                op="recv" if self.receiving else "send",
                rank=None if peer == "any" else int(peer),
            )
            if self.group.broken is None:
                self.group.broken = str(error)
            self._complete(error)
            return True

    def is_completed(self) -> bool:
        return self._poll(0.0)

    def is_success(self) -> bool:
        return self._poll(0.0) and self._error is None

    def exception(self) -> BaseException | None:
        self._poll(0.0)
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        until = self.deadline if timeout is None else time.monotonic() + timeout
        if not self._poll(until):
            raise CollectiveError(
                f"{self.description}: still running after wait(timeout={timeout}); its own "
                f"timeout ({self.limit:g} s) will end it"
            )
        return super().wait(0)
