"""``dtrain bench collectives``: nccl-tests-style bandwidth tables for each backend.

    dtrain bench collectives [-n N] [--backend tcp,inet,shm,mpi|all] [--ops all_reduce,...]
                             [--min-bytes 4] [--max-bytes 256M] [--iters K] [--repeat R]

Backends: ``tcp`` (sockets only: Unix-domain sockets between these same-host ranks, as the
backend picks them), ``inet`` (the tcp backend forced onto TCP sockets, as between hosts),
``shm`` (the tcp backend with its same-host shared-memory path) and ``mpi``. For the tcp
kinds the command starts N local ranks itself (one launch: their groups take turns at every
size). For mpi it runs itself under ``mpiexec -n N`` (the one next to this Python, with the
options ``dtrain.launch.mpiexec`` adds for Open MPI's), where raw mpi4py calls
(``comm.Allreduce`` and friends) take turns with the mpi backend at every size, as the
baseline. Sizes double from ``--min-bytes`` to ``--max-bytes``. ``--repeat R`` runs
the launches R times, taking turns, and reports the median of each figure: on a shared
machine the load changes between launches.

Columns, as nccl-tests prints them: ``size`` (bytes: the buffer of all_reduce and broadcast,
the gathered output of all_gather, the scattered input of reduce_scatter), ``count``
(elements of that buffer), ``type``, ``op`` (the collective; reductions are sums), ``time``
(µs per call: the median over the timed calls on each rank, the slowest rank's), ``algbw``
(size / time) and ``busbw`` (algbw times nccl-tests' factor: 2(n-1)/n for all_reduce, (n-1)/n
for all_gather and reduce_scatter, 1 for broadcast), and ``#wrong`` (elements that differed
from the expected result in the first call). Each size runs ``min(K, 1 GiB / size)`` timed
calls (at least 2) after one checked warm-up call. Then come the 8-byte all_reduce latency of
every backend and the busbw ratios against raw MPI at 64 MiB.

Every launch has a wall-clock limit (``--timeout``); ranks still running then are killed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dtrain.launch.mpiexec import local_command
from dtrain.runtime.config import MPI_VARIABLES

OPS = ("all_reduce", "broadcast", "all_gather", "reduce_scatter")
BACKENDS = ("tcp", "inet", "shm", "mpi")
LABELS = {
    "tcp": "tcp (sockets)",
    "inet": "tcp (TCP only)",
    "shm": "tcp + shared memory",
    "mpi": "mpi backend",
    "raw": "raw mpi4py",
}
BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
}
COLUMNS = ("size", "count", "type", "op", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong")
BUDGET = 1 << 30  # bytes per measurement: fewer timed calls for large sizes
LATENCY_ITERS = 300
REFERENCE = 64 << 20  # the size the ratios compare at
_LAUNCH_ENV = (  # what an outer launcher may have set; the ranks get fresh values
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    *MPI_VARIABLES,
)


def parse_bytes(text: str) -> int:
    """``"4"``, ``"64K"``, ``"256M"``, ``"1GiB"`` → bytes (binary multiples)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 4, 64K, 256M, 1G")
    return int(match.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[match.group(2)]


def _names(choices: tuple, everything: str) -> Any:
    def parse(text: str) -> list[str]:
        names = list(choices) if text == everything else [t.strip() for t in text.split(",")]
        unknown = [t for t in names if t not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{unknown or text!r}: choose from {choices}")
        return names

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dtrain bench collectives``."""
    parser.add_argument("-n", "--nprocs", type=int, default=2, help="ranks (default 2)")
    parser.add_argument(
        "--backend",
        type=_names(BACKENDS, "all"),
        default=list(BACKENDS),
        help="comma-separated: tcp (sockets: Unix-domain between same-host ranks), inet (tcp "
        "forced onto TCP sockets), shm (tcp's shared-memory path), mpi; or all",
    )
    parser.add_argument(
        "--ops", type=_names(OPS, "all"), default=list(OPS), help=f"comma-separated: {OPS}"
    )
    parser.add_argument("--min-bytes", type=parse_bytes, default=4, help="default 4")
    parser.add_argument("--max-bytes", type=parse_bytes, default=256 << 20, help="default 256M")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per size (most)")
    parser.add_argument("--dtype", default="float32", help="numpy dtype name (default float32)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="launch every backend this many times, taking turns; report the medians",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


# ---- the launcher (the `dtrain bench collectives` process) ----------------------------------
def run(args: argparse.Namespace) -> int:
    """Launch the ranks for each backend, then print the tables; returns the exit code."""
    if (
        args.nprocs < 1
        or args.iters < 1
        or args.repeat < 1
        or not 0 < args.min_bytes <= args.max_bytes
    ):
        print(
            "bench collectives: need -n >= 1, --iters >= 1, --repeat >= 1, "
            "0 < min-bytes <= max-bytes"
        )
        return 2
    try:
        kind = np.dtype(args.dtype).kind
    except TypeError:
        kind = ""
    if kind not in ("f", "i", "u"):
        print(f"bench collectives: dtype {args.dtype!r}: use a float or int type, e.g. float32")
        return 2
    config = {k: getattr(args, k) for k in ("ops", "min_bytes", "max_bytes", "iters", "dtype")}
    config["timeout"] = args.timeout
    rows, latency, failed = [], {}, []
    with tempfile.TemporaryDirectory(prefix="dtrain-bench-") as tmp:
        launches = []
        if {"tcp", "inet", "shm"} & set(args.backend):
            launches.append([b for b in ("tcp", "inet", "shm") if b in args.backend])
        if "mpi" in args.backend:
            missing = _mpi_missing()
            if missing:
                print(f"# note: no mpi run ({missing})")
            else:
                launches.append(["mpi"])
        # Taking turns, so that a change in the machine's load hits every backend alike.
        for index, backends in enumerate(launches * args.repeat):
            result_path = Path(tmp) / f"result{index}.json"
            worker = dict(config, backends=backends, result=str(result_path))
            ok, log = _launch(args.nprocs, worker, args.timeout, Path(tmp) / f"log{index}.txt")
            if not ok or not result_path.exists():
                failed.append(backends)
                print(f"# {', '.join(backends)}: the ranks failed\n{log[-4000:]}", file=sys.stderr)
                continue
            result = json.loads(result_path.read_text())
            rows += result["rows"]
            for backend, micros in result["latency"].items():
                latency.setdefault(backend, []).append(micros)
            for note in result["notes"] if index < len(launches) else ():
                print(f"# note: {note}")
    rows, latency = medians(rows), {b: float(np.median(v)) for b, v in latency.items()}
    if args.repeat > 1:
        print(f"# medians of {args.repeat} launches of each backend, taking turns")
    print(render(rows, latency, args.nprocs, args.dtype))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "latency": latency}, indent=1))
    return 1 if failed else 0


def _mpiexec() -> Path:
    return Path(sys.executable).parent / "mpiexec"


def _mpi_missing() -> str:
    """Why the mpi backend cannot run here, or ``""``."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed: pip install 'dtrain[mpi]'"
    if not _mpiexec().exists():
        return (
            f"no mpiexec next to {sys.executable}: pip install mpich, or link there the "
            "mpiexec of the MPI that mpi4py is built against"
        )
    return ""


def _launch(n: int, worker: dict, timeout: float, log_path: Path) -> tuple[bool, str]:
    """Run the ranks for ``worker["backends"]``; False when one failed or ran out of time."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env["DTRAIN_TIMEOUT"] = str(max(30.0, min(timeout, 300.0)))
    command = [sys.executable, "-m", "dtrain.launch.bench_collectives", json.dumps(worker)]
    if worker["backends"] == ["mpi"]:
        prefix, launcher_env = local_command(_mpiexec(), n)
        commands = [([*prefix, *command], {**env, **launcher_env})]
    else:
        port = _free_port()
        base = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(n))
        base.update(LOCAL_WORLD_SIZE=str(n), DTRAIN_SECRET=secrets.token_hex(16))
        commands = [(command, dict(base, RANK=str(r), LOCAL_RANK=str(r))) for r in range(n)]
    processes = []
    with open(log_path, "wb") as log:
        try:
            for argv, environment in commands:
                processes.append(
                    subprocess.Popen(
                        argv,
                        env=environment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # its own process group: killed as one
                    )
                )
            deadline = time.monotonic() + timeout
            for process in processes:
                process.wait(max(0.1, deadline - time.monotonic()))
            ok = all(p.returncode == 0 for p in processes)
        except subprocess.TimeoutExpired:
            ok = False
            log.write(f"\n# killed: still running after {timeout:.0f} s\n".encode())
        finally:
            for process in processes:  # leftovers, and their children (mpiexec's ranks)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return ok, log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def medians(rows: list[dict]) -> list[dict]:
    """One row per (backend, op, size): the median time of the launches, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["backend"], row["op"], row["size"]), []).append(row)
    merged = []
    for same in groups.values():
        row = dict(same[0])
        row["time_us"] = float(np.median([r["time_us"] for r in same]))
        scale = same[0]["time_us"] / row["time_us"]
        row["algbw"], row["busbw"] = same[0]["algbw"] * scale, same[0]["busbw"] * scale
        row["wrong"] = max(r["wrong"] for r in same)
        merged.append(row)
    return merged


