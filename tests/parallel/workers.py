"""The collective sweeps the parallel tests run in real worker processes (started by
``launcher.py``): every op, dtype, reduce op and size class, sync and async, against the numpy
references of ``references.py``. Each function returns a JSON value to the test.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from references import (
    BIG,
    DTYPES,
    EXTRA_DTYPES,
    HUGE,
    SIZES,
    Checker,
    Pending,
    make,
    reduce_ops,
    reference,
    shape_of,
)

import dtrain as dt
import dtrain.parallel as dist
from dtrain.parallel import GroupMember, ReduceOp


def _block(size: int, n: int) -> int:
    """Per-rank block for gather/scatter ops: the big size class is split across the ranks."""
    return (size // n) | 1 if size == BIG else size


def _wrap(array: np.ndarray, as_tensor: bool) -> Any:
    """Alternate between dtrain Tensors and bare arrays: the API takes both."""
    return dt.tensor(array) if as_tensor else array


def sweep_reductions(check: Checker, group: Any, dtypes: tuple, sizes: tuple, tag: str) -> None:
    """all_reduce and reduce_scatter_tensor: dtypes x ops x sizes x sync/async (the big
    size class: every dtype with SUM and every op with float32, sync only). Their wrappers
    reduce and reduce_scatter (a list): dtypes x ops x sizes, each either sync or async
    (the big size class: float32 SUM only)."""
    n, r = dist.get_world_size(group), dist.get_rank(group)
    ranks = list(range(n)) if group is None else group.ranks
    pending = Pending(check)
    for dtype in dtypes:
        for op in reduce_ops(dtype):
            for async_op in (False, True):
                for index, size in enumerate(sizes):
                    if size == BIG and (async_op or not (op is ReduceOp.SUM or dtype == "float32")):
                        continue
                    wrappers = (index + int(op)) % 2 == int(async_op)
                    if size == BIG:
                        wrappers = op is ReduceOp.SUM and dtype == "float32"
                    case = f"{tag}/{dtype}/{op.name}/{size}/{'async' if async_op else 'sync'}"
                    shape, block = shape_of(size), _block(size, n)
                    as_tensor = (size + int(op) + async_op) % 2 == 1

                    key = "all_reduce/" + case
                    inputs = [make(key, dtype, shape, i, op) for i in range(n)]
                    x = _wrap(inputs[r].copy(), as_tensor)
                    work = dist.all_reduce(x, op=op, group=group, async_op=async_op)
                    pending.add(work, key, x, reference(op, inputs, dtype), dtype)

                    key = "reduce_scatter_tensor/" + case
                    inputs = [make(key, dtype, (n * block,), i, op) for i in range(n)]
                    out = _wrap(np.empty(block, dtype), as_tensor)
                    work = dist.reduce_scatter_tensor(
                        out, _wrap(inputs[r], as_tensor), op=op, group=group, async_op=async_op
                    )
                    mine = [a[r * block : (r + 1) * block] for a in inputs]
                    pending.add(work, key, out, reference(op, mine, dtype), dtype, shared=False)
                    if not wrappers:
                        continue

                    key = "reduce/" + case
                    dst = ranks[(size + int(op)) % n]
                    inputs = [make(key, dtype, shape, i, op) for i in range(n)]
                    x = _wrap(inputs[r].copy(), as_tensor)
                    work = dist.reduce(x, dst, op=op, group=group, async_op=async_op)
                    want = reference(op, inputs, dtype) if ranks[r] == dst else inputs[r]
                    pending.add(work, key, x, want, dtype, shared=False)

                    key = "reduce_scatter/" + case
                    lists = [
                        [make(f"{key}/{j}", dtype, (block,), i, op) for j in range(n)]
                        for i in range(n)
                    ]
                    out = _wrap(np.empty(block, dtype), as_tensor)
                    work = dist.reduce_scatter(
                        out,
                        [_wrap(a, as_tensor) for a in lists[r]],
                        op=op,
                        group=group,
                        async_op=async_op,
                    )
                    want = reference(op, [lists[i][r] for i in range(n)], dtype)
                    pending.add(work, key, out, want, dtype, shared=False)
                pending.flush()


def sweep_data_movement(check: Checker, group: Any, dtypes: tuple, sizes: tuple, tag: str) -> None:
    """broadcast, all_gather, all_gather_into_tensor: dtypes x sizes x sync/async."""
    n, r = dist.get_world_size(group), dist.get_rank(group)
    ranks = list(range(n)) if group is None else group.ranks
    pending = Pending(check)
    for dtype in dtypes:
        for async_op in (False, True):
            for size in sizes:
                if size == BIG and async_op:
                    continue
                case = f"{tag}/{dtype}/{size}/{'async' if async_op else 'sync'}"
                shape, block = shape_of(size), _block(size, n)
                as_tensor = (size + async_op) % 2 == 0

                key = "broadcast/" + case
                src = size % n
                x = _wrap(make(key, dtype, shape, r), as_tensor)
                work = dist.broadcast(x, ranks[src], group=group, async_op=async_op)
                pending.add(work, key, x, make(key, dtype, shape, src), dtype)

                key = "all_gather/" + case
                bshape = shape_of(block)
                outs = [_wrap(np.empty(bshape, dtype), as_tensor) for _ in range(n)]
                x = _wrap(make(key, dtype, bshape, r), as_tensor)
                work = dist.all_gather(outs, x, group=group, async_op=async_op)
                for i, out in enumerate(outs):
                    pending.add(work, f"{key}[{i}]", out, make(key, dtype, bshape, i), dtype)

                key = "all_gather_into_tensor/" + case
                x = make(key, dtype, (block,), r)
                out = _wrap(np.empty(n * block, dtype), as_tensor)
                work = dist.all_gather_into_tensor(
                    out, _wrap(x, as_tensor), group=group, async_op=async_op
                )
                want = np.concatenate([make(key, dtype, (block,), i) for i in range(n)])
                pending.add(work, key, out, want, dtype)
        pending.flush()


def sweep_layouts(check: Checker, group: Any) -> None:
    """Non-contiguous inputs and outputs (the copy-in/copy-out path), and a barrier."""
    n, r = dist.get_world_size(group), dist.get_rank(group)
    ranks = list(range(n)) if group is None else group.ranks
    for dtype in ("float32", "int64"):
        key = f"layout/all_reduce/{dtype}"
        inputs = [make(key, dtype, (6, 5), i).T for i in range(n)]
        x = inputs[r].copy(order="K")
        assert not x.flags.c_contiguous
        dist.all_reduce(x, group=group)
        check.same(key, x, reference(ReduceOp.SUM, inputs, dtype), dtype)

        key = f"layout/broadcast/{dtype}"
        base = make(key, dtype, (4, 6), r)
        view = base[:, ::2]
        dist.broadcast(view, ranks[n - 1], group=group)
        check.same(key, view, make(key, dtype, (4, 6), n - 1)[:, ::2], dtype)
        check.same(
            key + "/untouched", base[:, 1::2], make(key, dtype, (4, 6), r)[:, 1::2], dtype, False
        )

        key = f"layout/all_gather_into_tensor/{dtype}"
        out = np.zeros((3, 2 * n), dtype).T  # (2n, 3), non-contiguous
        dist.all_gather_into_tensor(out, make(key, dtype, (2, 3), r), group=group)
        want = np.concatenate([make(key, dtype, (2, 3), i) for i in range(n)])
        check.same(key, out, want, dtype)
    for async_op in (False, True):
        work = dist.barrier(group=group, async_op=async_op)
        if async_op:
            work.wait()
        check.checks += 1


def sweep_objects(check: Checker, group: Any, tag: str) -> None:
    """broadcast_object_list and all_gather_object with JSON values."""
    n, r = dist.get_world_size(group), dist.get_rank(group)
    ranks = list(range(n)) if group is None else group.ranks
    src = ranks[n - 1]

    def payload(i: int) -> dict:
        return {"rank": i, "tag": tag, "values": [1, 2.5, None, True, "ü"], "deep": {"x": [i] * i}}

    objects = [payload(n - 1), [1, 2], "three"] if ranks[r] == src else [None, None, None]
    dist.broadcast_object_list(objects, src=src, group=group)
    check.checks += 1
    if objects != [payload(n - 1), [1, 2], "three"]:
        check.failures.append(f"{tag} broadcast_object_list: got {objects}")
    gathered: list = [None] * n
    dist.all_gather_object(gathered, payload(r) if r % 2 else f"rank {r}" * (r + 1), group=group)
    check.checks += 1
    want = [payload(i) if i % 2 else f"rank {i}" * (i + 1) for i in range(n)]
    if gathered != want:
        check.failures.append(f"{tag} all_gather_object: got {gathered}")
    # A value JSON cannot carry raises TypeError on every rank, and leaves the group usable.
    for call in ("broadcast_object_list", "all_gather_object"):
        check.checks += 1
        try:
            if call == "broadcast_object_list":
                items = [{1, 2}] if ranks[r] == src else [None]
                dist.broadcast_object_list(items, src=src, group=group)
            else:
                dist.all_gather_object([None] * n, {1, 2} if r == 0 else r, group=group)
        except TypeError as exc:
            if "JSON" not in str(exc):
                check.failures.append(f"{tag} {call}: unclear TypeError {exc}")
        else:
            check.failures.append(f"{tag} {call}: a set went through without a TypeError")


def sweep_p2p(check: Checker, group: Any, sizes: tuple) -> None:
    """send/recv in a ring (sync, ordered so nothing deadlocks), isend/irecv posted together,
    and recv from any source."""
    n, r = dist.get_world_size(group), dist.get_rank(group)
    ranks = list(range(n)) if group is None else group.ranks
    if n < 2:
        return
    right, left = ranks[(r + 1) % n], ranks[(r - 1) % n]
    for dtype in ("float32", "int64", "float16"):
        for size in sizes:
            key = f"p2p/{dtype}/{size}"
            shape = shape_of(size)
            x = make(key, dtype, shape, r)
            y = np.empty(shape, dtype)
            if r % 2 == 0:
                dist.send(x, right, group=group, tag=size % 5)
                source = dist.recv(y, left, group=group, tag=size % 5)
            else:
                source = dist.recv(y, left, group=group, tag=size % 5)
                dist.send(x, right, group=group, tag=size % 5)
            check.same(key + "/sync", y, make(key, dtype, shape, (r - 1) % n), dtype, shared=False)
            check.checks += 1
            if source != left:
                check.failures.append(f"{key}: recv returned source {source}, expected {left}")

            y = _wrap(np.empty(shape, dtype), size % 2 == 1)
            sent = dist.isend(_wrap(x, size % 2 == 0), right, group=group)
            received = dist.irecv(y, left, group=group)
            received.wait()
            sent.wait()
            check.same(key + "/async", y, make(key, dtype, shape, (r - 1) % n), dtype, shared=False)
    # Every rank sends rank 0 one message; rank 0 takes them from whoever is first.
    key = "p2p/any"
    if r == 0:
        seen = set()
        for _ in range(n - 1):
            y = np.empty(3, np.int64)
            source = dist.recv(y, group=group, tag=7)
            seen.add(source)
            check.same(f"{key}/from{source}", y, np.full(3, source, np.int64), "int64", False)
        check.checks += 1
        if seen != set(ranks[1:]):
            check.failures.append(f"{key}: sources {sorted(seen)}, expected {ranks[1:]}")
    else:
        dist.send(np.full(3, ranks[r], np.int64), ranks[0], group=group, tag=7)


def sweep_argument_errors(check: Checker, group: Any) -> None:
    """Bad arguments raise on the calling rank before anything is sent (so every rank,
    making the same bad call, stays in step)."""
    n = dist.get_world_size(group)
    ranks = list(range(n)) if group is None else group.ranks
    outside = max(ranks) + 1
    calls = {
        "AVG on int": (
            TypeError,
            lambda: dist.all_reduce(np.ones(3, np.int32), ReduceOp.AVG, group),
        ),
        "unknown op": (ValueError, lambda: dist.all_reduce(np.ones(3), 99, group)),
        "src outside": (ValueError, lambda: dist.broadcast(np.ones(3), outside, group)),
        "list length": (
            ValueError,
            lambda: dist.all_gather([np.ones(3)] * (n + 1), np.ones(3), group),
        ),
        "complex dtype": (
            TypeError,
            lambda: dist.all_reduce(np.ones(3, np.complex64), group=group),
        ),
        "not an array": (TypeError, lambda: dist.all_reduce([1.0, 2.0], group=group)),
        "send to self": (
            ValueError,
            lambda: dist.send(np.ones(1), ranks[dist.get_rank(group)], group),
        ),
    }
    if hasattr(np, "float128") and np.dtype(np.longdouble).itemsize > 8:
        calls["float128"] = (
            TypeError,
            lambda: dist.all_reduce(np.ones(3, np.longdouble), group=group),
        )
    for name, (kind, call) in calls.items():
        check.checks += 1
        try:
            call()
        except kind:
            pass
        except Exception as exc:
            check.failures.append(
                f"argument error {name}: raised {exc!r}, expected {kind.__name__}"
            )
        else:
            check.failures.append(f"argument error {name}: no error")
    # The group is still in step after all of that.
    x = np.ones(2)
    dist.all_reduce(x, group=group)
    check.same("after argument errors", x, np.full(2, float(n)), "float64")


def huge(check: Checker) -> None:
    """One 64 MiB float32 all_reduce and broadcast (inputs cheap to build and to check)."""
    n, r = dist.get_world_size(), dist.get_rank()
    pattern = (np.arange(HUGE, dtype=np.int64) % 1000).astype(np.float32)
    x = pattern * np.float32(r + 1)
    dist.all_reduce(x)
    check.same("huge/all_reduce", x, pattern * np.float32(n * (n + 1) / 2), "float32")
    x = pattern * np.float32(r + 1) if r == n - 1 else np.zeros(HUGE, np.float32)
    dist.broadcast(x, n - 1)
    check.same("huge/broadcast", x, pattern * np.float32(n), "float32")


def subgroups(check: Checker) -> None:
    """new_group: every other rank ([0, 2] of 4), and all ranks; non-members get
    NON_GROUP_MEMBER and rank -1, and their collectives on it do nothing."""
    n, r = dist.get_world_size(), dist.get_rank()
    members = list(range(0, n, 2))
    sub = dist.new_group(members)
    everyone = dist.new_group()
    check.checks += 1
    if r in members:
        if sub is GroupMember.NON_GROUP_MEMBER or dist.get_rank(sub) != members.index(r):
            check.failures.append(f"new_group({members}): rank {r} got {sub}")
        elif dist.get_world_size(sub) != len(members):
            check.failures.append(f"new_group({members}): size {dist.get_world_size(sub)}")
    else:
        if sub is not GroupMember.NON_GROUP_MEMBER:
            check.failures.append(f"new_group({members}): non-member rank {r} got {sub}")
        if (dist.get_rank(sub), dist.get_world_size(sub)) != (-1, -1):
            check.failures.append("non-member: get_rank/get_world_size are not -1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dist.all_reduce(np.ones(2), group=sub) is not None:
                check.failures.append("non-member: all_reduce returned something")
    # Interleave world, subgroup and full-group collectives: no cross-talk between them.
    for group, tag in ((sub, "sub"), (None, "world"), (everyone, "everyone"), (sub, "sub2")):
        if group is GroupMember.NON_GROUP_MEMBER:
            continue
        sweep_reductions(check, group, ("float32", "int64"), (0, 7, 1001), tag)
        sweep_data_movement(check, group, ("float16", "int32"), (1, 1001), tag)
        sweep_objects(check, group, tag)
        sweep_p2p(check, group, (7,))
    for group in (sub, everyone):
        dist.destroy_process_group(group)


def _digests_agree(check: Checker) -> bool:
    n = dist.get_world_size()
    digests = [np.zeros(1, np.int64) for _ in range(n)]
    dist.all_gather(digests, np.array([check.digest], np.int64))
    return len({int(d[0]) for d in digests}) == 1


def collectives(backend: str = "tcp", timeout: float = 60) -> dict:
    """The sweep: every op, dtype, reduce op and size class, sync and async, on the default
    group, then subgroups, p2p and objects. Returns checks, failures, backend, timings."""
    start = time.monotonic()
    dist.init_process_group(backend, timeout=timeout)
    check = Checker()
    times = {}
    steps = [
        ("reductions", lambda: sweep_reductions(check, None, DTYPES, SIZES, "world")),
        ("data_movement", lambda: sweep_data_movement(check, None, DTYPES, SIZES, "world")),
        ("extra_dtypes", lambda: sweep_reductions(check, None, EXTRA_DTYPES, (7, 1001), "x")),
        ("extra_moves", lambda: sweep_data_movement(check, None, EXTRA_DTYPES, (7,), "x")),
        ("layouts", lambda: sweep_layouts(check, None)),
        ("objects", lambda: sweep_objects(check, None, "world")),
        ("p2p", lambda: sweep_p2p(check, None, (0, 1, 1001, BIG))),
        ("arguments", lambda: sweep_argument_errors(check, None)),
        ("huge", lambda: huge(check)),
        ("subgroups", lambda: subgroups(check)),
    ]
    for name, step in steps:
        t0 = time.monotonic()
        step()
        times[name] = round(time.monotonic() - t0, 2)
        if name == "huge":  # everything so far ran on the default group: compare digests
            agree = _digests_agree(check)
    backend = dist.get_backend()
    dist.destroy_process_group()
    return {
        **check.report(),
        "digests_agree": agree,
        "backend": backend,
        "times": times,
        "wall": round(time.monotonic() - start, 2),
    }


# ---- nccl (one rank: the one GPU this project is lent) ------------------------------------------
def nccl_single() -> dict:
    """The nccl backend with one rank, through the API and through the backend's transfers
    (which a one-rank group otherwise skips), against numpy."""
    import cupy

    dist.init_process_group("nccl", timeout=30)
    check = Checker()
    for dtype in DTYPES:
        for op in reduce_ops(dtype):
            key = f"nccl/{dtype}/{op.name}"
            host = make(key, dtype, (1001,), 0, op)
            x = cupy.asarray(host)
            dist.all_reduce(x, op=op)
            check.same(key, cupy.asnumpy(x), reference(op, [host], dtype), dtype)
        key = f"nccl/{dtype}/moves"
        host = make(key, dtype, (7,), 0)
        x = cupy.asarray(host)
        dist.broadcast(x, 0)
        check.same(key + "/broadcast", cupy.asnumpy(x), host, dtype)
        outs = [cupy.empty(7, dtype)]
        dist.all_gather(outs, x)
        check.same(key + "/all_gather", cupy.asnumpy(outs[0]), host, dtype)
        out = cupy.empty(7, dtype)
        dist.reduce_scatter_tensor(out, x)
        check.same(key + "/reduce_scatter", cupy.asnumpy(out), host, dtype)
    # A one-rank group never calls NCCL above; call the transfers directly.
    from dtrain.parallel.api import _state

    world = _state.world
    deadline = time.monotonic() + 30
    for dtype in DTYPES:
        for op in reduce_ops(dtype):
            key = f"nccl-direct/{dtype}/{op.name}"
            host = make(key, dtype, (BIG,), 0, op)
            x = cupy.asarray(host)
            world._all_reduce(x, op, deadline, 1)
            # One rank: every op gives back the input (AVG divides in the group layer).
            check.same(key, cupy.asnumpy(x), host, dtype)
        host = make(f"nccl-direct/{dtype}/moves", dtype, (BIG,), 0)
        x = cupy.asarray(host)
        world._broadcast(x, 0, deadline, 2)
        check.same(f"nccl-direct/{dtype}/broadcast", cupy.asnumpy(x), host, dtype)
        out = cupy.empty(BIG, dtype)
        world._all_gather(out, x, deadline, 3)
        check.same(f"nccl-direct/{dtype}/all_gather", cupy.asnumpy(out), host, dtype)
        out = cupy.empty(BIG, dtype)
        world._reduce_scatter(out, x, ReduceOp.SUM, deadline, 4)
        check.same(f"nccl-direct/{dtype}/reduce_scatter", cupy.asnumpy(out), host, dtype)
    # Host arrays (dtrain's own control messages) are staged through the GPU both ways.
    host = np.arange(5, dtype=np.int64)
    world._all_reduce(host, ReduceOp.SUM, deadline, 5)
    check.same("nccl-direct/host/all_reduce", host, np.arange(5), "int64")
    gathered = np.zeros(5, np.int64)
    world._all_gather(gathered, np.arange(5, dtype=np.int64) + 1, deadline, 6)
    check.same("nccl-direct/host/all_gather", gathered, np.arange(5) + 1, "int64")
    dist.barrier()
    objects = [{"a": 1}, "b"]
    dist.broadcast_object_list(objects)
    check.checks += 1
    if objects != [{"a": 1}, "b"]:
        check.failures.append(f"nccl: broadcast_object_list gave {objects}")
    backend = dist.get_backend()
    dist.destroy_process_group()
    return {**check.report(), "backend": backend}
