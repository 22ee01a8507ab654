"""The nccl backend: collectives on cupy arrays through ``cupy.cuda.nccl``.

The NCCL unique id travels through the rendezvous store. Each collective is enqueued on the
current CUDA stream and then polled (an event) against the deadline; on timeout the
communicator is aborted so no rank waits forever. Only one GPU is ever lent to this project
and NCCL refuses two ranks on one GPU, so this runs with one rank there; everything above
the transport is shared with the tcp and mpi backends and tested with many ranks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.local_device import local_device
from dtrain.parallel.process_group import ProcessGroup, _check_array, _flat
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Chained, Work
from dtrain.runtime.backend import require_cupy
from dtrain.runtime.device_selection import (
    select_cuda_device,
    selected_by_placement,
    selected_cuda_device,
    use_selected_device,
)
from dtrain.runtime.rank_device import launcher_named_device, rank_device


def _nccl() -> Any:
    require_cupy("the nccl backend")
    from cupy.cuda import nccl

    return nccl


def _encode_unique_id(unique_id: Any) -> bytes:
    """NCCL's unique id as store bytes: cupy 14 gives ``bytes``, older cupy a tuple of ints
    (one tag byte says which, so every rank rebuilds the type its cupy expects)."""
    if isinstance(unique_id, (bytes, bytearray)):
        return b"B" + bytes(unique_id)
    return b"T" + np.asarray(unique_id, dtype=np.int64).tobytes()


def _decode_unique_id(data: bytes) -> Any:
    """The inverse of ``_encode_unique_id``."""
    tag, body = data[:1], data[1:]
    if tag == b"B":
        return body
    if tag == b"T":
        return tuple(int(v) for v in np.frombuffer(body, dtype=np.int64))
    raise ValueError(
        f"nccl: malformed unique id in the store (tag {tag!r}); every rank must "
        "run the same dtrain version"
    )


def _rank_gpu() -> int:
    """The GPU this rank's communicator binds to: the one the process selected, else
    ``local_device()``'s, selected now. Binding to whatever is current would put every
    rank of a node on GPU 0, which NCCL refuses.

    Raises:
        RuntimeError: the rank is on the CPU, or its first tensor went to another GPU than
            the one its launcher named (which would also put two ranks on one GPU).
    """
    chosen = selected_cuda_device()
    if chosen is None:
        device = local_device()
        if device.type != "cuda":
            raise RuntimeError(
                f"the nccl backend needs this rank on a GPU, but local_device() is {device} "
                "(see its warning, or DTRAIN_DEVICE); use backend='tcp' (gloo) for CPU ranks"
            )
        select_cuda_device(device.index)
        return device.index
    if selected_by_placement() and launcher_named_device():
        mine = rank_device(warn=False)
        if mine.type == "cuda" and mine.index != chosen:
            raise RuntimeError(
                f"this rank's first tensor on a GPU went to cuda:{chosen}, but its device is "
                f"{mine} (local_device(), from DTRAIN_DEVICE or LOCAL_RANK), and NCCL needs "
                f"each rank on its own GPU: call dt.cuda.set_device({mine.index}) first, or "
                "put tensors on dtrain.parallel.local_device() or plain 'cuda'"
            )
    return chosen


class NcclGroup(ProcessGroup):
    """A process group over NCCL (CUDA arrays on this rank's GPU, ``_rank_gpu()``)."""

    backend = "nccl"
    _p2p_to_self = True  # in one NCCL group call a rank may send to itself (P2POp reads this)

    def __init__(
        self, rank: int, size: int, timeout: float, ranks: list[int], store: Any, prefix: str
    ) -> None:
        super().__init__(rank, size, timeout, ranks)
        nccl = _nccl()
        self.device = _rank_gpu()
        key = f"{prefix}/nccl-id"
        if rank == 0:
            unique_id = nccl.get_unique_id()
            store.set(key, _encode_unique_id(unique_id))
        else:
            unique_id = _decode_unique_id(store.get(key))
        cupy = require_cupy("the nccl backend")
        use_selected_device(cupy)  # this thread's current device, for the rank's later work
        with cupy.cuda.Device(self.device):  # a communicator belongs to the current device
            self.comm = nccl.NcclCommunicator(size, unique_id, rank)

    def _dtype(self, dtype: Any) -> int:
        nccl = _nccl()
        table = {
            np.dtype(np.float16): nccl.NCCL_FLOAT16,
            np.dtype(np.float32): nccl.NCCL_FLOAT32,
            np.dtype(np.float64): nccl.NCCL_FLOAT64,
            np.dtype(np.int32): nccl.NCCL_INT32,
            np.dtype(np.int64): nccl.NCCL_INT64,
            np.dtype(np.int8): nccl.NCCL_INT8,
            np.dtype(np.uint8): nccl.NCCL_UINT8,
            np.dtype(np.bool_): nccl.NCCL_UINT8,
        }
        if dtype not in table:
            raise TypeError(
                f"nccl: dtype {dtype} is not supported; use float16/32/64 or int8/32/64"
            )
        return table[dtype]

    def _op(self, op: ReduceOp) -> int:
        nccl = _nccl()
        return {
            ReduceOp.SUM: nccl.NCCL_SUM,
            ReduceOp.AVG: nccl.NCCL_SUM,
            ReduceOp.MAX: nccl.NCCL_MAX,
            ReduceOp.MIN: nccl.NCCL_MIN,
            ReduceOp.PRODUCT: nccl.NCCL_PROD,
        }[op]

    def _run(self, name: str, seq: int, deadline: float, launch: Any) -> None:
        cupy = require_cupy("the nccl backend")
        with cupy.cuda.Device(self.device):
            stream = cupy.cuda.get_current_stream()
            launch(stream.ptr)
            done = cupy.cuda.Event(disable_timing=True)
            done.record(stream)
            while not done.done:
                if time.monotonic() > deadline:
                    self.comm.abort()
                    raise CollectiveError(
                        f"{name} #{seq}: timed out on rank {self.ranks[self.rank]}; the NCCL "
                        "communicator was aborted (some rank did not join)",
                        op=name,
                        seq=seq,
                    )
                time.sleep(0.0001)

    @contextlib.contextmanager
    def _on_device(self, flat: Any, written: bool = True) -> Iterator[Any]:
        """``flat`` on this rank's GPU. NCCL moves device memory only; a host array
        (dtrain's own control messages: barriers, object collectives, DDP's parameter
        check, all_to_all's split sizes, or a CPU tensor) is staged through a device copy,
        and copied back when the collective ``written`` it."""
        if type(flat).__module__.startswith("cupy"):
            if flat.device.id != self.device:
                raise ValueError(
                    f"nccl: a tensor on cuda:{flat.device.id}, but this rank's communicator "
                    f"is on cuda:{self.device}: move it there first (.to('cuda:{self.device}'))"
                )
            yield flat
            return
        cupy = require_cupy("the nccl backend")
        with cupy.cuda.Device(self.device):
            staged = cupy.asarray(flat)
        yield staged
        if written:
            flat[...] = cupy.asnumpy(staged)

    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        with self._on_device(flat) as dev:
            ptr, count, dtype = dev.data.ptr, dev.size, self._dtype(dev.dtype)
            self._run(
                "all_reduce",
                seq,
                deadline,
                lambda stream: self.comm.allReduce(ptr, ptr, count, dtype, self._op(op), stream),
            )

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        with self._on_device(flat) as dev:
            ptr, count, dtype = dev.data.ptr, dev.size, self._dtype(dev.dtype)
            self._run(
                "broadcast",
                seq,
                deadline,
                lambda stream: self.comm.bcast(ptr, count, dtype, root, stream),
            )

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        with self._on_device(flat, written=False) as dev, self._on_device(out) as dev_out:
            dtype = self._dtype(dev.dtype)
            self._run(
                "all_gather",
                seq,
                deadline,
                lambda stream: self.comm.allGather(
                    dev.data.ptr, dev_out.data.ptr, dev.size, dtype, stream
                ),
            )

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        with self._on_device(flat, written=False) as dev, self._on_device(out) as dev_out:
            dtype = self._dtype(dev.dtype)
            self._run(
                "reduce_scatter",
                seq,
                deadline,
                lambda stream: self.comm.reduceScatter(
                    dev.data.ptr, dev_out.data.ptr, dev_out.size, dtype, self._op(op), stream
                ),
            )

    def _send(self, flat: Any, dst: int, tag: int, deadline: float) -> None:
        with self._on_device(flat, written=False) as dev:
            dtype = self._dtype(dev.dtype)
            self._run(
                "send",
                0,
                deadline,
                lambda stream: self.comm.send(dev.data.ptr, dev.size, dtype, dst, stream),
            )

    def _recv(self, flat: Any, src: int | None, tag: int, deadline: float) -> int:
        if src is None:
            raise ValueError("recv: the nccl backend needs an explicit src rank")
        with self._on_device(flat) as dev:
            dtype = self._dtype(dev.dtype)
            self._run(
                "recv",
                0,
                deadline,
                lambda stream: self.comm.recv(dev.data.ptr, dev.size, dtype, src, stream),
            )
        return src

    def _batch_p2p(self, ops: list[tuple[str, Any, int, int]], timeout: float | None) -> list[Work]:
        """``batch_isend_irecv``: every op of ``ops`` (``(kind, array, group_peer, tag)``,
        ``kind`` "send" or "recv"; NCCL has no tags) posted between ``ncclGroupStart`` and
        ``ncclGroupEnd`` on this rank's stream, behind the group's earlier calls, so no order
        of sends and receives (a ring, a send to this rank) can deadlock. Returns one Work
        per op, in order; all complete when the stream has done the whole batch."""
        for i, (kind, array, peer, _) in enumerate(ops):
            what = f"batch_isend_irecv (op {i})"
            _check_array(what, array, output="tensor" if kind == "recv" else None)
            self._check_rank(what, peer, "peer")
            self._dtype(array.dtype)  # raises before anything is posted

        def job(deadline: float, seq: int) -> None:
            with contextlib.ExitStack() as stack:  # host receives are copied back on exit
                posted = []
                for kind, array, peer, _ in ops:
                    flat = stack.enter_context(_flat(array, keep=kind == "send"))
                    dev = stack.enter_context(self._on_device(flat, written=kind == "recv"))
                    posted.append((kind, dev, peer))
                self._run(
                    "batch_isend_irecv",
                    0,
                    deadline,
                    lambda stream: self._grouped_p2p(posted, stream),
                )

        sends = sum(kind == "send" for kind, *_ in ops)
        label = f"batch_isend_irecv ({sends} sends, {len(ops) - sends} recvs)"
        work = self._submit("batch_isend_irecv", job, timeout, collective=False, label=label)
        works = []
        for kind, _, peer, _ in ops:
            view = Chained(work, _nothing)
            if kind == "recv":
                view.source = {"source": peer}  # as irecv's Work says who sent
            works.append(view)
        return works

    def _grouped_p2p(self, posted: list[tuple[str, Any, int]], stream: int) -> None:
        """Enqueue ``posted`` sends and receives as one NCCL group; the group ends even when
        one of them fails (NCCL would otherwise hold every later call of this thread), and
        that op's error is the one raised, ``groupEnd``'s chained to it as its context."""
        nccl = _nccl()
        nccl.groupStart()
        try:
            for kind, dev, peer in posted:
                call = self.comm.send if kind == "send" else self.comm.recv
                call(dev.data.ptr, dev.size, self._dtype(dev.dtype), peer, stream)
        except BaseException as failed:
            try:
                nccl.groupEnd()  # NCCL reports the group's failure here too, likely raising
            except Exception:
                raise failed  # noqa: B904 -- groupEnd's error becomes its __context__
            raise
        nccl.groupEnd()

    def _close(self) -> None:
        self.comm.destroy()


def _nothing() -> None:
    """A batch's per-op Work has nothing of its own to do once the batch is done."""