def render(rows: list[dict], latency: dict, n: int, dtype: str) -> str:
    """The tables, the 8-byte latencies and the ratios at 64 MiB, as text."""
    lines = [f"# dtrain bench collectives: {n} ranks, {dtype}, sums"]
    widths = (12, 12, 9, 15, 12, 12, 12, 7)
    header = "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths))
    for backend in (*BACKENDS, "raw"):
        mine = [r for r in rows if r["backend"] == backend]
        if not mine:
            continue
        lines += ["", f"# {LABELS[backend]}", "#" + header[1:]]
        for r in mine:
            values = (
                r["size"],
                r["count"],
                r["type"],
                r["op"],
                f"{r['time_us']:.1f}",
                f"{r['algbw']:.3f}",
                f"{r['busbw']:.3f}",
                r["wrong"],
            )
            lines.append("".join(f"{v:>{w}}" for v, w in zip(values, widths)))
    if latency:
        lines += ["", "# 8-byte all_reduce latency (median µs)"]
        lines += [
            f"#   {LABELS[b]:<22} {latency[b]:10.1f}" for b in (*BACKENDS, "raw") if b in latency
        ]
    ratios = _ratios(rows)
    if ratios:
        lines += ["", "# busbw against raw mpi4py, same op and size (64 MiB, or the nearest)"]
        lines += [
            f"#   {op:<15} {_human(size):>8}  {LABELS[b]:<22} {ratio:6.2f}x"
            for op, size, b, ratio in ratios
        ]
    return "\n".join(lines)


def _human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):g} {unit}"
    return f"{size} B"


def _ratios(rows: list[dict]) -> list[tuple[str, int, str, float]]:
    found = []
    for op in OPS:
        raw = [r for r in rows if r["backend"] == "raw" and r["op"] == op]
        if not raw:
            continue
        reference = min(raw, key=lambda r: abs(r["size"] - REFERENCE))
        for backend in BACKENDS:
            for r in rows:
                if (r["backend"], r["op"], r["size"]) == (backend, op, reference["size"]):
                    ratio = r["busbw"] / max(reference["busbw"], 1e-12)
                    found.append((op, r["size"], backend, ratio))
    return found


# ---- a rank ----------------------------------------------------------------------------------
def _sizes(low: int, high: int) -> list[int]:
    sizes, size = [], low
    while size <= high:
        sizes.append(size)
        size *= 2
    return sizes


class _Rank:
    """One rank's measurements: a dtrain group (through the public API) or raw mpi4py."""

    def __init__(self, backend: str, group: Any, comm: Any = None) -> None:
        self.backend, self.group, self.comm = backend, group, comm

    def call(self, op: str, out: Any, data: Any) -> None:
        import dtrain.parallel as dist

        if self.comm is not None:
            from mpi4py import MPI

            if op == "all_reduce":
                self.comm.Allreduce(MPI.IN_PLACE, data)
            elif op == "broadcast":
                self.comm.Bcast(data, root=0)
            elif op == "all_gather":
                self.comm.Allgather(data, out)
            else:
                self.comm.Reduce_scatter_block(data, out)
        elif op == "all_reduce":
            dist.all_reduce(data, group=self.group)
        elif op == "broadcast":
            dist.broadcast(data, 0, group=self.group)
        elif op == "all_gather":
            dist.all_gather_into_tensor(out, data, group=self.group)
        else:
            dist.reduce_scatter_tensor(out, data, group=self.group)


def _buffers(op: str, size: int, n: int, dtype: Any) -> tuple[Any, Any, int]:
    """(out, data, count) for ``op`` at ``size`` bytes; count as nccl-tests counts it."""
    count = size // dtype.itemsize
    if op in ("all_gather", "reduce_scatter"):
        count -= count % n
        part = count // n
        if op == "all_gather":
            return np.zeros(count, dtype), np.zeros(part, dtype), count
        return np.zeros(part, dtype), np.zeros(count, dtype), count
    return None, np.zeros(count, dtype), count


def _check(rank: _Rank, op: str, out: Any, data: Any, me: int, n: int) -> int:
    """Run ``op`` once on known values; the number of wrong elements."""
    if op == "broadcast":
        data[...] = me + 1
        rank.call(op, out, data)
        return int(np.count_nonzero(data != 1))
    if op == "all_reduce":
        data[...] = me + 1
        rank.call(op, out, data)
        return int(np.count_nonzero(data != n * (n + 1) // 2))
    if op == "all_gather":
        data[...] = me + 1
        rank.call(op, out, data)
        expected = np.repeat(np.arange(1, n + 1), data.size).astype(out.dtype)
        return int(np.count_nonzero(out != expected))
    data[...] = me + 1
    rank.call(op, out, data)
    return int(np.count_nonzero(out != n * (n + 1) // 2))


def _time(rank: _Rank, op: str, out: Any, data: Any, iters: int) -> float:
    data[...] = 0  # sums of zeros: no overflow however many calls
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        rank.call(op, out, data)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def worker(config: dict) -> None:
    """One rank of a launch: measure, and have rank 0 write the result file."""
    import dtrain.parallel as dist

    backends, dtype = config["backends"], np.dtype(config["dtype"])
    notes, ranks = [], []
    if backends == ["mpi"]:
        from mpi4py import MPI

        dist.init_process_group("mpi")
        ranks.append(_Rank("mpi", None))
        if dtype == np.float16:
            notes.append("raw MPI has no float16: no raw baseline")
        else:
            ranks.append(_Rank("raw", None, MPI.COMM_WORLD))
    else:
        dist.init_process_group("tcp", pg_options={"shm": False})
        if "tcp" in backends:
            ranks.append(_Rank("tcp", None))
        if "inet" in backends:
            ranks.append(_Rank("inet", dist.new_group(pg_options={"shm": False, "unix": False})))
        if "shm" in backends:
            group = dist.new_group(pg_options={"shm": True})
            if getattr(group, "shm", None) is None:
                notes.append("shm: no shared memory on this machine; the group uses sockets")
            ranks.append(_Rank("shm", group))
    me, n = dist.get_rank(), dist.get_world_size()
    rows = []
    for op in config["ops"]:
        for size in _sizes(config["min_bytes"], config["max_bytes"]):
            out, data, count = _buffers(op, size, n, dtype)
            if count == 0:
                continue
            iters = max(2, min(config["iters"], BUDGET // size))
            for rank in ranks:  # the backends take turns at every size
                wrong = _check(rank, op, out, data, me, n)
                seconds = _slowest(_time(rank, op, out, data, iters))
                algbw = count * dtype.itemsize / seconds / 1e9
                rows.append(
                    {
                        "backend": rank.backend,
                        "op": op,
                        "size": count * dtype.itemsize,
                        "count": count,
                        "type": dtype.name,
                        "time_us": seconds * 1e6,
                        "algbw": algbw,
                        "busbw": algbw * BUS_FACTOR[op](n),
                        "wrong": int(_slowest(float(wrong))),
                    }
                )
    latency = {}
    small = np.zeros(8 // dtype.itemsize or 1, dtype)
    for rank in ranks:
        for _ in range(30):
            rank.call("all_reduce", None, small)
        latency[rank.backend] = (
            _slowest(_time(rank, "all_reduce", None, small, LATENCY_ITERS)) * 1e6
        )
    if me == 0:
        Path(config["result"]).write_text(
            json.dumps({"rows": rows, "latency": latency, "notes": notes})
        )
    dist.destroy_process_group()


def _slowest(value: float) -> float:
    """The largest of every rank's ``value`` (through the default group)."""
    import dtrain.parallel as dist

    box = np.array([value], dtype=np.float64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box[0])


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
